#include "keel_ffi.h"
#include <ffi.h>
#include <stdlib.h>
#include <string.h>

struct keel_ffi_call {
    ffi_cif cif;
    uint8_t result;
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

static keel_ffi_call *prepare(const uint8_t *kinds, size_t count, uint8_t result, int str_result) {
    _Static_assert(sizeof(size_t) == 8, "keel_str's length is a 64-bit size_t here");
    keel_ffi_call *call = malloc(sizeof *call + (count + 1) * sizeof(ffi_type *));
    if (!call) return NULL;
    for (size_t i = 0; i < count; i++) {
        call->types[i] = type_of(kinds[i]);
        if (!call->types[i] || kinds[i] == KEEL_FFI_VOID) { free(call); return NULL; }
    }
    ffi_type *rtype = type_of(result);
    call->result = result;
    if (!rtype || (result == KEEL_FFI_STR && !str_result) || result == KEEL_FFI_BYTES ||
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

keel_ffi_call *keel_ffi_prepare(const uint8_t *kinds, size_t count, uint8_t result) {
    return prepare(kinds, count, result, 0);
}

keel_ffi_call *keel_ffi_prepare_service(const uint8_t *kinds, size_t count, uint8_t result) {
    return prepare(kinds, count, result, 1);
}

struct keel_ffi_closure {
    ffi_closure *closure;
    const keel_ffi_call *call;
    keel_ffi_handler handler;
    void *user_data;
};

/* libffi's entry: runs the handler, then widens its result as libffi wants it (integers narrower than a register
 * are returned as ffi_arg). */
static void trampoline(ffi_cif *cif, void *ret, void **args, void *data) {
    (void)cif;
    struct keel_ffi_closure *c = data;
    _Alignas(16) unsigned char value[16] = { 0 };
    c->handler(c->user_data, value, args);
    switch (c->call->result) {
    case KEEL_FFI_VOID: break;
    case KEEL_FFI_I32: { int32_t v; memcpy(&v, value, 4); *(ffi_sarg *)ret = v; break; }
    case KEEL_FFI_U32: { uint32_t v; memcpy(&v, value, 4); *(ffi_arg *)ret = v; break; }
    case KEEL_FFI_BOOL: *(ffi_arg *)ret = value[0]; break;
    case KEEL_FFI_STR:
    case KEEL_FFI_BYTES: memcpy(ret, value, 16); break;
    default: memcpy(ret, value, 8); break;
    }
}

keel_ffi_closure *keel_ffi_closure_make(const keel_ffi_call *call, keel_ffi_handler handler, void *user_data,
                                        void **out_function) {
    struct keel_ffi_closure *c = malloc(sizeof *c);
    if (!c) return NULL;
    void *code = NULL;
    c->closure = ffi_closure_alloc(sizeof(ffi_closure), &code);
    if (!c->closure) { free(c); return NULL; }
    c->call = call;
    c->handler = handler;
    c->user_data = user_data;
    if (ffi_prep_closure_loc(c->closure, (ffi_cif *)&call->cif, trampoline, c, code) != FFI_OK) {
        ffi_closure_free(c->closure);
        free(c);
        return NULL;
    }
    *out_function = code;
    return c;
}

void keel_ffi_closure_free(keel_ffi_closure *closure) {
    if (!closure) return;
    ffi_closure_free(closure->closure);
    free(closure);
}
