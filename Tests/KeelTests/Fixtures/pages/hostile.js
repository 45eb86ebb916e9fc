// A hostile console page (test fixture, served from the spy plugin's assets): it tries every way it knows to read
// the console's token or to reach what its plugin may not, and writes each outcome into its DOM for the browser test:
// <li data-attempt="NAME" data-outcome="blocked|refused:CODE|LEAKED|allowed:STATUS">detail</li>.
const who = document.createElement('h1');
who.id = 'who';
const list = document.createElement('ul');
list.id = 'attempts';
document.getElementById('keel-page').append(who, list);

function report(name, outcome, detail) {
  const item = document.createElement('li');
  item.dataset.attempt = name;
  item.dataset.outcome = outcome;
  item.textContent = name + ': ' + outcome + (detail ? ' — ' + String(detail).slice(0, 300) : '');
  list.append(item);
}

// Reading something directly: any value read is a leak.
function read(name, get) {
  try { report(name, 'LEAKED', JSON.stringify(get())); } catch (e) { report(name, 'blocked', e.name); }
}

read('parent.sessionStorage', () => parent.sessionStorage.getItem('keel.token'));
read('parent.document', () => parent.document.body.innerHTML);
read('top.localStorage', () => top.localStorage.length);
read('document.cookie', () => document.cookie);
read('localStorage', () => localStorage.length);
read('sessionStorage', () => sessionStorage.length);

// The network of its own: connect-src 'none'.
try {
  const r = await fetch('/api/v1/plugins');
  report('fetch /api/v1/plugins', 'LEAKED', r.status + ' ' + (await r.text()));
} catch (e) {
  report('fetch /api/v1/plugins', 'blocked', e.name);
}
try {
  const r = await fetch('/ext/spy/echo');
  report('fetch /ext/spy/echo', 'LEAKED', r.status + ' ' + (await r.text()));
} catch (e) {
  report('fetch /ext/spy/echo', 'blocked', e.name);
}

// Through the bridge: only its own routes and the endpoints its plugin.yaml declares.
async function bridge(name, path, options) {
  try {
    const r = await keel.fetch(path, options);
    report(name, 'allowed:' + r.status, r.body);
  } catch (e) {
    report(name, 'refused:' + e.code, e.message);
  }
}

await keel.ready;
who.textContent = keel.user.id;
await bridge('keel.fetch undeclared /api/v1/plugins', '/api/v1/plugins');
await bridge('keel.fetch declared path, other method', '/api/v1/session', { method: 'POST', body: '{}' });
await bridge('keel.fetch another plugin', '/ext/inventory/items');
await bridge('keel.fetch dot-dot', '/ext/spy/../../api/v1/plugins');
await bridge('keel.fetch encoded dot-dot', '/ext/spy/%2e%2e/%2e%2e/api/v1/plugins');
await bridge('keel.fetch encoded slash', '/ext/spy/..%2F..%2Fapi/v1/plugins');
await bridge('keel.fetch encoded backslash', '/ext/spy/..%5c..%5capi/v1/plugins');
await bridge('keel.fetch backslash', '/ext/spy/..\\..\\api/v1/plugins');
await bridge('keel.fetch other origin', 'http://127.0.0.2:9/steal');
await bridge('keel.fetch scheme-relative', '//127.0.0.2/steal');
await bridge('keel.fetch own prefix lookalike', '/ext/spyware/x');
await bridge('keel.fetch with an Authorization header', '/ext/spy/echo', { headers: { Authorization: 'Bearer x' } });
// Allowed: its own route (as the caller, by the page session; the host strips the console's credential) and the
// one endpoint it declares.
await bridge('keel.fetch own route', '/ext/spy/echo');
await bridge('keel.fetch declared endpoint', '/api/v1/session');
document.body.dataset.done = 'true';
