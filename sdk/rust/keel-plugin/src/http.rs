//! Requests, responses, the caller's identity and the auth hooks' arguments: borrowed views over the host's
//! structs, valid for the call they are passed to.

use crate::sys::*;
use crate::{Error, Result};
use std::ffi::c_void;

/// The request a handler or an authenticate hook is given. Borrowed from the host for the call; copy what you keep.
pub struct Request<'a> {
    raw: &'a KeelHttpRequest,
}

unsafe fn pairs<'a>(ptr: *const KeelHttpHeader, len: usize) -> &'a [KeelHttpHeader] {
    if ptr.is_null() || len == 0 { &[] } else { std::slice::from_raw_parts(ptr, len) }
}

impl<'a> Request<'a> {
    /// # Safety
    /// `raw` and everything it points to must be valid for `'a` (the host's request during the call).
    pub unsafe fn from_raw(raw: &'a KeelHttpRequest) -> Request<'a> {
        Request { raw }
    }

    /// "GET", "POST", …
    pub fn method(&self) -> &'a str {
        unsafe { self.raw.method.as_str() }
    }

    /// The full, canonical path, e.g. "/ext/notes/items/42".
    pub fn path(&self) -> &'a str {
        unsafe { self.raw.path.as_str() }
    }

    /// The path below the plugin prefix, e.g. "/items/42".
    pub fn route_path(&self) -> &'a str {
        unsafe { self.raw.route_path.as_str() }
    }

    /// The raw query string without '?'.
    pub fn query(&self) -> &'a str {
        unsafe { self.raw.query.as_str() }
    }

    /// The value of query parameter `name` as written (not percent-decoded), if present.
    pub fn query_param(&self, name: &str) -> Option<&'a str> {
        self.query().split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then_some(v)
        })
    }

    /// Headers as (lowercase name, value), in arrival order.
    pub fn headers(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        unsafe { pairs(self.raw.headers, self.raw.headers_len) }.iter().map(|h| unsafe { (h.name.as_str(), h.value.as_str()) })
    }

    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v)
    }

    /// Path parameter `name` (":id" → "id"; "*" → the rest), decoded.
    pub fn param(&self, name: &str) -> Option<&'a str> {
        unsafe { pairs(self.raw.params, self.raw.params_len) }
            .iter()
            .find(|p| unsafe { p.name.as_str() } == name)
            .map(|p| unsafe { p.value.as_str() })
    }

    pub fn body(&self) -> &'a [u8] {
        if self.raw.body.is_null() { &[] } else { unsafe { std::slice::from_raw_parts(self.raw.body, self.raw.body_len) } }
    }

    /// The caller as the auth chain established it (anonymous when no hook recognised it).
    pub fn principal(&self) -> Option<Principal<'a>> {
        unsafe { self.raw.principal.as_ref() }.map(|raw| Principal { raw })
    }

    pub fn request_id(&self) -> &'a str {
        unsafe { self.raw.request_id.as_str() }
    }
}

/// Who is calling (keel/identity.h). Borrowed for the call.
#[derive(Clone, Copy)]
pub struct Principal<'a> {
    raw: &'a KeelPrincipal,
}

impl<'a> Principal<'a> {
    pub(crate) fn raw(&self) -> *const KeelPrincipal {
        self.raw
    }

    pub fn is_anonymous(&self) -> bool {
        self.raw.flags & KEEL_PRINCIPAL_ANONYMOUS != 0
    }

    /// Stable id, e.g. "alice"; empty when anonymous.
    pub fn id(&self) -> &'a str {
        unsafe { self.raw.id.as_str() }
    }

    pub fn display_name(&self) -> &'a str {
        unsafe { self.raw.display_name.as_str() }
    }

    /// The tenant the request acts in ("default" on a single-tenant host).
    pub fn tenant(&self) -> &'a str {
        unsafe { self.raw.tenant.as_str() }
    }

    /// The plugin id whose authenticate hook established it, or "keel".
    pub fn authenticated_by(&self) -> &'a str {
        unsafe { self.raw.authenticated_by.as_str() }
    }

    pub fn roles(&self) -> Vec<&'a str> {
        if self.raw.roles.is_null() {
            return Vec::new();
        }
        unsafe { std::slice::from_raw_parts(self.raw.roles, self.raw.roles_len) }.iter().map(|r| unsafe { r.as_str() }).collect()
    }

    pub fn has_role(&self, role: &str) -> bool {
        self.roles().contains(&role)
    }
}

/// A handler's answer. Status 200, no headers and an empty body by default.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Default for Response {
    fn default() -> Response {
        Response { status: 200, headers: Vec::new(), body: Vec::new() }
    }
}

impl Response {
    /// 200 with `text` as text/plain; charset=utf-8.
    pub fn text(text: impl Into<String>) -> Response {
        Response::default().header("content-type", "text/plain; charset=utf-8").body(text.into().into_bytes())
    }

    /// 200 with `json` (already JSON text) as application/json.
    pub fn json(json: impl Into<String>) -> Response {
        Response::default().header("content-type", "application/json").body(json.into().into_bytes())
    }

    pub fn with_status(mut self, status: u16) -> Response {
        self.status = status;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Response {
        self.body = body.into();
        self
    }

    /// Writes the response through the host's writer.
    ///
    /// # Safety
    /// `res` must be the host's response for the running call.
    pub(crate) unsafe fn send(&self, res: *mut KeelHttpResponse) -> Result<()> {
        let r = &*res;
        let missing = || Error::new(KEEL_ERR_UNSUPPORTED, "the host's response has a NULL function");
        if self.status != 200 {
            Error::check_refusal(r.set_status.ok_or_else(missing)?(res, self.status as u32), &format!("status {}", self.status))?;
        }
        for (name, value) in &self.headers {
            Error::check_refusal(r.add_header.ok_or_else(missing)?(res, KeelStr::borrow(name), KeelStr::borrow(value)), &format!("header {}", name))?;
        }
        if !self.body.is_empty() {
            Error::check_refusal(r.write.ok_or_else(missing)?(res, self.body.as_ptr() as *const c_void, self.body.len()), "writing the body")?;
        }
        Ok(())
    }
}

/// What a route handler may return: a [`Response`], a `Result<Response>` (an error goes to the log, and the client
/// gets its status's answer: 400, 403, 404 or 409 for a refusal, 501, 503, otherwise 500), or text.
pub trait IntoResponse {
    fn into_response(self) -> Result<Response>;
}

impl IntoResponse for Response {
    fn into_response(self) -> Result<Response> {
        Ok(self)
    }
}

impl IntoResponse for Result<Response> {
    fn into_response(self) -> Result<Response> {
        self
    }
}

impl IntoResponse for String {
    fn into_response(self) -> Result<Response> {
        Ok(Response::text(self))
    }
}

impl IntoResponse for &'static str {
    fn into_response(self) -> Result<Response> {
        Ok(Response::text(self))
    }
}

/// Where an authenticate hook sets the principal it recognised.
pub struct PrincipalBuilder<'a> {
    raw: &'a mut KeelPrincipalBuilder,
}

impl<'a> PrincipalBuilder<'a> {
    /// # Safety
    /// `raw` must be the host's builder for the running hook call.
    pub unsafe fn from_raw(raw: &'a mut KeelPrincipalBuilder) -> PrincipalBuilder<'a> {
        PrincipalBuilder { raw }
    }

    /// Establishes the principal: `id` not empty; `tenant` "" = the default tenant.
    pub fn set_identity(&mut self, id: &str, display_name: &str, tenant: &str) -> Result<()> {
        let f = self.raw.set_identity.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "no set_identity"))?;
        let status = unsafe { f(self.raw, KeelStr::borrow(id), KeelStr::borrow(display_name), KeelStr::borrow(tenant)) };
        Error::check(status, "set_identity")
    }

    pub fn add_role(&mut self, role: &str) -> Result<()> {
        let f = self.raw.add_role.ok_or_else(|| Error::new(KEEL_ERR_UNSUPPORTED, "no add_role"))?;
        Error::check(unsafe { f(self.raw, KeelStr::borrow(role)) }, "add_role")
    }
}

/// An authorize hook's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    Abstain = KEEL_AUTH_ABSTAIN as isize,
    Allow = KEEL_AUTH_ALLOW as isize,
    Deny = KEEL_AUTH_DENY as isize,
}

/// The question an authorize hook decides: may `principal` do `action` on `resource`?
pub struct AuthzRequest<'a> {
    raw: &'a KeelAuthzRequest,
}

impl<'a> AuthzRequest<'a> {
    /// # Safety
    /// `raw` and everything it points to must be valid for `'a`.
    pub unsafe fn from_raw(raw: &'a KeelAuthzRequest) -> AuthzRequest<'a> {
        AuthzRequest { raw }
    }

    pub fn principal(&self) -> Option<Principal<'a>> {
        unsafe { self.raw.principal.as_ref() }.map(|raw| Principal { raw })
    }

    pub fn action(&self) -> &'a str {
        unsafe { self.raw.action.as_str() }
    }

    pub fn resource(&self) -> &'a str {
        unsafe { self.raw.resource.as_str() }
    }

    /// The request being served, or None for a permission question asked outside one.
    pub fn http(&self) -> Option<Request<'a>> {
        unsafe { self.raw.http.as_ref() }.map(|raw| Request { raw })
    }
}
