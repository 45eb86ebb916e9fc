//! The part of the Keel plugin ABI (the C headers of `keel sdk install`: keel/types.h, version.h, status.h,
//! host.h, entry.h, http.h) this plugin uses, declared with #[repr(C)]. Fields are in the headers' order; a struct
//! the host hands over may be longer than declared here (structs only grow at their end), so never copy one by
//! value or read past these fields.

use std::ffi::c_void;

pub type KeelStatus = i32;
pub const KEEL_OK: KeelStatus = 0;
pub const KEEL_ERR_INTERNAL: KeelStatus = 1;
pub const KEEL_ERR_UNSUPPORTED: KeelStatus = 6;

/// The ABI version of the headers this file mirrors (keel/version.h).
pub const KEEL_ABI_VERSION: KeelVersion = KeelVersion { major: 1, minor: 1, patch: 0 };
pub const KEEL_SERVICE_HTTP: &str = "keel.http/1";

/// keel_str: UTF-8 bytes, pointer + length, not NUL-terminated; borrowed for the call.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct KeelStr {
    pub ptr: *const u8,
    pub len: usize,
}

impl KeelStr {
    pub const EMPTY: KeelStr = KeelStr { ptr: std::ptr::null(), len: 0 };

    pub const fn from_static(s: &'static str) -> KeelStr {
        KeelStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// Borrows `s` for a call that does not keep it.
    pub fn borrow(s: &str) -> KeelStr {
        KeelStr { ptr: s.as_ptr(), len: s.len() }
    }

    /// The bytes, or None for a NULL pointer with a nonzero length.
    /// Safety: `ptr` must point at `len` readable bytes for the lifetime the caller picks (the call it came with).
    pub unsafe fn bytes<'a>(self) -> Option<&'a [u8]> {
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
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

/// keel_ctx: opaque, the host's.
#[repr(C)]
pub struct KeelCtx {
    _opaque: [u8; 0],
}

pub type ActivateFn = unsafe extern "C" fn(*const KeelHost, *mut KeelCtx) -> KeelStatus;

/// keel_plugin (keel/entry.h): the descriptor `keel_plugin_entry` returns.
#[repr(C)]
pub struct KeelPlugin {
    pub struct_size: u32,
    pub abi_version: KeelVersion,
    /// Empty: the host takes plugin.yaml's id.
    pub id: KeelStr,
    /// Empty: the host takes plugin.yaml's version.
    pub version: KeelStr,
    pub flags: u64,
    pub activate: Option<ActivateFn>,
    pub deactivate: Option<ActivateFn>,
    pub get_extension: Option<unsafe extern "C" fn(KeelStr) -> *const c_void>,
}

// Safe: the descriptor is constant and points only at 'static string literals and functions.
unsafe impl Sync for KeelPlugin {}

/// keel_host (keel/host.h).
#[repr(C)]
pub struct KeelHost {
    pub struct_size: u32,
    pub abi_version: KeelVersion,
    pub host_name: KeelStr,
    pub host_version: KeelStr,
    pub log: Option<unsafe extern "C" fn(*mut KeelCtx, i32, KeelStr)>,
    pub set_error: Option<unsafe extern "C" fn(*mut KeelCtx, KeelStr)>,
    pub get_service: Option<unsafe extern "C" fn(*mut KeelCtx, KeelStr) -> *const c_void>,
}

/// keel_http_header (keel/http.h): also a path parameter (name, value).
#[repr(C)]
pub struct KeelHttpHeader {
    pub name: KeelStr,
    pub value: KeelStr,
}

/// keel_http_request (keel/http.h).
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
    pub principal: *const c_void,
    pub request_id: KeelStr,
}

/// keel_http_response (keel/http.h).
#[repr(C)]
pub struct KeelHttpResponse {
    pub struct_size: u32,
    pub host_data: *mut c_void,
    pub set_status: Option<unsafe extern "C" fn(*mut KeelHttpResponse, u32) -> KeelStatus>,
    pub add_header: Option<unsafe extern "C" fn(*mut KeelHttpResponse, KeelStr, KeelStr) -> KeelStatus>,
    pub write: Option<unsafe extern "C" fn(*mut KeelHttpResponse, *const c_void, usize) -> KeelStatus>,
}

pub type HttpHandler = unsafe extern "C" fn(*mut c_void, *const KeelHttpRequest, *mut KeelHttpResponse) -> KeelStatus;

/// keel_route (keel/http.h).
#[repr(C)]
pub struct KeelRoute {
    pub struct_size: u32,
    pub method: KeelStr,
    pub path: KeelStr,
    pub handler: Option<HttpHandler>,
    pub user_data: *mut c_void,
}

/// keel_host_http (keel/http.h).
#[repr(C)]
pub struct KeelHostHttp {
    pub struct_size: u32,
    pub register_route: Option<unsafe extern "C" fn(*mut KeelCtx, *const KeelRoute) -> KeelStatus>,
}

/// The declarations above against the installed headers (`keel sdk install`): a C program built with
/// `pkg-config --cflags keel-plugin` prints every size and offset, and they must equal Rust's. Skipped, with a
/// note, where pkg-config or cc cannot be run.
#[cfg(test)]
mod layout {
    use super::*;
    use std::process::Command;

    macro_rules! layout {
        ($($rust:ident = $c:literal { $($field:ident),* })*) => {{
            let (mut c, mut rust) = (String::new(), String::new());
            $(
                c += &format!("    printf(\"{0} %zu\\n\", sizeof({0}));\n", $c);
                rust += &format!("{} {}\n", $c, std::mem::size_of::<$rust>());
                $(
                    c += &format!("    printf(\"{0}.{1} %zu\\n\", offsetof({0}, {1}));\n", $c, stringify!($field));
                    rust += &format!("{}.{} {}\n", $c, stringify!($field), std::mem::offset_of!($rust, $field));
                )*
            )*
            (c, rust)
        }};
    }

    #[test]
    fn declarations_match_the_installed_headers() {
        let (c, rust) = layout! {
            KeelStr = "keel_str" { ptr, len }
            KeelVersion = "keel_version" { major, minor, patch }
            KeelPlugin = "keel_plugin" { struct_size, abi_version, id, version, flags, activate, deactivate, get_extension }
            KeelHost = "keel_host" { struct_size, abi_version, host_name, host_version, log, set_error, get_service }
            KeelHttpHeader = "keel_http_header" { name, value }
            KeelHttpRequest = "keel_http_request" { struct_size, method, path, route_path, query, headers, headers_len,
                                                    params, params_len, body, body_len, principal, request_id }
            KeelHttpResponse = "keel_http_response" { struct_size, host_data, set_status, add_header, write }
            KeelRoute = "keel_route" { struct_size, method, path, handler, user_data }
            KeelHostHttp = "keel_host_http" { struct_size, register_route }
        };
        let cflags = match Command::new("pkg-config").args(["--cflags", "keel-plugin"]).output() {
            Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
            _ => {
                eprintln!("skipped: pkg-config cannot find keel-plugin (run `keel sdk install`)");
                return;
            }
        };
        let dir = std::env::temp_dir().join(format!("keel-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("layout.c");
        let program = format!("#include <keel/keel.h>\n#include <stddef.h>\n#include <stdio.h>\nint main(void) {{\n{}    return 0;\n}}\n", c);
        std::fs::write(&source, program).unwrap();
        let exe = dir.join("layout");
        let built = Command::new("cc").args(cflags.split_whitespace()).arg("-o").arg(&exe).arg(&source).output();
        match built {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("cc failed on the layout program: {}", String::from_utf8_lossy(&out.stderr)),
            Err(_) => {
                eprintln!("skipped: cc cannot be run");
                return;
            }
        }
        let printed = Command::new(&exe).output().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(String::from_utf8_lossy(&printed.stdout), rust, "src/abi.rs has drifted from the Keel headers");
    }
}
