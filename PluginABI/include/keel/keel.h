/* Keel plugin ABI 1.1 — the only header a plugin includes.
 *
 * Headers, in reading order:
 *   version.h   KEEL_ABI_VERSION_*, keel_version, the compatibility rule
 *   status.h    keel_status and its codes
 *   types.h     keel_str, keel_ctx, KEEL_HAS_FIELD, log levels
 *   host.h      keel_host: log, set_error, get_service
 *   entry.h     keel_plugin (the descriptor) and KEEL_PLUGIN_ENTRY, the one exported symbol
 *   identity.h  keel_principal: who is calling
 *   http.h      service "keel.http/1": routes, requests, responses
 *   menu.h      service "keel.menu/1": console navigation entries
 *   auth.h      service "keel.auth/1": authenticate and authorize hooks, permission checks
 *   config.h    service "keel.config/1": the plugin's configuration, validated by the host
 *   services.h  service "keel.services/1" (1.1): interfaces plugins provide to each other, leases, listeners
 *   commands.h  service "keel.commands/1" (1.1): plain C functions called by name with checked arguments
 *   health.h    extension "keel.health/1": a health check the host calls on a schedule, under a budget
 *
 * RULES
 * - Versions: a plugin built for ABI major.minor loads in a host with the same major and minor >= the plugin's.
 * - Growth (the one rule): a published declaration never changes, except that a struct starting with
 *   `uint32_t struct_size` may gain new fields at its end in a later minor version. No field is ever removed,
 *   reordered, renamed or retyped. Whoever fills a struct sets struct_size to the sizeof it was compiled with;
 *   whoever reads one reads only the bytes struct_size covers (KEEL_HAS_FIELD) and treats fields beyond them as
 *   not given (zero). The host does so for every struct a plugin fills in, so a plugin built against 1.0 loads in
 *   every 1.x host. Larger features arrive as new services ("keel.x/1") or a new version of one ("keel.http/2").
 * - Strings are keel_str: UTF-8, pointer + length, not NUL-terminated, borrowed for the duration of the call they
 *   are passed to unless a comment says otherwise. Whoever keeps one copies it.
 * - Ownership: nothing is ever freed on the other side of the boundary. Data the host hands over (requests,
 *   principals, tables) is the host's; data the plugin hands over (descriptor, registrations) is the plugin's and
 *   is copied by the host. Output goes through host-owned writers (keel_http_response, keel_principal_builder).
 * - Errors: every call that can fail returns a keel_status. Before returning an error, a plugin may explain it with
 *   host->set_error(ctx, msg). No C++ exception, longjmp or Swift error may cross the boundary: catch at the edge.
 *
 * THREAD TAGS (the last line of every function's comment)
 *   [load]           called once per loaded copy of the library, first, never concurrently with anything else.
 *   [lifecycle]      activate / deactivate of one generation (one load of the library): never concurrent with
 *                    each other, possibly on different OS threads over time; may block briefly. Across a reload,
 *                    the NEW generation's activate may run while the OLD one is still draining requests or running
 *                    its deactivate on another thread. Each generation is a private copy of the library with its
 *                    own globals, so only resources outside the process (files, sockets, ports) are shared: open
 *                    them so that two generations can hold them at once, or release them in deactivate and retry.
 *   [activate-only]  a host function valid only while the plugin's activate runs, on that thread; registrations
 *                    made then are published together when activate returns KEEL_OK. Elsewhere it returns
 *                    KEEL_ERR_WRONG_STATE.
 *   [request]        any host worker thread, concurrently with other [request] calls of the same plugin; must not
 *                    block for long. Never called before activate returns or after deactivate starts.
 *   [thread-safe]    any thread, any time between the start of activate and the end of deactivate.
 *
 * MINIMAL PLUGIN
 *   #include <keel/keel.h>
 *   static keel_status hello(void *ud, const keel_http_request *req, keel_http_response *res) {
 *       (void)ud; (void)req;
 *       return res->write(res, "hello\n", 6);
 *   }
 *   static keel_status activate(const keel_host *host, keel_ctx *ctx) {
 *       const keel_host_http *http = (const keel_host_http *)host->get_service(ctx, keel_cstr(KEEL_SERVICE_HTTP));
 *       if (!http) return KEEL_ERR_UNSUPPORTED;
 *       keel_route r = { sizeof r, KEEL_STR("GET"), KEEL_STR("/"), hello, NULL };
 *       return http->register_route(ctx, &r);
 *   }
 *   static const keel_plugin plugin = {
 *       sizeof(keel_plugin), KEEL_ABI_VERSION_INIT, KEEL_STR("hello"), KEEL_STR("1.0.0"), 0, activate, NULL, NULL,
 *   };
 *   KEEL_PLUGIN_ENTRY(plugin)
 */
#pragma once

#include "version.h"
#include "status.h"
#include "types.h"
#include "host.h"
#include "entry.h"
#include "identity.h"
#include "http.h"
#include "menu.h"
#include "auth.h"
#include "config.h"
#include "services.h"
#include "commands.h"
#include "health.h"
