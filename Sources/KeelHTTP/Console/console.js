'use strict';
const state = { token: sessionStorage.getItem('keel.token') || '', admin: false, session: null };

// One request with the caller's token; the response body as text. A failed request throws an Error with the API's
// message (or the status text), its `code` (e.g. "bad-argument", or undefined) and `status`.
async function request(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
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

function parse(text) {
  try { return JSON.parse(text); } catch (_) { return null; }
}

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k.startsWith('data-') || k.startsWith('aria-')) node.setAttribute(k, v); else node[k] = v;
  }
  for (const c of children) node.append(c);
  return node;
}

function renderMenu(nodes) {
  const list = el('ul');
  for (const n of nodes) {
    const link = el('a', { href: n.link || '#', textContent: n.title, 'data-menu-id': n.id });
    link.addEventListener('click', event => { event.preventDefault(); openPage(n, link); });
    const item = el('li', {}, link);
    if (n.children && n.children.length) item.append(renderMenu(n.children));
    list.append(item);
  }
  return list;
}

// The plugin a console link belongs to (/ext/<id>/...), or null.
function pluginOf(link) {
  const m = /^\/ext\/([a-z0-9][a-z0-9._-]*)(\/|$)/.exec(link || '');
  return m ? m[1] : null;
}

// Opens a plugin page in the sandboxed frame. The page gets no credential: the host gives the frame's requests
// to that plugin the caller's identity through a page session (an HttpOnly cookie), and the page is told who
// is looking by a message.
async function openPage(node, link) {
  document.querySelectorAll('nav a.active').forEach(a => a.classList.remove('active'));
  link.classList.add('active');
  if (!node.link) return;
  const plugin = pluginOf(node.link);
  if (plugin && state.token) {
    try {
      await api('/api/v1/session/page', { method: 'POST', headers: { 'Content-Type': 'application/json' },
                                          body: JSON.stringify({ plugin }) });
    } catch (e) {
      document.getElementById('message').textContent = 'page session for ' + plugin + ': ' + e.message;
    }
  }
  const frame = document.getElementById('page');
  // console-pages.js tells the page who is looking and answers its bridge (window.keel) requests.
  if (plugin && window.KeelPages) window.KeelPages.attach(frame, plugin, state.session);
  else if (window.KeelPages) window.KeelPages.detach(frame);
  frame.src = node.link;
  frame.hidden = false;
  frame.scrollIntoView({ block: 'start' });
}

async function loadMenus() {
  const nav = document.getElementById('nav');
  try {
    const tree = await api('/api/v1/menus');
    nav.replaceChildren(tree.length ? renderMenu(tree) : el('p', { className: 'muted', textContent: 'no menu entries' }));
  } catch (e) {
    nav.replaceChildren(el('p', { className: 'muted', textContent: 'navigation unavailable: ' + e.message }));
  }
}

function button(text, className, attrs, onClick) {
  const b = el('button', Object.assign({ type: 'button', className, textContent: text }, attrs));
  b.addEventListener('click', onClick);
  return b;
}

// The plugin list (admin only); returns the plugins, or [] when the caller is not the admin.
async function loadPlugins() {
  const section = document.getElementById('admin');
  if (!state.admin) { section.hidden = true; return []; }
  const plugins = await api('/api/v1/plugins');
  const rows = plugins.map(p => {
    const on = p.status === 'enabled';
    const action = on ? 'disable' : 'enable';
    return el('tr', { 'data-plugin-row': p.id },
      el('td', {}, el('strong', { textContent: p.id }), el('div', { className: 'muted', textContent: p.name })),
      el('td', { textContent: p.version }),
      el('td', { className: 'state-' + p.status, textContent: p.status }),
      el('td', { className: 'reason', textContent: p.reason || '' }),
      el('td', { className: 'actions' },
        button(on ? 'Disable' : 'Enable', 'toggle ' + action, { 'data-plugin': p.id },
               () => act(p.id, '/' + action, { method: 'POST' })),
        button('Uninstall', 'uninstall', { 'data-uninstall': p.id }, () => {
          if (confirm('Uninstall ' + p.id + '? Its files and stored state are removed.')) {
            act(p.id, '', { method: 'DELETE' });
          }
        })));
  });
  document.querySelector('#plugins tbody').replaceChildren(...rows);
  section.hidden = false;
  return plugins;
}

// What the configured repositories offer (admin only), with install or upgrade buttons.
async function loadCatalog(plugins) {
  const section = document.getElementById('catalog');
  if (!state.admin) { section.hidden = true; return; }
  const catalog = await api('/api/v1/catalog');
  const installed = new Map(plugins.map(p => [p.id, p]));
  const rows = catalog.plugins.map(item => {
    const have = installed.get(item.id);
    const allowUnsigned = !item.signed;
    const body = JSON.stringify({ allowUnsigned });
    const post = path => act(item.id, path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    const confirmUnsigned = () => item.signed || confirm(item.id + ' ' + item.version + ' is not signed. Install it anyway?');
    let cell;
    if (!have) {
      cell = button(item.signed ? 'Install' : 'Install unsigned', 'install', { 'data-install': item.id },
                    () => { if (confirmUnsigned()) post('/install'); });
    } else if (have.version !== item.version) {
      cell = button('Upgrade to ' + item.version, 'install', { 'data-upgrade': item.id },
                    () => { if (confirmUnsigned()) post('/upgrade'); });
    } else {
      cell = el('span', { className: 'muted', textContent: 'installed' });
    }
    return el('tr', { 'data-catalog-row': item.id },
      el('td', {}, el('strong', { textContent: item.id }), el('div', { className: 'muted', textContent: item.description })),
      el('td', { textContent: item.version }),
      el('td', { textContent: item.repository }),
      el('td', { textContent: item.signed ? 'signed' : 'unsigned' }),
      el('td', { className: 'actions' }, cell));
  });
  document.querySelector('#catalog-table tbody').replaceChildren(...rows);
  document.getElementById('catalog-problems').textContent = (catalog.problems || []).join('; ');
  section.hidden = rows.length === 0 && !(catalog.problems || []).length;
}

// Interfaces between plugins (admin only): who serves each one host-wide and why, a choice of provider, the
// choices per tenant, and the consumers.
async function loadServices() {
  const section = document.getElementById('services');
  if (!state.admin) { section.hidden = true; return; }
  const services = await api('/api/v1/services');
  const rows = services.map(s => {
    const hostWide = s.serving.find(v => v.tenant === '')
      || { tenant: '', choice: null, provider: null, reason: 'no provider enabled' };
    const forget = tenant => () => choose(s.interface, { method: 'DELETE' }, tenant);
    return el('tr', { 'data-service-row': s.interface },
      el('td', {}, el('strong', { textContent: s.interface })),
      el('td', { className: 'serving', 'data-serving': hostWide.provider || '' },
        el(hostWide.provider ? 'strong' : 'span', { className: hostWide.provider ? '' : 'muted',
                                                    textContent: hostWide.provider || 'none' }),
        el('div', { className: 'muted', textContent: why(hostWide) })),
      el('td', { className: 'actions' }, providerSelect(s, hostWide),
        button('Use ranking', 'ranking', { 'data-use-ranking': s.interface, disabled: !hostWide.choice,
                                           title: hostWide.choice ? 'forget the choice: the highest ranking serves'
                                                                  : 'no choice: the ranking rule decides' }, forget())),
      el('td', {}, list(s.serving.filter(v => v.tenant !== ''), 'no tenant choices', t =>
        el('li', { 'data-tenant': t.tenant }, el('strong', { textContent: t.tenant + ': ' }), t.provider || 'none',
          el('span', { className: 'muted', textContent: ' (' + why(t) + ')' }),
          button('Clear', 'clear', { 'data-clear-tenant': t.tenant,
                                     'aria-label': 'clear the choice for tenant ' + t.tenant }, forget(t.tenant))))),
      el('td', {}, list(s.consumers, 'none', c =>
        el('li', { 'data-consumer': c.plugin }, el('strong', { textContent: c.plugin }),
          ' ' + c.versions + ' ' + (c.optional ? 'optional' : 'required'),
          c.active ? '' : el('span', { className: 'muted', textContent: ' (not enabled)' })))));
  });
  document.querySelector('#services-table tbody').replaceChildren(...rows);
  section.hidden = rows.length === 0;
}

// Every installed plugin's commands (admin only), from the plugin list: what each takes and who may call it, and a
// form built from its signature that runs it with the caller's token. Running one changes nothing the page shows,
// so the result stays next to its form until the next refresh.
function loadCommands(plugins) {
  const section = document.getElementById('commands');
  if (!state.admin) { section.hidden = true; return; }
  const rows = plugins.flatMap(p => (p.commands || []).map(c => commandRow(c, p.status === 'enabled')));
  document.querySelector('#commands-table tbody').replaceChildren(...rows);
  section.hidden = rows.length === 0;
}

const integerTypes = new Set(['i32', 'i64', 'u32', 'u64']);

// The argument types of a signature such as "(i64, str) -> status(json)": ['i64', 'str'].
function argumentTypes(signature) {
  const inner = (/^\(([^)]*)\)/.exec(signature) || ['', ''])[1].trim();
  return inner ? inner.split(',').map(t => t.trim()) : [];
}

function commandRow(command, enabled) {
  const full = command.plugin + '.' + command.name;
  const args = argumentTypes(command.signature).map((type, i) => argumentInput(full, type, i + 1));
  const result = el('output', { className: 'command-result', 'data-command-result': full, 'aria-live': 'polite' });
  const run = el('button', { type: 'submit', textContent: 'Run', disabled: !enabled, 'data-run': full,
                             'aria-label': 'Run ' + full, title: enabled ? '' : command.plugin + ' is not enabled' });
  const form = el('form', { className: 'command-form', noValidate: true, 'data-command': full },
                  ...args.map(a => a.label), run, result);
  form.addEventListener('submit', async event => {
    event.preventDefault();
    // The body is written by hand: each argument's JSON text comes from what was typed (see argumentJSON).
    const body = '{"args":[' + args.map(a => a.json()).join(',') + ']}';
    const path = '/api/v1/plugins/' + encodeURIComponent(command.plugin) + '/commands/' + encodeURIComponent(command.name);
    run.disabled = true;
    result.classList.remove('error');
    result.textContent = '…';
    try {
      result.textContent = resultText(await request(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body }));
    } catch (e) {
      result.classList.add('error');
      result.textContent = (e.code ? e.code + ': ' : '') + e.message;
    } finally {
      run.disabled = false;
    }
  });
  return el('tr', { 'data-command-row': full },
    el('td', { textContent: command.plugin }),
    el('td', {}, el('strong', { textContent: command.name }),
      command.description ? el('div', { className: 'muted', textContent: command.description }) : ''),
    el('td', {}, el('code', { textContent: command.signature })),
    el('td', { className: 'permission' }, command.permission ? el('code', { textContent: command.permission })
                                                             : el('span', { className: 'muted', textContent: 'admins only' })),
    el('td', {}, form));
}

// One labelled input for argument `n` (1-based) of `command`: a number field for integers (step 1) and f64, a
// checkbox for bool, a text field for str and for bytes (base64 text). Its label names the type; `json` gives the
// argument's JSON text.
function argumentInput(command, type, n) {
  const attrs = { 'data-arg': String(n), autocomplete: 'off' };
  let input;
  if (type === 'bool') input = el('input', Object.assign({ type: 'checkbox' }, attrs));
  else if (integerTypes.has(type)) input = el('input', Object.assign({ type: 'number', step: '1' }, attrs));
  else if (type === 'f64') input = el('input', Object.assign({ type: 'number', step: 'any' }, attrs));
  else input = el('input', Object.assign({ type: 'text', spellcheck: false }, attrs));
  const label = el('label', { className: 'argument' },
    el('span', { className: 'sr-only', textContent: 'argument ' + n + ' of ' + command + ', ' }),
    el('span', { className: 'type', textContent: type === 'bytes' ? 'bytes, base64' : type }), input);
  return { label, json: () => argumentJSON(type, input) };
}

// An argument's JSON text. An integer is written from the field's text, not through a JS number, so 64-bit values
// past 2^53 reach the host exactly. Text that is not a number (an empty field, "1.5" for an integer) goes as a JSON
// string: the host rejects it with a bad-argument message that names the argument and the value.
function argumentJSON(type, input) {
  if (type === 'bool') return input.checked ? 'true' : 'false';
  const text = input.value.trim();
  if (integerTypes.has(type) && /^-?\d+$/.test(text)) return text.replace(/^(-?)0+(?=\d)/, '$1');
  if (type === 'f64' && text !== '' && Number.isFinite(Number(text))) return JSON.stringify(Number(text));
  return JSON.stringify(type === 'str' || type === 'bytes' ? input.value : text);
}

// A command's result as the host wrote it ({"result":<JSON>}), so large integers are shown unrounded.
function resultText(text) {
  const prefix = '{"result":';
  if (text.startsWith(prefix) && text.endsWith('}')) return text.slice(prefix.length, -1);
  const body = parse(text);
  return JSON.stringify(body ? body.result : null);
}

// A plain list of `items` made by `item`, or `empty` in grey.
function list(items, empty, item) {
  return items.length ? el('ul', { className: 'plain' }, ...items.map(item))
    : el('span', { className: 'muted', textContent: empty });
}

// Why a provider serves a scope, and which choice is not in effect (it names a plugin that is not enabled).
function why(serving) {
  const idle = serving.choice && serving.choice !== serving.provider;
  return serving.reason + (idle ? '; chosen ' + serving.choice + ' is not enabled' : '');
}

// The host-wide provider of one interface, as a labelled <select>: enabled providers can be picked, the others
// are shown disabled. Picking one chooses it (PUT) at once.
function providerSelect(service, hostWide) {
  const select = el('select', { 'data-provider-select': service.interface });
  if (!hostWide.provider) select.append(el('option', { value: '', textContent: '(none enabled)', disabled: true }));
  for (const p of service.providers) {
    const label = p.plugin + (p.pluginVersion ? ' ' + p.pluginVersion : '') + ' (ranking ' + p.ranking + ')'
      + (p.active ? '' : ' (not enabled)');
    select.append(el('option', { value: p.plugin, textContent: label, disabled: !p.active }));
  }
  select.value = hostWide.provider || '';
  select.addEventListener('change', () => {
    select.disabled = true;
    choose(service.interface, { method: 'PUT', headers: { 'Content-Type': 'application/json' },
                                body: JSON.stringify({ plugin: select.value }) });
  });
  const text = el('span', { className: 'sr-only', textContent: 'Host-wide provider of ' + service.interface });
  return el('label', {}, text, select);
}

// Chooses (PUT) or forgets (DELETE) the provider of `iface` host-wide, or for `tenant`; then a fresh view.
function choose(iface, options, tenant) {
  const slash = iface.lastIndexOf('/');
  const path = '/api/v1/services/' + encodeURIComponent(iface.slice(0, slash)) + '/'
    + encodeURIComponent(iface.slice(slash + 1)) + '/provider'
    + (tenant && options.method === 'DELETE' ? '?tenant=' + encodeURIComponent(tenant) : '');
  return perform(iface + (tenant ? ' for tenant ' + tenant : ''), path, options);
}

// One admin action on a plugin (enable, disable, install, upgrade, uninstall), then a fresh view.
function act(id, path, options) {
  return perform(id, '/api/v1/plugins/' + encodeURIComponent(id) + path, options);
}

// One admin request; its error is shown as "<what>: <message>". Then a fresh view either way.
async function perform(what, path, options) {
  const message = document.getElementById('message');
  message.textContent = '';
  try { await api(path, options); }
  catch (e) { message.textContent = what + ': ' + e.message; }
  await refresh();
}

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
  const admin = async () => {
    const plugins = await loadPlugins();
    loadCommands(plugins);
    await Promise.all([loadCatalog(plugins), loadServices()]);
  };
  await Promise.all([loadMenus(), admin().catch(e => {
    document.getElementById('message').textContent = e.message;
  })]);
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
      // The admin token opens the plugin list; any other credential an authenticate hook accepts (an API key,
      // a user token) shows that caller's own navigation.
      const session = await api('/api/v1/session');
      if (session.anonymous) throw new Error('no authenticate hook recognised that token');
      sessionStorage.setItem('keel.token', state.token);
    } catch (e) {
      state.token = ''; sessionStorage.removeItem('keel.token');
      message.textContent = 'login failed: ' + e.message;
    }
    await refresh();
  });
  document.getElementById('logout-button').addEventListener('click', async () => {
    state.token = ''; sessionStorage.removeItem('keel.token');
    await refresh();
  });
  refresh();
});
