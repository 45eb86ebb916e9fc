//! Commands without `unsafe`: the [`command!`](crate::command!) macro and the traits it uses to turn the C values
//! the host passes (commands.h) into Rust arguments and a Rust result into the command's output text.

use crate::sys::*;
use crate::{Error, Result};

/// A Rust type a command can take, and the C type of the signature's argument type it stands for (commands.h):
/// `i32`, `i64`, `u32`, `u64`, `f64`, `bool` (C99 `_Bool`), `&str` (`str`, a `keel_str`) and `&[u8]` (`bytes`, a
/// `keel_bytes`). Borrowed arguments live for the call only.
pub trait CommandArg: Sized {
    /// The C type the exported function takes for this argument.
    type Raw;

    /// The argument from the host's value; `name` is the parameter, for the error message.
    ///
    /// # Safety
    /// `raw` is a value the host passed to the running command; a borrowed `Self` (`&str`, `&[u8]`) must not outlive
    /// the call.
    unsafe fn from_raw(raw: Self::Raw, name: &str) -> Result<Self>;
}

macro_rules! plain_args {
    ($($t:ty),*) => {$(
        impl CommandArg for $t {
            type Raw = $t;
            unsafe fn from_raw(raw: $t, _: &str) -> Result<$t> {
                Ok(raw)
            }
        }
    )*};
}
plain_args!(i32, i64, u32, u64, f64, bool);

impl<'a> CommandArg for &'a [u8] {
    type Raw = KeelBytes;
    unsafe fn from_raw(raw: KeelBytes, name: &str) -> Result<&'a [u8]> {
        KeelStr { ptr: raw.ptr, len: raw.len }
            .bytes()
            .ok_or_else(|| Error::new(KEEL_ERR_INVALID_ARGUMENT, format!("argument `{}`: NULL bytes with a length", name)))
    }
}

impl<'a> CommandArg for &'a str {
    type Raw = KeelStr;
    unsafe fn from_raw(raw: KeelStr, name: &str) -> Result<&'a str> {
        let bytes = <&[u8]>::from_raw(KeelBytes { ptr: raw.ptr, len: raw.len }, name)?;
        std::str::from_utf8(bytes)
            .map_err(|e| Error::new(KEEL_ERR_INVALID_ARGUMENT, format!("argument `{}`: not UTF-8 ({})", name, e)))
    }
}

/// What a command returns, written as its output text (`status(str)` or `status(json)`). A `String` or `&str` is
/// written as it is (for `status(json)` it must be JSON text, which the host checks); numbers and booleans as their
/// JSON text; `()` as `null`.
pub trait CommandOutput {
    fn into_text(self) -> String;
}

impl CommandOutput for String {
    fn into_text(self) -> String {
        self
    }
}

impl CommandOutput for &str {
    fn into_text(self) -> String {
        self.to_string()
    }
}

impl CommandOutput for () {
    fn into_text(self) -> String {
        "null".to_string()
    }
}

macro_rules! display_outputs {
    ($($t:ty),*) => {$(
        impl CommandOutput for $t {
            fn into_text(self) -> String {
                self.to_string()
            }
        }
    )*};
}
display_outputs!(i32, i64, u32, u64, bool);

impl CommandOutput for f64 {
    /// JSON has no NaN or infinity: those are written as `null`.
    fn into_text(self) -> String {
        if self.is_finite() { self.to_string() } else { "null".to_string() }
    }
}

/// Defines a command and exports it as the C function the host calls by name (the `symbol:` of plugin.yaml is the
/// function's name), so the author writes no `unsafe`. The function returns [`Result<T>`](crate::Result) with `T` a
/// [`CommandOutput`]; its plugin.yaml signature returns `status(str)` or `status(json)` and takes the arguments'
/// types in order ([`CommandArg`]: `&str` is `str`, `&[u8]` is `bytes`, `i64` is `i64`, `f64` is `f64`, `bool` is
/// `bool`, and `i32`, `u32`, `u64`). The signature is the contract: one that does not match the function is
/// undefined behaviour, as for a C command.
///
/// The exported function converts the arguments (a `str` that is not UTF-8 is `KEEL_ERR_INVALID_ARGUMENT`, the
/// message naming the parameter), runs the body, and writes the result into the host's `keel_output`; an `Err` or
/// a panic becomes the call's status and a set_error message (nothing unwinds into the host). It runs on the host's
/// request threads, concurrently.
///
/// ```
/// use keel_plugin::{command, json, Error, Result, sys::KEEL_ERR_INVALID_ARGUMENT};
/// // plugin.yaml: {name: shout, symbol: doc_shout, signature: "(str, i64) -> status(json)"}
/// command!(fn doc_shout(text: &str, times: i64) -> Result<String> {
///     if times < 1 {
///         return Err(Error::new(KEEL_ERR_INVALID_ARGUMENT, "times must be at least 1"));
///     }
///     Ok(format!("{{\"text\":{}}}", json::quote(&text.to_uppercase().repeat(times as usize))))
/// });
/// ```
#[macro_export]
macro_rules! command {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) -> $ret:ty $body:block) => {
        $(#[$meta])*
        ///
        /// # Safety
        /// Called by the host with the arguments of its plugin.yaml signature and the running command's output.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            $($arg: <$ty as $crate::__private::CommandArg>::Raw,)*
            __keel_out: *mut $crate::sys::KeelOutput,
        ) -> $crate::sys::KeelStatus {
            fn __keel_command_body($($arg: $ty),*) -> $ret $body
            $crate::command_output(__keel_out, || {
                $(let $arg = <$ty as $crate::__private::CommandArg>::from_raw($arg, stringify!($arg))?;)*
                __keel_command_body($($arg),*).map($crate::__private::CommandOutput::into_text)
            })
        }
    };
}
