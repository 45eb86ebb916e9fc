/* Keel plugin ABI — portability macros. Not part of the contract; included by the public headers. */
#pragma once

#if defined(_WIN32)
#  define KEEL_EXPORT __declspec(dllexport)
#else
#  define KEEL_EXPORT __attribute__((visibility("default")))
#endif

/* Calling convention of every function pointer in the ABI: the platform's C convention. */
#define KEEL_ABI

#ifdef __cplusplus
#  define KEEL_EXTERN_C_BEGIN extern "C" {
#  define KEEL_EXTERN_C_END }
#else
#  define KEEL_EXTERN_C_BEGIN
#  define KEEL_EXTERN_C_END
#endif
