//! The raw Keel plugin ABI 1.1: every public struct, function pointer and constant of the C headers
//! (keel/types.h, version.h, status.h, host.h, entry.h, identity.h, http.h, menu.h, auth.h, config.h,
//! services.h, commands.h, health.h), declared with `#[repr(C)]` in the headers' field order. `tests/layout.rs` compiles a C
//! program against the headers and compares every size, offset and constant, so these cannot drift.
//!
//! Structs the host hands over may be longer than declared here (structs only grow at their end): never copy one by
//! value or read past these fields. Function pointers are `Option` because C may leave them NULL.

#![allow(missing_docs)]

use std::ffi::c_void;

// ---- status.h ----
pub type KeelStatus = i32;
pub const KEEL_OK: KeelStatus = 0;
pub const KEEL_ERR_INTERNAL: KeelStatus = 1;
pub const KEEL_ERR_INVALID_ARGUMENT: KeelStatus = 2;
pub const KEEL_ERR_CONFLICT: KeelStatus = 3;
pub const KEEL_ERR_DENIED: KeelStatus = 4;
pub const KEEL_ERR_NOT_FOUND: KeelStatus = 5;
pub const KEEL_ERR_UNSUPPORTED: KeelStatus = 6;
pub const KEEL_ERR_WRONG_STATE: KeelStatus = 7;
pub const KEEL_ERR_LIMIT: KeelStatus = 8;
pub const KEEL_ERR_NO_MEMORY: KeelStatus = 9;
pub const KEEL_ERR_UNAVAILABLE: KeelStatus = 10;

// ---- version.h ----
pub const KEEL_ABI_VERSION_MAJOR: u32 = 1;
pub const KEEL_ABI_VERSION_MINOR: u32 = 1;
pub const KEEL_ABI_VERSION_PATCH: u32 = 0;
/// The version of the headers these declarations mirror: KEEL_ABI_VERSION_INIT.
pub const KEEL_ABI_VERSION: KeelVersion =
    KeelVersion { major: KEEL_ABI_VERSION_MAJOR, minor: KEEL_ABI_VERSION_MINOR, patch: KEEL_ABI_VERSION_PATCH };

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeelVersion {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

// ---- types.h ----

/// keel_str: UTF-8 bytes, pointer + length, not NUL-terminated; borrowed for the call. {NULL, 0} is empty.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct KeelStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl KeelStr {
    pub const EMPTY: KeelStr = KeelStr { ptr: std::ptr::null(), len: 0 };

    /// A keel_str over a string that lives for the whole program (KEEL_STR).
    pub const fn from_static(s: &'static str) -> KeelStr {
        KeelStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// Borrows `s` for a call that does not keep it.
    pub fn borrow(s: &str) -> KeelStr {
        KeelStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// The bytes, or None for a NULL pointer with a nonzero length.
    ///
    /// # Safety
    /// `ptr` must point at `len` readable bytes for the lifetime `'a` the caller picks (the call it came with).
    pub unsafe fn bytes<'a>(self) -> Option<&'a [u8]> {
        if self.len == 0 {
            Some(&[])
        } else if self.ptr.is_null() {
            None
        } else {
            Some(std::slice::from_raw_parts(self.ptr, self.len))
        }
    }

    /// The text, or "" when the pointer is NULL or the bytes are not UTF-8 (the host sends only UTF-8).
    ///
    /// # Safety
    /// As for [`KeelStr::bytes`].
    pub unsafe fn as_str<'a>(self) -> &'a str {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok()).unwrap_or("")
    }
}

/// keel_ctx: opaque, the host's.
#[repr(C)]
pub struct KeelCtx {
    _opaque: [u8; 0],
}

pub type KeelLogLevel = i32;
pub const KEEL_LOG_DEBUG: KeelLogLevel = 0;
pub const KEEL_LOG_INFO: KeelLogLevel = 1;
pub const KEEL_LOG_WARN: KeelLogLevel = 2;
pub const KEEL_LOG_ERROR: KeelLogLevel = 3;

// ---- host.h ----

/// keel_host: what the host offers every plugin; valid until deactivate returns.
#[repr(C)]
pub struct KeelHost {
    pub struct_size: u32,
    pub abi_version: KeelVersion,
    pub host_name: KeelStr,
    pub host_version: KeelStr,
    pub log: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, level: KeelLogLevel, message: KeelStr)>,
    pub set_error: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, message: KeelStr)>,
    pub get_service: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, service_id: KeelStr) -> *const c_void>,
}

// ---- entry.h ----
pub const KEEL_PLUGIN_FLAG_UNLOAD_SAFE: u64 = 1 << 0;
/// activate may run again on the same loaded copy after deactivate (the host then keeps the copy between activations).
pub const KEEL_PLUGIN_FLAG_REACTIVATABLE: u64 = 1 << 1;
pub const KEEL_ENTRY_SYMBOL: &str = "keel_plugin_entry";

pub type KeelLifecycleFn = unsafe extern "C" fn(host: *const KeelHost, ctx: *mut KeelCtx) -> KeelStatus;
pub type KeelGetExtensionFn = unsafe extern "C" fn(extension_id: KeelStr) -> *const c_void;
pub type KeelPluginEntryFn = unsafe extern "C" fn() -> *const KeelPlugin;

/// keel_plugin: the constant descriptor `keel_plugin_entry` returns.
#[repr(C)]
pub struct KeelPlugin {
    pub struct_size: u32,
    pub abi_version: KeelVersion,
    /// Empty: the host takes plugin.yaml's id.
    pub id: KeelStr,
    /// Empty: the host takes plugin.yaml's version.
    pub version: KeelStr,
    pub flags: u64,
    pub activate: Option<KeelLifecycleFn>,
    pub deactivate: Option<KeelLifecycleFn>,
    pub get_extension: Option<KeelGetExtensionFn>,
}

// Safe: a descriptor is constant and points only at 'static strings and functions.
unsafe impl Sync for KeelPlugin {}

// ---- identity.h ----
pub const KEEL_PRINCIPAL_ANONYMOUS: u32 = 1 << 0;

/// keel_principal: the caller, owned by the host and borrowed for the call.
#[repr(C)]
pub struct KeelPrincipal {
    pub struct_size: u32,
    pub flags: u32,
    pub id: KeelStr,
    pub display_name: KeelStr,
    pub tenant: KeelStr,
    pub authenticated_by: KeelStr,
    pub roles: *const KeelStr,
    pub roles_len: usize,
}

// ---- http.h ----
pub const KEEL_SERVICE_HTTP: &str = "keel.http/1";

/// keel_http_header: a header or a path parameter.
#[repr(C)]
pub struct KeelHttpHeader {
    pub name: KeelStr,
    pub value: KeelStr,
}

#[repr(C)]
pub struct KeelHttpRequest {
    pub struct_size: u32,
    pub method: KeelStr,
    pub path: KeelStr,
    pub route_path: KeelStr,
    pub query: KeelStr,
    pub headers: *const KeelHttpHeader,
    pub headers_len: usize,
    pub params: *const KeelHttpHeader,
    pub params_len: usize,
    pub body: *const u8,
    pub body_len: usize,
    pub principal: *const KeelPrincipal,
    pub request_id: KeelStr,
}

#[repr(C)]
pub struct KeelHttpResponse {
    pub struct_size: u32,
    pub host_data: *mut c_void,
    pub set_status: Option<unsafe extern "C" fn(res: *mut KeelHttpResponse, status: u32) -> KeelStatus>,
    pub add_header: Option<unsafe extern "C" fn(res: *mut KeelHttpResponse, name: KeelStr, value: KeelStr) -> KeelStatus>,
    pub write: Option<unsafe extern "C" fn(res: *mut KeelHttpResponse, data: *const c_void, len: usize) -> KeelStatus>,
}

pub type KeelHttpHandlerFn =
    unsafe extern "C" fn(user_data: *mut c_void, req: *const KeelHttpRequest, res: *mut KeelHttpResponse) -> KeelStatus;

#[repr(C)]
pub struct KeelRoute {
    pub struct_size: u32,
    pub method: KeelStr,
    pub path: KeelStr,
    pub handler: Option<KeelHttpHandlerFn>,
    pub user_data: *mut c_void,
}

#[repr(C)]
pub struct KeelHostHttp {
    pub struct_size: u32,
    pub register_route: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, route: *const KeelRoute) -> KeelStatus>,
}

// ---- menu.h ----
pub const KEEL_SERVICE_MENU: &str = "keel.menu/1";

#[repr(C)]
pub struct KeelMenuEntry {
    pub struct_size: u32,
    pub id: KeelStr,
    pub title: KeelStr,
    pub parent: KeelStr,
    pub link: KeelStr,
    pub order: i32,
    pub icon: KeelStr,
    pub permission: KeelStr,
}

#[repr(C)]
pub struct KeelHostMenu {
    pub struct_size: u32,
    pub add_entry: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, entry: *const KeelMenuEntry) -> KeelStatus>,
}

// ---- auth.h ----
pub const KEEL_SERVICE_AUTH: &str = "keel.auth/1";

pub type KeelAuthDecision = i32;
pub const KEEL_AUTH_ABSTAIN: KeelAuthDecision = 0;
pub const KEEL_AUTH_ALLOW: KeelAuthDecision = 1;
pub const KEEL_AUTH_DENY: KeelAuthDecision = 2;

#[repr(C)]
pub struct KeelPrincipalBuilder {
    pub struct_size: u32,
    pub host_data: *mut c_void,
    pub set_identity: Option<
        unsafe extern "C" fn(b: *mut KeelPrincipalBuilder, id: KeelStr, display_name: KeelStr, tenant: KeelStr) -> KeelStatus,
    >,
    pub add_role: Option<unsafe extern "C" fn(b: *mut KeelPrincipalBuilder, role: KeelStr) -> KeelStatus>,
}

pub type KeelAuthenticateFn =
    unsafe extern "C" fn(user_data: *mut c_void, req: *const KeelHttpRequest, out: *mut KeelPrincipalBuilder) -> KeelStatus;

#[repr(C)]
pub struct KeelAuthzRequest {
    pub struct_size: u32,
    pub principal: *const KeelPrincipal,
    pub action: KeelStr,
    pub resource: KeelStr,
    pub http: *const KeelHttpRequest,
}

pub type KeelAuthorizeFn =
    unsafe extern "C" fn(user_data: *mut c_void, q: *const KeelAuthzRequest, out_decision: *mut KeelAuthDecision) -> KeelStatus;

#[repr(C)]
pub struct KeelAuthenticator {
    pub struct_size: u32,
    pub name: KeelStr,
    pub authenticate: Option<KeelAuthenticateFn>,
    pub user_data: *mut c_void,
}

#[repr(C)]
pub struct KeelAuthorizer {
    pub struct_size: u32,
    pub name: KeelStr,
    pub authorize: Option<KeelAuthorizeFn>,
    pub user_data: *mut c_void,
}

#[repr(C)]
pub struct KeelHostAuth {
    pub struct_size: u32,
    pub register_authenticator: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, hook: *const KeelAuthenticator) -> KeelStatus>,
    pub register_authorizer: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, hook: *const KeelAuthorizer) -> KeelStatus>,
    pub check_permission: Option<
        unsafe extern "C" fn(
            ctx: *mut KeelCtx,
            principal: *const KeelPrincipal,
            action: KeelStr,
            resource: KeelStr,
            out_decision: *mut KeelAuthDecision,
        ) -> KeelStatus,
    >,
}

// ---- config.h ----
pub const KEEL_SERVICE_CONFIG: &str = "keel.config/1";

#[repr(C)]
pub struct KeelHostConfig {
    pub struct_size: u32,
    pub get: Option<unsafe extern "C" fn(ctx: *mut KeelCtx) -> KeelStr>,
}

// ---- services.h ----
pub const KEEL_SERVICE_SERVICES: &str = "keel.services/1";

#[repr(C)]
pub struct KeelServiceProvision {
    pub struct_size: u32,
    pub interface_id: KeelStr,
    pub table: *const c_void,
}

#[repr(C)]
pub struct KeelServiceInfo {
    pub struct_size: u32,
    pub version: KeelVersion,
    pub interface_id: KeelStr,
    pub provider_id: KeelStr,
    pub provider_version: KeelStr,
    pub generation: u64,
    pub table_size: u32,
}

/// keel_service_lease: opaque, the host's until released.
#[repr(C)]
pub struct KeelServiceLease {
    _opaque: [u8; 0],
}

pub type KeelServiceChangedFn =
    unsafe extern "C" fn(user_data: *mut c_void, interface_id: KeelStr, tenant: KeelStr, now: *const KeelServiceInfo);

#[repr(C)]
pub struct KeelServiceListener {
    pub struct_size: u32,
    pub interface_id: KeelStr,
    pub changed: Option<KeelServiceChangedFn>,
    pub user_data: *mut c_void,
}

#[repr(C)]
pub struct KeelHostServices {
    pub struct_size: u32,
    pub provide: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, provision: *const KeelServiceProvision) -> KeelStatus>,
    pub listen: Option<unsafe extern "C" fn(ctx: *mut KeelCtx, listener: *const KeelServiceListener) -> KeelStatus>,
    pub acquire: Option<
        unsafe extern "C" fn(
            ctx: *mut KeelCtx,
            interface_id: KeelStr,
            tenant: KeelStr,
            min_size: u32,
            out_lease: *mut *mut KeelServiceLease,
            out_table: *mut *const c_void,
        ) -> KeelStatus,
    >,
    pub release: Option<unsafe extern "C" fn(lease: *mut KeelServiceLease)>,
    pub describe: Option<unsafe extern "C" fn(lease: *const KeelServiceLease, out: *mut KeelServiceInfo) -> KeelStatus>,
}

// ---- commands.h ----
pub const KEEL_SERVICE_COMMANDS: &str = "keel.commands/1";

#[repr(C)]
#[derive(Clone, Copy)]
pub struct KeelBytes {
    pub ptr: *const u8,
    pub len: usize,
}

#[repr(C)]
pub struct KeelOutput {
    pub struct_size: u32,
    pub host_data: *mut c_void,
    pub write: Option<unsafe extern "C" fn(out: *mut KeelOutput, data: *const c_void, len: usize) -> KeelStatus>,
}

#[repr(C)]
pub struct KeelHostCommands {
    pub struct_size: u32,
    pub call: Option<
        unsafe extern "C" fn(
            ctx: *mut KeelCtx,
            plugin_id: KeelStr,
            name: KeelStr,
            args_json: KeelStr,
            principal: *const KeelPrincipal,
            out: *mut u8,
            out_cap: usize,
            out_len: *mut usize,
        ) -> KeelStatus,
    >,
}

// ---- health.h ----
pub const KEEL_EXTENSION_HEALTH: &str = "keel.health/1";

/// The plugin's half of "keel.health/1", returned from the descriptor's get_extension: `check` returns KEEL_OK for
/// healthy, else an error explained with set_error; the host calls it on a schedule, under a budget.
#[repr(C)]
pub struct KeelHealthV1 {
    pub struct_size: u32,
    pub check: Option<unsafe extern "C" fn(ctx: *mut KeelCtx) -> KeelStatus>,
}
