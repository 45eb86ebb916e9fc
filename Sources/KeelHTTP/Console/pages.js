'use strict';
// The console's side of the plugin page bridge (served at /console-pages.js). A plugin page runs in the console's
// sandboxed frame, in an opaque origin, with no credential: /keel-page.js inside it defines `window.keel` and asks
// the console, by postMessage, for what the page may not do itself. This file answers, for frames attached with
// `KeelPages.attach(frame, pluginID, session)`, and only messages whose source is that frame's window:
//
// - On each load of the frame, a fresh channel id and the caller (id, name, tenant, roles) go to the page; requests
//   must carry the channel, so a document the frame has left cannot speak for the next one.
// - `fetch`: made by the console, only to the plugin's own routes (/ext/<id>/..., sent with the page session cookie
//   and never with the console's token, so plugin code never sees it) and to the host endpoints its plugin.yaml
//   declares (console.fetch: exact method and path, from GET /api/v1/pages; sent with the console's token). Paths are
//   refused before anything is sent when they are not plain: other origins, '\', '.' or '..' segments, encoded
//   '.', '/', '\' (%2e %2f %5c). Refusals carry a stable code: bad-path, not-allowed, bad-request, network.
// - `navigate` and `notify`: through window.KeelConsole when the console defines it (which opens the page's own plugin's
//   paths, and another plugin's only where a menu entry links), else as text in #message.
(() => {
  const frames = new Map();
  const listening = new WeakSet();
  const maxBody = 1 << 20;
  const methods = new Set(['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']);
  const levels = new Set(['info', 'success', 'warning', 'error']);

  // The console's credential, used only for the host endpoints a page may call.
  function token() {
    if (window.KeelConsole && typeof window.KeelConsole.token === 'function') return window.KeelConsole.token() || '';
    try { return sessionStorage.getItem('keel.token') || ''; } catch (_) { return ''; }
  }

  function refusal(code, message) {
    const error = new Error(message);
    error.code = code;
    return error;
  }

  function channelID() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('');
  }

  // The host endpoints (`METHOD /api/v1/...`) the plugin's pages may call, as the host lists them for this caller.
  async function endpoints(plugin) {
    const headers = {};
    const t = token();
    if (t) headers.Authorization = 'Bearer ' + t;
    try {
      const response = await fetch('/api/v1/pages', { headers, credentials: 'omit', cache: 'no-store' });
      if (!response.ok) return new Set();
      const mine = (await response.json()).find(p => p.plugin === plugin);
      return new Set(mine ? mine.fetch : []);
    } catch (_) {
      return new Set();
    }
  }

  // Checks a page's request; returns { own, path } or throws a refusal. `own`: a route of the plugin itself.
  function check(plugin, allowed, method, path) {
    if (typeof path !== 'string' || path.length === 0 || path.length > 4096) throw refusal('bad-path', 'a path is a string of 1 to 4096 characters');
    if (!path.startsWith('/') || path.startsWith('//') || /[\\\s#\u0000-\u001f\u007f]/.test(path)) {
      throw refusal('bad-path', path + ': only a path on this host, such as /ext/' + plugin + '/items');
    }
    const cut = path.indexOf('?');
    const pathname = cut < 0 ? path : path.slice(0, cut);
    if (/%(2e|2f|5c|00)/i.test(pathname) || pathname.split('/').some(s => s === '.' || s === '..')) {
      throw refusal('bad-path', path + ': no ".", ".." or encoded ".", "/", "\\" in a path');
    }
    const url = new URL(path, location.origin);
    if (url.origin !== location.origin || url.pathname !== pathname) throw refusal('bad-path', path + ': not a plain path');
    if (pathname === '/ext/' + plugin || pathname.startsWith('/ext/' + plugin + '/')) return { own: true, path };
    const query = cut >= 0;
    if (allowed.has(method + ' ' + pathname) && (!query || method === 'GET' || method === 'HEAD')) return { own: false, path };
    throw refusal('not-allowed', method + ' ' + pathname + ' is neither a route of ' + plugin
                  + ' nor a host endpoint its plugin.yaml declares under console.fetch');
  }

  // Makes a page's request; resolves to { status, headers, body } or rejects with a refusal.
  async function pageFetch(entry, args) {
    const a = args || {};
    const method = String(a.method || 'GET').toUpperCase();
    if (!methods.has(method)) throw refusal('bad-request', 'method ' + method + ' is not one of ' + Array.from(methods).join(', '));
    const target = check(entry.plugin, await entry.endpoints, method, a.path);
    const headers = {};
    for (const [name, value] of Object.entries(a.headers && typeof a.headers === 'object' ? a.headers : {})) {
      const lower = String(name).toLowerCase();
      if (!/^[a-z0-9!#$%&'*+.^_`|~-]+$/.test(lower) || lower === 'authorization' || lower === 'cookie' || lower.startsWith('x-keel-')) {
        throw refusal('bad-request', 'header ' + name + ' may not be set by a page');
      }
      headers[lower] = String(value);
    }
    if (a.body !== undefined && (method === 'GET' || method === 'HEAD')) throw refusal('bad-request', method + ' has no body');
    if (a.body !== undefined && (typeof a.body !== 'string' || a.body.length > maxBody)) {
      throw refusal('bad-request', 'a body is a string of at most ' + maxBody + ' characters');
    }
    // Own routes: the page session cookie (scoped to /ext/<id>) names the caller; the token never reaches plugin
    // code. Host endpoints: the console's token, no cookie. Redirects are not followed.
    const init = { method, headers, body: a.body, redirect: 'error', cache: 'no-store',
                   credentials: target.own ? 'same-origin' : 'omit' };
    const t = token();
    if (!target.own && t) headers.authorization = 'Bearer ' + t;
    let response;
    try { response = await fetch(target.path, init); } catch (e) { throw refusal('network', 'the request failed: ' + e.message); }
    const out = {};
    response.headers.forEach((value, name) => { out[name] = value; });
    return { status: response.status, headers: out, body: await response.text() };
  }

  function navigate(entry, args) {
    const path = String((args && args.path) || '');
    if (!path.startsWith('/') || path.startsWith('//') || path.length > 2048) throw refusal('bad-path', 'a console path starts with a single "/"');
    if (window.KeelConsole && typeof window.KeelConsole.navigate === 'function') {
      if (window.KeelConsole.navigate(path, entry.plugin) === false) throw refusal('not-allowed', 'the console does not open ' + path);
      return { done: true };
    }
    show('the page asks to open ' + path);
    return { done: false };
  }

  function notify(entry, args) {
    const text = String((args && args.text) || '').slice(0, 500);
    const level = levels.has(args && args.level) ? args.level : 'info';
    if (window.KeelConsole && typeof window.KeelConsole.notify === 'function') window.KeelConsole.notify(text, level);
    else show(entry.plugin + ': ' + text);
    return { done: true };
  }

  function show(text) {
    const message = document.getElementById('message');
    if (message) message.textContent = text;
  }

  function reply(frame, entry, id, result, error) {
    if (!frame.contentWindow) return;
    const message = { keel: 'console/1', type: 'reply', channel: entry.channel, id };
    if (error) message.error = { code: error.code || 'bad-request', message: error.message };
    else message.result = result;
    frame.contentWindow.postMessage(message, '*');
  }

  async function answer(frame, entry, m) {
    try {
      let result;
      if (m.op === 'fetch') result = await pageFetch(entry, m.args);
      else if (m.op === 'navigate') result = navigate(entry, m.args);
      else if (m.op === 'notify') result = notify(entry, m.args);
      else throw refusal('bad-request', 'unknown request ' + String(m.op));
      reply(frame, entry, m.id, result);
    } catch (e) {
      reply(frame, entry, m.id, null, e.code ? e : refusal('bad-request', String(e && e.message)));
    }
  }

  // Each load of the frame is a new document: a new channel, and the caller (the bridge's keel.user and
  // keel.tenant; the plain {type: 'keel.session'} message for pages without the bridge).
  function loaded(frame) {
    const entry = frames.get(frame);
    if (!entry || !frame.contentWindow) return;
    entry.channel = channelID();
    const s = entry.session || { id: '', displayName: '', tenant: 'default', roles: [], anonymous: true, admin: false };
    const session = { id: s.id, displayName: s.displayName, tenant: s.tenant, roles: s.roles, anonymous: s.anonymous, admin: s.admin };
    frame.contentWindow.postMessage({ keel: 'console/1', type: 'init', channel: entry.channel, session }, '*');
    frame.contentWindow.postMessage(Object.assign({ type: 'keel.session' }, session), '*');
  }

  window.addEventListener('message', event => {
    const m = event.data;
    if (!m || m.keel !== 'page/1' || !event.source) return;
    for (const [frame, entry] of frames) {
      if (event.source !== frame.contentWindow) continue;
      if (!entry.channel || m.channel !== entry.channel || typeof m.id !== 'number') return;
      answer(frame, entry, m);
      return;
    }
  });

  window.KeelPages = Object.freeze({
    // Registers `frame` as `pluginID`'s page for the caller `session` (the /api/v1/session body); call it before
    // setting the frame's src. Messages from the document the frame held before are ignored from now on.
    attach(frame, pluginID, session) {
      if (!listening.has(frame)) {
        listening.add(frame);
        frame.addEventListener('load', () => loaded(frame));
      }
      const plugin = String(pluginID);
      frames.set(frame, { plugin, session: session || null, channel: null, endpoints: endpoints(plugin) });
    },
    // Forgets `frame`: its messages are no longer answered.
    detach(frame) {
      frames.delete(frame);
    },
  });
})();
