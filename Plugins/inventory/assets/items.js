// The inventory page: a plain ES module, no build step. It runs in the console's sandboxed frame with no credential
// and no network of its own; `window.keel` (the host's bridge, loaded first by the page's shell) asks the console.
const root = document.getElementById('keel-page');

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

const heading = el('h1', 'Inventory');
const viewer = el('p', 'waiting for the console…', { id: 'viewer', class: 'muted' });
const table = el('table', undefined, { id: 'items' });
const status = el('p', '', { id: 'status', role: 'status' });
const refresh = el('button', 'Refresh', { type: 'button', id: 'refresh' });
root.append(heading, viewer, refresh, table, status);

async function load() {
  status.textContent = 'loading…';
  try {
    const r = await keel.fetch('/ext/inventory/items');
    if (!r.ok) throw new Error('the route answered ' + r.status);
    const head = el('tr');
    for (const title of ['SKU', 'Item', 'Quantity']) head.append(el('th', title));
    const rows = r.json.items.map(item => {
      const row = el('tr', undefined, { 'data-sku': item.sku });
      row.append(el('td', item.sku), el('td', item.name), el('td', String(item.quantity), { class: 'number' }));
      if (item.quantity < 20) row.classList.add('low');
      return row;
    });
    table.replaceChildren(el('thead'), el('tbody'));
    table.tHead.append(head);
    table.tBodies[0].append(...rows);
    status.textContent = rows.length + ' items, as ' + (r.json.viewer || 'anonymous');
    const low = r.json.items.filter(item => item.quantity < 20).map(item => item.name);
    if (low.length) keel.notify('Low stock: ' + low.join(', '), 'warning');
  } catch (e) {
    status.textContent = (e.code ? e.code + ': ' : '') + e.message;
  }
}

refresh.addEventListener('click', load);
const { user, tenant } = await keel.ready;
viewer.textContent = 'Signed in as ' + (user.anonymous ? 'anonymous' : user.displayName) + ' · tenant ' + tenant;
viewer.dataset.user = user.id;
await load();
document.body.dataset.ready = 'true';
