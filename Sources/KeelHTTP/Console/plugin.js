'use strict';
// A page per plugin (#/plugin/<id>): what it is, its state per tenant, its signature and pinned signer, its grants
// with grant and revoke, its configuration form (console-config.js), its load history, its commands and services,
// and its log, live (new lines fetched every second while the page is open). A refresh
// redraws every part but the configuration form, so that a live update never wipes what the operator is typing.

// The parts of the open plugin page, made once per plugin: { id, head, facts, tenants, grants, config, history, ... }.
let pluginParts = null;

function panel(key, title, ...children) {
  return el('section', { className: 'panel', 'data-part': key, 'aria-labelledby': 'part-' + key },
    el('h3', { id: 'part-' + key, textContent: title }), ...children);
}

// A small table: `head` names the columns; `rows` are arrays of cells (text or nodes), with `attrs` per row.
function table(head, rows, empty) {
  if (!rows.length) return el('p', { className: 'muted', textContent: empty });
  return el('div', { className: 'scroll' }, el('table', {},
    el('thead', {}, el('tr', {}, ...head.map(h => el('th', { textContent: h })))),
    el('tbody', {}, ...rows.map(({ attrs, cells }) => el('tr', attrs || {}, ...cells.map(c =>
      typeof c === 'string' ? el('td', { textContent: c }) : el('td', {}, c)))))));
}

function facts(pairs) {
  return el('dl', { className: 'facts' }, ...pairs.filter(([, v]) => v !== null && v !== undefined && v !== '')
    .flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', {}, v)]));
}

function leavePlugin() {
  if (!pluginParts) return;
  clearTimeout(pluginParts.logTimer);
  pluginParts = null;
  document.getElementById('plugin-body').replaceChildren();
}

defineView('plugin', { section: 'plugin', title: 'Plugin', nav: false, leave: leavePlugin, load: async id => {
  const body = document.getElementById('plugin-body');
  const path = '/api/v1/plugins/' + encodeURIComponent(id);
  const [p, history, tenants] = await Promise.all([api(path), api(path + '/history').catch(() => []),
                                                   api('/api/v1/tenants').catch(() => [])]);
  if (!pluginParts || pluginParts.id !== id) {
    pluginParts = { id, head: el('div', { className: 'plugin-head' }), message: el('p', { className: 'error', role: 'alert' }) };
    for (const key of ['about', 'tenants', 'grants', 'history', 'commands', 'services']) pluginParts[key] = el('div');
    pluginParts.log = el('ol', { className: 'plugin-log', 'aria-live': 'polite' });
    pluginParts.config = configForm(id);
    body.dataset.plugin = id;
    body.replaceChildren(pluginParts.head, pluginParts.message,
      el('div', { className: 'columns' },
        panel('about', 'About', pluginParts.about),
        panel('tenants', 'State per tenant', pluginParts.tenants)),
      el('div', { className: 'columns' },
        panel('grants', 'Grants', el('p', { className: 'muted', textContent:
          'What it asks for in plugin.yaml, and what it may use: the trusted capabilities and your grants.' }), pluginParts.grants),
        panel('config', 'Configuration', pluginParts.config.node)),
      panel('history', 'Load history', pluginParts.history),
      panel('commands', 'Commands', pluginParts.commands),
      panel('services', 'Services', pluginParts.services),
      panel('log', 'Log', pluginParts.log));
    followPluginLog(pluginParts);
  }
  document.getElementById('plugin-title').textContent = p.name + ' (' + p.id + ')';
  document.title = p.name + ' · Keel console';
  drawPluginHead(p);
  drawPluginAbout(p);
  drawPluginTenants(p, tenants);
  drawPluginGrants(p);
  drawPluginHistory(history);
  drawPluginCommands(p);
  drawPluginServices(p);
  await pluginParts.config.refresh();
} });

// The plugin's log, live: what it and the host logged about it (GET .../logs?after=SEQ), new lines every second
// while its page is open; the newest 200 stay on the page. Lines are text, never markup.
function followPluginLog(parts) {
  let after = 0;
  const poll = async () => {
    if (pluginParts !== parts) return;
    try {
      const r = await api('/api/v1/plugins/' + encodeURIComponent(parts.id) + '/logs?after=' + after);
      for (const l of r.lines) {
        parts.log.append(el('li', { className: 'log-' + l.level, textContent: l.at + '  ' + l.level + '  ' + l.message }));
        after = l.seq;
      }
      while (parts.log.children.length > 200) parts.log.firstChild.remove();
    } catch (_) {
      // the next poll tries again
    }
    if (pluginParts === parts) parts.logTimer = setTimeout(poll, 1000);
  };
  poll();
}

// A change on this page: its error is shown on the page, with the API's code; then a fresh view.
async function pluginAction(what, path, options) {
  pluginParts.message.textContent = '';
  try { await api(path, options); }
  catch (e) { pluginParts.message.textContent = what + ': ' + errorText(e); }
  await refresh();
}

function drawPluginHead(p) {
  const base = '/api/v1/plugins/' + encodeURIComponent(p.id);
  const on = p.status === 'enabled';
  replaceKeepingFocus(pluginParts.head, [
    icon(pluginIcons.get(p.id), p.id),
    el('div', {}, el('strong', { className: 'big', textContent: p.name }), ' ', el('span', { className: 'muted', textContent: p.id + ' ' + p.version }),
       ' ', el('span', { className: 'badge state-' + p.status, 'data-plugin-state': p.status, textContent: p.status + (p.activity ? ' (' + p.activity + ')' : '') })),
    el('div', { className: 'actions' },
      button(on ? 'Disable' : 'Enable', 'toggle ' + (on ? 'disable' : 'enable'), { 'data-page-toggle': p.id },
             () => pluginAction(on ? 'disable' : 'enable', base + (on ? '/disable' : '/enable'), { method: 'POST' })),
      button('Reload', '', { 'data-page-reload': p.id, disabled: !on }, () => pluginAction('reload', base + '/reload', { method: 'POST' })),
      button('Uninstall', 'uninstall', { 'data-page-uninstall': p.id }, () => {
        if (confirm('Uninstall ' + p.id + '? Its files and stored state are removed.')) {
          api(base, { method: 'DELETE' }).then(() => go('#/plugins'), e => { pluginParts.message.textContent = 'uninstall: ' + errorText(e); });
        }
      }))]);
}

function drawPluginAbout(p) {
  pluginParts.about.replaceChildren(facts([
    ['Description', p.description], ['Version', p.version], ['ABI', p.abi],
    ['Signature', el('span', { 'data-signature': '', textContent: p.signature || 'none: put in place by hand, not installed from a repository' })],
    ['Pinned signer', el('span', { 'data-signer': '', textContent: p.signer ? p.signer + ': upgrades must be signed by this key' : 'none' })],
    ['Reason', p.reason ? el('span', { className: 'reason', textContent: p.reason }) : ''],
    ['Changed', p.changedAt], ['Bundle', el('code', { textContent: p.bundlePath })], ['Library', p.library],
    ['Depends on', Object.entries(p.dependencies).map(([k, v]) => k + ' ' + v).join(', ')],
    ['Routes', p.routes.length ? list(p.routes, '', r => el('li', {}, el('code', { textContent: r }))) : ''],
    ['Warnings', p.warnings.length ? list(p.warnings, '', w => el('li', { className: 'reason', textContent: w })) : ''],
  ]));
}

// Each tenant and whether the plugin serves it (its tenant list, or all when it has none), with a switch per tenant.
function drawPluginTenants(p, tenants) {
  const base = '/api/v1/plugins/' + encodeURIComponent(p.id);
  const rows = tenants.map(t => {
    const listed = p.tenants === null || p.tenants === undefined || p.tenants.includes(t.name);
    const serving = p.status === 'enabled' && listed;
    const verb = serving ? 'disable' : 'enable';
    return { attrs: { 'data-tenant-state': t.name }, cells: [
      el('strong', { textContent: t.name }),
      el('span', { className: serving ? 'state-enabled' : 'muted', textContent: serving ? 'enabled' : (listed ? p.status : 'not enabled') }),
      button(serving ? 'Disable' : 'Enable', 'toggle ' + verb, { 'data-tenant-toggle': t.name,
             'aria-label': (serving ? 'Disable ' : 'Enable ') + p.id + ' for tenant ' + t.name },
             () => pluginAction(verb + ' for ' + t.name, base + '/' + verb, json('POST', { tenant: t.name })))] };
  });
  replaceKeepingFocus(pluginParts.tenants, [
    el('p', { className: 'muted', textContent: p.tenants ? 'Enabled for ' + p.tenants.join(', ') + ' only.' : 'Serves every tenant when enabled.' }),
    table(['Tenant', 'State', ''], rows, 'no tenants: see Tenants and roles')]);
}

function drawPluginGrants(p) {
  const base = '/api/v1/plugins/' + encodeURIComponent(p.id);
  const rows = p.capabilities.map(c => {
    const granted = p.grants.includes(c);
    return { attrs: { 'data-grant': c }, cells: [
      el('code', { textContent: c }),
      el('span', { className: granted ? 'state-enabled' : 'muted', 'data-granted': String(granted), textContent: granted ? 'granted' : 'not granted' }),
      button(granted ? 'Revoke' : 'Grant', granted ? 'disable' : 'enable', { 'data-grant-action': c,
             'aria-label': (granted ? 'Revoke ' : 'Grant ') + c + ' for ' + p.id },
             () => pluginAction((granted ? 'revoke ' : 'grant ') + c, base + '/grants', json('POST', granted ? { revoke: [c] } : { grant: [c] })))] };
  });
  replaceKeepingFocus(pluginParts.grants, [table(['Capability', 'Now', ''], rows, 'it asks for no capabilities')]);
}

function drawPluginHistory(history) {
  // On a state several hosts share, each row names the host that wrote it.
  const hosts = history.some(h => h.host);
  const rows = history.slice().reverse().map(h => ({ attrs: { 'data-generation': String(h.generation) }, cells: [
    String(h.generation), ...(hosts ? [h.host || ''] : []), h.version,
    el('span', { className: 'outcome-' + h.outcome, textContent: h.outcome }), when(h.at),
    el('code', { title: h.checksum, textContent: h.checksum.slice(0, 12) }), el('span', { className: 'reason', textContent: h.detail })] }));
  const head = ['Generation', ...(hosts ? ['Host'] : []), 'Version', 'Outcome', 'At', 'Library', 'Detail'];
  pluginParts.history.replaceChildren(table(head, rows, 'never loaded'));
  pluginParts.history.id = 'history';
}

function drawPluginCommands(p) {
  const rows = (p.commands || []).map(c => commandRow(c, p.status === 'enabled'));
  const node = rows.length
    ? el('div', { className: 'scroll' }, el('table', { className: 'commands' },
        el('thead', {}, el('tr', {}, ...['Plugin', 'Command', 'Signature', 'Permission', 'Arguments'].map(h => el('th', { textContent: h })))),
        el('tbody', {}, ...rows)))
    : el('p', { className: 'muted', textContent: 'it declares no commands' });
  replaceKeepingFocus(pluginParts.commands, [node]);
}

function drawPluginServices(p) {
  pluginParts.services.replaceChildren(facts([
    ['Provides', list(p.provides, 'nothing', s => el('li', { textContent: s }))],
    ['Consumes', list(p.consumes, 'nothing', s => el('li', { textContent: s }))],
  ]));
}
