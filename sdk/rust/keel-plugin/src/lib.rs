#![doc = include_str!("../README.md")]
//!
//! Safe Rust wrappers over the Keel plugin ABI 1.1. A plugin is a type implementing [`Plugin`], exported with
//! [`plugin!`]; its `activate` registers routes, menu entries, auth hooks, service tables and listeners through
//! [`Activation`], whose closures run on the host's threads. The raw `#[repr(C)]` declarations are in [`sys`].
//!
//! Contract of every call the host makes into a plugin built with this crate:
//! - no panic crosses the FFI boundary: each is caught, its message handed to `set_error`, and the call returns
//!   `KEEL_ERR_INTERNAL` (the host logs it; an HTTP client sees a 500);
//! - an [`Error`] returned by a handler or hook reaches the host the same way, with its status;
//! - the plugin value and every closure registered live from `activate` until `deactivate`, where they are dropped
//!   (the host calls deactivate only when no handler runs). A plugin that starts threads stops them in `Drop`: a
//!   [`Host`] must not be used after deactivate.

// `catch_unwind` catches nothing in a build that aborts on panic: the first panic in a handler would end the host's
// whole process instead of answering 500. Refused at build time, where the author sees it.
#[cfg(all(panic = "abort", not(feature = "panic-abort")))]
compile_error!("keel-plugin: this plugin is built with panic = \"abort\", so a panic in a handler would abort the whole host \
process instead of answering 500; remove `panic = \"abort\"` from your Cargo.toml's [profile.*] sections (or, for a plugin \
that only runs with `isolation: process`, enable this crate's \"panic-abort\" feature)");

pub mod sys;

mod boundary;
mod command;
mod http;
pub mod json;
mod runtime;
mod services;

pub use http::{AuthzRequest, Decision, IntoResponse, Principal, PrincipalBuilder, Request, Response};
pub use boundary::command_output;
pub use command::{CommandArg, CommandOutput};
pub use runtime::{Activation, Config, Host, Level, MenuEntry, Plugin};
pub use services::{Lease, ServiceInfo, ServiceTable};

use sys::*;

/// A failure with the ABI status it maps to and a message for the host's log (never shown to an HTTP client).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub status: KeelStatus,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with `status` (one of the `KEEL_ERR_*` of [`sys`]; `KEEL_OK` is turned into `KEEL_ERR_INTERNAL`).
    pub fn new(status: KeelStatus, message: impl Into<String>) -> Error {
        Error { status: if status == KEEL_OK { KEEL_ERR_INTERNAL } else { status }, message: message.into() }
    }

    /// KEEL_ERR_INTERNAL with `message`.
    pub fn internal(message: impl Into<String>) -> Error {
        Error::new(KEEL_ERR_INTERNAL, message)
    }

    /// The error for `status` returned by the host from `what`, or Ok for KEEL_OK.
    pub(crate) fn check(status: KeelStatus, what: &str) -> Result<()> {
        if status == KEEL_OK {
            Ok(())
        } else {
            Err(Error::new(status, format!("{} failed: {}", what, status_name(status))))
        }
    }

    /// `check` for a call the host alone judges (a registration, a response's status or header): its error is the
    /// host's refusal, whose reason the host logs and, passed on from `activate`, puts first in its own message.
    pub(crate) fn check_refusal(status: KeelStatus, what: &str) -> Result<()> {
        if status == KEEL_OK {
            Ok(())
        } else {
            Err(Error::new(status, format!("{} was refused by the host ({}); its log says why", what, status_name(status))))
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, status_name(self.status))
    }
}

impl std::error::Error for Error {}

/// The name of a status code, e.g. "KEEL_ERR_DENIED"; an unknown code is internal (status.h).
pub fn status_name(status: KeelStatus) -> &'static str {
    match status {
        KEEL_OK => "KEEL_OK",
        KEEL_ERR_INVALID_ARGUMENT => "KEEL_ERR_INVALID_ARGUMENT",
        KEEL_ERR_CONFLICT => "KEEL_ERR_CONFLICT",
        KEEL_ERR_DENIED => "KEEL_ERR_DENIED",
        KEEL_ERR_NOT_FOUND => "KEEL_ERR_NOT_FOUND",
        KEEL_ERR_UNSUPPORTED => "KEEL_ERR_UNSUPPORTED",
        KEEL_ERR_WRONG_STATE => "KEEL_ERR_WRONG_STATE",
        KEEL_ERR_LIMIT => "KEEL_ERR_LIMIT",
        KEEL_ERR_NO_MEMORY => "KEEL_ERR_NO_MEMORY",
        KEEL_ERR_UNAVAILABLE => "KEEL_ERR_UNAVAILABLE",
        _ => "KEEL_ERR_INTERNAL",
    }
}

/// Exports `keel_plugin_entry` for the [`Plugin`] type `$ty`. The descriptor leaves id and version empty, so the
/// host takes both from plugin.yaml (written once); `plugin!(T, id = "x", version = "1.0.0")` states them instead
/// (they must then equal plugin.yaml's). Use it once per library.
///
/// `plugin!(T, reactivatable)` (or `plugin!(T, id = .., version = .., reactivatable)`) also declares
/// `KEEL_PLUGIN_FLAG_REACTIVATABLE`: every activation makes a new `T` and drops it on deactivate, so it holds unless
/// the plugin keeps state in statics that deactivate leaves changed. The host then keeps the loaded copy between a
/// disable and the next enable (or a lazy plugin's idle time-out and its next use) instead of mapping a new one.
///
/// ```
/// use keel_plugin::{plugin, Activation, Plugin, Result};
/// struct Counter;
/// impl Plugin for Counter {
///     fn activate(_: &mut Activation) -> Result<Counter> {
///         Ok(Counter)
///     }
/// }
/// plugin!(Counter, id = "counter", version = "0.1.0");
/// let descriptor = unsafe { &*keel_plugin_entry() };
/// assert_eq!(unsafe { (descriptor.id.as_str(), descriptor.version.as_str()) }, ("counter", "0.1.0"));
/// assert_eq!(descriptor.flags, 0);
/// ```
///
/// ```
/// use keel_plugin::{plugin, sys::KEEL_PLUGIN_FLAG_REACTIVATABLE, Activation, Plugin, Result};
/// struct Again;
/// impl Plugin for Again {
///     fn activate(_: &mut Activation) -> Result<Again> {
///         Ok(Again)
///     }
/// }
/// plugin!(Again, reactivatable);
/// assert_eq!(unsafe { &*keel_plugin_entry() }.flags, KEEL_PLUGIN_FLAG_REACTIVATABLE);
/// ```
#[macro_export]
macro_rules! plugin {
    (@export $ty:ty, $id:expr, $version:expr, $flags:expr) => {
        unsafe extern "C" fn __keel_plugin_activate(host: *const $crate::sys::KeelHost, ctx: *mut $crate::sys::KeelCtx) -> i32 {
            $crate::__private::activate::<$ty>(host, ctx)
        }
        unsafe extern "C" fn __keel_plugin_deactivate(host: *const $crate::sys::KeelHost, ctx: *mut $crate::sys::KeelCtx) -> i32 {
            $crate::__private::deactivate(host, ctx)
        }
        static __KEEL_PLUGIN_DESCRIPTOR: $crate::sys::KeelPlugin = $crate::__private::with_flags(
            $crate::__private::descriptor($id, $version, __keel_plugin_activate, __keel_plugin_deactivate), $flags);
        /// The one exported symbol: the host calls it once per loaded copy of the library.
        #[no_mangle]
        pub extern "C" fn keel_plugin_entry() -> *const $crate::sys::KeelPlugin {
            &__KEEL_PLUGIN_DESCRIPTOR
        }
    };
    ($ty:ty) => {
        $crate::plugin!(@export $ty, "", "", 0);
    };
    ($ty:ty, reactivatable) => {
        $crate::plugin!(@export $ty, "", "", $crate::sys::KEEL_PLUGIN_FLAG_REACTIVATABLE);
    };
    ($ty:ty, id = $id:expr, version = $version:expr) => {
        $crate::plugin!(@export $ty, $id, $version, 0);
    };
    ($ty:ty, id = $id:expr, version = $version:expr, reactivatable) => {
        $crate::plugin!(@export $ty, $id, $version, $crate::sys::KEEL_PLUGIN_FLAG_REACTIVATABLE);
    };
}

#[doc(hidden)]
pub mod __private {
    pub use crate::boundary::{activate, deactivate, descriptor, with_flags};
    pub use crate::command::{CommandArg, CommandOutput};
}
