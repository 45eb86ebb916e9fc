'use strict';
// The page bridge, served at /keel-page.js and loaded first by every plugin console page's shell. It runs inside the
// sandboxed frame (an opaque origin: no access to the console, its storage or its cookies, and no network of its
// own), and defines `window.keel`, which talks to the console by postMessage:
//
//   await keel.ready                      → { user, tenant } once the console said who is looking (also the
//                                           'keel:ready' event on window); then keel.user and keel.tenant are set
//   keel.user                             → { id, displayName, roles, anonymous, admin } (null before ready)
//   keel.tenant                           → the caller's tenant (null before ready)
//   await keel.fetch(path, {method, headers, body})
//                                         → { status, ok, headers, body (text), json (parsed, or undefined) }
//                                           the console makes the request: only the plugin's own routes
//                                           (/ext/<id>/...) and the host endpoints its plugin.yaml declares under
//                                           console.fetch. A refusal rejects with an Error whose `code` is stable:
//                                           bad-path, not-allowed, bad-request, network, not-in-console
//   await keel.navigate(consolePath)      → asks the console to show one of its views (or another page)
//   await keel.notify(text, level)        → a notice in the console; level: info, success, warning, error
(() => {
  const inConsole = window.parent !== window;
  const pending = new Map();
  const queue = [];
  let nextID = 1, channel = null, markReady, failReady;
  const ready = new Promise((resolve, reject) => { markReady = resolve; failReady = reject; });
  const state = { user: null, tenant: null };

  function post(message) {
    window.parent.postMessage(Object.assign({ keel: 'page/1', channel }, message), '*');
  }

  function problem(code, message) {
    const error = new Error(message);
    error.code = code;
    return error;
  }

  // One request to the console; the promise settles with its reply.
  function call(op, args) {
    if (!inConsole) return Promise.reject(problem('not-in-console', 'this page is not open inside the Keel console'));
    return new Promise((resolve, reject) => {
      const id = nextID++;
      pending.set(id, { resolve, reject });
      const message = { op, id, args };
      if (channel) post(message); else queue.push(message);
    });
  }

  window.addEventListener('message', event => {
    const m = event.data;
    if (event.source !== window.parent || !m || m.keel !== 'console/1') return;
    if (m.type === 'init' && !channel && typeof m.channel === 'string') {
      channel = m.channel;
      const s = m.session || {};
      state.user = Object.freeze({ id: s.id || '', displayName: s.displayName || s.id || '', roles: Object.freeze((s.roles || []).slice()),
                                   anonymous: !!s.anonymous, admin: !!s.admin });
      state.tenant = s.tenant || 'default';
      for (const queued of queue.splice(0)) post(queued);
      markReady({ user: state.user, tenant: state.tenant });
      window.dispatchEvent(new CustomEvent('keel:ready', { detail: { user: state.user, tenant: state.tenant } }));
    } else if (m.type === 'reply' && m.channel === channel && pending.has(m.id)) {
      const { resolve, reject } = pending.get(m.id);
      pending.delete(m.id);
      if (m.error) reject(problem(m.error.code, m.error.message)); else resolve(m.result);
    }
  });

  async function fetchThrough(path, options = {}) {
    const args = { path: String(path), method: String(options.method || 'GET').toUpperCase(),
                   headers: Object.assign({}, options.headers || {}),
                   body: options.body === undefined || options.body === null ? undefined : String(options.body) };
    const r = await call('fetch', args);
    let json;
    try { json = JSON.parse(r.body); } catch (_) { json = undefined; }
    return Object.freeze({ status: r.status, ok: r.status >= 200 && r.status < 300, headers: Object.freeze(r.headers), body: r.body, json });
  }

  window.keel = Object.freeze({
    ready,
    get user() { return state.user; },
    get tenant() { return state.tenant; },
    fetch: fetchThrough,
    navigate: consolePath => call('navigate', { path: String(consolePath) }),
    notify: (text, level) => call('notify', { text: String(text), level: String(level || 'info') }),
  });

  // The console sends the caller and the channel when the frame has loaded.
  if (!inConsole) failReady(problem('not-in-console', 'this page is not open inside the Keel console'));
  ready.catch(() => {});
})();
