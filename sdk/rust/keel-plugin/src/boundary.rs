//! The boundary: the runtime behind plugin! (descriptor, activate, deactivate) and the trampolines every host →
//! plugin call goes through. Each catches panics and turns an Error into a status and a set_error message.

use crate::http::{AuthzRequest, PrincipalBuilder, Request};
use crate::runtime::{Activation, AuthenticateFn, AuthorizeFn, Host, ListenFn, Plugin, RouteFn};
use crate::services::ServiceInfo;
use crate::sys::*;
use crate::{Error, Result};
use std::any::Any;
use std::ffi::c_void;
use std::mem::size_of;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Mutex;

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

/// `descriptor` with `flags` (KEEL_PLUGIN_FLAG_*) added.
pub const fn with_flags(mut descriptor: KeelPlugin, flags: u64) -> KeelPlugin {
    descriptor.flags |= flags;
    descriptor
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

pub(crate) unsafe extern "C" fn route_trampoline(user_data: *mut c_void, req: *const KeelHttpRequest, res: *mut KeelHttpResponse) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let (Some(req), false) = (req.as_ref(), res.is_null()) else {
            return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL request or response"));
        };
        let f = &*(user_data as *const Box<RouteFn>);
        f(&Request::from_raw(req))?.send(res)
    })
}

pub(crate) unsafe extern "C" fn authenticate_trampoline(user_data: *mut c_void, req: *const KeelHttpRequest, out: *mut KeelPrincipalBuilder) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let (Some(req), Some(out)) = (req.as_ref(), out.as_mut()) else {
            return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL request or builder"));
        };
        let f = &*(user_data as *const Box<AuthenticateFn>);
        f(&Request::from_raw(req), &mut PrincipalBuilder::from_raw(out))
    })
}

pub(crate) unsafe extern "C" fn authorize_trampoline(user_data: *mut c_void, q: *const KeelAuthzRequest, out: *mut KeelAuthDecision) -> KeelStatus {
    guard(std::ptr::null_mut(), || {
        let (Some(q), false) = (q.as_ref(), out.is_null()) else {
            return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "NULL question or decision"));
        };
        let f = &*(user_data as *const Box<AuthorizeFn>);
        *out = f(&AuthzRequest::from_raw(q))? as KeelAuthDecision;
        Ok(())
    })
}

pub(crate) unsafe extern "C" fn listen_trampoline(user_data: *mut c_void, interface: KeelStr, tenant: KeelStr, now: *const KeelServiceInfo) {
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
