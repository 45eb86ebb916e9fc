'use strict';
// The Tenants and roles view, the Repositories and trust view, and the Catalog with search, install and upgrade.
// Every change is one admin API call; its error is shown next to the form or button that made it, with its code.

// A one-line form: labelled `fields` ({ name, label, type?, placeholder?, options? }), a submit button, and an output
// for its outcome. `submit(values)` makes the request; on success the form is emptied and the view refreshed.
function smallForm(key, fields, submitText, submit) {
  const inputs = fields.map(f => {
    const id = 'form-' + key + '-' + f.name;
    const input = f.options
      ? el('select', { id, name: f.name }, ...f.options.map(o => el('option', { value: o, textContent: o })))
      : el('input', { id, name: f.name, type: f.type || 'text', placeholder: f.placeholder || '', autocomplete: 'off', spellcheck: false });
    return { f, input, node: el('label', { htmlFor: id }, el('span', { textContent: f.label }), input) };
  });
  const out = el('output', { className: 'form-result', 'data-form-result': key, 'aria-live': 'polite' });
  const form = el('form', { className: 'inline-form', 'data-form': key }, ...inputs.map(i => i.node),
                  el('button', { type: 'submit', textContent: submitText }), out);
  form.addEventListener('submit', async event => {
    event.preventDefault();
    const values = Object.fromEntries(inputs.map(i => [i.f.name, i.input.value.trim()]));
    out.classList.remove('error');
    out.textContent = '…';
    try {
      await submit(values);
      out.textContent = 'done';
      inputs.forEach(i => { if (!i.f.options) i.input.value = ''; });
      await refresh();
    } catch (e) {
      out.classList.add('error');
      out.textContent = errorText(e);
    }
  });
  return form;
}

// Forms are kept across refreshes (a live update must not wipe what is being typed): made once per view and key.
const keptForms = new Map();
function keptForm(key, make) {
  if (!keptForms.has(key)) keptForms.set(key, make());
  return keptForms.get(key);
}

function smallTable(id, head, rows, empty) {
  return el('div', { className: 'scroll' }, el('table', { id },
    el('thead', {}, el('tr', {}, ...head.map(h => el('th', { textContent: h })))),
    el('tbody', {}, ...(rows.length ? rows : [el('tr', {}, el('td', { colSpan: head.length, className: 'muted', textContent: empty }))]))));
}

defineView('tenants', { section: 'tenants', title: 'Tenants and roles', icon: 'tenants', load: async () => {
  const [tenants, roles] = await Promise.all([api('/api/v1/tenants'), api('/api/v1/roles')]);
  const roleNames = roles.map(r => r.name);
  const tenantRows = tenants.map(t => el('tr', { 'data-tenant-row': t.name },
    el('td', {}, el('strong', { textContent: t.name })),
    el('td', {}, list(t.members, 'no members', m =>
      el('li', { 'data-member': m.principal }, el('strong', { textContent: m.principal }), ' ' + m.roles.join(', ')))),
    el('td', {}, list(t.plugins, 'every enabled plugin', id => el('li', {}, pluginLink(id)))),
    el('td', {}, keptForm('member-' + t.name + '-' + roleNames.join(','), () => smallForm('member-' + t.name,
      [{ name: 'principal', label: 'Principal', placeholder: 'user id' }, { name: 'role', label: 'Role', options: roleNames }],
      'Add member', v => api('/api/v1/tenants/' + encodeURIComponent(t.name) + '/members', json('POST', v)))))));
  const roleRows = roles.map(r => el('tr', { 'data-role-row': r.name },
    el('td', {}, el('strong', { textContent: r.name })),
    el('td', {}, r.grantsEverything ? el('span', { textContent: 'every permission', 'data-grants-everything': r.name })
      : list(r.permissions, 'no permissions', p => el('li', {}, el('code', { textContent: p })))),
    r.grantsEverything ? el('td', {}) : el('td', {}, keptForm('permission-' + r.name, () => smallForm('permission-' + r.name,
      [{ name: 'permission', label: 'Permission', placeholder: 'hello.greetings:view' }],
      'Grant', v => api('/api/v1/roles/' + encodeURIComponent(r.name) + '/grants', json('POST', v)))))));
  replaceKeepingFocus(document.getElementById('tenants-body'), [
    el('section', { className: 'panel', 'aria-labelledby': 'tenants-list' },
      el('h3', { id: 'tenants-list', textContent: 'Tenants' }),
      keptForm('tenant', () => smallForm('tenant', [{ name: 'name', label: 'New tenant', placeholder: 'acme' }], 'Create tenant',
        v => api('/api/v1/tenants', json('POST', v)))),
      smallTable('tenants-table', ['Tenant', 'Members', 'Plugins enabled for it only', 'Add a member'], tenantRows, 'no tenants')),
    el('section', { className: 'panel', 'aria-labelledby': 'roles-list' },
      el('h3', { id: 'roles-list', textContent: 'Roles' }),
      keptForm('role', () => smallForm('role', [{ name: 'name', label: 'New role', placeholder: 'viewer' }], 'Create role',
        v => api('/api/v1/roles', json('POST', v)))),
      smallTable('roles-table', ['Role', 'Permissions', 'Grant a permission'], roleRows, 'no roles'))]);
} });

defineView('repositories', { section: 'repositories', title: 'Repositories and trust', icon: 'repositories', load: async () => {
  const [repositories, keys] = await Promise.all([api('/api/v1/repositories'), api('/api/v1/trust')]);
  const repoRows = repositories.map(r => el('tr', { 'data-repository-row': r.name },
    el('td', {}, el('strong', { textContent: r.name })), el('td', {}, el('code', { textContent: r.location })),
    el('td', { textContent: String(r.priority) }),
    el('td', { className: 'actions' }, button('Remove', 'uninstall', { 'data-remove-repository': r.name, 'aria-label': 'Remove repository ' + r.name },
      () => { if (confirm('Forget repository ' + r.name + '?')) perform('repository ' + r.name, '/api/v1/repositories/' + encodeURIComponent(r.name), { method: 'DELETE' }); }))));
  const keyRows = keys.map(k => el('tr', { 'data-key-row': k.name },
    el('td', {}, el('strong', { textContent: k.name })), el('td', {}, el('code', { className: 'key', textContent: k.publicKey })),
    el('td', {}, el('code', { textContent: k.fingerprint || '' })),
    el('td', { 'data-key-scope': k.name, textContent: k.only ? k.only.join(', ') + ' only' : 'any plugin' }),
    el('td', { className: 'actions' }, button('Remove', 'uninstall', { 'data-remove-key': k.name, 'aria-label': 'Stop trusting ' + k.name },
      () => untrust(k.name)))));
  replaceKeepingFocus(document.getElementById('repositories-body'), [
    el('section', { className: 'panel', 'aria-labelledby': 'repositories-list' },
      el('h3', { id: 'repositories-list', textContent: 'Repositories' }),
      keptForm('repository', () => smallForm('repository', [{ name: 'name', label: 'Name', placeholder: 'local' },
        { name: 'location', label: 'Location', placeholder: '/srv/keel-repo or https://…' },
        { name: 'priority', label: 'Priority', type: 'number', placeholder: '0' }], 'Add repository',
        v => api('/api/v1/repositories', json('POST', { name: v.name, location: v.location, priority: v.priority === '' ? 0 : Number(v.priority) })))),
      smallTable('repositories-table', ['Name', 'Location', 'Priority', ''], repoRows, 'no repositories: the catalog is empty')),
    el('section', { className: 'panel', 'aria-labelledby': 'trust-list' },
      el('h3', { id: 'trust-list', textContent: 'Trusted signing keys' }),
      el('p', { className: 'muted', textContent: 'Packages signed by these keys install without asking. Make a key pair with `keel trust keygen`.' }),
      keptForm('trust', () => smallForm('trust', [{ name: 'name', label: 'Signer', placeholder: 'acme' },
        { name: 'publicKey', label: 'Public key (base64)', placeholder: '32 bytes, base64' },
        { name: 'only', label: 'May sign (ids, prefix*; empty: any)', placeholder: 'acme-*, billing' }], 'Trust key',
        v => api('/api/v1/trust', json('POST', { name: v.name, publicKey: v.publicKey,
          ...(v.only ? { only: v.only.split(',').map(p => p.trim()).filter(p => p) } : {}) })))),
      smallTable('trust-table', ['Signer', 'Public key', 'Fingerprint', 'May sign', ''], keyRows, 'no trusted keys'))]);
} });

// Stops trusting the key `name` (a leaked key): the server's answer names its fingerprint and the plugins pinned to
// it, which keep serving but cannot be upgraded until moved to another key; shown in the message line.
async function untrust(name) {
  if (!confirm('Stop trusting ' + name + '? Plugins pinned to this key keep serving; their upgrades are refused until moved to another key.')) return;
  const message = document.getElementById('message');
  message.textContent = '';
  try {
    const answer = await api('/api/v1/trust/' + encodeURIComponent(name), { method: 'DELETE' });
    message.textContent = 'no longer trusting ' + name + (answer.note ? ' (' + answer.note + ')' : '');
  } catch (e) { message.textContent = 'key ' + name + ': ' + errorText(e); }
  await refresh();
}

// What the configured repositories offer, searched by the server (?q=), with install or upgrade buttons.
defineView('catalog', { section: 'catalog', title: 'Catalog', icon: 'catalog', load: async () => {
  const word = document.getElementById('catalog-query').value.trim();
  const [catalog, plugins] = await Promise.all([api('/api/v1/catalog' + (word ? '?q=' + encodeURIComponent(word) : '')),
                                                api('/api/v1/plugins')]);
  const installed = new Map(plugins.map(p => [p.id, p]));
  const rows = catalog.plugins.map(item => {
    const have = installed.get(item.id);
    // Only a signature by a key trusted here installs without the operator's leave; one by a signer no key is
    // trusted under is taken as unsigned, after asking.
    // The version shown is the one asked for: a catalog refreshed meanwhile cannot swap the offer confirmed.
    const body = JSON.stringify({ version: item.version, allowUnsigned: !item.trusted });
    const post = path => act(item.id, path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body });
    // The signer's name quoted as JSON: a name with quotes or line breaks cannot write a message of its own.
    const unverified = item.signed ? 'is signed by ' + JSON.stringify(item.signer) + ', whose key is not trusted here'
      : item.signer ? 'has a bad signature by ' + JSON.stringify(item.signer) + ' (the install will be refused)' : 'is not signed';
    const confirmUnsigned = () => item.trusted || confirm(item.id + ' ' + item.version + ' ' + unverified + '. Install it anyway?');
    let cell;
    if (!have) {
      cell = button(item.trusted ? 'Install' : 'Install unsigned', 'install', { 'data-install': item.id, 'aria-label': 'Install ' + item.id },
                    () => { if (confirmUnsigned()) post('/install'); });
    } else if (have.version !== item.version && item.pinned && !item.pinMatches) {
      // Pinned to a key: the server takes only packages it can verify as signed by that key (no leave given here
      // changes that), so there is nothing to confirm. Moving the pin is the CLI's deliberate --signer or --no-signer.
      cell = el('span', { className: 'muted', 'data-pinned': item.id,
                          textContent: 'pinned to ' + item.pinned + ': ' + item.version + ' is not signed by that key as far as this host can verify'
                                       + ' (keel upgrade ' + item.id + ' --signer NAME moves the pin)' });
    } else if (have.version !== item.version) {
      cell = button('Upgrade to ' + item.version, 'install', { 'data-upgrade': item.id },
                    () => { if (confirmUnsigned()) post('/upgrade'); });
    } else {
      cell = el('span', { className: 'muted', textContent: 'installed' });
    }
    return el('tr', { 'data-catalog-row': item.id },
      el('td', {}, el('strong', {}, have ? pluginLink(item.id) : item.id), el('div', { className: 'muted', textContent: item.description })),
      el('td', { textContent: item.version }),
      el('td', { textContent: item.repository }),
      el('td', { textContent: item.trusted ? 'signed by ' + item.signer : item.signed ? 'signed by ' + item.signer + ' (not trusted here)'
                                : item.signer ? 'bad signature' : 'unsigned' }),
      el('td', { className: 'actions' }, cell));
  });
  if (!rows.length) rows.push(el('tr', {}, el('td', { colSpan: 5, className: 'muted',
    textContent: word ? 'nothing matches "' + word + '"' : 'the repositories offer nothing: add one under Repositories and trust' })));
  replaceKeepingFocus(document.querySelector('#catalog-table tbody'), rows);
  document.getElementById('catalog-problems').textContent = (catalog.problems || []).join('; ');
} });

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('catalog-search').addEventListener('submit', event => { event.preventDefault(); loadView(); });
});
