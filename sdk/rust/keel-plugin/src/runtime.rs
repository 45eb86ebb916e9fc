//! What a plugin sees: the Plugin trait, Activation (what activate registers with), and the Host handle.

use crate::http::{AuthzRequest, IntoResponse, PrincipalBuilder, Request, Decision};
use crate::services::{Lease, ServiceInfo, ServiceTable};
use crate::boundary::{authenticate_trampoline, authorize_trampoline, listen_trampoline, route_trampoline};
use crate::sys::*;
use crate::{Error, Principal, Result};
use std::any::Any;
use std::ffi::c_void;
use std::mem::size_of;

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
    pub(crate) host: *const KeelHost,
    pub(crate) ctx: *mut KeelCtx,
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

pub(crate) type RouteFn = dyn Fn(&Request) -> Result<crate::Response> + Send + Sync;
pub(crate) type AuthenticateFn = dyn Fn(&Request, &mut PrincipalBuilder) -> Result<()> + Send + Sync;
pub(crate) type AuthorizeFn = dyn Fn(&AuthzRequest) -> Result<Decision> + Send + Sync;
pub(crate) type ListenFn = dyn Fn(&str, &str, Option<ServiceInfo>) + Send + Sync;

/// What `activate` registers with. Everything is published when activate returns Ok, and discarded with its
/// closures when it returns an error.
pub struct Activation {
    pub(crate) host: Host,
    pub(crate) owned: Vec<Box<dyn Any + Send + Sync>>,
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
        Error::check_refusal(unsafe { register(self.host.ctx, &route) }, &format!("registering {} {}", method, path))
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
        Error::check_refusal(unsafe { add(self.host.ctx, &raw) }, &format!("adding menu entry {}", entry.id))
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
        Error::check_refusal(unsafe { register(self.host.ctx, &raw) }, &format!("registering authenticator {}", name))
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
        Error::check_refusal(unsafe { register(self.host.ctx, &raw) }, &format!("registering authorizer {}", name))
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
        Error::check_refusal(unsafe { provide(self.host.ctx, &raw) }, &format!("providing {}", interface))
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
        Error::check_refusal(unsafe { listen(self.host.ctx, &raw) }, &format!("listening to {}", interface))
    }
}
