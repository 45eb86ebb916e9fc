//! {{id}} — a Keel plugin in Rust, with no crates. `make` builds bundle/{{id}}/ (plugin.yaml + lib{{ident}}.so);
//! `cargo test` runs the tests below.
//!
//! GET /ext/{{id}}/hello/:name answers "hello, <name>, from {{id}}". No panic crosses into the host: every
//! function the host calls catches it and returns KEEL_ERR_INTERNAL.

mod abi;

use abi::*;
use std::ffi::c_void;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};

/// The answer of GET /hello/:name.
pub fn greeting(name: &str) -> String {
    format!("hello, {}, from {{id}}\n", name)
}

/// The value of the path parameter `name`, if the request has it.
unsafe fn parameter(req: &KeelHttpRequest, name: &str) -> Option<String> {
    if req.params.is_null() {
        return None;
    }
    for p in std::slice::from_raw_parts(req.params, req.params_len) {
        if p.name.bytes()? == name.as_bytes() {
            return Some(String::from_utf8_lossy(p.value.bytes()?).into_owned());
        }
    }
    None
}

unsafe extern "C" fn hello(_user: *mut c_void, req: *const KeelHttpRequest, res: *mut KeelHttpResponse) -> KeelStatus {
    catch_unwind(AssertUnwindSafe(|| {
        let name = parameter(&*req, "name").unwrap_or_else(|| "world".to_string());
        let body = greeting(&name);
        let (Some(add_header), Some(write)) = ((*res).add_header, (*res).write) else { return KEEL_ERR_INTERNAL };
        let s = add_header(res, KeelStr::from_static("content-type"), KeelStr::from_static("text/plain; charset=utf-8"));
        if s != KEEL_OK {
            return s;
        }
        write(res, body.as_ptr() as *const c_void, body.len())
    }))
    .unwrap_or(KEEL_ERR_INTERNAL)
}

unsafe extern "C" fn activate(host: *const KeelHost, ctx: *mut KeelCtx) -> KeelStatus {
    catch_unwind(AssertUnwindSafe(|| {
        let host = &*host;
        let Some(get_service) = host.get_service else { return KEEL_ERR_UNSUPPORTED };
        let http = get_service(ctx, KeelStr::from_static(KEEL_SERVICE_HTTP)) as *const KeelHostHttp;
        let Some(register_route) = http.as_ref().and_then(|h| h.register_route) else {
            if let Some(set_error) = host.set_error {
                set_error(ctx, KeelStr::from_static("{{id}} needs keel.http/1"));
            }
            return KEEL_ERR_UNSUPPORTED;
        };
        let route = KeelRoute {
            struct_size: size_of::<KeelRoute>() as u32,
            method: KeelStr::from_static("GET"),
            path: KeelStr::from_static("/hello/:name"),
            handler: Some(hello),
            user_data: std::ptr::null_mut(),
        };
        register_route(ctx, &route)
    }))
    .unwrap_or(KEEL_ERR_INTERNAL)
}

static PLUGIN: KeelPlugin = KeelPlugin {
    struct_size: size_of::<KeelPlugin>() as u32,
    abi_version: KEEL_ABI_VERSION,
    id: KeelStr::EMPTY,      // the host takes plugin.yaml's id
    version: KeelStr::EMPTY, // and its version: both are written once, there
    flags: 0,
    activate: Some(activate),
    deactivate: None,
    get_extension: None,
};

/// The one exported symbol: the host calls it once per loaded copy of the library.
#[no_mangle]
pub extern "C" fn keel_plugin_entry() -> *const KeelPlugin {
    &PLUGIN
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        assert_eq!(greeting("ada"), "hello, ada, from {{id}}\n");
    }

    #[test]
    fn descriptor_leaves_id_and_version_to_plugin_yaml() {
        let d = unsafe { &*keel_plugin_entry() };
        assert_eq!(d.id.len, 0);
        assert_eq!(d.version.len, 0);
        assert_eq!(d.struct_size, 80); // sizeof(keel_plugin) on LP64
    }

    #[test]
    fn handler_answers_through_the_abi() {
        unsafe extern "C" fn write(res: *mut KeelHttpResponse, data: *const c_void, len: usize) -> KeelStatus {
            let out = &mut *((*res).host_data as *mut Vec<u8>);
            out.extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
            KEEL_OK
        }
        unsafe extern "C" fn add_header(_: *mut KeelHttpResponse, _: KeelStr, _: KeelStr) -> KeelStatus {
            KEEL_OK
        }
        let mut body: Vec<u8> = Vec::new();
        let params = [KeelHttpHeader { name: KeelStr::from_static("name"), value: KeelStr::from_static("ada") }];
        let req = KeelHttpRequest {
            struct_size: size_of::<KeelHttpRequest>() as u32,
            method: KeelStr::from_static("GET"),
            path: KeelStr::from_static("/ext/{{id}}/hello/ada"),
            route_path: KeelStr::from_static("/hello/ada"),
            query: KeelStr::EMPTY,
            headers: std::ptr::null(),
            headers_len: 0,
            params: params.as_ptr(),
            params_len: 1,
            body: std::ptr::null(),
            body_len: 0,
            principal: std::ptr::null(),
            request_id: KeelStr::EMPTY,
        };
        let mut res = KeelHttpResponse {
            struct_size: size_of::<KeelHttpResponse>() as u32,
            host_data: &mut body as *mut Vec<u8> as *mut c_void,
            set_status: None,
            add_header: Some(add_header),
            write: Some(write),
        };
        assert_eq!(unsafe { hello(std::ptr::null_mut(), &req, &mut res) }, KEEL_OK);
        assert_eq!(String::from_utf8(body).unwrap(), "hello, ada, from {{id}}\n");
    }
}
