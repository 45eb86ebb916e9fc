/* Keel plugin ABI — the plugin's health check (extension "keel.health/1").
 *
 * A plugin that can tell whether it is able to do its work (its database answers, its upstream is reachable, its
 * worker thread is alive) returns this table from its descriptor's get_extension("keel.health/1"). The host calls
 * `check` on a schedule (`keel serve --health-interval`, every 30 s by default) on a thread of its own, never on a
 * thread that serves requests, and shows the last result in GET /api/v1/plugins/<id>/health, `keel plugins health ID`
 * and the metric keel_plugin_healthy. A plugin without the extension has no check: its health is what the host sees
 * of its requests.
 *
 * Budget: a check that has not returned within the host's budget (`--health-budget-ms`, 1000 by default) is reported
 * unhealthy and counted as an overrun. The host does not wait for it and does not start another check of the same
 * plugin until it returns; it is never cancelled, so a check that never returns keeps one host thread for good.
 *
 * What a check may do: read the plugin's own state, make short calls of its own (a ping to its database), log through
 * host->log and explain a failure with host->set_error. What it must not do: block for long, change state, or call
 * into the plugin's own routes. Its result is shown to the operator only; the host does not disable, restart or
 * route around a plugin whose check fails.
 *
 * Growth: the table starts with struct_size; later minor versions may append fields (the one rule in keel.h).
 * An older host never asks for this extension, so a plugin that provides it loads in every 1.x host.
 */
#pragma once

#include "status.h"
#include "types.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_EXTENSION_HEALTH "keel.health/1"

/* The plugin's half of "keel.health/1". Owned by the plugin, constant, valid while the library is loaded (the rule
 * for every get_extension table); the host reads only the first struct_size bytes. */
typedef struct keel_health_v1 {
    uint32_t struct_size; /* sizeof(keel_health_v1) as the plugin was compiled with it */

    /* Tells whether the plugin is healthy now: KEEL_OK for healthy; any other status for unhealthy, explained with
     * host->set_error(ctx, msg) before returning (the message is shown to the operator as the check's reason; it
     * must not contain secrets). `ctx` is the activation's, as in activate; it is valid for the call only.
     * Never called before activate returned KEEL_OK, nor once deactivate has started; never concurrently with
     * another check of the same activation, but concurrently with its handlers and hooks.
     * [request] */
    keel_status(KEEL_ABI *check)(keel_ctx *ctx);
} keel_health_v1;

KEEL_EXTERN_C_END
