//! The safe wrappers against a host written here in Rust: plugin! exports a descriptor that leaves id and version
//! to plugin.yaml; routes answer through the response writer; an Error and a panic become a status and a
//! set_error message, never an unwind; leases release on drop; commands, permissions, menus, the configuration
//! auth hooks and service listeners reach the host's tables; deactivate drops the plugin value.

use keel_plugin::sys::*;
use keel_plugin::*;
use std::ffi::c_void;
use std::mem::size_of;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

// ---- the plugin under test ----

#[repr(C)]
struct Echo {
    struct_size: u32,
    twice: unsafe extern "C" fn(i32) -> i32,
}
unsafe impl ServiceTable for Echo {}

unsafe extern "C" fn twice(x: i32) -> i32 {
    x * 2
}
static ECHO: Echo = Echo { struct_size: size_of::<Echo>() as u32, twice };

static CHANGES: Mutex<Vec<String>> = Mutex::new(Vec::new());
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Demo;

impl Drop for Demo {
    fn drop(&mut self) {
        DROPPED.fetch_add(1, Ordering::SeqCst);
    }
}

impl Plugin for Demo {
    fn activate(a: &mut Activation) -> Result<Demo> {
        let config = a.config()?.json()?;
        let greeting = config.get("greeting").and_then(json::Json::as_str).unwrap_or("hi").to_string();
        let host = a.host();
        a.route("GET", "/hello/:name", move |req: &Request| {
            host.info(&format!("hello {}", req.request_id()));
            Response::text(format!("{}, {}", greeting, req.param("name").unwrap_or("?")))
                .with_status(201)
                .header("x-q", req.query_param("q").unwrap_or(""))
        })?;
        a.route("GET", "/fail", |_: &Request| -> Result<Response> { Err(Error::new(KEEL_ERR_UNAVAILABLE, "db down")) })?;
        a.route("GET", "/panic", |_: &Request| -> Response { panic!("boom") })?;
        a.route("GET", "/lease", move |req: &Request| -> Result<Response> {
            let lease = host.acquire::<Echo>("test.echo/1", "")?;
            let doubled = unsafe { (lease.twice)(21) };
            let info = lease.info()?;
            let principal = req.principal().ok_or_else(|| Error::internal("no principal"))?;
            let sum = host.call(&principal, "calc", "add", "[1,2]")?;
            let allowed = host.check_permission(&principal, "view", "demo.items")?;
            Ok(Response::text(format!("{} {} {} {} {}", doubled, info.provider_id, sum, allowed, principal.id())))
        })?;
        a.menu(&MenuEntry::new("demo.main", "Demo", "/ext/demo/hello/x"))?;
        a.authorizer("demo", |q: &AuthzRequest| Ok(if q.action() == "delete" { Decision::Deny } else { Decision::Abstain }))?;
        a.authenticator("key", |req: &Request, b: &mut PrincipalBuilder| {
            if req.query_param("q") == Some("yes") {
                b.set_identity("bob", "Bob", "")?;
                b.add_role("editor")?;
            }
            Ok(())
        })?;
        a.provide("test.echo/1", &ECHO)?;
        a.listen("test.echo", |interface: &str, tenant: &str, now: Option<ServiceInfo>| {
            let who = now.map(|i| i.provider_id).unwrap_or_else(|| "none".into());
            CHANGES.lock().unwrap().push(format!("{} [{}] {}", interface, tenant, who));
        })?;
        Ok(Demo)
    }
}

plugin!(Demo);

// ---- the host ----

#[derive(Default)]
struct Recorded {
    logs: Vec<String>,
    errors: Vec<String>,
    routes: Vec<(String, KeelHttpHandlerFn, usize)>,
    menus: Vec<String>,
    authorizers: Vec<(KeelAuthorizeFn, usize)>,
    provided: Vec<String>,
    listeners: Vec<(KeelServiceChangedFn, usize)>,
    authenticators: Vec<(KeelAuthenticateFn, usize)>,
}
static RECORDED: Mutex<Option<Recorded>> = Mutex::new(None);
/// Held by each test for its whole run: they share `RECORDED`, and cargo runs tests on parallel threads (one test's
/// error message must never be read as another's).
static SERIAL: Mutex<()> = Mutex::new(());
static RELEASED: AtomicUsize = AtomicUsize::new(0);

fn record<T>(f: impl FnOnce(&mut Recorded) -> T) -> T {
    f(RECORDED.lock().unwrap().get_or_insert_with(Recorded::default))
}

unsafe fn text(s: KeelStr) -> String {
    s.as_str().to_string()
}

unsafe extern "C" fn log(_: *mut KeelCtx, _: i32, m: KeelStr) {
    let m = text(m);
    record(|r| r.logs.push(m));
}
unsafe extern "C" fn set_error(_: *mut KeelCtx, m: KeelStr) {
    let m = text(m);
    record(|r| r.errors.push(m));
}
unsafe extern "C" fn register_route(_: *mut KeelCtx, route: *const KeelRoute) -> KeelStatus {
    let r = &*route;
    let key = format!("{} {}", text(r.method), text(r.path));
    record(|rec| rec.routes.push((key, r.handler.unwrap(), r.user_data as usize)));
    KEEL_OK
}
unsafe extern "C" fn add_entry(_: *mut KeelCtx, e: *const KeelMenuEntry) -> KeelStatus {
    let line = format!("{} {} {}", text((*e).id), text((*e).title), text((*e).link));
    record(|r| r.menus.push(line));
    KEEL_OK
}
unsafe extern "C" fn config_get(_: *mut KeelCtx) -> KeelStr {
    KeelStr::from_static(r#"{"greeting": "hello"}"#)
}
unsafe extern "C" fn register_authenticator(_: *mut KeelCtx, h: *const KeelAuthenticator) -> KeelStatus {
    let h = &*h;
    record(|r| r.authenticators.push((h.authenticate.unwrap(), h.user_data as usize)));
    KEEL_OK
}
unsafe extern "C" fn set_identity(b: *mut KeelPrincipalBuilder, id: KeelStr, name: KeelStr, tenant: KeelStr) -> KeelStatus {
    (*((*b).host_data as *mut Vec<String>)).push(format!("{} {} [{}]", text(id), text(name), text(tenant)));
    KEEL_OK
}
unsafe extern "C" fn add_role(b: *mut KeelPrincipalBuilder, role: KeelStr) -> KeelStatus {
    (*((*b).host_data as *mut Vec<String>)).push(format!("role {}", text(role)));
    KEEL_OK
}
unsafe extern "C" fn register_authorizer(_: *mut KeelCtx, h: *const KeelAuthorizer) -> KeelStatus {
    let h = &*h;
    record(|r| r.authorizers.push((h.authorize.unwrap(), h.user_data as usize)));
    KEEL_OK
}
unsafe extern "C" fn check_permission(_: *mut KeelCtx, _: *const KeelPrincipal, action: KeelStr, _: KeelStr, out: *mut KeelAuthDecision) -> KeelStatus {
    *out = if text(action) == "view" { KEEL_AUTH_ALLOW } else { KEEL_AUTH_DENY };
    KEEL_OK
}
unsafe extern "C" fn provide(_: *mut KeelCtx, p: *const KeelServiceProvision) -> KeelStatus {
    let id = text((*p).interface_id);
    record(|r| r.provided.push(id));
    KEEL_OK
}
unsafe extern "C" fn listen(_: *mut KeelCtx, l: *const KeelServiceListener) -> KeelStatus {
    let l = &*l;
    record(|r| r.listeners.push((l.changed.unwrap(), l.user_data as usize)));
    KEEL_OK
}
unsafe extern "C" fn acquire(_: *mut KeelCtx, _: KeelStr, _: KeelStr, min: u32, lease: *mut *mut KeelServiceLease, table: *mut *const c_void) -> KeelStatus {
    if min as usize != size_of::<Echo>() {
        return KEEL_ERR_UNSUPPORTED;
    }
    *lease = 0x1000 as *mut KeelServiceLease;
    *table = &ECHO as *const Echo as *const c_void;
    KEEL_OK
}
unsafe extern "C" fn release(_: *mut KeelServiceLease) {
    RELEASED.fetch_add(1, Ordering::SeqCst);
}
unsafe extern "C" fn describe(_: *const KeelServiceLease, out: *mut KeelServiceInfo) -> KeelStatus {
    (*out).provider_id = KeelStr::from_static("alpha");
    KEEL_OK
}
unsafe extern "C" fn call(_: *mut KeelCtx, _: KeelStr, _: KeelStr, args: KeelStr, _: *const KeelPrincipal, out: *mut u8, cap: usize, len: *mut usize) -> KeelStatus {
    let answer = if text(args) == "[1,2]" { "3" } else { "null" };
    *len = answer.len();
    if cap < answer.len() {
        return KEEL_ERR_LIMIT;
    }
    std::ptr::copy_nonoverlapping(answer.as_ptr(), out, answer.len());
    KEEL_OK
}

static HTTP: KeelHostHttp = KeelHostHttp { struct_size: size_of::<KeelHostHttp>() as u32, register_route: Some(register_route) };
static MENU: KeelHostMenu = KeelHostMenu { struct_size: size_of::<KeelHostMenu>() as u32, add_entry: Some(add_entry) };
static CONFIG: KeelHostConfig = KeelHostConfig { struct_size: size_of::<KeelHostConfig>() as u32, get: Some(config_get) };
static AUTH: KeelHostAuth = KeelHostAuth {
    struct_size: size_of::<KeelHostAuth>() as u32,
    register_authenticator: Some(register_authenticator),
    register_authorizer: Some(register_authorizer),
    check_permission: Some(check_permission),
};
static SERVICES: KeelHostServices = KeelHostServices {
    struct_size: size_of::<KeelHostServices>() as u32,
    provide: Some(provide),
    listen: Some(listen),
    acquire: Some(acquire),
    release: Some(release),
    describe: Some(describe),
};
static COMMANDS: KeelHostCommands = KeelHostCommands { struct_size: size_of::<KeelHostCommands>() as u32, call: Some(call) };

unsafe extern "C" fn get_service(_: *mut KeelCtx, id: KeelStr) -> *const c_void {
    match id.as_str() {
        KEEL_SERVICE_HTTP => &HTTP as *const _ as *const c_void,
        KEEL_SERVICE_MENU => &MENU as *const _ as *const c_void,
        KEEL_SERVICE_CONFIG => &CONFIG as *const _ as *const c_void,
        KEEL_SERVICE_AUTH => &AUTH as *const _ as *const c_void,
        KEEL_SERVICE_SERVICES => &SERVICES as *const _ as *const c_void,
        KEEL_SERVICE_COMMANDS => &COMMANDS as *const _ as *const c_void,
        _ => std::ptr::null(),
    }
}

/// The host table as a static (constant data; its functions are thread-safe).
struct SyncHost(KeelHost);
unsafe impl Sync for SyncHost {}

static HOST: SyncHost = SyncHost(KeelHost {
    struct_size: size_of::<KeelHost>() as u32,
    abi_version: KEEL_ABI_VERSION,
    host_name: KeelStr::from_static("keel"),
    host_version: KeelStr::from_static("0.0.0-test"),
    log: Some(log),
    set_error: Some(set_error),
    get_service: Some(get_service),
});

struct Written {
    status: u32,
    headers: Vec<String>,
    body: Vec<u8>,
}

unsafe extern "C" fn set_status(res: *mut KeelHttpResponse, status: u32) -> KeelStatus {
    (*((*res).host_data as *mut Written)).status = status;
    KEEL_OK
}
unsafe extern "C" fn add_header(res: *mut KeelHttpResponse, n: KeelStr, v: KeelStr) -> KeelStatus {
    (*((*res).host_data as *mut Written)).headers.push(format!("{}: {}", text(n), text(v)));
    KEEL_OK
}
unsafe extern "C" fn write(res: *mut KeelHttpResponse, data: *const c_void, len: usize) -> KeelStatus {
    (*((*res).host_data as *mut Written)).body.extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
    KEEL_OK
}

/// Calls the route registered as `key` with path parameter name=`name`; returns the status and what was written.
fn serve(key: &str, name: &str) -> (KeelStatus, Written) {
    let (handler, user_data) = record(|r| r.routes.iter().find(|(k, _, _)| k == key).map(|(_, h, u)| (*h, *u))).unwrap();
    let roles = [KeelStr::from_static("admin")];
    let principal = KeelPrincipal {
        struct_size: size_of::<KeelPrincipal>() as u32,
        flags: 0,
        id: KeelStr::from_static("alice"),
        display_name: KeelStr::EMPTY,
        tenant: KeelStr::from_static("default"),
        authenticated_by: KeelStr::from_static("keel"),
        roles: roles.as_ptr(),
        roles_len: 1,
    };
    let params = [KeelHttpHeader { name: KeelStr::from_static("name"), value: KeelStr::borrow(name) }];
    let req = KeelHttpRequest {
        struct_size: size_of::<KeelHttpRequest>() as u32,
        method: KeelStr::from_static("GET"),
        path: KeelStr::EMPTY,
        route_path: KeelStr::EMPTY,
        query: KeelStr::from_static("a=1&q=yes"),
        headers: std::ptr::null(),
        headers_len: 0,
        params: params.as_ptr(),
        params_len: 1,
        body: std::ptr::null(),
        body_len: 0,
        principal: &principal,
        request_id: KeelStr::from_static("r1"),
    };
    let mut written = Written { status: 200, headers: Vec::new(), body: Vec::new() };
    let mut res = KeelHttpResponse {
        struct_size: size_of::<KeelHttpResponse>() as u32,
        host_data: &mut written as *mut Written as *mut c_void,
        set_status: Some(set_status),
        add_header: Some(add_header),
        write: Some(write),
    };
    let status = unsafe { handler(user_data as *mut c_void, &req, &mut res) };
    (status, written)
}

#[test]
fn a_plugin_through_the_abi() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let d = unsafe { &*keel_plugin_entry() };
    assert_eq!((d.id.len, d.version.len), (0, 0), "id and version are left to plugin.yaml");
    assert_eq!(d.struct_size as usize, size_of::<KeelPlugin>());
    assert_eq!(d.abi_version, KEEL_ABI_VERSION);
    let ctx = 0x10 as *mut KeelCtx;
    assert_eq!(unsafe { d.activate.unwrap()(&HOST.0, ctx) }, KEEL_OK);
    assert_eq!(record(|r| r.menus.clone()), ["demo.main Demo /ext/demo/hello/x"]);
    assert_eq!(record(|r| r.provided.clone()), ["test.echo/1"]);

    let (status, w) = serve("GET /hello/:name", "ada");
    assert_eq!(status, KEEL_OK);
    assert_eq!((w.status, String::from_utf8(w.body).unwrap()), (201, "hello, ada".to_string()), "the configuration's greeting");
    assert_eq!(w.headers, ["content-type: text/plain; charset=utf-8", "x-q: yes"]);
    assert!(record(|r| r.logs.contains(&"hello r1".to_string())));

    let (status, _) = serve("GET /fail", "");
    assert_eq!(status, KEEL_ERR_UNAVAILABLE);
    assert_eq!(record(|r| r.errors.last().cloned()), Some("db down".to_string()));
    std::panic::set_hook(Box::new(|_| {})); // keep the test's output clean; the panic is still caught
    let (status, _) = serve("GET /panic", "");
    let _ = std::panic::take_hook();
    assert_eq!(status, KEEL_ERR_INTERNAL);
    assert_eq!(record(|r| r.errors.last().cloned()), Some("panic: boom".to_string()));

    let (status, w) = serve("GET /lease", "");
    assert_eq!(status, KEEL_OK, "{:?}", record(|r| r.errors.last().cloned()));
    assert_eq!(String::from_utf8(w.body).unwrap(), "42 alpha 3 true alice");
    assert_eq!(RELEASED.load(Ordering::SeqCst), 1, "the lease is released when dropped");

    let (authorize, user_data) = record(|r| r.authorizers[0]);
    let principal = KeelPrincipal {
        struct_size: size_of::<KeelPrincipal>() as u32,
        flags: KEEL_PRINCIPAL_ANONYMOUS,
        id: KeelStr::EMPTY,
        display_name: KeelStr::EMPTY,
        tenant: KeelStr::EMPTY,
        authenticated_by: KeelStr::EMPTY,
        roles: std::ptr::null(),
        roles_len: 0,
    };
    for (action, expected) in [("delete", KEEL_AUTH_DENY), ("read", KEEL_AUTH_ABSTAIN)] {
        let q = KeelAuthzRequest {
            struct_size: size_of::<KeelAuthzRequest>() as u32,
            principal: &principal,
            action: KeelStr::borrow(action),
            resource: KeelStr::EMPTY,
            http: std::ptr::null(),
        };
        let mut decision = -1;
        assert_eq!(unsafe { authorize(user_data as *mut c_void, &q, &mut decision) }, KEEL_OK);
        assert_eq!(decision, expected, "{}", action);
    }

    let (authenticate, user_data) = record(|r| r.authenticators[0]);
    let mut built: Vec<String> = Vec::new();
    let mut builder = KeelPrincipalBuilder {
        struct_size: size_of::<KeelPrincipalBuilder>() as u32,
        host_data: &mut built as *mut Vec<String> as *mut c_void,
        set_identity: Some(set_identity),
        add_role: Some(add_role),
    };
    let req = KeelHttpRequest {
        struct_size: size_of::<KeelHttpRequest>() as u32,
        method: KeelStr::from_static("GET"),
        path: KeelStr::EMPTY,
        route_path: KeelStr::EMPTY,
        query: KeelStr::from_static("q=yes"),
        headers: std::ptr::null(),
        headers_len: 0,
        params: std::ptr::null(),
        params_len: 0,
        body: std::ptr::null(),
        body_len: 0,
        principal: &principal,
        request_id: KeelStr::EMPTY,
    };
    assert_eq!(unsafe { authenticate(user_data as *mut c_void, &req, &mut builder) }, KEEL_OK);
    assert_eq!(built, ["bob Bob []", "role editor"]);

    let (changed, user_data) = record(|r| r.listeners[0]);
    let info = KeelServiceInfo {
        struct_size: size_of::<KeelServiceInfo>() as u32,
        version: KEEL_ABI_VERSION,
        interface_id: KeelStr::from_static("test.echo/1"),
        provider_id: KeelStr::from_static("beta"),
        provider_version: KeelStr::from_static("2.0.0"),
        generation: 3,
        table_size: 16,
    };
    unsafe {
        changed(user_data as *mut c_void, KeelStr::from_static("test.echo/1"), KeelStr::EMPTY, &info);
        changed(user_data as *mut c_void, KeelStr::from_static("test.echo/1"), KeelStr::from_static("acme"), std::ptr::null());
    }
    assert_eq!(*CHANGES.lock().unwrap(), ["test.echo/1 [] beta", "test.echo/1 [acme] none"]);

    assert_eq!(DROPPED.load(Ordering::SeqCst), 0);
    assert_eq!(unsafe { d.deactivate.unwrap()(&HOST.0, ctx) }, KEEL_OK);
    assert_eq!(DROPPED.load(Ordering::SeqCst), 1, "deactivate drops the plugin value");
}

unsafe extern "C" fn output_write(out: *mut KeelOutput, data: *const c_void, len: usize) -> KeelStatus {
    (*((*out).host_data as *mut Vec<u8>)).extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
    KEEL_OK
}

#[test]
fn a_command_writes_its_result_and_catches_its_panic() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = Vec::new();
    let mut out = KeelOutput {
        struct_size: size_of::<KeelOutput>() as u32,
        host_data: &mut text as *mut Vec<u8> as *mut c_void,
        write: Some(output_write),
    };
    assert_eq!(unsafe { command_output(&mut out, || Ok(json::quote("a\"b"))) }, KEEL_OK);
    assert_eq!(String::from_utf8(text.clone()).unwrap(), r#""a\"b""#);
    std::panic::set_hook(Box::new(|_| {}));
    let status = unsafe { command_output(&mut out, || -> Result<String> { panic!("bad") }) };
    let _ = std::panic::take_hook();
    assert_eq!(status, KEEL_ERR_INTERNAL);
    assert_eq!(unsafe { command_output(&mut out, || Err(Error::new(KEEL_ERR_DENIED, "no"))) }, KEEL_ERR_DENIED);
}
