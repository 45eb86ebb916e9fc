/* Locks the layout of ABI 1.0 and 1.1 (LP64). A failing assertion means a published struct changed: that breaks every
 * plugin built against 1.0. Append fields instead, and add a check for them here. */
#include <keel/keel.h>
#include <stddef.h>

#define CHECK_SIZE(type, size) _Static_assert(sizeof(type) == (size), #type " changed size")
#define CHECK_OFFSET(type, field, off) _Static_assert(offsetof(type, field) == (off), #type "." #field " moved")

#if defined(__LP64__) || defined(_LP64)
CHECK_SIZE(keel_str, 16);
CHECK_SIZE(keel_version, 12);

CHECK_OFFSET(keel_plugin, struct_size, 0);
CHECK_OFFSET(keel_plugin, abi_version, 4);
CHECK_OFFSET(keel_plugin, id, 16);
CHECK_OFFSET(keel_plugin, version, 32);
CHECK_OFFSET(keel_plugin, flags, 48);
CHECK_OFFSET(keel_plugin, activate, 56);
CHECK_OFFSET(keel_plugin, deactivate, 64);
CHECK_OFFSET(keel_plugin, get_extension, 72);
CHECK_SIZE(keel_plugin, 80);

CHECK_OFFSET(keel_host, abi_version, 4);
CHECK_OFFSET(keel_host, host_name, 16);
CHECK_OFFSET(keel_host, host_version, 32);
CHECK_OFFSET(keel_host, log, 48);
CHECK_OFFSET(keel_host, set_error, 56);
CHECK_OFFSET(keel_host, get_service, 64);
CHECK_SIZE(keel_host, 72);

CHECK_OFFSET(keel_principal, flags, 4);
CHECK_OFFSET(keel_principal, id, 8);
CHECK_OFFSET(keel_principal, display_name, 24);
CHECK_OFFSET(keel_principal, tenant, 40);
CHECK_OFFSET(keel_principal, authenticated_by, 56);
CHECK_OFFSET(keel_principal, roles, 72);
CHECK_OFFSET(keel_principal, roles_len, 80);
CHECK_SIZE(keel_principal, 88);

CHECK_OFFSET(keel_http_request, method, 8);
CHECK_OFFSET(keel_http_request, path, 24);
CHECK_OFFSET(keel_http_request, route_path, 40);
CHECK_OFFSET(keel_http_request, query, 56);
CHECK_OFFSET(keel_http_request, headers, 72);
CHECK_OFFSET(keel_http_request, headers_len, 80);
CHECK_OFFSET(keel_http_request, params, 88);
CHECK_OFFSET(keel_http_request, params_len, 96);
CHECK_OFFSET(keel_http_request, body, 104);
CHECK_OFFSET(keel_http_request, body_len, 112);
CHECK_OFFSET(keel_http_request, principal, 120);
CHECK_OFFSET(keel_http_request, request_id, 128);
CHECK_SIZE(keel_http_request, 144);

CHECK_OFFSET(keel_http_response, host_data, 8);
CHECK_OFFSET(keel_http_response, set_status, 16);
CHECK_OFFSET(keel_http_response, add_header, 24);
CHECK_OFFSET(keel_http_response, write, 32);
CHECK_SIZE(keel_http_response, 40);

CHECK_OFFSET(keel_route, method, 8);
CHECK_OFFSET(keel_route, path, 24);
CHECK_OFFSET(keel_route, handler, 40);
CHECK_OFFSET(keel_route, user_data, 48);
CHECK_SIZE(keel_route, 56);
CHECK_SIZE(keel_host_http, 16);

CHECK_OFFSET(keel_menu_entry, id, 8);
CHECK_OFFSET(keel_menu_entry, title, 24);
CHECK_OFFSET(keel_menu_entry, parent, 40);
CHECK_OFFSET(keel_menu_entry, link, 56);
CHECK_OFFSET(keel_menu_entry, order, 72);
CHECK_OFFSET(keel_menu_entry, icon, 80);
CHECK_OFFSET(keel_menu_entry, permission, 96);
CHECK_SIZE(keel_menu_entry, 112);
CHECK_SIZE(keel_host_menu, 16);

CHECK_OFFSET(keel_principal_builder, set_identity, 16);
CHECK_OFFSET(keel_principal_builder, add_role, 24);
CHECK_SIZE(keel_principal_builder, 32);
CHECK_OFFSET(keel_authz_request, principal, 8);
CHECK_OFFSET(keel_authz_request, action, 16);
CHECK_OFFSET(keel_authz_request, resource, 32);
CHECK_OFFSET(keel_authz_request, http, 48);
CHECK_SIZE(keel_authz_request, 56);
CHECK_OFFSET(keel_authenticator, name, 8);
CHECK_OFFSET(keel_authenticator, authenticate, 24);
CHECK_OFFSET(keel_authenticator, user_data, 32);
CHECK_SIZE(keel_authenticator, 40);
CHECK_SIZE(keel_authorizer, 40);
CHECK_OFFSET(keel_host_auth, register_authenticator, 8);
CHECK_OFFSET(keel_host_auth, register_authorizer, 16);
CHECK_OFFSET(keel_host_auth, check_permission, 24);
CHECK_SIZE(keel_host_auth, 32);
CHECK_OFFSET(keel_host_config, get, 8);
CHECK_SIZE(keel_host_config, 16);

#if KEEL_ABI_VERSION_GE(1, 1, 0) /* compiled against the frozen 1.0 headers, only 1.0's checks apply */
/* ABI 1.1: services between plugins. */
CHECK_OFFSET(keel_service_provision, interface_id, 8);
CHECK_OFFSET(keel_service_provision, table, 24);
CHECK_SIZE(keel_service_provision, 32);
CHECK_OFFSET(keel_service_info, version, 4);
CHECK_OFFSET(keel_service_info, interface_id, 16);
CHECK_OFFSET(keel_service_info, provider_id, 32);
CHECK_OFFSET(keel_service_info, provider_version, 48);
CHECK_OFFSET(keel_service_info, generation, 64);
CHECK_OFFSET(keel_service_info, table_size, 72);
CHECK_SIZE(keel_service_info, 80);
CHECK_OFFSET(keel_service_listener, interface_id, 8);
CHECK_OFFSET(keel_service_listener, changed, 24);
CHECK_OFFSET(keel_service_listener, user_data, 32);
CHECK_SIZE(keel_service_listener, 40);
CHECK_OFFSET(keel_host_services, provide, 8);
CHECK_OFFSET(keel_host_services, listen, 16);
CHECK_OFFSET(keel_host_services, acquire, 24);
CHECK_OFFSET(keel_host_services, release, 32);
CHECK_OFFSET(keel_host_services, describe, 40);
CHECK_SIZE(keel_host_services, 48);
CHECK_SIZE(keel_bytes, 16);
CHECK_OFFSET(keel_output, host_data, 8);
CHECK_OFFSET(keel_output, write, 16);
CHECK_SIZE(keel_output, 24);
CHECK_OFFSET(keel_host_commands, call, 8);
CHECK_SIZE(keel_host_commands, 16);
CHECK_OFFSET(keel_health_v1, check, 8);
CHECK_SIZE(keel_health_v1, 16);
#endif
#endif

/* The C target needs one symbol of its own. Hidden: SwiftPM links this file into every plugin built in the
 * repository, and a plugin exports nothing beyond its entry point (`keel plugins validate`). */
#if defined(__GNUC__) || defined(__clang__)
__attribute__((visibility("hidden")))
#endif
int keel_abi_layout_checked(void);
int keel_abi_layout_checked(void) { return 1; }
