/* Keel embedding API — run a Keel kernel inside your own program (libkeel.so).
 *
 * This header is for the program that HOSTS plugins (an appliance), not for plugins: a plugin includes keel.h.
 * Build with `cc app.c $(pkg-config --cflags --libs keel)` after `keel sdk install`.
 *
 *   keel_config cfg = KEEL_CONFIG_INIT;              cfg.plugins_dir = "/usr/lib/appliance/plugins";
 *   cfg.state = KEEL_STATE_IN_MEMORY;                 keel *k;
 *   if (keel_open(&cfg, &k) != KEEL_OK) { fprintf(stderr, "%s\n", keel_errmsg()); return 1; }
 *   keel_start(k);  keel_enable(k, "hello");
 *   keel_request req = KEEL_REQUEST_INIT;             req.method = "GET"; req.path = "/ext/hello/greet/ada";
 *   keel_response *res;  keel_dispatch(k, &req, &res);  ... res->status, res->body ...  keel_response_free(res);
 *   keel_close(k);
 *
 * RULES
 * - Handles. A `keel *` is an opaque token made by keel_open and ended by keel_close; the library never dereferences
 *   it. A NULL, made-up or closed handle is refused with KEEL_MISUSE (never a crash), so a use after close is
 *   caught, not undefined. Handles are never reused within a process.
 * - Strings are NUL-terminated UTF-8 (`const char *`), unlike the plugin ABI's keel_str. Every pointer argument is
 *   borrowed for the duration of the call: the library copies what it keeps.
 * - Ownership of results. A result the library allocates is the caller's and has exactly one destructor, named
 *   beside it: keel_response_free, keel_plugin_list_free, keel_free. Each destructor accepts NULL.
 * - Errors. Every call that can fail returns a keel_status (status.h: KEEL_OK, KEEL_ERR_*, plus KEEL_MISUSE below).
 *   keel_errmsg() says why the calling thread's last call failed.
 * - Threads. The kernel runs on threads of its own (a lifecycle thread, an event thread per handle, the HTTP server's
 *   threads); Swift's cooperative pool is never blocked by a call. Calls block the calling thread until done.
 *   THREAD TAGS (the last line of every function's comment):
 *     [any-thread]  any thread, concurrently with any other call, from inside a callback too.
 *     [no-callback] any thread of the embedder, concurrently with other calls on the same handle; made from inside
 *                   a callback of this library, from plugin code it runs, or from a Swift task, it returns
 *                   KEEL_MISUSE and does nothing (see Re-entry).
 * - Re-entry. A call made from inside any callback of this library (log, event) or from plugin code the library is
 *   running on that thread (a route handler during keel_dispatch) returns KEEL_MISUSE and does nothing: such a call
 *   could wait for the very thread it runs on. Do the work on a thread of your own. A call made from a Swift task
 *   (Swift's cooperative pool) is refused the same way: blocking there can stall the whole Swift runtime.
 * - Closing. keel_close waits for the calls in progress on other threads, stops the HTTP server, deactivates the
 *   plugins in reverse order and delivers no callback after it returns. A program that exits without keel_close is
 *   allowed: plugins are not deactivated, the state store stays consistent (SQLite transactions), and the library's
 *   memory stays reachable (no leak is reported by LeakSanitizer).
 */
#pragma once

#include <stddef.h>
#include <stdint.h>
#include "private/macros.h"
#include "status.h"
#include "types.h"

KEEL_EXTERN_C_BEGIN

/* Status codes of the embedding API, in addition to status.h's (same keel_status type, never renumbered). */
#define KEEL_MISUSE 100 /* a NULL, unknown or closed handle; a call from inside a callback or a Swift task */

/* The opaque kernel handle. CONSTRUCTOR: keel_open. DESTRUCTOR: keel_close. */
typedef struct keel keel;

/* The value of keel_config.state for a state store that lives in memory: nothing is written to disk (no state
 * file, no activation mark, no file copies of plugin libraries, which are copied into memory), and the state ends
 * with the handle. For appliances with read-only disks. */
#define KEEL_STATE_IN_MEMORY ":memory:"

/* Receives one log line of the kernel or a plugin, at KEEL_LOG_DEBUG ... KEEL_LOG_ERROR (types.h). `plugin_id` is NULL when the line concerns no plugin. Both
 * strings are borrowed for the call. Calls are serialised (never two at once) and never made after keel_close
 * returns. API calls made from inside it return KEEL_MISUSE. It must return quickly: it may run on any thread of the
 * library (the lifecycle thread, the HTTP server's, Swift's cooperative pool) or on the caller of keel_dispatch.
 * [any thread of the library] */
typedef void (*keel_log_fn)(void *user_data, keel_log_level level, const char *plugin_id, const char *message);

/* How keel_open sets up a kernel. Start from KEEL_CONFIG_INIT; fields grow only at the end (struct_size). */
typedef struct keel_config {
    uint32_t struct_size;       /* sizeof(keel_config), set by KEEL_CONFIG_INIT */
    const char *plugins_dir;    /* the plugin folder (one sub-folder per bundle), which must exist; NULL or "": none */
    const char *state;          /* the SQLite state file (created if missing, in a folder that must exist),
                                   KEEL_STATE_IN_MEMORY, or a
                                   postgres://user@host:port/database URL (a state several hosts share; password in
                                   $PGPASSWORD; this host's own files in $KEEL_HOST_DIR, else ./.keel/host);
                                   NULL or "": in memory */
    keel_log_fn log;            /* NULL: one line per record to stderr */
    void *log_user_data;        /* passed to `log`; must stay valid until keel_close returns */
    const char *const *bundles; /* bundle folders registered by path, in addition to plugins_dir's (each must be a
                                   folder); may be NULL */
    size_t bundle_count;        /* entries in `bundles` */
    int32_t trust_all;          /* non-zero: every capability a manifest asks for is granted (authenticate and
                                   authorize hooks included); 0: those two need keel_grant */
    /* Budgets in seconds, from 0 (the default) to 86400; anything else (negative, NaN, infinite) is refused by keel_open.
     * Calls cannot be stopped in-process: a call over its budget is logged. */
    double handler_budget_s;    /* a route handler slower than this is logged as slow (default 2) */
    double hook_budget_s;       /* an auth hook slower than this counts as a deny (default 0.25) */
    int32_t failure_threshold;  /* failed calls in a row after which a plugin is disabled (default 20) */
    double drain_timeout_s;     /* how long deactivation waits for a plugin's calls in flight (default 5) */
    /* Since 1.1 (read only when struct_size covers them; a program built with the fields above alone still opens). */
    int32_t records_crashes;    /* non-zero: when the process dies of SIGSEGV, SIGBUS, SIGILL, SIGFPE or SIGABRT in
                                   plugin code, a crash record beside the state file (<state>.crash) names the plugin,
                                   one line on stderr says so, and the next start quarantines it (as keel serve). The
                                   handler is process-wide (the last kernel started names the file); needs a state file */
    const char *probe;          /* a keel binary (e.g. the one `keel sdk install` came with): every new build is first
                                   loaded in a child `keel probe`, so one that crashes, exits or hangs while loading never
                                   reaches this process; NULL: builds are loaded directly */
} keel_config;

#define KEEL_CONFIG_INIT { (uint32_t)sizeof(keel_config), NULL, NULL, NULL, NULL, NULL, 0, 0, 0, 0, 0, 0, 0, NULL }

/* One header of a request or a response. */
typedef struct keel_header {
    const char *name;
    const char *value;
} keel_header;

/* A request for keel_dispatch. Start from KEEL_REQUEST_INIT; everything is borrowed for the call. */
typedef struct keel_request {
    uint32_t struct_size;        /* sizeof(keel_request), set by KEEL_REQUEST_INIT */
    const char *method;          /* "GET", "POST", ... */
    const char *path;            /* "/ext/<plugin>/...", may end in "?query" */
    const keel_header *headers;  /* may be NULL when header_count is 0 */
    size_t header_count;
    const void *body;            /* may be NULL when body_len is 0 */
    size_t body_len;
    const char *tenant;          /* the tenant the caller names for itself (HTTP's X-Keel-Tenant); NULL: none */
} keel_request;

#define KEEL_REQUEST_INIT { (uint32_t)sizeof(keel_request), NULL, NULL, NULL, 0, NULL, 0, NULL }

/* A response from keel_dispatch: the caller's, freed with keel_response_free (all of it in one call). */
typedef struct keel_response {
    int32_t status;              /* HTTP status code */
    const keel_header *headers;  /* header_count entries */
    size_t header_count;
    const unsigned char *body;   /* body_len bytes, followed by a NUL that is not counted */
    size_t body_len;
} keel_response;

/* One plugin as keel_plugins lists it. */
typedef struct keel_plugin_info {
    const char *id;
    const char *name;
    const char *version;
    const char *status;  /* "installed", "enabled", "disabled", "failed", "missing", ... */
    int32_t enabled;     /* non-zero when the operator wants it enabled */
    const char *reason;  /* why it failed or what is wrong; NULL when nothing is */
} keel_plugin_info;

/* The list keel_plugins returns: the caller's, freed with keel_plugin_list_free. */
typedef struct keel_plugin_list {
    size_t count;
    const keel_plugin_info *items;  /* sorted by id */
} keel_plugin_list;

/* Event kinds. New kinds may be added: ignore the ones you do not know. */
#define KEEL_EVENT_COMMAND      1 /* a change was asked for (enable, disable, grant, ...): `command`, `message` on failure */
#define KEEL_EVENT_PLUGIN_STATE 2 /* a plugin's status changed: `plugin_id`, `status`, `message` (its reason) */

/* One event. Every pointer is borrowed for the duration of the callback. */
typedef struct keel_event {
    uint32_t struct_size;   /* sizeof(keel_event) of the library that made it */
    int32_t kind;           /* KEEL_EVENT_* */
    const char *plugin_id;  /* the plugin it concerns, or NULL */
    const char *command;    /* KEEL_EVENT_COMMAND: "enable", "disable", "grants", ...; else NULL */
    const char *status;     /* KEEL_EVENT_PLUGIN_STATE: the new status; else NULL */
    const char *message;    /* a failure's reason, a failed plugin's reason; NULL on success */
} keel_event;

/* Receives events on the handle's event thread, in order, one at a time. An event is delivered after the change it
 * tells of, possibly after the call that made it returned, and only to the subscriptions made before that change
 * (and not ended since: keel_unsubscribe drops what was not yet delivered). API calls made from inside it return
 * KEEL_MISUSE. [the handle's event thread] */
typedef void (*keel_event_fn)(void *user_data, const keel_event *event);

/* The embedding API's version ("1.1.0"; keel.pc says the same), as sqlite3_libversion. It moves with this header,
 * not with the host (`keel --version`). The string is static. [any-thread] */
KEEL_EXPORT const char *keel_libversion(void);

/* Why the calling thread's last call failed: "" when it succeeded or there was none. Owned by the library and valid
 * until the calling thread's next call into the library (keel_errmsg and keel_version aside). [any-thread] */
KEEL_EXPORT const char *keel_errmsg(void);

/* Opens a kernel: reads the configuration, opens (creating and migrating) the state store. Loads nothing yet: call
 * keel_start, which reconciles the plugin folder with the state and activates what is enabled (calls made before it
 * work on the state as stored: a keel_enable activates its plugin at once). `config` is borrowed for the call (its strings are copied; log_user_data is kept).
 * Returns KEEL_OK and the handle in *out_kernel; KEEL_ERR_INVALID_ARGUMENT when config or out_kernel is NULL,
 * struct_size is too small, plugins_dir or an entry of bundles names no folder, or state is a path whose folder is
 * not there or a URL other than postgres://; KEEL_ERR_INTERNAL when the state store cannot be used (keel_errmsg names the file and
 * the reason: one this process may not write is refused here), or when another kernel or a `keel serve` holds that state file ("another keel server is using it",
 * with its pid). On failure *out_kernel is NULL.
 * A kernel on a state file owns it until keel_close, as `keel serve` does: the `keel` CLI pointed at the same file
 * (keel plugins enable, grant, list, ...) reaches this kernel through the file's command queue instead of changing
 * the file beside it. [no-callback] */
KEEL_EXPORT keel_status keel_open(const keel_config *config, keel **out_kernel);

/* Scans the plugin folder and the registered bundles, records them, and activates every plugin the state says is
 * enabled (dependencies first). A plugin that fails is recorded failed with its reason; the others start anyway.
 * Returns KEEL_OK; KEEL_MISUSE for a bad handle; KEEL_ERR_WRONG_STATE when already started. [no-callback] */
KEEL_EXPORT keel_status keel_start(keel *k);

/* Enables plugin `id` (persisted), loading and activating it now. Emits KEEL_EVENT_COMMAND, and
 * KEEL_EVENT_PLUGIN_STATE for each plugin whose status changed.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND for an unknown plugin; KEEL_ERR_CONFLICT when a dependency is not enabled or
 * an interface it requires has no provider (keel_errmsg names it), or a route or menu id it registers is taken;
 * KEEL_ERR_INTERNAL when it fails to load or activate (it is then recorded failed; keel_errmsg says why);
 * KEEL_ERR_INVALID_ARGUMENT for a NULL id; KEEL_MISUSE for a bad handle. `id` is borrowed. [no-callback] */
KEEL_EXPORT keel_status keel_enable(keel *k, const char *id);

/* Disables plugin `id` (persisted): what it registered disappears at once, then it is deactivated. With `cascade`
 * non-zero, the enabled plugins that depend on it are disabled first; with 0, such a dependent makes it fail.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND; KEEL_ERR_CONFLICT when a dependent blocks it; KEEL_ERR_INVALID_ARGUMENT;
 * KEEL_MISUSE. `id` is borrowed. [no-callback] */
KEEL_EXPORT keel_status keel_disable(keel *k, const char *id, int32_t cascade);

/* Reloads plugin `id` from its bundle's current files: the new build is loaded and swapped in at once (requests
 * already running finish on the old one); when it fails to load or activate, the old build keeps serving and the
 * failure is recorded (keel_errmsg says why). A plugin that is not active is only re-read. A running plugin whose
 * bundle folder is gone is stopped and recorded missing (KEEL_ERR_NOT_FOUND, keel_errmsg says so). Emits KEEL_EVENT_COMMAND.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND; KEEL_ERR_INTERNAL for a failed new build; KEEL_ERR_INVALID_ARGUMENT for a
 * NULL id; KEEL_MISUSE. `id` is borrowed. [no-callback] Since 1.1 of this library. */
KEEL_EXPORT keel_status keel_reload(keel *k, const char *id);

/* Grants a sensitive capability ("authenticate", "authorize", "route-prefix:/legacy") to plugin `id`, as the
 * operator would; it takes effect at the plugin's next activation.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND; KEEL_ERR_INVALID_ARGUMENT (NULL, an unknown capability, or one the plugin's
 * plugin.yaml does not ask for: nothing changed); KEEL_MISUSE. Strings are borrowed. [no-callback] */
KEEL_EXPORT keel_status keel_grant(keel *k, const char *id, const char *capability);

/* Lists every known plugin with its status. *out_list is the caller's: free it with keel_plugin_list_free.
 * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT when out_list is NULL; KEEL_MISUSE. [no-callback] */
KEEL_EXPORT keel_status keel_plugins(keel *k, keel_plugin_list **out_list);

/* Frees a list from keel_plugins. NULL is a no-op. [any-thread] */
KEEL_EXPORT void keel_plugin_list_free(keel_plugin_list *list);

/* Serves one request from the composed plugin routes, without HTTP, with the auth chain applied as for an HTTP
 * request: authenticate hooks (the first principal wins; a failing hook denies), the plugin's tenants, authorize
 * hooks and role grants (any deny wins). The handler runs on the calling thread. The host's own answers are JSON
 * {"error":{"code","message"}}: 400 (a method that is no HTTP token, a path that does not start with '/' or has '.'
 * or '..' segments, an encoded '/', ...), 404 (no route, or not
 * for the caller's tenant), 403 (denied), 503 (being stopped), and for a handler's error status what HTTP answers
 * (http.h: a refusal's 4xx, 501, 503, otherwise 500; the reason is logged, not answered).
 * `request` is borrowed; *out_response is the caller's: free it with keel_response_free.
 * Returns KEEL_OK whenever *out_response is set (whatever its status); KEEL_ERR_INVALID_ARGUMENT when request,
 * its method or path, or out_response is NULL, or a header or the body is NULL with a count; KEEL_MISUSE.
 * [no-callback] */
KEEL_EXPORT keel_status keel_dispatch(keel *k, const keel_request *request, keel_response **out_response);

/* Frees a response from keel_dispatch. NULL is a no-op. [any-thread] */
KEEL_EXPORT void keel_response_free(keel_response *response);

/* Calls plugin `plugin`'s command `name` as the operator (an admin), with `argc` arguments given as text (each
 * converted to the type the command's signature declares), on the calling thread. *out_json receives the result as
 * JSON text, the caller's: free it with keel_free. Emits KEEL_EVENT_COMMAND.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND for an unknown command or inactive plugin; KEEL_ERR_INVALID_ARGUMENT for a
 * wrong argument (keel_errmsg names it) or a NULL pointer; KEEL_ERR_INTERNAL when the command failed; KEEL_MISUSE.
 * Strings are borrowed. [no-callback] */
KEEL_EXPORT keel_status keel_command(keel *k, const char *plugin, const char *name, int32_t argc,
                                     const char *const *argv, char **out_json);

/* Frees a string the library returned (keel_command's result). NULL is a no-op. [any-thread] */
KEEL_EXPORT void keel_free(void *pointer);

/* Subscribes `fn` to the kernel's events. `user_data` must stay valid until keel_unsubscribe or keel_close returns.
 * *out_token (may be NULL) receives the subscription for keel_unsubscribe.
 * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT for a NULL fn; KEEL_MISUSE. [no-callback] */
KEEL_EXPORT keel_status keel_subscribe(keel *k, keel_event_fn fn, void *user_data, int64_t *out_token);

/* Ends a subscription; after it returns, `fn` is not called again for it.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND for an unknown token; KEEL_MISUSE. [no-callback] */
KEEL_EXPORT keel_status keel_unsubscribe(keel *k, int64_t token);

/* Serves HTTP on `host`:`port` (port 0 picks a free one, reported in *out_port, which may be NULL): plugin routes
 * under /ext/, the admin API under /api/v1/ (admin token from $KEEL_ADMIN_TOKEN or the state store; a state in memory
 * holds none, so set $KEEL_ADMIN_TOKEN before this call, or the admin API answers 401 to all, which the log says), /healthz and
 * the console, on the library's own threads until keel_close. The process's signals are left alone.
 * Returns KEEL_OK once it listens; KEEL_ERR_WRONG_STATE when already serving (or another thread is starting this
 * handle's server); KEEL_ERR_UNAVAILABLE when the address cannot be bound; KEEL_ERR_INVALID_ARGUMENT; KEEL_MISUSE.
 * `host` is borrowed. [no-callback] */
KEEL_EXPORT keel_status keel_serve(keel *k, const char *host, int32_t port, int32_t *out_port);

/* Offers `table` to plugins as the provider of `interface` ("appliance.gpio/1", version "1.0.0" or NULL for
 * major.0.0), under the provider id "keel", as one plugin offers services to another (services.h). The table must
 * start with `uint32_t struct_size` and stay valid, unchanged, until the process ends; its functions are called on
 * plugin threads, concurrently. Plugins requiring the interface can activate from then on.
 * Returns KEEL_OK; KEEL_ERR_CONFLICT when the host already provides it; KEEL_ERR_INVALID_ARGUMENT for a malformed
 * id or version or a NULL table; KEEL_MISUSE. Strings are borrowed. [no-callback] */
KEEL_EXPORT keel_status keel_provide_service(keel *k, const char *interface, const char *version, const void *table);

/* Chooses which provider serves `interface` ("gitops.sync/1") from now on, as `keel services use` does: `provider`
 * is a plugin id, "keel" for the table this program offered with keel_provide_service, or NULL to go back to the
 * ranking rule (a plugin that provides it outranks the program's table unless this names one). The choice is
 * stored with the state; leases taken before keep their provider until released.
 * Returns KEEL_OK; KEEL_ERR_NOT_FOUND when no plugin `provider` is installed; KEEL_ERR_CONFLICT when it does not
 * provide the interface, when "keel" is named before keel_provide_service offered a table for it, or when nothing
 * installed knows the interface; KEEL_ERR_INVALID_ARGUMENT for a NULL or empty interface; KEEL_MISUSE. Strings are
 * borrowed.
 * (Since 1.1.) [no-callback] */
KEEL_EXPORT keel_status keel_use_provider(keel *k, const char *interface, const char *provider);

/* Closes the handle: refuses new calls on it (KEEL_MISUSE), waits for the calls in progress, stops the HTTP server
 * (requests in flight finish), deactivates the plugins in reverse order, stops the event thread, and calls no
 * callback after it returns. NULL is a harmless no-op (KEEL_OK).
 * Returns KEEL_OK; KEEL_MISUSE for an unknown or already closed handle. [no-callback] */
KEEL_EXPORT keel_status keel_close(keel *k);

KEEL_EXTERN_C_END
