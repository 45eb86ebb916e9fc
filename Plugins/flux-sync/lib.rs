//! flux-sync — an example provider of gitops.sync/1 (Plugins/deployer/gitops_sync.h) in Rust, with no crates:
//!     rustc --edition 2021 --crate-type cdylib -O -o libflux-sync.so Plugins/flux-sync/lib.rs
//! (Scripts/build-rust-example.sh DIR does that). The few ABI structs it needs are mirrored below by hand with
//! #[repr(C)]; the `const` assertions under "Layout" fail the build if a mirror drifts from PluginABI/layout_check.c.
//! No panic crosses the boundary: every exported function catches it and returns KEEL_ERR_INTERNAL.
//! Unit tests: rustc --edition 2021 --test -o /tmp/flux-sync-tests Plugins/flux-sync/lib.rs && /tmp/flux-sync-tests

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

// ---- ABI mirrors (keel/types.h, version.h, status.h, host.h, entry.h, services.h) ----

type KeelStatus = i32;
const KEEL_OK: KeelStatus = 0;
const KEEL_ERR_INTERNAL: KeelStatus = 1;
const KEEL_ERR_INVALID_ARGUMENT: KeelStatus = 2;
const KEEL_ERR_UNSUPPORTED: KeelStatus = 6;
const KEEL_ERR_WRONG_STATE: KeelStatus = 7;
const KEEL_ERR_LIMIT: KeelStatus = 8;
const KEEL_LOG_INFO: i32 = 1;

/// keel_str: UTF-8 bytes, pointer + length, not NUL-terminated; borrowed for the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KeelStr {
    ptr: *const u8,
    len: usize,
}

impl KeelStr {
    const fn from_static(s: &'static str) -> KeelStr {
        KeelStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// The bytes, or None for a NULL pointer with a nonzero length. Safety: `ptr` must point at `len` readable
    /// bytes for the lifetime the caller picks (the call it was passed to).
    unsafe fn bytes<'a>(self) -> Option<&'a [u8]> {
        if self.len == 0 {
            Some(&[])
        } else if self.ptr.is_null() {
            None
        } else {
            Some(std::slice::from_raw_parts(self.ptr, self.len))
        }
    }
}

#[repr(C)]
pub struct KeelVersion {
    major: u32,
    minor: u32,
    patch: u32,
}

/// keel_ctx: opaque, the host's.
#[repr(C)]
pub struct KeelCtx {
    _opaque: [u8; 0],
}

type ActivateFn = unsafe extern "C" fn(*const KeelHost, *mut KeelCtx) -> KeelStatus;

#[repr(C)]
pub struct KeelPlugin {
    struct_size: u32,
    abi_version: KeelVersion,
    id: KeelStr,
    version: KeelStr,
    flags: u64,
    activate: Option<ActivateFn>,
    deactivate: Option<ActivateFn>,
    get_extension: Option<unsafe extern "C" fn(KeelStr) -> *const c_void>,
}

// Safe: the descriptor is constant and points only at 'static string literals and functions.
unsafe impl Sync for KeelPlugin {}

#[repr(C)]
pub struct KeelHost {
    struct_size: u32,
    abi_version: KeelVersion,
    host_name: KeelStr,
    host_version: KeelStr,
    log: Option<unsafe extern "C" fn(*mut KeelCtx, i32, KeelStr)>,
    set_error: Option<unsafe extern "C" fn(*mut KeelCtx, KeelStr)>,
    get_service: Option<unsafe extern "C" fn(*mut KeelCtx, KeelStr) -> *const c_void>,
}

#[repr(C)]
pub struct KeelServiceProvision {
    struct_size: u32,
    interface_id: KeelStr,
    table: *const c_void,
}

/// keel_host_services; only `provide` is called here, the other entries are kept for the layout.
#[repr(C)]
pub struct KeelHostServices {
    struct_size: u32,
    provide: Option<unsafe extern "C" fn(*mut KeelCtx, *const KeelServiceProvision) -> KeelStatus>,
    listen: Option<unsafe extern "C" fn()>,
    acquire: Option<unsafe extern "C" fn()>,
    release: Option<unsafe extern "C" fn()>,
    describe: Option<unsafe extern "C" fn()>,
}

/// gitops_sync_v1 (Plugins/deployer/gitops_sync.h), the 1.0 functions.
#[repr(C)]
pub struct GitopsSyncV1 {
    struct_size: u32,
    engine: extern "C" fn() -> KeelStr,
    sync: unsafe extern "C" fn(KeelStr, KeelStr, *mut u8, usize, *mut usize) -> KeelStatus,
}

// ---- Layout: the numbers of PluginABI/layout_check.c (LP64), checked at compile time ----

#[cfg(target_pointer_width = "64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<KeelStr>() == 16);
    assert!(size_of::<KeelVersion>() == 12);
    assert!(offset_of!(KeelPlugin, abi_version) == 4 && offset_of!(KeelPlugin, id) == 16);
    assert!(offset_of!(KeelPlugin, version) == 32 && offset_of!(KeelPlugin, flags) == 48);
    assert!(offset_of!(KeelPlugin, activate) == 56 && offset_of!(KeelPlugin, deactivate) == 64);
    assert!(offset_of!(KeelPlugin, get_extension) == 72 && size_of::<KeelPlugin>() == 80);
    assert!(offset_of!(KeelHost, host_name) == 16 && offset_of!(KeelHost, host_version) == 32);
    assert!(offset_of!(KeelHost, log) == 48 && offset_of!(KeelHost, set_error) == 56);
    assert!(offset_of!(KeelHost, get_service) == 64 && size_of::<KeelHost>() == 72);
    assert!(offset_of!(KeelServiceProvision, interface_id) == 8 && offset_of!(KeelServiceProvision, table) == 24);
    assert!(size_of::<KeelServiceProvision>() == 32);
    assert!(offset_of!(KeelHostServices, provide) == 8 && offset_of!(KeelHostServices, describe) == 40);
    assert!(size_of::<KeelHostServices>() == 48);
    // gitops_sync.h: sizeof(gitops_sync_v1) == GITOPS_SYNC_V1_0_SIZE == 24.
    assert!(offset_of!(GitopsSyncV1, engine) == 8 && offset_of!(GitopsSyncV1, sync) == 16);
    assert!(size_of::<GitopsSyncV1>() == 24);
};

// ---- The provider ----

const GITOPS_SYNC_INTERFACE: &str = "gitops.sync/1";
const KEEL_SERVICE_SERVICES: &str = "keel.services/1";
const ENGINE: &str = "flux";

/// Sync calls served by this activation (each generation is its own copy of the library).
static CALLS: AtomicU64 = AtomicU64::new(0);
/// Set by deactivate: sync refuses afterwards.
static STOPPED: AtomicBool = AtomicBool::new(false);

static TABLE: GitopsSyncV1 = GitopsSyncV1 {
    struct_size: std::mem::size_of::<GitopsSyncV1>() as u32,
    engine,
    sync,
};

extern "C" fn engine() -> KeelStr {
    KeelStr::from_static(ENGINE)
}

/// "flux synced <app> to <revision>" (revision "main" when empty).
fn sync_line(app: &[u8], revision: &[u8]) -> Vec<u8> {
    let revision: &[u8] = if revision.is_empty() { b"main" } else { revision };
    [ENGINE.as_bytes(), b" synced ", app, b" to ", revision].concat()
}

/// gitops_sync_v1.sync. [thread-safe]
unsafe extern "C" fn sync(
    app: KeelStr,
    revision: KeelStr,
    out: *mut u8,
    out_cap: usize,
    out_len: *mut usize,
) -> KeelStatus {
    catch_unwind(AssertUnwindSafe(|| {
        if STOPPED.load(Ordering::Acquire) {
            return KEEL_ERR_WRONG_STATE;
        }
        let (Some(app), Some(revision)) = (app.bytes(), revision.bytes()) else { return KEEL_ERR_INVALID_ARGUMENT };
        if app.is_empty() || out_len.is_null() || (out.is_null() && out_cap > 0) {
            return KEEL_ERR_INVALID_ARGUMENT;
        }
        CALLS.fetch_add(1, Ordering::Relaxed);
        let line = sync_line(app, revision);
        *out_len = line.len();
        if line.len() > out_cap {
            return KEEL_ERR_LIMIT;
        }
        if !line.is_empty() {
            std::ptr::copy_nonoverlapping(line.as_ptr(), out, line.len());
        }
        KEEL_OK
    }))
    .unwrap_or(KEEL_ERR_INTERNAL)
}

unsafe fn set_error(host: &KeelHost, ctx: *mut KeelCtx, message: &'static str) {
    if let Some(set_error) = host.set_error {
        set_error(ctx, KeelStr::from_static(message));
    }
}

unsafe extern "C" fn activate(host: *const KeelHost, ctx: *mut KeelCtx) -> KeelStatus {
    catch_unwind(AssertUnwindSafe(|| {
        let Some(host) = host.as_ref() else { return KEEL_ERR_INVALID_ARGUMENT };
        CALLS.store(0, Ordering::Relaxed);
        STOPPED.store(false, Ordering::Release);
        let Some(get_service) = host.get_service else { return KEEL_ERR_UNSUPPORTED };
        let services = get_service(ctx, KeelStr::from_static(KEEL_SERVICE_SERVICES)) as *const KeelHostServices;
        let Some(provide) = services.as_ref().and_then(|s| s.provide) else {
            set_error(host, ctx, "flux-sync needs keel.services/1 (a Keel host with ABI 1.1 or later)");
            return KEEL_ERR_UNSUPPORTED;
        };
        let provision = KeelServiceProvision {
            struct_size: std::mem::size_of::<KeelServiceProvision>() as u32,
            interface_id: KeelStr::from_static(GITOPS_SYNC_INTERFACE),
            table: &TABLE as *const GitopsSyncV1 as *const c_void,
        };
        let status = provide(ctx, &provision);
        if status != KEEL_OK {
            set_error(host, ctx, "flux-sync could not provide gitops.sync/1");
        }
        status
    }))
    .unwrap_or(KEEL_ERR_INTERNAL)
}

unsafe extern "C" fn deactivate(host: *const KeelHost, ctx: *mut KeelCtx) -> KeelStatus {
    catch_unwind(AssertUnwindSafe(|| {
        STOPPED.store(true, Ordering::Release);
        if let Some(log) = host.as_ref().and_then(|h| h.log) {
            let line = format!("flux-sync served {} sync call(s)", CALLS.load(Ordering::Relaxed));
            log(ctx, KEEL_LOG_INFO, KeelStr { ptr: line.as_ptr(), len: line.len() });
        }
        KEEL_OK
    }))
    .unwrap_or(KEEL_ERR_INTERNAL)
}

static DESCRIPTOR: KeelPlugin = KeelPlugin {
    struct_size: std::mem::size_of::<KeelPlugin>() as u32,
    abi_version: KeelVersion { major: 1, minor: 1, patch: 0 },
    id: KeelStr::from_static("flux-sync"),
    version: KeelStr::from_static("1.0.0"),
    flags: 0,
    activate: Some(activate),
    deactivate: Some(deactivate),
    get_extension: None,
};

/// The one exported symbol. [load]
#[no_mangle]
pub extern "C" fn keel_plugin_entry() -> *const KeelPlugin {
    &DESCRIPTOR
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(app: &str, rev: &str, cap: usize) -> (KeelStatus, String, usize) {
        let mut buf = vec![0u8; cap];
        let mut len = 0usize;
        let (app, rev) = (KeelStr::from_static(leak(app)), KeelStr::from_static(leak(rev)));
        let s = unsafe { sync(app, rev, buf.as_mut_ptr(), cap, &mut len) };
        buf.truncate(len.min(cap));
        (s, String::from_utf8(buf).unwrap(), len)
    }

    fn leak(s: &str) -> &'static str {
        Box::leak(s.to_owned().into_boxed_str())
    }

    #[test]
    fn syncs_into_the_callers_buffer_and_reports_the_size_it_needs() {
        assert_eq!(call("shop", "v2", 64), (KEEL_OK, "flux synced shop to v2".to_owned(), 22));
        assert_eq!(call("shop", "", 64).1, "flux synced shop to main");
        let (status, _, needed) = call("shop", "v2", 5);
        assert_eq!((status, needed), (KEEL_ERR_LIMIT, 22));
        assert_eq!(call("", "v2", 64).0, KEEL_ERR_INVALID_ARGUMENT);
        let null = KeelStr { ptr: std::ptr::null(), len: 3 };
        let mut len = 0usize;
        assert_eq!(unsafe { sync(null, null, std::ptr::null_mut(), 0, &mut len) }, KEEL_ERR_INVALID_ARGUMENT);
    }

    #[test]
    fn the_descriptor_and_the_table_carry_their_sizes() {
        let d = unsafe { &*keel_plugin_entry() };
        assert_eq!((d.struct_size, d.abi_version.major, d.abi_version.minor), (80, 1, 1));
        assert_eq!(TABLE.struct_size, 24);
        let e = engine();
        assert_eq!(unsafe { e.bytes() }.unwrap(), b"flux");
    }
}
