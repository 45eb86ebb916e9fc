/* Keel plugin ABI 1.1 — services between plugins (service "keel.services/1").
 *
 * An interface is a named, versioned C table of functions that one plugin provides and others consume, such as
 * "gitops.sync/1". Whoever defines an interface publishes its header (e.g. gitops_sync.h, shipped next to the
 * consumer); the host knows nothing of the functions inside. A provider fills the table and registers it during
 * activate; a consumer acquires a lease on it at run time and calls straight through the table: no marshalling, no
 * link-time dependency between the two plugins.
 *
 * Several plugins may provide one interface. The operator selects which one serves (`keel services use
 * gitops.sync/1 argo-sync`, also per tenant); without a selection the provider with the highest `ranking` in its
 * plugin.yaml serves, then the one enabled first. The host itself, or a program embedding it, may provide
 * interfaces too; it appears as provider "keel".
 *
 * plugin.yaml
 *   provides:
 *     - interface: gitops.sync/1     # <name>/<major>: the name and the table layout's major version
 *       version: "1.2.0"             # optional: the interface version implemented (default <major>.0.0)
 *       ranking: 10                  # optional: preference when the operator chose none (default 0)
 *   consumes:
 *     - interface: gitops.sync       # with or without /<major>
 *       version: "^1"                # a range within one major (default: the major given, else ^1)
 *       optional: false              # true: the plugin activates without a provider and is told when one comes
 *   (either entry)  functions:       # optional: the table's functions after struct_size, in order, so that the
 *       - {name: engine, signature: "() -> str"}              # table can cross a process boundary
 *       - {name: sync, signature: "(str, str) -> status(buf)"} # (isolation: process). Command signatures, plus
 *                                    # -> str (keel_str by value) and -> status(buf) (trailing char *out,
 *                                    # size_t out_cap, size_t *out_len; KEEL_ERR_LIMIT sets *out_len to the need)
 *
 * Ids: "<name>/<major>", name of 1–128 lowercase letters, digits, '.', '-' and '_', starting with a letter.
 *
 * Tables follow the growth rule: an interface table starts with `uint32_t struct_size` (the size the provider was
 * compiled with) and a later minor version of the interface only appends functions. A consumer that needs a
 * function added in a later minor version passes the table size it needs to acquire (`min_size`), or checks
 * KEEL_HAS_FIELD on the table.
 *
 * Lifetimes: a lease keeps its provider's activation alive. While any lease on it is held, the provider is not
 * deactivated: a switch, a disable or a reload waits for the leases to be released (up to the host's drain time
 * out, after which the provider's library stays mapped and its deactivate is skipped, as for a route that never
 * returns). So a consumer never calls into a deactivated provider. Hold a lease for one unit of work (a request,
 * a job), not for the life of the plugin: a lease held forever pins the provider. Leases a consumer still holds
 * when it is deactivated are released by the host and logged.
 */
#pragma once

#include "types.h"
#include "version.h"
#include "status.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_SERVICE_SERVICES "keel.services/1"

/* A provider's table for one interface, to register during activate. Borrowed for the registration call; the host
 * copies `interface_id`. Growable. */
typedef struct keel_service_provision {
    uint32_t struct_size;  /* sizeof(keel_service_provision) */
    keel_str interface_id; /* "gitops.sync/1", exactly as declared under provides: in plugin.yaml */
    const void *table;     /* the interface's table; starts with uint32_t struct_size. Owned by the provider,
                            * constant, valid until deactivate returns */
} keel_service_provision;

/* Who serves a lease: written by the host into a struct the consumer owns. The consumer sets struct_size to the
 * size it knows; the host writes only the fields that size covers. Strings are the host's, valid while the lease
 * is held. Growable. */
typedef struct keel_service_info {
    uint32_t struct_size;      /* set by the caller: sizeof(keel_service_info) */
    keel_version version;      /* the interface version the provider implements, e.g. 1.2.0 */
    keel_str interface_id;     /* "gitops.sync/1" */
    keel_str provider_id;      /* the providing plugin's id, or "keel" for the host or its embedder */
    keel_str provider_version; /* the providing plugin's version ("" for the host) */
    uint64_t generation;       /* which load of the provider it is (1, 2, ...; 0 for the host) */
    uint32_t table_size;       /* the provider table's struct_size */
} keel_service_info;

/* A held lease on a provider's table. Opaque; owned by the host until release. */
typedef struct keel_service_lease keel_service_lease;

/* Tells a consumer that the provider serving `interface_id` for `tenant` changed: `now` describes the new provider,
 * or is NULL when none serves any more. `tenant` is empty for the host-wide choice (every tenant without a choice of
 * its own follows it). New acquires already reach the new provider when this is called; leases on the old one stay
 * valid until released. Everything passed is borrowed for the call.
 * [lifecycle]: on the host's lifecycle thread, after the consumer's activate returned and never after its
 * deactivate started; must not block for long. */
typedef void(KEEL_ABI *keel_service_changed_fn)(void *user_data, keel_str interface_id, keel_str tenant,
                                                const keel_service_info *now);

/* A listener to register during activate. Borrowed for the call. Growable. */
typedef struct keel_service_listener {
    uint32_t struct_size;            /* sizeof(keel_service_listener) */
    keel_str interface_id;           /* an interface declared under consumes:, with or without /<major> */
    keel_service_changed_fn changed; /* must not be NULL */
    void *user_data;                 /* passed back; valid until deactivate returns */
} keel_service_listener;

typedef struct keel_host_services {
    uint32_t struct_size; /* sizeof(keel_host_services) as the host knows it */

    /* Registers this activation's table for an interface it declares under provides:. Published with everything
     * else activate registered. Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (NULL table, a table whose struct_size
     * is under 8 bytes); KEEL_ERR_DENIED (the interface is not declared under provides:); KEEL_ERR_CONFLICT (this
     * activation already provides it); KEEL_ERR_WRONG_STATE outside activate. A declared interface left without a
     * table when activate returns fails the activation.
     * [activate-only] */
    keel_status(KEEL_ABI *provide)(keel_ctx *ctx, const keel_service_provision *provision);

    /* Asks to be told when the provider of a consumed interface changes (appears, is switched, goes away).
     * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (NULL function); KEEL_ERR_DENIED (not declared under consumes:);
     * KEEL_ERR_LIMIT past 16 listeners; KEEL_ERR_WRONG_STATE outside activate.
     * [activate-only] */
    keel_status(KEEL_ABI *listen)(keel_ctx *ctx, const keel_service_listener *listener);

    /* Leases the table serving `interface_id` (declared under consumes:, with or without /<major>) for `tenant`
     * (empty: the host-wide choice; a tenant without a choice of its own gets the host-wide one). `min_size` is the
     * smallest table the caller can use (0: any). On KEEL_OK, *out_lease and *out_table are set; call the table's
     * functions, then release the lease.
     * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (NULL out pointers); KEEL_ERR_DENIED (not declared under
     * consumes:; logged); KEEL_ERR_NOT_FOUND (no enabled provider); KEEL_ERR_UNSUPPORTED (the serving provider's
     * table is smaller than min_size, or its version is outside the declared range); KEEL_ERR_UNAVAILABLE (the
     * provider is being taken down and no other serves yet: retry); KEEL_ERR_LIMIT (this activation already holds
     * 4096 leases).
     * [thread-safe] */
    keel_status(KEEL_ABI *acquire)(keel_ctx *ctx, keel_str interface_id, keel_str tenant, uint32_t min_size,
                                   keel_service_lease **out_lease, const void **out_table);

    /* Ends a lease. The table must not be used after this. Releasing NULL does nothing; releasing twice is logged
     * and ignored.
     * [thread-safe] */
    void(KEEL_ABI *release)(keel_service_lease *lease);

    /* Writes who serves `lease` into *out (see keel_service_info). Returns KEEL_OK or KEEL_ERR_INVALID_ARGUMENT.
     * [thread-safe] */
    keel_status(KEEL_ABI *describe)(const keel_service_lease *lease, keel_service_info *out);
} keel_host_services;

KEEL_EXTERN_C_END
