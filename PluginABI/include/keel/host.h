/* Keel plugin ABI — what the host offers every plugin.
 *
 * The host passes a `const keel_host *` to activate and deactivate. The table is owned by the host and stays valid
 * until deactivate returns. Services beyond this core (HTTP routes, menus, auth) are looked up by a versioned id with
 * get_service, so that the core table never has to change for a new feature.
 */
#pragma once

#include "types.h"
#include "version.h"
#include "status.h"

KEEL_EXTERN_C_BEGIN

typedef struct keel_host {
    uint32_t struct_size;      /* sizeof(keel_host) as the host knows it */
    keel_version abi_version;  /* the host's ABI version: same major as the plugin's, minor >= the plugin's */
    keel_str host_name;        /* "keel"; static, valid for the life of the process */
    keel_str host_version;     /* the host's own semver; static */

    /* Writes `message` to the host log at `level`, attributed to the plugin that owns `ctx`. `message` is borrowed
     * for the call and copied. Never fails; an invalid level is logged as KEEL_LOG_ERROR.
     * [thread-safe] */
    void(KEEL_ABI *log)(keel_ctx *ctx, keel_log_level level, keel_str message);

    /* Records why the call the plugin is about to return from failed. Call it on the thread that runs that call,
     * just before returning a non-KEEL_OK status; the last message wins. `message` is borrowed and copied. The host
     * reports it with the plugin's name (an HTTP client never sees it). Inside a route handler, an auth hook or a
     * command (commands.h), `ctx` may be NULL: the message is for the call running on this thread, so such a
     * function needs no ctx of its own (`host->set_error(NULL, keel_cstr("database unreachable"))`; keep `host` from
     * activate, it is static). A command's message reaches its caller with the status.
     * [thread-safe] */
    void(KEEL_ABI *set_error)(keel_ctx *ctx, keel_str message);

    /* Looks up a host service by its versioned id, e.g. KEEL_SERVICE_HTTP ("keel.http/1"). `service_id` is borrowed.
     * Returns a table owned by the host, valid until deactivate returns, or NULL when this host does not offer that
     * service or version. Never free it.
     * [thread-safe] */
    const void *(KEEL_ABI *get_service)(keel_ctx *ctx, keel_str service_id);
} keel_host;

KEEL_EXTERN_C_END
