'use strict';
// The overview (GET /api/v1/overview) and the plugin list with search, state filter and the switches.
// Uses the core in console.js.

// "3 d 4 h", "5 min 2 s": a duration in seconds for people.
function duration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const parts = [[86400, 'd'], [3600, 'h'], [60, 'min'], [1, 's']]
    .map(([n, unit]) => [Math.floor(s / n) % (unit === 'd' ? Infinity : unit === 'h' ? 24 : 60), unit]);
  const first = parts.findIndex(([n]) => n > 0);
  if (first < 0) return '0 s';
  return parts.slice(first, first + 2).filter(([n]) => n > 0).map(([n, unit]) => n + ' ' + unit).join(' ');
}

// A time stamp from the API ("2026-11-29T06:30:00Z" or "2026-11-29 06:30:00") as local time.
function when(at) {
  const t = new Date(/[zZ]|[+-]\d\d:?\d\d$/.test(at) ? at : at.replace(' ', 'T') + 'Z');
  return isNaN(t) ? at : t.toLocaleString();
}

function pluginLink(id, text) {
  return el('a', { href: '#/plugin/' + encodeURIComponent(id), textContent: text || id, 'data-plugin-link': id });
}

let uptimeTimer = null;

defineView('overview', { section: 'overview', title: 'Overview', icon: 'overview', admin: false, load: async () => {
  const body = document.getElementById('overview-body');
  document.getElementById('overview-login').hidden = state.admin;
  if (!state.admin) { body.replaceChildren(); return; }
  const o = await api('/api/v1/overview');
  const loaded = Date.now();
  const uptime = el('strong', { id: 'uptime', textContent: duration(o.uptimeSeconds) });
  clearInterval(uptimeTimer);
  uptimeTimer = setInterval(() => {
    if (!document.body.contains(uptime)) { clearInterval(uptimeTimer); return; }
    uptime.textContent = duration(o.uptimeSeconds + (Date.now() - loaded) / 1000);
  }, 1000);
  const order = ['enabled', 'disabled', 'installed', 'failed', 'missing', 'installing'];
  const counts = order.filter(s => s in o.byState).map(s =>
    el('li', { 'data-count': s, className: 'state-' + s },
       el('a', { href: '#/plugins?state=' + s, 'data-count-link': s },
          el('strong', { className: 'count', textContent: String(o.byState[s]) }), ' ' + s)));
  const cards = el('div', { className: 'cards' },
    el('article', { className: 'card', 'aria-labelledby': 'card-host' },
      el('h3', { id: 'card-host', textContent: 'Host' }),
      el('p', {}, 'Keel ', el('strong', { id: 'host-version', textContent: o.version })),
      el('p', {}, 'up ', uptime, el('span', { className: 'muted', textContent: ' since ' + when(o.startedAt) }))),
    el('article', { className: 'card', 'aria-labelledby': 'card-plugins' },
      el('h3', { id: 'card-plugins' }, el('a', { href: '#/plugins', textContent: o.plugins + ' plugins' })),
      el('ul', { className: 'counts', id: 'plugin-counts' }, ...counts)),
    el('article', { className: 'card', 'aria-labelledby': 'card-directory' },
      el('h3', { id: 'card-directory', textContent: 'Directory' }),
      el('p', {}, el('a', { href: '#/tenants', textContent: o.tenants + (o.tenants === 1 ? ' tenant' : ' tenants') })),
      el('p', {}, el('a', { href: '#/repositories',
                            textContent: o.repositories + (o.repositories === 1 ? ' repository' : ' repositories') }))));
  const failures = el('section', { className: 'panel', 'aria-labelledby': 'failures-title' },
    el('h3', { id: 'failures-title', textContent: 'Failures' }),
    list(o.failures, 'none: every plugin the operator enabled is serving', f =>
      el('li', { 'data-failure': f.id }, icon(pluginIcons.get(f.id), f.id), ' ', pluginLink(f.id), ' ',
         el('span', { className: 'state-' + f.status, textContent: f.status }),
         el('div', { className: 'reason', textContent: f.reason || 'no reason recorded' }))));
  const events = el('section', { className: 'panel', 'aria-labelledby': 'events-title' },
    el('h3', { id: 'events-title', textContent: 'Recent events' }),
    list(o.events.slice().reverse(), 'no changes since the server started', e =>
      el('li', { 'data-event': e.op || e.kind, 'data-subject': e.subject || '' },
         el('time', { className: 'muted', textContent: when(e.at) + ' ' }),
         e.kind === 'executed'
           ? el('span', {}, e.op + ' ', el('strong', { textContent: e.subject || '' }), ' by ' + e.actor)
           : el('span', { textContent: 'plugins changed (a watched bundle, or the kernel)' }),
         e.ok === false ? el('div', { className: 'reason', textContent: 'failed: ' + (e.failure || '') }) : null)));
  replaceKeepingFocus(body, [cards, el('div', { className: 'columns' }, failures, events)]);
} });

defineView('plugins', { section: 'admin', title: 'Plugins', icon: 'plugins', load: async argument => {
  const filter = document.getElementById('plugin-filter');
  if (filter.dataset.hash !== location.hash) { // opened from an address: its filter ("#/plugins?state=failed")
    const fromAddress = /[?&]state=([a-z]+)/.exec(location.hash);
    filter.value = fromAddress ? fromAddress[1] : '';
    filter.dataset.hash = location.hash;
  }
  state.plugins = await api('/api/v1/plugins');
  drawPlugins();
} });

function drawPlugins() {
  const word = document.getElementById('plugin-search').value.trim().toLowerCase();
  const wanted = document.getElementById('plugin-filter').value;
  const shown = (state.plugins || []).filter(p => (!wanted || p.status === wanted)
    && (!word || (p.id + ' ' + p.name + ' ' + p.description).toLowerCase().includes(word)));
  const rows = shown.map(p => {
    const on = p.status === 'enabled';
    const action = on ? 'disable' : 'enable';
    return el('tr', { 'data-plugin-row': p.id },
      el('td', {}, el('div', { className: 'plugin-name' }, icon(pluginIcons.get(p.id), p.id),
         el('div', {}, el('strong', {}, pluginLink(p.id)), el('div', { className: 'muted', textContent: p.name })))),
      el('td', { textContent: p.version }),
      el('td', { className: 'state-' + p.status, textContent: p.status + (p.activity ? ' (' + p.activity + ')' : '') }),
      el('td', { className: 'reason', textContent: p.reason || '' }),
      el('td', { className: 'actions' },
        button(on ? 'Disable' : 'Enable', 'toggle ' + action, { 'data-plugin': p.id, 'aria-label': (on ? 'Disable ' : 'Enable ') + p.id },
               () => act(p.id, '/' + action, { method: 'POST' })),
        button('Uninstall', 'uninstall', { 'data-uninstall': p.id, 'aria-label': 'Uninstall ' + p.id }, () => {
          if (confirm('Uninstall ' + p.id + '? Its files and stored state are removed.')) {
            act(p.id, '', { method: 'DELETE' });
          }
        })));
  });
  if (!rows.length) {
    rows.push(el('tr', {}, el('td', { colSpan: 5, className: 'muted',
      textContent: (state.plugins || []).length ? 'no plugin matches' : 'no plugins in the plugin folder' })));
  }
  replaceKeepingFocus(document.querySelector('#plugins tbody'), rows);
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('plugin-search').addEventListener('input', drawPlugins);
  document.getElementById('plugin-filter').addEventListener('change', drawPlugins);
});
