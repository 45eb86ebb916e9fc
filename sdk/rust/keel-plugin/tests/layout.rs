//! The raw declarations (src/sys.rs) against the C headers: a C program compiled against the headers prints every
//! struct's size and every field's offset, and every constant; they must equal Rust's. And every struct the
//! headers define must be declared. Headers: $KEEL_INCLUDE, else the checkout's PluginABI/include, else
//! `pkg-config --cflags keel-plugin` (`keel sdk install`). Skipped, with a note, when none is found or cc is missing.

use keel_plugin::sys::*;
use std::mem::{offset_of, size_of};
use std::path::PathBuf;
use std::process::Command;

/// Lines "name value" for the C program (`c`) and for Rust (`rust`), and the C struct names covered.
macro_rules! layout {
    ($($rust:ident = $c:literal { $($field:ident),* })*) => {{
        let (mut c, mut rust, mut names) = (String::new(), String::new(), Vec::<&str>::new());
        $(
            names.push($c);
            c += &format!("    printf(\"{0} %zu\\n\", sizeof({0}));\n", $c);
            rust += &format!("{} {}\n", $c, size_of::<$rust>());
            $(
                c += &format!("    printf(\"{0}.{1} %zu\\n\", offsetof({0}, {1}));\n", $c, stringify!($field));
                rust += &format!("{}.{} {}\n", $c, stringify!($field), offset_of!($rust, $field));
            )*
        )*
        (c, rust, names)
    }};
}

/// Integer constants (printed with %lld) and string constants (%s).
macro_rules! constants {
    (ints { $($i:ident),* } strs { $($s:ident),* }) => {{
        let (mut c, mut rust) = (String::new(), String::new());
        $(
            c += &format!("    printf(\"{0} %lld\\n\", (long long)({0}));\n", stringify!($i));
            rust += &format!("{} {}\n", stringify!($i), $i as i64);
        )*
        $(
            c += &format!("    printf(\"{0} %s\\n\", {0});\n", stringify!($s));
            rust += &format!("{} {}\n", stringify!($s), $s);
        )*
        (c, rust)
    }};
}

fn include_flags() -> Option<Vec<String>> {
    if let Ok(dir) = std::env::var("KEEL_INCLUDE") {
        return Some(vec![format!("-I{}", dir)]);
    }
    let checkout = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../PluginABI/include");
    if checkout.join("keel/keel.h").exists() {
        return Some(vec![format!("-I{}", checkout.display())]);
    }
    let out = Command::new("pkg-config").args(["--cflags", "keel-plugin"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).split_whitespace().map(String::from).collect())
}

/// The names of every struct the plugin ABI's headers define (`typedef struct keel_x {` or `struct keel_x {`): the
/// headers keel.h includes, not the folder's other headers (keel_embed.h is the embedding API, not the ABI).
fn header_structs(flags: &[String]) -> Vec<String> {
    let dir = PathBuf::from(flags[0].trim_start_matches("-I")).join("keel");
    let umbrella = std::fs::read_to_string(dir.join("keel.h")).expect("keel/keel.h");
    let mut names = Vec::new();
    for line in umbrella.lines() {
        let Some(header) = line.strip_prefix("#include \"").and_then(|rest| rest.strip_suffix('"')) else { continue };
        let text = std::fs::read_to_string(dir.join(header)).unwrap_or_default();
        for line in text.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            let at = if words.first() == Some(&"typedef") { 1 } else { 0 };
            if words.get(at) == Some(&"struct") && words.get(at + 2) == Some(&"{") {
                names.push(words[at + 1].to_string());
            }
        }
    }
    names.sort();
    names
}

#[test]
fn declarations_match_the_headers() {
    let (c_layout, rust_layout, covered) = layout! {
        KeelStr = "keel_str" { ptr, len }
        KeelVersion = "keel_version" { major, minor, patch }
        KeelHost = "keel_host" { struct_size, abi_version, host_name, host_version, log, set_error, get_service }
        KeelPlugin = "keel_plugin" { struct_size, abi_version, id, version, flags, activate, deactivate, get_extension }
        KeelPrincipal = "keel_principal" { struct_size, flags, id, display_name, tenant, authenticated_by, roles, roles_len }
        KeelHttpHeader = "keel_http_header" { name, value }
        KeelHttpRequest = "keel_http_request" { struct_size, method, path, route_path, query, headers, headers_len,
                                                params, params_len, body, body_len, principal, request_id }
        KeelHttpResponse = "keel_http_response" { struct_size, host_data, set_status, add_header, write }
        KeelRoute = "keel_route" { struct_size, method, path, handler, user_data }
        KeelHostHttp = "keel_host_http" { struct_size, register_route }
        KeelMenuEntry = "keel_menu_entry" { struct_size, id, title, parent, link, order, icon, permission }
        KeelHostMenu = "keel_host_menu" { struct_size, add_entry }
        KeelPrincipalBuilder = "keel_principal_builder" { struct_size, host_data, set_identity, add_role }
        KeelAuthzRequest = "keel_authz_request" { struct_size, principal, action, resource, http }
        KeelAuthenticator = "keel_authenticator" { struct_size, name, authenticate, user_data }
        KeelAuthorizer = "keel_authorizer" { struct_size, name, authorize, user_data }
        KeelHostAuth = "keel_host_auth" { struct_size, register_authenticator, register_authorizer, check_permission }
        KeelHostConfig = "keel_host_config" { struct_size, get }
        KeelServiceProvision = "keel_service_provision" { struct_size, interface_id, table }
        KeelServiceInfo = "keel_service_info" { struct_size, version, interface_id, provider_id, provider_version,
                                                generation, table_size }
        KeelServiceListener = "keel_service_listener" { struct_size, interface_id, changed, user_data }
        KeelHostServices = "keel_host_services" { struct_size, provide, listen, acquire, release, describe }
        KeelBytes = "keel_bytes" { ptr, len }
        KeelOutput = "keel_output" { struct_size, host_data, write }
        KeelHostCommands = "keel_host_commands" { struct_size, call }
        KeelHealthV1 = "keel_health_v1" { struct_size, check }
    };
    let (c_constants, rust_constants) = constants! {
        ints {
            KEEL_OK, KEEL_ERR_INTERNAL, KEEL_ERR_INVALID_ARGUMENT, KEEL_ERR_CONFLICT, KEEL_ERR_DENIED, KEEL_ERR_NOT_FOUND,
            KEEL_ERR_UNSUPPORTED, KEEL_ERR_WRONG_STATE, KEEL_ERR_LIMIT, KEEL_ERR_NO_MEMORY, KEEL_ERR_UNAVAILABLE,
            KEEL_ABI_VERSION_MAJOR, KEEL_ABI_VERSION_MINOR, KEEL_ABI_VERSION_PATCH,
            KEEL_LOG_DEBUG, KEEL_LOG_INFO, KEEL_LOG_WARN, KEEL_LOG_ERROR,
            KEEL_PLUGIN_FLAG_UNLOAD_SAFE, KEEL_PLUGIN_FLAG_REACTIVATABLE, KEEL_PRINCIPAL_ANONYMOUS,
            KEEL_AUTH_ABSTAIN, KEEL_AUTH_ALLOW, KEEL_AUTH_DENY
        }
        strs {
            KEEL_ENTRY_SYMBOL, KEEL_SERVICE_HTTP, KEEL_SERVICE_MENU, KEEL_SERVICE_AUTH, KEEL_SERVICE_CONFIG,
            KEEL_SERVICE_SERVICES, KEEL_SERVICE_COMMANDS, KEEL_EXTENSION_HEALTH
        }
    };
    let Some(flags) = include_flags() else {
        eprintln!("skipped: no Keel headers (set KEEL_INCLUDE, or run `keel sdk install` for pkg-config)");
        return;
    };

    let mut declared: Vec<String> = covered.iter().map(|s| s.to_string()).collect();
    declared.sort();
    assert_eq!(declared, header_structs(&flags), "src/sys.rs does not declare exactly the headers' structs");

    let dir = std::env::temp_dir().join(format!("keel-plugin-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("layout.c");
    let program = format!(
        "#include <keel/keel.h>\n#include <stddef.h>\n#include <stdio.h>\nint main(void) {{\n{}{}    return 0;\n}}\n",
        c_layout, c_constants
    );
    std::fs::write(&source, program).unwrap();
    let exe = dir.join("layout");
    match Command::new("cc").args(&flags).arg("-o").arg(&exe).arg(&source).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("cc failed on the layout program: {}", String::from_utf8_lossy(&out.stderr)),
        Err(_) => {
            eprintln!("skipped: cc cannot be run");
            return;
        }
    }
    let printed = Command::new(&exe).output().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let printed = String::from_utf8_lossy(&printed.stdout);
    let expected = rust_layout + &rust_constants;
    for (c, rust) in printed.lines().zip(expected.lines()) {
        assert_eq!(c, rust, "src/sys.rs has drifted from the Keel headers (C first)");
    }
    assert_eq!(printed.lines().count(), expected.lines().count());
}
