'use strict';
// The console's core: requests with the caller's token, the DOM helper, the views and their hash routes, login,
// plugin pages in the sandboxed frame, and `window.KeelConsole` for console-pages.js. The views themselves are in
// console-views.js, console-plugin.js, console-sections.js and console-directory.js; live.js refreshes.
const state = { token: sessionStorage.getItem('keel.token') || '', admin: false, session: null, route: null, openLink: null };

// One request with the caller's token; the response body as text. A failed request throws an Error with the API's
// message (or the status text), its `code` (e.g. "bad-argument", or undefined) and `status`.
async function request(path, options = {}) {
  // X-Keel-Client names the console in the audit trail (it grants nothing).
  const headers = Object.assign({ 'X-Keel-Client': 'console' }, options.headers || {});
  if (state.token) headers['Authorization'] = 'Bearer ' + state.token;
  const response = await fetch(path, Object.assign({}, options, { headers }));
  const text = await response.text();
  if (!response.ok) {
    const body = parse(text);
    const error = new Error(body && body.error ? body.error.message : response.statusText);
    error.status = response.status; error.code = body && body.error ? body.error.code : undefined;
    throw error;
  }
  return text;
}

// The response body as JSON (null when it is not JSON); errors as `request`'s.
async function api(path, options = {}) {
  return parse(await request(path, options));
}

// A JSON request body with its content type, for `api`'s options.
function json(method, value) {
  return { method, headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(value) };
}

function parse(text) {
  try { return JSON.parse(text); } catch (_) { return null; }
}

// An error as the console shows it: "<code>: <message>".
function errorText(e) {
  return (e.code ? e.code + ': ' : '') + e.message;
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('data-') || k.startsWith('aria-') || k === 'role' || k === 'for') node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) node.append(c);
  return node;
}

function button(text, className, attrs, onClick) {
  const b = el('button', Object.assign({ type: 'button', className, textContent: text }, attrs));
  b.addEventListener('click', onClick);
  return b;
}

// A plain list of `items` made by `item`, or `empty` in grey.
function list(items, empty, item) {
  return items.length ? el('ul', { className: 'plain' }, ...items.map(item))
    : el('span', { className: 'muted', textContent: empty });
}

// Replaces `container`'s children with `nodes`, keeping the keyboard focus: when the focused element had a data-*
// attribute, the new element with the same attribute and value gets the focus back.
function replaceKeepingFocus(container, nodes) {
  const active = document.activeElement;
  const key = active && container.contains(active)
    ? Array.from(active.attributes).find(a => a.name.startsWith('data-')) : null;
  container.replaceChildren(...nodes);
  if (key) {
    const again = container.querySelector('[' + key.name + '="' + CSS.escape(key.value) + '"]');
    if (again) again.focus();
  }
}

// ---- views and routes ----------------------------------------------------------------------------------------
// A view is one screen: `#/<name>[/<argument>]`. `load(argument)` (re)draws it from the API; it is called when the
// view opens and on every refresh while it is open. `leave()`, when given, is called while another view is shown.
const views = {};

function defineView(name, options) {
  views[name] = Object.assign({ admin: true, nav: true }, options, { name });
}

// The route in the address: { view, argument }. "#/ext/..." and other paths are plugin pages in the frame.
function currentRoute() {
  let path;
  try { path = decodeURIComponent(location.hash.replace(/^#/, '')) || '/'; } catch (_) { path = '/'; }
  if (!path.startsWith('/')) return state.route || { view: 'overview', argument: '' };
  const m = /^\/([a-z]*)(?:[/?](.*))?$/.exec(path);
  if (m && m[1] === '') return { view: 'overview', argument: '' };
  if (m && views[m[1]] && m[1] !== 'frame') return { view: m[1], argument: m[2] || '' };
  return { view: 'frame', argument: path };
}

// Shows the view the address names (hiding every other: one screen at a time, no layout shift) and loads it.
// `focus`: move the keyboard focus to its heading (after a user's navigation, not on the first load).
async function route(focus) {
  const r = currentRoute();
  const view = views[r.view];
  // An admin view before the admin logs in shows the overview's invitation to log in instead.
  const shown = !view.admin || state.admin ? view : views.overview;
  state.route = r;
  for (const v of Object.values(views)) document.getElementById(v.section).hidden = v !== shown;
  for (const v of Object.values(views)) if (v !== view && v.leave) v.leave();
  document.querySelectorAll('nav a').forEach(a => {
    const here = a.dataset.view === r.view || (r.view === 'plugin' && a.dataset.view === 'plugins')
      || (r.view === 'frame' && a.getAttribute('href') === '#' + r.argument);
    if (here) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    a.classList.toggle('active', here);
  });
  if (focus) {
    document.body.classList.remove('nav-open');
    document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
    const heading = document.querySelector('#' + shown.section + ' h2');
    heading.tabIndex = -1;
    heading.focus({ preventScroll: true });
  }
  document.title = (view.title ? view.title + ' · ' : '') + 'Keel console';
  await loadView();
}

// (Re)draws the open view; its errors go to the message line.
async function loadView() {
  const r = state.route;
  if (!r) return;
  const view = views[r.view];
  if (view.admin && !state.admin) { await views.overview.load(''); return; }
  try { if (view.load) await view.load(r.argument); }
  catch (e) { document.getElementById('message').textContent = (view.title || r.view) + ': ' + errorText(e); }
}

function go(hash) {
  if (location.hash === hash) route(true); else location.hash = hash;
}

// ---- plugin pages --------------------------------------------------------------------------------------------

// The plugin a console link belongs to (/ext/<id>/...), or null.
function pluginOf(link) {
  const m = /^\/ext\/([a-z0-9][a-z0-9._-]*)(\/|$)/.exec(link || '');
  return m ? m[1] : null;
}

// Opens a plugin page in the sandboxed frame, in place of the view that was open. The page gets no credential: the
// host gives the frame's requests to that plugin the caller's identity through a page session (an HttpOnly cookie),
// and console-pages.js (when present) or a message tells the page who is looking.
async function openPage(address) {
  // Resolved first ("/ext/a/../b/" is /ext/b/): the page session goes to the plugin whose page is loaded.
  const url = new URL(address, location.origin);
  if (url.origin !== location.origin) {
    document.getElementById('message').textContent = 'not a page of this host: ' + address;
    return;
  }
  const link = url.pathname + url.search;
  if (state.openLink === link) return;
  state.openLink = link;
  const plugin = pluginOf(link);
  if (plugin && state.token) {
    try {
      await api('/api/v1/session/page', json('POST', { plugin }));
    } catch (e) {
      document.getElementById('message').textContent = 'page session for ' + plugin + ': ' + errorText(e);
    }
  }
  // A new frame element for each page: the bridge belongs to the element, and a page still in the old one (it asked
  // to navigate, then kept its document, e.g. by navigating itself to an answer without content) would otherwise be
  // the document the next load hands this plugin's channel and session to. Removing the old element unloads it.
  const old = document.getElementById('page');
  if (window.KeelPages) window.KeelPages.detach(old);
  const frame = old.cloneNode(false);
  frame.removeAttribute('src');
  old.replaceWith(frame);
  // console-pages.js tells the page who is looking and answers its bridge (window.keel) requests.
  if (plugin && window.KeelPages) window.KeelPages.attach(frame, plugin, state.session);
  frame.src = link;
  frame.hidden = false;
  document.getElementById('frame-title').textContent = 'Plugin page ' + link;
}

// Leaves the plugin page: the frame is emptied so that its script stops.
function closePage() {
  if (!state.openLink) return;
  const frame = document.getElementById('page');
  if (window.KeelPages) window.KeelPages.detach(frame);
  frame.onload = null;
  frame.src = 'about:blank';
  frame.hidden = true;
  state.openLink = null;
}

defineView('frame', { section: 'frame-view', admin: false, nav: false, load: link => openPage(link), leave: closePage });

// ---- notices and the page bridge -------------------------------------------------------------------------------

// Shows `text` for a few seconds in the notice area (read out politely); `level`: info, success, warning or error.
function notify(text, level) {
  const kind = ['info', 'success', 'warning', 'error'].includes(level) ? level : 'info';
  const notice = el('p', { className: 'notice ' + kind, textContent: String(text).slice(0, 500) });
  const area = document.getElementById('notices');
  area.append(notice);
  while (area.children.length > 3) area.firstChild.remove();
  setTimeout(() => notice.remove(), 6000);
}

// What console-pages.js calls on behalf of a plugin page: navigation inside the console only (a console view such
// as "/plugins", or a plugin page under "/ext/"), never to another address; and a notice. `fromPlugin`: the plugin
// whose page asks. Its own paths it may open; another plugin's only where that plugin's own menu entry links (opening one loads it
// with the caller's page session for that plugin: any GET of its routes would otherwise be the page's to make as the
// caller, which the sandbox keeps pages from).
window.KeelConsole = Object.freeze({
  navigate(consolePath, fromPlugin) {
    const path = String(consolePath || '').replace(/^#/, '');
    if (!/^\/[A-Za-z0-9._~!$&'()*+,;=:@%\/?-]*$/.test(path) || path.startsWith('//')) return false;
    if (fromPlugin !== undefined) {
      // Judged as the frame will load it: decoded once as the address is (`currentRoute`), then resolved
      // (`openPage`), so that "/ext/mine/..%2fother/" or "/ext/%6fther/" is the other plugin's path it becomes.
      let decoded;
      try { decoded = decodeURIComponent(path); } catch (_) { return false; }
      const url = new URL(decoded, location.origin);
      const resolved = url.pathname + url.search, target = pluginOf(resolved);
      if (target !== fromPlugin && (target || /^\/ext(\/|$)/.test(resolved)) && !menuLinks.has(resolved)) return false;
    }
    go('#' + path);
    return true;
  },
  notify(text, level) { notify(text, level); },
});

// ---- navigation, session, login ------------------------------------------------------------------------------

function renderMenu(nodes) {
  const listNode = el('ul', { className: 'nav-list' });
  for (const n of nodes) {
    // The host refuses any other link; only a console path or an http(s) URL is ever made a link here.
    const local = /^\/(?!\/)/.test(n.link || '');
    const external = /^https?:\/\/[^\/]/i.test(n.link || '');
    const link = el('a', { href: local ? '#' + n.link : (external ? n.link : '#'), 'data-menu-id': n.id },
                    icon(n.icon, n.title), el('span', { textContent: n.title }));
    // In a tab of its own: the page it leads to never holds this tab (whose session keeps the token), so it cannot
    // send it back to a console route that acts as the caller.
    if (external) { link.rel = 'noopener noreferrer'; link.target = '_blank'; }
    const item = el('li', {}, link);
    if (n.children && n.children.length) item.append(renderMenu(n.children));
    listNode.append(item);
  }
  return listNode;
}

// The icon each plugin's first menu entry names, by plugin id (for the plugin list and pages).
const pluginIcons = new Map();
// Every console path a menu entry links to: where a plugin page may send the console in another plugin's pages.
const menuLinks = new Set();

async function loadMenus() {
  const menu = document.getElementById('menu');
  try {
    const tree = await api('/api/v1/menus');
    pluginIcons.clear();
    menuLinks.clear();
    const walk = nodes => nodes.forEach(n => {
      if (n.pluginID && n.icon && !pluginIcons.has(n.pluginID)) pluginIcons.set(n.pluginID, n.icon);
      // A plugin's own pages only: a plugin may write any link into its menu, another plugin's routes included.
      if (/^\/(?!\/)/.test(n.link || '') && pluginOf(n.link) === n.pluginID) menuLinks.add(n.link);
      walk(n.children || []);
    });
    walk(tree);
    replaceKeepingFocus(menu, [tree.length ? renderMenu(tree) : el('p', { className: 'muted', textContent: 'no menu entries' })]);
  } catch (e) {
    menu.replaceChildren(el('p', { className: 'muted', textContent: 'navigation unavailable: ' + errorText(e) }));
  }
  const nav = document.getElementById('views-nav');
  nav.hidden = !state.admin;
  if (state.admin && !nav.children.length) {
    for (const v of Object.values(views).filter(v => v.nav)) {
      nav.append(el('li', {}, el('a', { href: '#/' + (v.name === 'overview' ? '' : v.name), 'data-view': v.name },
                                 icon(v.icon, v.title), el('span', { textContent: v.title }))));
    }
  }
}

// One admin request; its error is shown as "<what>: <code>: <message>". Then a fresh view either way.
async function perform(what, path, options) {
  const message = document.getElementById('message');
  message.textContent = '';
  try { await api(path, options); }
  catch (e) { message.textContent = what + ': ' + errorText(e); }
  await refresh();
}

// One admin action on a plugin (enable, disable, install, upgrade, uninstall), then a fresh view.
function act(id, path, options) {
  return perform(id, '/api/v1/plugins/' + encodeURIComponent(id) + path, options);
}

// Re-reads who is logged in, the navigation and the open view.
async function refresh() {
  try {
    const session = await api('/api/v1/session');
    state.session = session;
    state.admin = session.admin;
    document.getElementById('who').textContent = session.anonymous ? 'anonymous'
      : (session.displayName || session.id) + ' · ' + session.tenant + (session.admin ? ' · admin' : '');
  } catch (e) {
    state.admin = false;
    state.session = null;
  }
  document.getElementById('logout-button').hidden = !state.token;
  document.getElementById('token').hidden = !!state.token;
  document.getElementById('login-button').hidden = !!state.token;
  if (!state.admin) document.getElementById('views-nav').replaceChildren();
  await loadMenus();
  await route(false);
  document.body.dataset.ready = 'true';
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('login').addEventListener('submit', async event => {
    event.preventDefault();
    state.token = document.getElementById('token').value.trim();
    document.getElementById('token').value = '';
    const message = document.getElementById('message');
    message.textContent = '';
    try {
      // The admin token opens the admin views; any other credential an authenticate hook accepts (an API key,
      // a user token) shows that caller's own navigation.
      const session = await api('/api/v1/session');
      if (session.anonymous) throw new Error('not the admin token, and no authenticate hook recognised it');
      sessionStorage.setItem('keel.token', state.token);
    } catch (e) {
      state.token = ''; sessionStorage.removeItem('keel.token');
      message.textContent = 'login failed: ' + errorText(e);
    }
    await refresh();
  });
  document.getElementById('logout-button').addEventListener('click', async () => {
    state.token = ''; sessionStorage.removeItem('keel.token');
    await refresh();
  });
  document.getElementById('nav-toggle').addEventListener('click', () => {
    const open = document.body.classList.toggle('nav-open');
    document.getElementById('nav-toggle').setAttribute('aria-expanded', String(open));
    if (open) { const first = document.querySelector('#nav a'); if (first) first.focus(); }
  });
  document.addEventListener('keydown', event => {
    if (event.key === 'Escape' && document.body.classList.contains('nav-open')) {
      document.body.classList.remove('nav-open');
      document.getElementById('nav-toggle').setAttribute('aria-expanded', 'false');
      document.getElementById('nav-toggle').focus();
    }
  });
  window.addEventListener('hashchange', () => {
    if (location.hash && !location.hash.startsWith('#/')) return; // not a route (an anchor)
    document.getElementById('message').textContent = '';
    route(true);
  });
  // The skip link moves the focus to the open view without touching the address (which holds the route).
  document.querySelector('.skip-link').addEventListener('click', event => {
    event.preventDefault();
    const view = state.route && document.getElementById(views[state.route.view].section);
    const target = view && !view.hidden ? view.querySelector('h2') : document.getElementById('main');
    target.tabIndex = -1;
    target.focus();
  });
  refresh();
});
