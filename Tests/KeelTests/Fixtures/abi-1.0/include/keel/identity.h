/* Keel plugin ABI — who is calling.
 *
 * The host establishes a principal for every request through the auth chain (see auth.h) and hands it to route
 * handlers and authorize hooks. A plugin never has to parse credentials itself.
 */
#pragma once

#include "types.h"

KEEL_EXTERN_C_BEGIN

/* keel_principal.flags */
#define KEEL_PRINCIPAL_ANONYMOUS (1u << 0) /* no authenticate hook recognised the caller */

/* The caller of a request. Owned by the host and borrowed for the call it is passed to: every pointer inside it is
 * valid until that call returns. A plugin cannot change it. Growable: read fields past `roles_len` only when
 * KEEL_HAS_FIELD says so. */
typedef struct keel_principal {
    uint32_t struct_size;      /* sizeof(keel_principal) as the host knows it */
    uint32_t flags;            /* KEEL_PRINCIPAL_* */
    keel_str id;               /* stable principal id, e.g. "alice"; empty when anonymous */
    keel_str display_name;     /* for humans; may be empty */
    keel_str tenant;           /* tenant (workspace) the request acts in; "default" on a single-tenant host */
    keel_str authenticated_by; /* the plugin id whose authenticate hook established it, or "keel" */
    const keel_str *roles;     /* roles_len role names */
    size_t roles_len;
} keel_principal;

KEEL_EXTERN_C_END
