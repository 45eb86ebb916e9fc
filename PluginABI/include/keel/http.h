/* Keel plugin ABI — HTTP routes (service "keel.http/1").
 *
 * A plugin's routes live under its own prefix, /ext/<plugin-id>/. A route's path is written relative to that
 * prefix: "/", "/items/:id" (a parameter), or a last segment "*" that matches the rest of the path. A path written
 * with a leading '=' ("=/legacy/items/:id") is a full path instead; it is accepted only under a foreign prefix the
 * plugin asked for (capability route-prefix:/legacy) and the operator granted. The host dispatches matching
 * requests to the handler on its worker threads.
 */
#pragma once

#include "identity.h"
#include "status.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_SERVICE_HTTP "keel.http/1"

/* A header or a path parameter: name and value, both borrowed. Header names are lowercase. */
typedef struct keel_http_header {
    keel_str name;
    keel_str value;
} keel_http_header;

/* A request as the host received it. Owned by the host; it and everything it points to are valid until the handler
 * (or hook) it is passed to returns. Copy what you keep. Growable. */
typedef struct keel_http_request {
    uint32_t struct_size;               /* sizeof(keel_http_request) as the host knows it */
    keel_str method;                    /* "GET", "POST", ... uppercase */
    keel_str path;                      /* full request path, e.g. "/ext/hello/items/42", canonical: no empty
                                         * segment, no trailing '/', percent-escapes decoded (the hooks see the
                                         * same path) */
    keel_str route_path;                /* the part below the plugin prefix, e.g. "/items/42" */
    keel_str query;                     /* raw query string without '?', possibly empty */
    const keel_http_header *headers;    /* headers_len request headers, names lowercase, in arrival order */
    size_t headers_len;
    const keel_http_header *params;     /* params_len path parameters, decoded: "id" → "42"; "*" → the rest */
    size_t params_len;
    const uint8_t *body;                /* body_len bytes; NULL when empty */
    size_t body_len;
    const keel_principal *principal;    /* the caller as the auth chain established it; never NULL */
    keel_str request_id;                /* unique per request, for logs */
} keel_http_request;

/* The response a handler writes. Owned by the host and valid only during the handler call: the plugin sets the
 * status, adds headers and writes the body through these functions, which copy what they are given. Nothing the
 * plugin allocated ever has to outlive the call, and the host frees nothing of the plugin's.
 * Status defaults to 200 and the body to empty. */
typedef struct keel_http_response keel_http_response;
struct keel_http_response {
    uint32_t struct_size;  /* sizeof(keel_http_response) as the host knows it */
    void *host_data;       /* the host's; do not touch */

    /* Sets the status code (100–599). Returns KEEL_OK or KEEL_ERR_INVALID_ARGUMENT. [request] */
    keel_status(KEEL_ABI *set_status)(keel_http_response *res, uint32_t status);

    /* Appends a header. `name` and `value` are borrowed and copied. Returns KEEL_OK, or KEEL_ERR_INVALID_ARGUMENT
     * for an empty name or a name or value with CR, LF or NUL. [request] */
    keel_status(KEEL_ABI *add_header)(keel_http_response *res, keel_str name, keel_str value);

    /* Appends `len` bytes at `data` to the body (borrowed, copied). Returns KEEL_OK, or KEEL_ERR_LIMIT past the
     * host's response size limit. [request] */
    keel_status(KEEL_ABI *write)(keel_http_response *res, const void *data, size_t len);
};

/* Handles one request. `user_data` is the pointer given at registration. Return KEEL_OK after writing the response;
 * any other status discards it and the host answers in its own JSON error shape: KEEL_ERR_INVALID_ARGUMENT 400,
 * KEEL_ERR_DENIED 403, KEEL_ERR_NOT_FOUND 404, KEEL_ERR_CONFLICT and KEEL_ERR_WRONG_STATE 409, KEEL_ERR_UNSUPPORTED
 * 501, KEEL_ERR_UNAVAILABLE (cannot serve now: a store it needs is down) 503, anything else 500 (hosts before
 * 2026-12-07 answered 500 for all but UNAVAILABLE). The status the host returned to the handler's last call into it
 * (passed on: `if (st) return st;`) is answered 500 (503 for UNAVAILABLE): the client is not at fault (a called
 * command's own status is that plugin's answer, answered as above).
 * The message given to set_error goes to the log, not the client
 * (answer the 4xx yourself to give the client your words); the request is not made again. Only KEEL_ERR_INTERNAL,
 * KEEL_ERR_NO_MEMORY and a status outside this header count toward disabling a misbehaving plugin.
 * Called concurrently from several threads; must not block for long.
 * [request] */
typedef keel_status(KEEL_ABI *keel_http_handler_fn)(void *user_data, const keel_http_request *req,
                                                    keel_http_response *res);

/* A route to register. Borrowed for the registration call; the host copies the strings. Growable. */
typedef struct keel_route {
    uint32_t struct_size;          /* sizeof(keel_route) */
    keel_str method;               /* "GET", "POST", ... or "*" for any method */
    keel_str path;                 /* pattern below /ext/<plugin-id>, starting with '/' (or '=' + a full path) */
    keel_http_handler_fn handler;  /* must not be NULL */
    void *user_data;               /* passed to handler; must stay valid until deactivate returns */
} keel_route;

typedef struct keel_host_http {
    uint32_t struct_size; /* sizeof(keel_host_http) as the host knows it */

    /* Adds `route` to this activation's routes. `route` and its strings are borrowed for the call.
     * Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT for a bad method, a pattern not starting with '/', an empty
     * parameter name or a NULL handler; KEEL_ERR_CONFLICT when this or another plugin already has that method and
     * pattern (the message names the owner); KEEL_ERR_DENIED without the "routes" capability; KEEL_ERR_LIMIT past
     * the plugin's route quota; KEEL_ERR_WRONG_STATE outside activate.
     * [activate-only] */
    keel_status(KEEL_ABI *register_route)(keel_ctx *ctx, const keel_route *route);
} keel_host_http;

KEEL_EXTERN_C_END
