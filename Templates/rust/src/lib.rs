//! {{id}} — a Keel plugin in Rust on the SDK crate `keel-plugin` (safe wrappers: the plugin's code needs no
//! `unsafe`; one test reads the raw descriptor). `make` builds bundle/{{id}}/ (plugin.yaml + lib{{ident}}.so);
//! `cargo test` runs the tests below.
//!
//! GET /ext/{{id}}/hello/:name answers "hello, <name>, from {{id}}". A panic in a handler never crosses into the
//! host: the SDK catches it and answers 500.

use keel_plugin::{plugin, Activation, Plugin, Request, Response, Result};

/// The answer of GET /hello/:name.
pub fn greeting(name: &str) -> String {
    format!("hello, {}, from {{id}}\n", name)
}

struct Hello;

impl Plugin for Hello {
    fn activate(a: &mut Activation) -> Result<Hello> {
        a.route("GET", "/hello/:name", |req: &Request| Response::text(greeting(req.param("name").unwrap_or("world"))))?;
        Ok(Hello)
    }
}

// The id and the version are left to plugin.yaml: written once, there.
plugin!(Hello);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greets_by_name() {
        assert_eq!(greeting("ada"), "hello, ada, from {{id}}\n");
    }

    #[test]
    fn descriptor_leaves_id_and_version_to_plugin_yaml() {
        // The raw entry point the host calls: its descriptor, read as the host reads it.
        let d = unsafe { &*keel_plugin_entry() };
        assert_eq!(d.id.len, 0);
        assert_eq!(d.version.len, 0);
        assert_eq!(d.struct_size as usize, std::mem::size_of::<keel_plugin::sys::KeelPlugin>());
    }
}
