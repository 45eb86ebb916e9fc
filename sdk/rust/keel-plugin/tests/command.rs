//! command!: the exported function the macro generates, called as the host calls it (libffi, commands.h) with the
//! C values of its signature and a keel_output; the result text, an Err's status, a caught panic and an argument
//! that is not UTF-8.

use keel_plugin::sys::*;
use keel_plugin::*;
use std::ffi::c_void;
use std::mem::size_of;

command!(fn test_shout(text: &str) -> Result<String> {
    Ok(format!("{{\"text\":{}}}", json::quote(&text.to_uppercase())))
});

command!(
    /// Every scalar argument type of commands.h, and bytes, in one signature.
    fn test_mix(a: i64, b: f64, flag: bool, c: i32, d: u32, e: u64, raw: &[u8], name: &str) -> Result<String> {
        Ok(format!("{} {} {} {} {} {} {:?} {}", a, b, flag, c, d, e, raw, name))
    }
);

command!(fn test_add(a: i64, b: i64) -> Result<i64> {
    a.checked_add(b).ok_or_else(|| Error::new(KEEL_ERR_INVALID_ARGUMENT, "overflow"))
});

// A parameter may have any name, `out` included, and a body may call a function named `body`.
fn body(text: &str) -> String {
    format!("<{}>", text)
}
command!(pub fn test_names(out: &str) -> Result<String> {
    Ok(body(out))
});

command!(fn test_panic(text: &str) -> Result<()> {
    panic!("test_panic: {}", text)
});

unsafe extern "C" fn output_write(out: *mut KeelOutput, data: *const c_void, len: usize) -> KeelStatus {
    (*((*out).host_data as *mut Vec<u8>)).extend_from_slice(std::slice::from_raw_parts(data as *const u8, len));
    KEEL_OK
}

/// Calls `f` with a fresh keel_output and returns the status and the text written.
fn call(f: impl FnOnce(*mut KeelOutput) -> KeelStatus) -> (KeelStatus, String) {
    let mut text = Vec::new();
    let mut out = KeelOutput {
        struct_size: size_of::<KeelOutput>() as u32,
        host_data: &mut text as *mut Vec<u8> as *mut c_void,
        write: Some(output_write),
    };
    let status = f(&mut out);
    (status, String::from_utf8(text).unwrap())
}

#[test]
fn a_str_command_writes_its_result() {
    assert_eq!(call(|out| unsafe { test_shout(KeelStr::borrow("hi"), out) }), (KEEL_OK, r#"{"text":"HI"}"#.to_string()));
    assert_eq!(call(|out| unsafe { test_shout(KeelStr::EMPTY, out) }), (KEEL_OK, r#"{"text":""}"#.to_string()));
    assert_eq!(call(|out| unsafe { test_names(KeelStr::borrow("x"), out) }), (KEEL_OK, "<x>".to_string()));
}

#[test]
fn every_argument_type_takes_its_c_type() {
    // The generated function's C type, checked by the compiler: one parameter per argument, then keel_output *.
    let f: unsafe extern "C" fn(i64, f64, bool, i32, u32, u64, KeelBytes, KeelStr, *mut KeelOutput) -> KeelStatus = test_mix;
    let raw = [1u8, 2];
    let got = call(|out| unsafe {
        f(-7, 2.5, true, -3, 4, u64::MAX, KeelBytes { ptr: raw.as_ptr(), len: 2 }, KeelStr::borrow("Ada"), out)
    });
    assert_eq!(got, (KEEL_OK, format!("-7 2.5 true -3 4 {} [1, 2] Ada", u64::MAX)));
    assert_eq!(call(|out| unsafe { test_add(2, 40, out) }), (KEEL_OK, "42".to_string()));
}

#[test]
fn an_error_or_bad_argument_is_the_status_and_nothing_is_written() {
    assert_eq!(call(|out| unsafe { test_add(i64::MAX, 1, out) }), (KEEL_ERR_INVALID_ARGUMENT, String::new()));
    let invalid = [0xffu8, 0xfe];
    let not_utf8 = KeelStr { ptr: invalid.as_ptr(), len: 2 };
    assert_eq!(call(|out| unsafe { test_shout(not_utf8, out) }), (KEEL_ERR_INVALID_ARGUMENT, String::new()));
    let dangling = KeelStr { ptr: std::ptr::null(), len: 3 };
    assert_eq!(call(|out| unsafe { test_shout(dangling, out) }), (KEEL_ERR_INVALID_ARGUMENT, String::new()));
    assert_eq!(unsafe { test_shout(KeelStr::borrow("hi"), std::ptr::null_mut()) }, KEEL_ERR_INVALID_ARGUMENT);
}

#[test]
fn a_panic_is_caught_and_becomes_internal() {
    assert_eq!(call(|out| unsafe { test_panic(KeelStr::borrow("on purpose"), out) }), (KEEL_ERR_INTERNAL, String::new()));
}
