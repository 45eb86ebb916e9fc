/* Keel plugin ABI 1.1 — commands: plain C functions called by name (service "keel.commands/1").
 *
 * A command is an exported C function of the plugin, declared in plugin.yaml with a signature. The host finds it with
 * dlsym, prepares the call once per generation (libffi), checks every call's arguments against the signature, and
 * calls it: from the CLI (`keel call calc add 2 40`), the admin API (`POST /api/v1/plugins/calc/commands/add`
 * `{"args": [2, 40]}`), the console, and other plugins (through this service). The plugin writes no marshalling.
 *
 * plugin.yaml
 *   commands:
 *     - name: add                          # [a-z][a-z0-9_-]*, unique in the plugin
 *       symbol: calc_add                   # the exported function (KEEL_EXPORT)
 *       signature: "(i64, i64) -> i64"
 *       description: Adds two numbers.
 *       permission: calc.math:run          # a permission item the plugin declares; without one, admins only
 *       probe: [2, 40]                     # optional: sample arguments the probe calls it with
 *   calls: [calc.add]                      # commands of other plugins this plugin calls (plugin.command)
 *
 * Signatures: "(T, ...) -> R". Argument types and the C type the function takes:
 *   i32 int32_t   i64 int64_t   u32 uint32_t   u64 uint64_t   f64 double   bool bool (C99 _Bool)
 *   str keel_str (UTF-8, borrowed for the call)   bytes keel_bytes (borrowed for the call)
 * Result types: void, i32, i64, u32, u64, f64, bool, status (a keel_status: KEEL_OK or an error), and
 * status(str) / status(json): the function returns a keel_status and takes one more, last, parameter
 * `keel_output *out`, a host-owned writer for its result text (JSON for status(json); checked by the host).
 *   int64_t calc_add(int64_t a, int64_t b);                          // (i64, i64) -> i64
 *   keel_status rotate_keys(keel_str reason, keel_output *out);      // (str) -> status(json)
 *
 * The signature is the author's contract: the host cannot see a C function's real parameters, so a signature that
 * lies about the function is undefined behaviour. `probe:` lets `keel plugins inspect` and the load-time probe call
 * the command in a child process first.
 *
 * Commands run like route handlers: [request] threads, concurrently; a reload lets calls in flight finish on the old
 * generation; they are timed against the handler budget, and failed calls (KEEL_ERR_INTERNAL, KEEL_ERR_NO_MEMORY)
 * count toward disabling a misbehaving plugin; a refusal of the call (KEEL_ERR_INVALID_ARGUMENT, _DENIED, _NOT_FOUND,
 * _CONFLICT, _UNSUPPORTED, _WRONG_STATE, _LIMIT, _UNAVAILABLE) does not, so bad input cannot switch a plugin off.
 */
#pragma once

/* A command's `bool` is C's: included here, so that a plugin with a bool argument or result builds from keel.h alone
 * (the templates' -Werror build stopped at "unknown type name 'bool'" without it). */
#include <stdbool.h>
#include "identity.h"
#include "status.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_SERVICE_COMMANDS "keel.commands/1"

/* Bytes: a pointer and a length, borrowed for the call. {NULL, 0} is empty. */
typedef struct keel_bytes {
    const uint8_t *ptr;
    size_t len;
} keel_bytes;

/* Where a status(str) or status(json) command writes its result. Owned by the host, valid during the call. */
typedef struct keel_output keel_output;
struct keel_output {
    uint32_t struct_size; /* sizeof(keel_output) as the host knows it */
    void *host_data;      /* the host's; do not touch */

    /* Appends `len` bytes at `data` (borrowed, copied). Returns KEEL_OK, KEEL_ERR_INVALID_ARGUMENT (NULL data with a
     * length), or KEEL_ERR_LIMIT past 1 MiB. [request] */
    keel_status(KEEL_ABI *write)(keel_output *out, const void *data, size_t len);
};

typedef struct keel_host_commands {
    uint32_t struct_size; /* sizeof(keel_host_commands) as the host knows it */

    /* Calls command `name` of plugin `plugin_id` on behalf of `principal`, which must be the `req->principal` the host
     * handed to the route handler running on this thread, and `ctx` that handler's own (anything else, a copy
     * included, or another plugin's code the handler calls, is KEEL_ERR_DENIED: a plugin acts only for the caller it
     * serves), with `args_json`, a JSON array of the arguments (numbers, true/false, strings; bytes as base64
     * strings). The command must be declared under calls: in this plugin's plugin.yaml ("calc.add"), and the
     * principal must hold the command's permission. The result is written as JSON text (a number, true/false, a
     * string, a JSON value, or null) into `out` (`out_cap` bytes; *out_len set to the length, or to the length
     * needed when it does not fit).
     * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (NULL pointers, args not a JSON array of the right count and types;
     * the message names the argument); KEEL_ERR_DENIED (not declared under calls:, not the handler's principal,
     * or the principal lacks the permission; logged); KEEL_ERR_NOT_FOUND (no such plugin or command, or the plugin is not active);
     * KEEL_ERR_LIMIT (the result does not fit in out_cap); or the error status the command itself returned.
     * [request] */
    keel_status(KEEL_ABI *call)(keel_ctx *ctx, keel_str plugin_id, keel_str name, keel_str args_json,
                                const keel_principal *principal, char *out, size_t out_cap, size_t *out_len);
} keel_host_commands;

KEEL_EXTERN_C_END
