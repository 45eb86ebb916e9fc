/* The host's use of libffi, in one small C module: a call prepared once (the cif and its argument types), then made
 * many times. Only KeelLoader uses it. */
#pragma once
#include <stddef.h>
#include <stdint.h>

/* Argument and result kinds, in the order of CommandSignature's types. */
enum {
    KEEL_FFI_VOID = 0,
    KEEL_FFI_I32 = 1,
    KEEL_FFI_I64 = 2,
    KEEL_FFI_U32 = 3,
    KEEL_FFI_U64 = 4,
    KEEL_FFI_F64 = 5,
    KEEL_FFI_BOOL = 6,
    KEEL_FFI_STR = 7,   /* keel_str by value: { const char *, size_t } */
    KEEL_FFI_BYTES = 8, /* keel_bytes by value: { const uint8_t *, size_t } */
    KEEL_FFI_POINTER = 9,
};

/* A prepared call. Opaque; immutable once prepared, so any thread may call through it. */
typedef struct keel_ffi_call keel_ffi_call;

/* Prepares a call of a function taking `count` arguments of `kinds` and returning `result`. Returns NULL when
 * libffi refuses the signature or memory runs out. */
keel_ffi_call *keel_ffi_prepare(const uint8_t *kinds, size_t count, uint8_t result);

/* Calls `function` with `arguments` (count pointers, each to a value of its kind) and writes the result into
 * `result` (at least 16 bytes, suitably aligned). */
void keel_ffi_invoke(const keel_ffi_call *call, const void *function, void *result, void **arguments);

/* Frees a prepared call. */
void keel_ffi_free(keel_ffi_call *call);

/* As keel_ffi_prepare, and a `result` of KEEL_FFI_STR (a keel_str returned by value) is allowed too: for the
 * functions of service tables (keel/services.h), which commands' signatures lack. */
keel_ffi_call *keel_ffi_prepare_service(const uint8_t *kinds, size_t count, uint8_t result);

/* What a closure runs: `result` is 16 bytes, aligned, zeroed, for the value of the prepared call's result kind (an
 * int32_t for KEEL_FFI_I32, a keel_str for KEEL_FFI_STR...); `arguments` are libffi's (count pointers, each to a
 * value of its kind). Called on the caller's thread. */
typedef void (*keel_ffi_handler)(void *user_data, void *result, void **arguments);

/* A C function made at run time: calling *out_function with the prepared call's arguments runs `handler` with
 * `user_data`. `call` must outlive the closure. Returns NULL when libffi cannot make one. */
typedef struct keel_ffi_closure keel_ffi_closure;
keel_ffi_closure *keel_ffi_closure_make(const keel_ffi_call *call, keel_ffi_handler handler, void *user_data,
                                        void **out_function);

/* Frees a closure; its function must not be called any more. */
void keel_ffi_closure_free(keel_ffi_closure *closure);
