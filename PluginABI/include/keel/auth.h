/* Keel plugin ABI — the auth chain (service "keel.auth/1").
 *
 * Every request under /api/ and /ext/ passes the authenticate hooks of all enabled plugins in activation order: the
 * first that establishes a principal wins; when none does, the caller is anonymous. Then every authorize hook is
 * asked: any DENY wins; otherwise an ALLOW is needed where the host requires one (e.g. its admin API). A hook that
 * returns an error status counts as DENY: the chain fails closed.
 */
#pragma once

#include "http.h"

KEEL_EXTERN_C_BEGIN

#define KEEL_SERVICE_AUTH "keel.auth/1"

typedef int32_t keel_auth_decision;
#define KEEL_AUTH_ABSTAIN 0 /* no opinion */
#define KEEL_AUTH_ALLOW   1
#define KEEL_AUTH_DENY    2

/* Where an authenticate hook writes the principal it recognised. Owned by the host, valid during the hook call. */
typedef struct keel_principal_builder keel_principal_builder;
struct keel_principal_builder {
    uint32_t struct_size; /* sizeof(keel_principal_builder) as the host knows it */
    void *host_data;      /* the host's; do not touch */

    /* Sets the principal. Strings are borrowed and copied; `id` must not be empty; an empty tenant means the
     * default tenant. UTF-8 without control characters, line separators or bidirectional overrides and isolates
     * (line breaks, ESC, U+202E): such text would forge lines in the audit trail and the log. Returns KEEL_OK or
     * KEEL_ERR_INVALID_ARGUMENT. [request] */
    keel_status(KEEL_ABI *set_identity)(keel_principal_builder *b, keel_str id, keel_str display_name,
                                        keel_str tenant);

    /* Adds a role (borrowed, copied; as set_identity's text, and no comma: a proxied app reads the roles as one
     * comma-separated list). Returns KEEL_OK, KEEL_ERR_INVALID_ARGUMENT, or KEEL_ERR_LIMIT past 64. [request] */
    keel_status(KEEL_ABI *add_role)(keel_principal_builder *b, keel_str role);
};

/* Recognises the caller of `req` (e.g. from a header). Return KEEL_OK after set_identity to establish a principal,
 * KEEL_OK without it to abstain; any other status denies the request.
 * [request] */
typedef keel_status(KEEL_ABI *keel_authenticate_fn)(void *user_data, const keel_http_request *req,
                                                    keel_principal_builder *out);

/* A question for the authorize hooks: may `principal` do `action` on `resource`? Owned by the host, borrowed for
 * the call. Growable. */
typedef struct keel_authz_request {
    uint32_t struct_size;             /* sizeof(keel_authz_request) as the host knows it */
    const keel_principal *principal;  /* never NULL */
    keel_str action;                  /* e.g. "GET", "enable", "read" */
    keel_str resource;                /* e.g. "/ext/hello/items/42", "plugin:hello" */
    const keel_http_request *http;    /* the request being served, or NULL outside one */
} keel_authz_request;

/* Decides `q`. Write KEEL_AUTH_ALLOW, KEEL_AUTH_DENY or KEEL_AUTH_ABSTAIN to *out_decision and return KEEL_OK; any
 * other status counts as DENY.
 * [request] */
typedef keel_status(KEEL_ABI *keel_authorize_fn)(void *user_data, const keel_authz_request *q,
                                                 keel_auth_decision *out_decision);

/* Hooks to register. Borrowed for the registration call; the host copies `name`. Growable. */
typedef struct keel_authenticator {
    uint32_t struct_size;               /* sizeof(keel_authenticator) */
    keel_str name;                      /* unique within the plugin, for logs */
    keel_authenticate_fn authenticate;  /* must not be NULL */
    void *user_data;                    /* passed back; valid until deactivate returns */
} keel_authenticator;

typedef struct keel_authorizer {
    uint32_t struct_size;               /* sizeof(keel_authorizer) */
    keel_str name;                      /* unique within the plugin, for logs */
    keel_authorize_fn authorize;        /* must not be NULL */
    void *user_data;                    /* passed back; valid until deactivate returns */
} keel_authorizer;

typedef struct keel_host_auth {
    uint32_t struct_size; /* sizeof(keel_host_auth) as the host knows it */

    /* Adds an authenticate hook. Returns KEEL_OK; KEEL_ERR_INVALID_ARGUMENT (NULL hook, empty name);
     * KEEL_ERR_CONFLICT (name taken in this plugin); KEEL_ERR_DENIED without the "authenticate" capability;
     * KEEL_ERR_LIMIT past the hook quota; KEEL_ERR_WRONG_STATE outside activate.
     * [activate-only] */
    keel_status(KEEL_ABI *register_authenticator)(keel_ctx *ctx, const keel_authenticator *hook);

    /* Adds an authorize hook. Same returns as register_authenticator, with the "authorize" capability.
     * [activate-only] */
    keel_status(KEEL_ABI *register_authorizer)(keel_ctx *ctx, const keel_authorizer *hook);

    /* Asks the host whether `principal` may do `action` on `resource` (all borrowed for the call). A permission
     * item is asked as action = its action (e.g. "view"), resource = its key (e.g. "greeter.greetings"); a plugin
     * may only ask about keys it declares under `permissions:` in plugin.yaml (anything else is denied and logged).
     * Writes KEEL_AUTH_DENY when any authorize hook denies (or fails); else KEEL_AUTH_ALLOW when a role of the
     * principal grants "key:action" or "key:*" (the built-in admin role, which the admin token carries, grants
     * everything) or some hook allowed; else KEEL_AUTH_DENY. The hooks see `http` = NULL for such a question, even
     * when it is asked from inside a handler.
     * Returns KEEL_OK, or KEEL_ERR_INVALID_ARGUMENT for NULL pointers.
     * [request] */
    keel_status(KEEL_ABI *check_permission)(keel_ctx *ctx, const keel_principal *principal, keel_str action,
                                            keel_str resource, keel_auth_decision *out_decision);
} keel_host_auth;

KEEL_EXTERN_C_END
