//! notes-rust — a Keel plugin on the Rust SDK (sdk/rust/keel-plugin), without a line of unsafe.
//!   GET  /ext/notes-rust/notes        "<title>: N notes" and the notes, one a line (title from the configuration)
//!   POST /ext/notes-rust/notes        adds the body as a note (201), logged with the caller's id
//!   GET  /ext/notes-rust/notes/:n     note n (from 1), or 404
//!   GET  /ext/notes-rust/whoami       the caller as the auth chain established it
//!   GET  /ext/notes-rust/engine       the engine of the gitops.sync/1 provider, through a lease (503 without one)
//!   GET  /ext/notes-rust/panic        with `panic_route: true` configured: panics; the SDK answers 500 and the
//!                                     plugin keeps serving
//! a console menu entry "Notes", and the command `shout` (`keel call notes-rust shout hi` → {"text":"HI"}), which
//! `command!` exports as the plain C function the host calls.

use keel_plugin::json::{self, Json};
use keel_plugin::sys::{KeelStatus, KeelStr, KEEL_ERR_NOT_FOUND};
use keel_plugin::{command, plugin, Activation, MenuEntry, Plugin, Request, Response, Result, ServiceTable};
use std::sync::{Arc, Mutex};

struct Notes;

/// gitops_sync_v1 (Plugins/deployer/gitops_sync.h): the table a gitops.sync/1 provider registers.
#[repr(C)]
struct GitopsSyncV1 {
    struct_size: u32,
    engine: unsafe extern "C" fn() -> KeelStr,
    sync: unsafe extern "C" fn(KeelStr, KeelStr, *mut u8, usize, *mut usize) -> KeelStatus,
}

// Safe: #[repr(C)] as in gitops_sync.h, starting with struct_size; the provider's functions are thread-safe.
unsafe impl ServiceTable for GitopsSyncV1 {}

fn listing(title: &str, notes: &[String]) -> String {
    let mut out = format!("{}: {} notes\n", title, notes.len());
    for note in notes {
        out += &format!("- {}\n", note);
    }
    out
}

impl Plugin for Notes {
    fn activate(a: &mut Activation) -> Result<Notes> {
        let config = a.config()?.json()?;
        let title = config.get("title").and_then(Json::as_str).unwrap_or("Notes").to_string();
        let notes = Arc::new(Mutex::new(Vec::<String>::new()));
        let host = a.host();

        let list = notes.clone();
        a.route("GET", "/notes", move |_: &Request| {
            Response::text(listing(&title, &list.lock().unwrap_or_else(|e| e.into_inner())))
        })?;
        let add = notes.clone();
        a.route("POST", "/notes", move |req: &Request| {
            let text = String::from_utf8_lossy(req.body()).trim().to_string();
            if text.is_empty() {
                return Response::text("a note needs a body\n").with_status(400);
            }
            let who = req.principal().map(|p| p.id().to_string()).unwrap_or_default();
            host.info(&format!("note added by {}", if who.is_empty() { "anonymous" } else { &who }));
            add.lock().unwrap_or_else(|e| e.into_inner()).push(text);
            Response::text("added\n").with_status(201)
        })?;
        let one = notes;
        a.route("GET", "/notes/:n", move |req: &Request| {
            let notes = one.lock().unwrap_or_else(|e| e.into_inner());
            let n = req.param("n").and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
            match n.checked_sub(1).and_then(|i| notes.get(i)) {
                Some(note) => Response::text(format!("{}\n", note)),
                None => Response::text("no such note\n").with_status(404),
            }
        })?;
        a.route("GET", "/whoami", |req: &Request| match req.principal() {
            Some(p) if !p.is_anonymous() => format!("{} in {} (roles: {})\n", p.id(), p.tenant(), p.roles().join(", ")),
            _ => "anonymous\n".to_string(),
        })?;
        a.route("GET", "/engine", move |req: &Request| -> Result<Response> {
            let tenant = req.principal().map(|p| p.tenant()).unwrap_or("");
            let lease = match host.acquire::<GitopsSyncV1>("gitops.sync/1", tenant) {
                Ok(lease) => lease,
                Err(e) if e.status == KEEL_ERR_NOT_FOUND => return Ok(Response::text("no provider\n").with_status(503)),
                Err(e) => return Err(e),
            };
            let engine = unsafe { (lease.engine)().as_str() }.to_string();
            let info = lease.info()?;
            Ok(Response::text(format!("{} (provider {} {})\n", engine, info.provider_id, info.provider_version)))
        })?; // the lease is released here, when it is dropped
        if config.get("panic_route").and_then(Json::as_bool) == Some(true) {
            a.route("GET", "/panic", |_: &Request| -> Response { panic!("notes-rust panics on purpose") })?;
        }
        a.menu(&MenuEntry { order: 20, icon: "note".into(), ..MenuEntry::new("notes-rust.main", "Notes", "/ext/notes-rust/notes") })?;
        host.info("notes-rust active");
        Ok(Notes)
    }
}

plugin!(Notes);

command!(
    /// Command `shout`, symbol notes_shout, signature "(str) -> status(json)" (plugin.yaml). An error or a panic
    /// becomes the call's status.
    fn notes_shout(text: &str) -> Result<String> {
        Ok(format!("{{\"text\":{}}}", json::quote(&text.to_uppercase())))
    }
);

#[cfg(test)]
mod tests {
    #[test]
    fn lists_notes_under_the_title() {
        assert_eq!(super::listing("Team", &["a".into(), "b".into()]), "Team: 2 notes\n- a\n- b\n");
    }
}
