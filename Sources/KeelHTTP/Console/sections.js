'use strict';
// The Services view (interfaces between plugins, who serves each, the choice of provider) and the Commands view
// (a form per command signature), and the command row the plugin page reuses. Uses the core in console.js.

// Interfaces between plugins (admin only): who serves each one host-wide and why, a choice of provider, the
// choices per tenant, and the consumers.
defineView('services', { section: 'services', title: 'Services', icon: 'services', load: async () => {
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
        el('div', { className: 'muted', textContent: why(hostWide, s) })),
      el('td', { className: 'actions' }, providerSelect(s, hostWide),
        button('Use ranking', 'ranking', { 'data-use-ranking': s.interface, disabled: !hostWide.choice,
                                           title: hostWide.choice ? 'forget the choice: the highest ranking serves'
                                                                  : 'no choice: the ranking rule decides' }, forget())),
      el('td', {}, list(s.serving.filter(v => v.tenant !== ''), 'no tenant choices', t =>
        el('li', { 'data-tenant': t.tenant }, el('strong', { textContent: t.tenant + ': ' }), t.provider || 'none',
          el('span', { className: 'muted', textContent: ' (' + why(t, s) + ')' }),
          button('Clear', 'clear', { 'data-clear-tenant': t.tenant,
                                     'aria-label': 'clear the choice for tenant ' + t.tenant }, forget(t.tenant))))),
      el('td', {}, list(s.consumers, 'none', c =>
        el('li', { 'data-consumer': c.plugin }, el('strong', { textContent: c.plugin }),
          ' ' + c.versions + ' ' + (c.optional ? 'optional' : 'required'),
          c.active ? '' : el('span', { className: 'muted', textContent: ' (not enabled)' })))));
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 5, className: 'muted', textContent: 'no plugin provides or consumes an interface' })));
  replaceKeepingFocus(document.querySelector('#services-table tbody'), rows);
} });

// Every installed plugin's commands (admin only): what each takes and who may call it, and a form built from its
// signature that runs it with the caller's token. Running one changes nothing the page shows, so the result stays
// next to its form until the next refresh.
defineView('commands', { section: 'commands', title: 'Commands', icon: 'commands', load: async () => {
  const plugins = await api('/api/v1/plugins');
  const rows = plugins.flatMap(p => (p.commands || []).map(c => commandRow(c, p.status === 'enabled')));
  if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 5, className: 'muted', textContent: 'no plugin declares a command' })));
  replaceKeepingFocus(document.querySelector('#commands-table tbody'), rows);
} });

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
      result.textContent = errorText(e);
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

// Why a provider serves no table, after its name (as `keel services list` says it).
function stopped(text) {
  if (!text) return 'is not running (disabled, failed or not enabled)';
  return text.startsWith('running') ? 'is ' + text : 'is not running (' + text + ')';
}

// Why a provider serves a scope, and why the operator's choice, when there is one, does not serve it.
function why(serving, service) {
  if (!serving.choice || serving.choice === serving.provider) return serving.reason;
  const chosen = service.providers.find(p => p.plugin === serving.choice);
  const state = !chosen ? 'is not installed' : chosen.idle ? 'is idle (loaded by its first use)'
    : !chosen.active ? stopped(chosen.stopped)
    : 'is not enabled ' + (serving.tenant ? 'for ' + serving.tenant : 'for every tenant');
  return serving.reason + '; chosen ' + serving.choice + ' ' + state;
}

// The host-wide provider of one interface, as a labelled <select>: enabled providers (running or idle) can be picked,
// the others are shown disabled. Picking one chooses it (PUT) at once.
function providerSelect(service, hostWide) {
  const select = el('select', { 'data-provider-select': service.interface });
  if (!hostWide.provider) select.append(el('option', { value: '', textContent: '(none enabled)', disabled: true }));
  for (const p of service.providers) {
    const label = p.plugin + (p.pluginVersion ? ' ' + p.pluginVersion : '') + ' (ranking ' + p.ranking + ')'
      + (p.active ? '' : p.idle ? ' (idle: loaded by its first use)' : ' (' + (p.stopped || 'not enabled') + ')');
    select.append(el('option', { value: p.plugin, textContent: label, disabled: !p.active && !p.idle }));
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
