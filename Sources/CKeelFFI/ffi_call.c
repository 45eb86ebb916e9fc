#include "keel_ffi.h"
#include <ffi.h>
#include <stdlib.h>

struct keel_ffi_call {
    ffi_cif cif;
    ffi_type *types[]; /* count entries */
};

/* keel_str and keel_bytes: a pointer and a size_t, passed by value. */
static ffi_type *pair_elements[] = { &ffi_type_pointer, &ffi_type_uint64, NULL };
static ffi_type pair_type = { 0, 0, FFI_TYPE_STRUCT, pair_elements };

static ffi_type *type_of(uint8_t kind) {
    switch (kind) {
    case KEEL_FFI_VOID: return &ffi_type_void;
    case KEEL_FFI_I32: return &ffi_type_sint32;
    case KEEL_FFI_I64: return &ffi_type_sint64;
    case KEEL_FFI_U32: return &ffi_type_uint32;
    case KEEL_FFI_U64: return &ffi_type_uint64;
    case KEEL_FFI_F64: return &ffi_type_double;
    case KEEL_FFI_BOOL: return &ffi_type_uint8;
    case KEEL_FFI_STR:
    case KEEL_FFI_BYTES: return &pair_type;
    case KEEL_FFI_POINTER: return &ffi_type_pointer;
    default: return NULL;
    }
}

keel_ffi_call *keel_ffi_prepare(const uint8_t *kinds, size_t count, uint8_t result) {
    _Static_assert(sizeof(size_t) == 8, "keel_str's length is a 64-bit size_t here");
    keel_ffi_call *call = malloc(sizeof *call + (count + 1) * sizeof(ffi_type *));
    if (!call) return NULL;
    for (size_t i = 0; i < count; i++) {
        call->types[i] = type_of(kinds[i]);
        if (!call->types[i] || kinds[i] == KEEL_FFI_VOID) { free(call); return NULL; }
    }
    ffi_type *rtype = type_of(result);
    if (!rtype || result == KEEL_FFI_STR || result == KEEL_FFI_BYTES ||
        ffi_prep_cif(&call->cif, FFI_DEFAULT_ABI, (unsigned)count, rtype, call->types) != FFI_OK) {
        free(call);
        return NULL;
    }
    return call;
}

void keel_ffi_invoke(const keel_ffi_call *call, const void *function, void *result, void **arguments) {
    ffi_call((ffi_cif *)&call->cif, FFI_FN(function), result, arguments);
}

void keel_ffi_free(keel_ffi_call *call) { free(call); }
