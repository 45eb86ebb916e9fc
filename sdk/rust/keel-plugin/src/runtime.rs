//! Activation, the host handle, and the trampolines every host → plugin call goes through.

use crate::http::{AuthzRequest, IntoResponse, PrincipalBuilder, Request, Decision};
use crate::services::{Lease, ServiceInfo, ServiceTable};
use crate::sys::*;
use crate::{Error, Principal, Result};
use std::any::Any;
use std::ffi::c_void;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

/// A Keel plugin. `activate` builds the value and registers everything through `a`; the value is dropped at
/// deactivate (implement `Drop` to stop threads or flush state).
pub trait Plugin: Sized + Send + Sync + 'static {
    fn activate(a: &mut Activation) -> Result<Self>;
}

/// Log levels of keel_host.log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Debug = KEEL_LOG_DEBUG as isize,
    Info = KEEL_LOG_INFO as isize,
    Warn = KEEL_LOG_WARN as isize,
    Error = KEEL_LOG_ERROR as isize,
}

/// The host as one activation sees it: logging, services, commands, permissions. Cheap to copy into handlers.
/// Valid until the plugin's deactivate returns; do not use it from a thread that outlives that.
#[derive(Clone, Copy)]
pub struct Host {
    host: *const KeelHost,
    ctx: *mut KeelCtx,
}

// Safe: the host table is static for the process and its functions are [thread-safe] (host.h); the ctx stays valid
// until deactivate returns, and the closures holding a Host are dropped by then (the contract above).
unsafe impl Send for Host {}
unsafe impl Sync for Host {}

impl Host {
    fn raw(&self) -> &KeelHost {
        unsafe { &*self.host }
    }

    /// The host's name ("keel") and version.
    pub fn name(&self) -> &'static str {
        unsafe { self.raw().host_name.as_str() }
    }

    pub fn version(&self) -> &'static str {
        unsafe { self.raw().host_version.as_str() }
    }

    /// Writes `message` to the host log, attributed to this plugin. Never fails.
    pub fn log(&self, level: Level, message: &str) {
        if let Some(log) = self.raw().log {
            unsafe { log(self.ctx, level as i32, KeelStr::borrow(message)) }
        }
    }

    pub fn info(&self, message: &str) {
        self.log(Level::Info, message)
    }

    pub fn warn(&self, message: &str) {
        self.log(Level::Warn, message)
    }

    pub fn error(&self, message: &str) {
        self.log(Level::Error, message)
    }

    /// The host service table `id` (e.g. "keel.http/1") as `T`, or None when the host does not offer it.
    pub(crate) fn service<T>(&self, id: &str) -> Option<&'static T> {
        let get = self.raw().get_service?;
        unsafe { (get(self.ctx, KeelStr::borrow(id)) as *const T).as_ref() }
    }

    pub(crate) fn require<T>(&self, id: &str) -> Result<&'static T> {
        self.service(id).ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, format!("this host does not offer {}", id)))
    }

    /// Leases the table serving `interface` (declared under consumes:) for `tenant` ("" = the host-wide choice).
    /// The provider's table must be at least `size_of::<T>()` (KEEL_ERR_UNSUPPORTED otherwise). The lease is released
    /// when dropped; hold it for one unit of work.
    pub fn acquire<T: ServiceTable>(&self, interface: &str, tenant: &str) -> Result<Lease<T>> {
        let services: &'static KeelHostServices = self.require(KEEL_SERVICE_SERVICES)?;
        let acquire = services.acquire.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.services/1 has no acquire"))?;
        let (mut lease, mut table) = (std::ptr::null_mut(), std::ptr::null());
        let status = unsafe {
            acquire(self.ctx, KeelStr::borrow(interface), KeelStr::borrow(tenant), size_of::<T>() as u32, &mut lease, &mut table)
        };
        Error::check(status, &format!("acquiring {}", interface))?;
        Ok(unsafe { Lease::new(services, lease, table as *const T) })
    }

    /// Calls command `command` of plugin `plugin` (declared under calls:) for `principal`, which must be the caller
    /// of the request being handled on this thread, with `args_json` (a JSON array). Returns the result as JSON
    /// text; a result over `64 KiB` is KEEL_ERR_LIMIT (use [`Host::call_with_capacity`]).
    pub fn call(&self, principal: &Principal, plugin: &str, command: &str, args_json: &str) -> Result<String> {
        self.call_with_capacity(principal, plugin, command, args_json, 64 * 1024)
    }

    pub fn call_with_capacity(&self, principal: &Principal, plugin: &str, command: &str, args_json: &str, capacity: usize)
        -> Result<String> {
        let commands: &'static KeelHostCommands = self.require(KEEL_SERVICE_COMMANDS)?;
        let call = commands.call.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.commands/1 has no call"))?;
        let mut out = vec![0u8; capacity];
        let mut len = 0usize;
        let status = unsafe {
            call(self.ctx, KeelStr::borrow(plugin), KeelStr::borrow(command), KeelStr::borrow(args_json),
                 principal.raw(), out.as_mut_ptr(), out.len(), &mut len)
        };
        if status == KEEL_ERR_LIMIT {
            return Err(Error::new(status, format!("{}.{}: the result needs {} bytes, over {}", plugin, command, len, capacity)));
        }
        Error::check(status, &format!("calling {}.{}", plugin, command))?;
        out.truncate(len.min(capacity));
        String::from_utf8(out).map_err(|_| Error::internal(format!("{}.{} answered with text that is not UTF-8", plugin, command)))
    }

    /// Whether `principal` may do `action` on `resource` (a permission item declared under permissions:).
    pub fn check_permission(&self, principal: &Principal, action: &str, resource: &str) -> Result<bool> {
        let auth: &'static KeelHostAuth = self.require(KEEL_SERVICE_AUTH)?;
        let check = auth.check_permission.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.auth/1 has no check_permission"))?;
        let mut decision = KEEL_AUTH_DENY;
        let status = unsafe {
            check(self.ctx, principal.raw(), KeelStr::borrow(action), KeelStr::borrow(resource), &mut decision)
        };
        Error::check(status, "check_permission")?;
        Ok(decision == KEEL_AUTH_ALLOW)
    }
}

/// The plugin's configuration: JSON text (an object), or "" when the operator gave none.
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub text: String,
}

impl Config {
    /// The configuration parsed; an empty configuration is an empty object.
    pub fn json(&self) -> Result<crate::json::Json> {
        if self.text.trim().is_empty() {
            return Ok(crate::json::Json::Object(Vec::new()));
        }
        crate::json::Json::parse(&self.text).map_err(|e| Error::new(KEEL_ERR_INVALID_ARGUMENT, format!("configuration: {}", e)))
    }
}

/// A console menu entry (keel/menu.h). `id` unique across plugins, `title` not empty.
#[derive(Clone, Debug, Default)]
pub struct MenuEntry {
    pub id: String,
    pub title: String,
    pub parent: String,
    pub link: String,
    pub order: i32,
    pub icon: String,
    pub permission: String,
}

impl MenuEntry {
    pub fn new(id: &str, title: &str, link: &str) -> MenuEntry {
        MenuEntry { id: id.into(), title: title.into(), link: link.into(), ..MenuEntry::default() }
    }
}

type RouteFn = dyn Fn(&Request) -> Result<crate::Response> + Send + Sync;
type AuthenticateFn = dyn Fn(&Request, &mut PrincipalBuilder) -> Result<()> + Send + Sync;
type AuthorizeFn = dyn Fn(&AuthzRequest) -> Result<Decision> + Send + Sync;
type ListenFn = dyn Fn(&str, &str, Option<ServiceInfo>) + Send + Sync;

/// What `activate` registers with. Everything is published when activate returns Ok, and discarded with its
/// closures when it returns an error.
pub struct Activation {
    host: Host,
    owned: Vec<Box<dyn Any + Send + Sync>>,
}

impl Activation {
    /// The host handle, to keep in handlers (log, acquire, call).
    pub fn host(&self) -> Host {
        self.host
    }

    /// The plugin's configuration (keel.config/1), copied.
    pub fn config(&self) -> Result<Config> {
        let config: &KeelHostConfig = self.host.require(KEEL_SERVICE_CONFIG)?;
        let get = config.get.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.config/1 has no get"))?;
        Ok(Config { text: unsafe { get(self.host.ctx).as_str() }.to_string() })
    }

    /// Keeps `f` until deactivate and returns the user_data pointer for it.
    fn keep<F: ?Sized + Send + Sync + 'static>(&mut self, f: Box<F>) -> *mut c_void
    where Box<F>: Send + Sync {
        let outer = Box::new(f);
        let ptr = &*outer as *const Box<F> as *mut c_void;
        self.owned.push(outer);
        ptr
    }

    /// Registers `handler` for `method` ("GET", …, "*") and `path` below /ext/<id> ("/items/:id", "/files/*").
    /// Called concurrently on the host's threads.
    pub fn route<F, R>(&mut self, method: &str, path: &str, handler: F) -> Result<()>
    where F: Fn(&Request) -> R + Send + Sync + 'static, R: IntoResponse {
        let http: &KeelHostHttp = self.host.require(KEEL_SERVICE_HTTP)?;
        let register = http.register_route.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.http/1 has no register_route"))?;
        let f: Box<RouteFn> = Box::new(move |r: &Request| handler(r).into_response());
        let route = KeelRoute {
            struct_size: size_of::<KeelRoute>() as u32,
            method: KeelStr::borrow(method),
            path: KeelStr::borrow(path),
            handler: Some(route_trampoline),
            user_data: self.keep(f),
        };
        Error::check(unsafe { register(self.host.ctx, &route) }, &format!("registering {} {}", method, path))
    }

    /// Adds a console menu entry (keel.menu/1).
    pub fn menu(&mut self, entry: &MenuEntry) -> Result<()> {
        let menu: &KeelHostMenu = self.host.require(KEEL_SERVICE_MENU)?;
        let add = menu.add_entry.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.menu/1 has no add_entry"))?;
        let raw = KeelMenuEntry {
            struct_size: size_of::<KeelMenuEntry>() as u32,
            id: KeelStr::borrow(&entry.id),
            title: KeelStr::borrow(&entry.title),
            parent: KeelStr::borrow(&entry.parent),
            link: KeelStr::borrow(&entry.link),
            order: entry.order,
            icon: KeelStr::borrow(&entry.icon),
            permission: KeelStr::borrow(&entry.permission),
        };
        Error::check(unsafe { add(self.host.ctx, &raw) }, &format!("adding menu entry {}", entry.id))
    }

    /// Adds an authenticate hook: set the identity on the builder to establish a principal, return Ok without it
    /// to abstain; an error denies the request. Needs the "authenticate" capability.
    pub fn authenticator<F>(&mut self, name: &str, hook: F) -> Result<()>
    where F: Fn(&Request, &mut PrincipalBuilder) -> Result<()> + Send + Sync + 'static {
        let auth: &KeelHostAuth = self.host.require(KEEL_SERVICE_AUTH)?;
        let register = auth.register_authenticator.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.auth/1 has no register_authenticator"))?;
        let f: Box<AuthenticateFn> = Box::new(hook);
        let raw = KeelAuthenticator {
            struct_size: size_of::<KeelAuthenticator>() as u32,
            name: KeelStr::borrow(name),
            authenticate: Some(authenticate_trampoline),
            user_data: self.keep(f),
        };
        Error::check(unsafe { register(self.host.ctx, &raw) }, &format!("registering authenticator {}", name))
    }

    /// Adds an authorize hook; an error counts as Deny. Needs the "authorize" capability.
    pub fn authorizer<F>(&mut self, name: &str, hook: F) -> Result<()>
    where F: Fn(&AuthzRequest) -> Result<Decision> + Send + Sync + 'static {
        let auth: &KeelHostAuth = self.host.require(KEEL_SERVICE_AUTH)?;
        let register = auth.register_authorizer.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.auth/1 has no register_authorizer"))?;
        let f: Box<AuthorizeFn> = Box::new(hook);
        let raw = KeelAuthorizer {
            struct_size: size_of::<KeelAuthorizer>() as u32,
            name: KeelStr::borrow(name),
            authorize: Some(authorize_trampoline),
            user_data: self.keep(f),
        };
        Error::check(unsafe { register(self.host.ctx, &raw) }, &format!("registering authorizer {}", name))
    }

    /// Provides `table` for `interface` (declared under provides:).
    pub fn provide<T: ServiceTable>(&mut self, interface: &str, table: &'static T) -> Result<()> {
        let services: &KeelHostServices = self.host.require(KEEL_SERVICE_SERVICES)?;
        let provide = services.provide.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.services/1 has no provide"))?;
        let raw = KeelServiceProvision {
            struct_size: size_of::<KeelServiceProvision>() as u32,
            interface_id: KeelStr::borrow(interface),
            table: table as *const T as *const c_void,
        };
        Error::check(unsafe { provide(self.host.ctx, &raw) }, &format!("providing {}", interface))
    }

    /// Asks to be told (interface, tenant, the new provider or None) when the provider of a consumed interface
    /// changes. Runs on the host's lifecycle thread; must not block for long.
    pub fn listen<F>(&mut self, interface: &str, changed: F) -> Result<()>
    where F: Fn(&str, &str, Option<ServiceInfo>) + Send + Sync + 'static {
        let services: &KeelHostServices = self.host.require(KEEL_SERVICE_SERVICES)?;
        let listen = services.listen.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "keel.services/1 has no listen"))?;
        let f: Box<ListenFn> = Box::new(changed);
        let raw = KeelServiceListener {
            struct_size: size_of::<KeelServiceListener>() as u32,
            interface_id: KeelStr::borrow(interface),
            changed: Some(listen_trampoline),
            user_data: self.keep(f),
        };
        Error::check(unsafe { listen(self.host.ctx, &raw) }, &format!("listening to {}", interface))
    }
}

// ---- the runtime behind plugin! ----

/// The host table, for set_error from handlers (it is static: host.h).
static HOST: AtomicPtr<KeelHost> = AtomicPtr::new(std::ptr::null_mut());

/// Live activations by ctx address: the plugin value and the closures registered.
static LIVE: Mutex<Vec<(usize, Box<dyn Any + Send>)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(usize, Box<dyn Any + Send>)>> {
    LIVE.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {}", s)
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {}", s)
    } else {
        "panic".to_string()
    }
}

/// Runs `f`, turning an error or a panic into set_error(ctx, message) and a status. Nothing unwinds out.
pub(crate) fn guard(ctx: *mut KeelCtx, f: impl FnOnce() -> Result<()>) -> KeelStatus {
    let error = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => return KEEL_OK,
        Ok(Err(e)) => e,
        Err(payload) => Error::internal(panic_message(&*payload)),
    };
    let _ = catch_unwind(AssertUnwindSafe(|| {
        let host = HOST.load(Ordering::Acquire);
        if let Some(set_error) = unsafe { host.as_ref() }.and_then(|h| h.set_error) {
            unsafe { set_error(ctx, KeelStr::borrow(&error.message)) }
        }
    }));
    error.status
}

/// The descriptor `plugin!` exports: empty id and version take plugin.yaml's.
pub const fn descriptor(id: &'static str, version: &'static str, activate: KeelLifecycleFn, deactivate: KeelLifecycleFn)
    -> KeelPlugin {
    KeelPlugin {
        struct_size: size_of::<KeelPlugin>() as u32,
        abi_version: KEEL_ABI_VERSION,
        id: KeelStr::from_static(id),
        version: KeelStr::from_static(version),
        flags: 0,
        activate: Some(activate),
        deactivate: Some(deactivate),
        get_extension: None,
    }
}

struct Live<T> {
    _plugin: T,
    _owned: Vec<Box<dyn Any + Send + Sync>>,
}

/// keel_plugin.activate for `T`.
///
/// # Safety
/// `host` and `ctx` are the host's, valid until deactivate returns.
pub unsafe fn activate<T: Plugin>(host: *const KeelHost, ctx: *mut KeelCtx) -> KeelStatus {
    if host.is_null() {
        return KEEL_ERR_INVALID_ARGUMENT;
    }
    HOST.store(host as *mut KeelHost, Ordering::Release);
    guard(ctx, || {
        let mut a = Activation { host: Host { host, ctx }, owned: Vec::new() };
        let plugin = T::activate(&mut a)?;
        live().push((ctx as usize, Box::new(Live { _plugin: plugin, _owned: a.owned })));
        Ok(())
    })
}

/// keel_plugin.deactivate: drops the plugin value and its closures.
///
/// # Safety
/// As for [`activate`].
pub unsafe fn deactivate(_host: *const KeelHost, ctx: *mut KeelCtx) -> KeelStatus {
    guard(ctx, || {
        let taken = {
            let mut all = live();
            all.iter().position(|(c, _)| *c == ctx as usize).map(|i| all.swap_remove(i))
        };
        drop(taken); // outside the lock: a Drop may log or join threads
        Ok(())
    })
}

unsafe extern "C" fn route_trampoline(user_data: *mut c_void, req: *const KeelHttpRequest, res: *mut KeelHttpResponse) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let (Some(req), false) = (req.as_ref(), res.is_null()) else {
            return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL request or response"));
        };
        let f = &*(user_data as *const Box<RouteFn>);
        f(&Request::from_raw(req))?.send(res)
    })
}

unsafe extern "C" fn authenticate_trampoline(user_data: *mut c_void, req: *const KeelHttpRequest, out: *mut KeelPrincipalBuilder) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let (Some(req), Some(out)) = (req.as_ref(), out.as_mut()) else {
            return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL request or builder"));
        };
        let f = &*(user_data as *const Box<AuthenticateFn>);
        f(&Request::from_raw(req), &mut PrincipalBuilder::from_raw(out))
    })
}

unsafe extern "C" fn authorize_trampoline(user_data: *mut c_void, q: *const KeelAuthzRequest, out: *mut KeelAuthDecision) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let (Some(q), false) = (q.as_ref(), out.is_null()) else {
            return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL question or decision"));
        };
        let f = &*(user_data as *const Box<AuthorizeFn>);
        *out = f(&AuthzRequest::from_raw(q))? as KeelAuthDecision;
        Ok(())
    })
}

unsafe extern "C" fn listen_trampoline(user_data: *mut c_void, interface: KeelStr, tenant: KeelStr, now: *const KeelServiceInfo) {
    let _ = guard(std::ptr::null_mut(), || {
        let f = &*(user_data as *const Box<ListenFn>);
        f(interface.as_str(), tenant.as_str(), now.as_ref().map(|i| ServiceInfo::from_raw(i)));
        Ok(())
    });
}

/// The body of a command whose signature returns `status(str)` or `status(json)`: runs `f` and writes the text it
/// returns into the host's `out`. An error or a panic in `f` reaches the host as its status and a set_error message
/// (nothing unwinds out). For example, with `signature: "(str) -> status(json)"` in plugin.yaml:
///
/// ```
/// use keel_plugin::{command_output, json, sys::{KeelOutput, KeelStatus, KeelStr}};
/// #[no_mangle]
/// pub unsafe extern "C" fn notes_echo(text: KeelStr, out: *mut KeelOutput) -> KeelStatus {
///     command_output(out, || Ok(format!("{{\"echo\":{}}}", json::quote(text.as_str()))))
/// }
/// ```
///
/// # Safety
/// `out` is the `keel_output *` the host passed to the running command.
pub unsafe fn command_output(out: *mut KeelOutput, f: impl FnOnce() -> Result<String>) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let text = f()?;
        let write = out.as_ref().and_then(|o| o.write).ok_or_else(|| Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL output"))?;
        Error::check(write(out, text.as_ptr() as *const c_void, text.len()), "writing the command's result")
    })
}
