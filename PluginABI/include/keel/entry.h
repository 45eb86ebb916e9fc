/* Keel plugin ABI — the one exported symbol and the plugin descriptor.
 *
 * A plugin exports exactly one symbol, `keel_plugin_entry`, a function returning a pointer to a constant
 * descriptor (a function rather than a data symbol, because dlsym is only guaranteed for functions). The host calls
 * it once per loaded copy of the library, checks the ABI version and the descriptor against the manifest, then calls
 * activate. KEEL_PLUGIN_ENTRY(descriptor) writes the function for you.
 */
#pragma once

#include "host.h"

KEEL_EXTERN_C_BEGIN

/* keel_plugin.flags. Bits not defined here must be 0: a later host may give them a meaning. */
#define KEEL_PLUGIN_FLAG_UNLOAD_SAFE (1ull << 0) /* the library may be dlclosed after deactivate returns */
/* activate may be called again on the same loaded copy after deactivate returned: activate sets up all the state it
 * uses (a global set by deactivate is reset there). The host then keeps the copy when the plugin is disabled or a
 * lazy plugin goes idle, and activates it again on the next enable or first use while the library file is
 * unchanged, instead of mapping one more copy each time (which a library that is not unload-safe keeps for the life
 * of the process; an unload-safe library is closed instead, and not kept). A host that predates the flag ignores it
 * and loads a fresh copy, as for a plugin without it. */
#define KEEL_PLUGIN_FLAG_REACTIVATABLE (1ull << 1)

/* The descriptor. Owned by the plugin, constant, and valid for as long as the library is loaded: the host reads it
 * in place and never frees or writes it. Growable: fields are only ever appended, and the host reads only the first
 * `struct_size` bytes. */
typedef struct keel_plugin {
    uint32_t struct_size;     /* sizeof(keel_plugin); the host refuses a size smaller than the claimed ABI needs */
    keel_version abi_version; /* KEEL_ABI_VERSION_INIT: the header the plugin was compiled against */
    keel_str id;              /* KEEL_STR_EMPTY: the host takes `id` from plugin.yaml; or the id, which must equal
                               * plugin.yaml's, e.g. "hello" */
    keel_str version;         /* KEEL_STR_EMPTY: the host takes `version` from plugin.yaml; or a semver that must
                               * equal plugin.yaml's, e.g. "1.2.0". Left empty, id and version are written once, in
                               * plugin.yaml (hosts older than this rule refuse an empty id or version) */
    uint64_t flags;           /* KEEL_PLUGIN_FLAG_* */

    /* Brings the plugin up: look up services with host->get_service and register routes, menu entries and auth
     * hooks through them. Everything registered belongs to this activation and is published only when activate
     * returns KEEL_OK; on any other status the host discards all of it, logs the message given to set_error, and
     * marks the plugin failed. Neither pointer may be kept past deactivate.
     * [lifecycle] */
    keel_status(KEEL_ABI *activate)(const keel_host *host, keel_ctx *ctx);

    /* Takes the plugin down. The host calls it only after activate returned KEEL_OK, and only when no handler or
     * hook of this activation is running or will run again. Before returning, the plugin stops its threads and
     * timers and frees what activate allocated: after it returns the host makes no further call into this
     * activation. A non-OK status is logged; the plugin is deactivated either way. May be NULL.
     * [lifecycle] */
    keel_status(KEEL_ABI *deactivate)(const keel_host *host, keel_ctx *ctx);

    /* Returns the plugin's half of an optional feature by versioned id (e.g. "keel.config/1"), or NULL when it does
     * not implement it. The returned table is owned by the plugin, constant, valid while the library is loaded.
     * May itself be NULL (no extensions).
     * [thread-safe] */
    const void *(KEEL_ABI *get_extension)(keel_str extension_id);
} keel_plugin;

/* The exported entry point's type and name. */
typedef const keel_plugin *(KEEL_ABI *keel_plugin_entry_fn)(void);
#define KEEL_ENTRY_SYMBOL "keel_plugin_entry"

/* Defines the entry point returning `descriptor` (a static const keel_plugin). Returning NULL from a hand-written
 * entry tells the host the plugin cannot run here; the host reports that and loads nothing.
 * [load]: called once per loaded copy, before any other call, never concurrently with anything in the plugin. */
#ifdef __cplusplus
#  define KEEL_PLUGIN_ENTRY(descriptor) \
    extern "C" KEEL_EXPORT const keel_plugin *keel_plugin_entry(void) { return &(descriptor); }
#else
#  define KEEL_PLUGIN_ENTRY(descriptor) \
    KEEL_EXPORT const keel_plugin *keel_plugin_entry(void); \
    KEEL_EXPORT const keel_plugin *keel_plugin_entry(void) { return &(descriptor); }
#endif

KEEL_EXTERN_C_END
