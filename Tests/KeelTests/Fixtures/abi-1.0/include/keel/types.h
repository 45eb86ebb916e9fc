/* Keel plugin ABI — basic types shared by every service. */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include "private/macros.h"

KEEL_EXTERN_C_BEGIN

/* A UTF-8 string: a pointer and a length in bytes, not NUL-terminated. Borrowed: valid only for the call it is
 * passed to (or, for static data, for as long as the owner states). Whoever keeps it past that copies it.
 * {NULL, 0} is the empty string. */
typedef struct keel_str {
    const char *ptr;
    size_t len;
} keel_str;

/* A keel_str for a string literal, usable in static initialisers: KEEL_STR("hello"). */
#define KEEL_STR(literal) { (literal), sizeof(literal) - 1 }

/* The empty string. */
#define KEEL_STR_EMPTY { NULL, 0 }

/* A keel_str over a NUL-terminated string (NULL gives the empty string). Borrows `s`; copies nothing. */
static inline keel_str keel_cstr(const char *s) {
    keel_str r;
    r.ptr = s;
    r.len = s ? strlen(s) : 0;
    return r;
}

/* Opaque per-plugin context handed to activate. Every registration made through it belongs to the plugin (and to
 * this activation), so the host can revoke all of them at once. Valid from the start of activate until deactivate
 * returns; the plugin must not use it after that. */
typedef struct keel_ctx keel_ctx;

/* True when a struct whose first field is `uint32_t struct_size` is large enough to hold `field`.
 * Read a field added in a later minor version only when this holds: an older peer sent a shorter struct. */
#define KEEL_HAS_FIELD(ptr, type, field) \
    ((ptr)->struct_size >= offsetof(type, field) + sizeof(((type *)0)->field))

/* Log levels for keel_host.log. */
typedef int32_t keel_log_level;
#define KEEL_LOG_DEBUG 0
#define KEEL_LOG_INFO  1
#define KEEL_LOG_WARN  2
#define KEEL_LOG_ERROR 3

KEEL_EXTERN_C_END
