/* gitops.sync/1 — the interface between the deployer and the plugins that sync an app with a GitOps engine.
 *
 * Shipped by the consumer (Plugins/deployer); a provider includes it and registers a gitops_sync_v1 table with
 * keel.services/1 `provide` during activate. The host never looks inside the table (see keel/services.h).
 *
 * Growth rule for interface tables (the same as for the ABI's own structs):
 * - The table starts with `uint32_t struct_size`: the provider sets it to sizeof(gitops_sync_v1) as it was compiled.
 * - A later minor version (1.1, 1.2, ...) only appends functions at the end. Nothing is removed, reordered or
 *   retyped; a change that would do so is gitops.sync/2, a different interface with its own table.
 * - Every function of 1.0 is always there. A consumer that needs a function added later passes that version's size
 *   (GITOPS_SYNC_V1_<minor>_SIZE) as min_size to acquire, or checks KEEL_HAS_FIELD(table, gitops_sync_v1, fn)
 *   before calling it. A consumer built against 1.0 passes GITOPS_SYNC_V1_0_SIZE and works with every 1.x provider.
 *
 * Ownership: nothing allocated crosses the boundary. Strings passed in are borrowed for the call; results are
 * written into buffers the caller owns.
 */
#pragma once

#include <keel/keel.h>

KEEL_EXTERN_C_BEGIN

#define GITOPS_SYNC_NAME "gitops.sync"
#define GITOPS_SYNC_INTERFACE "gitops.sync/1" /* the id under provides:/consumes: and for acquire */

typedef struct gitops_sync_v1 {
    uint32_t struct_size; /* sizeof(gitops_sync_v1) as the provider was compiled */

    /* --- 1.0 --- */

    /* The engine's name, e.g. "argocd". Static in the provider: valid while the caller holds its lease (copy it to
     * keep it longer). Never fails.
     * [thread-safe]: called concurrently from request threads, while the caller holds a lease. */
    keel_str(KEEL_ABI *engine)(void);

    /* Syncs `app` (not empty) to `revision` (a branch, tag or commit; empty: "main") and writes a one-line result,
     * such as "argocd synced shop to main", into out[0 .. *out_len): UTF-8, no newline, not NUL-terminated. `app`
     * and `revision` are borrowed for the call. Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (empty app, NULL
     * out_len, NULL out with out_cap > 0); KEEL_ERR_LIMIT when the line needs more than out_cap bytes (*out_len is
     * then the size it needs and out holds nothing usable); KEEL_ERR_WRONG_STATE when the provider is shutting
     * down; any other status when the engine failed.
     * [thread-safe]: called concurrently from request threads, while the caller holds a lease; must not block for
     * long. */
    keel_status(KEEL_ABI *sync)(keel_str app, keel_str revision, char *out, size_t out_cap, size_t *out_len);

    /* --- 1.1 and later: new functions go here, at the end, each with its GITOPS_SYNC_V1_<minor>_SIZE --- */
} gitops_sync_v1;

/* The table size a consumer needs for the 1.0 functions: pass it as min_size to acquire. */
#define GITOPS_SYNC_V1_0_SIZE \
    ((uint32_t)(offsetof(gitops_sync_v1, sync) + sizeof(((gitops_sync_v1 *)0)->sync)))

KEEL_EXTERN_C_END
