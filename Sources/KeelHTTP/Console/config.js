'use strict';
// A plugin's configuration form, generated from its bundle's config.schema.yaml (GET .../config/schema, the subset
// PluginConfig checks: type, properties, required, enum, minimum, maximum). It only helps to type: what it sends
// (PUT .../config, JSON text, which is YAML) is checked by the server, whose error is shown next to the form with
// its code. Without a schema, or for nested values, the operator writes YAML.

// The form for plugin `id`: { node, refresh() }. `refresh` re-reads the stored configuration and the schema; it
// fills the fields only while the operator has not started editing them.
function configForm(id) {
  const base = '/api/v1/plugins/' + encodeURIComponent(id) + '/config';
  const fields = el('div', { className: 'config-fields' });
  const raw = el('textarea', { id: 'config-yaml', rows: 6, spellcheck: false, 'data-config-yaml': '' });
  const rawBox = el('details', { className: 'config-raw' },
    el('summary', { textContent: 'Edit as YAML' }), el('label', { htmlFor: 'config-yaml', className: 'sr-only', textContent: 'configuration as YAML' }), raw);
  const save = el('button', { type: 'submit', className: 'enable', textContent: 'Save configuration', 'data-config-save': id });
  const result = el('output', { className: 'config-result', 'data-config-result': id, 'aria-live': 'polite' });
  const stored = el('pre', { className: 'config-stored', 'data-config-stored': id });
  const form = el('form', { className: 'config-form', noValidate: true, 'data-config-form': id }, fields, rawBox,
                  el('div', { className: 'actions' }, save, result));
  const node = el('div', {}, form, el('h4', { textContent: 'Stored' }), stored);
  // The stored configuration's members as written ([key, JSON text]), not through JS numbers: a key the form has no
  // field for goes back as stored, and an integer past 2^53 keeps its digits (JSON.parse would round it).
  let schema, schemaText = null, dirty = false, inputs = [], storedMembers = null;

  form.addEventListener('input', () => { dirty = true; });
  rawBox.addEventListener('toggle', () => { if (rawBox.open) raw.value = yamlOf(collect()); });

  form.addEventListener('submit', async event => {
    event.preventDefault();
    const text = rawBox.open || !inputs.length ? raw.value : jsonOf(collect());
    result.classList.remove('error');
    result.textContent = '…';
    save.disabled = true;
    try {
      await request(base, { method: 'PUT', headers: { 'Content-Type': 'application/yaml' }, body: text });
      dirty = false;
      result.textContent = 'stored';
      await refresh();
      result.textContent = 'stored';
    } catch (e) {
      result.classList.add('error');
      result.textContent = errorText(e);
    } finally {
      save.disabled = false;
    }
  });

  // The configuration to store, as [key, JSON text] pairs: the stored keys the form has no field for kept as they
  // are (a PUT replaces the whole configuration: a key the schema does not list must not be lost by saving the
  // form), then each field's value, an empty field leaving its key out. An integer goes as the text typed, so that
  // one past 2^53 is not rounded; a number as a number; anything else as text, for the server to refuse with its
  // reason.
  function collect() {
    const pairs = new Map();
    const shown = new Set(inputs.map(f => f.key));
    for (const [k, v] of storedMembers || []) if (!shown.has(k)) pairs.set(k, v);
    for (const f of inputs) {
      const text = f.input.value.trim();
      if (text === '') continue;
      let json;
      if (f.kind === 'integer' && /^-?\d+$/.test(text)) json = text.replace(/^(-?)0+(?=\d)/, '$1');
      // A number written as JSON goes as typed (its digits kept); another spelling JS reads ("1.", "+2") as JS has it.
      else if (f.kind === 'number' && /^-?(0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?$/.test(text)) json = text;
      else if (f.kind === 'number' && Number.isFinite(Number(text))) json = JSON.stringify(Number(text));
      else if (f.kind === 'boolean') json = JSON.stringify(text === 'true');
      else if (f.kind === 'json') json = parse(text) === null && text !== 'null' ? JSON.stringify(text) : text;
      else json = JSON.stringify(f.input.value);
      pairs.set(f.key, json);
    }
    return [...pairs.entries()];
  }

  function draw() {
    const props = schema && schema.properties ? schema.properties : {};
    const required = new Set(schema && schema.required ? schema.required : []);
    inputs = Object.keys(props).sort().map(key => field(key, props[key] || {}, required.has(key)));
    fields.replaceChildren(...(inputs.length ? inputs.map(f => f.node)
      : [el('p', { className: 'muted', textContent: schema ? 'The schema names no keys: write the configuration as YAML.'
                                                              : 'The bundle ships no config.schema.yaml: any mapping is accepted.' })]));
    if (!inputs.length) rawBox.open = true;
  }

  function field(key, spec, required) {
    const inputID = 'config-' + id + '-' + key;
    const type = spec.type || (spec.enum ? 'string' : 'json');
    const attrs = { id: inputID, name: key, 'data-config-key': key, required, autocomplete: 'off' };
    let input, kind = type;
    if (Array.isArray(spec.enum) || type === 'boolean') {
      const options = type === 'boolean' ? [true, false] : spec.enum;
      input = el('select', attrs, el('option', { value: '', textContent: required ? '(choose)' : '(not set)' }),
                 ...options.map(o => el('option', { value: String(o), textContent: String(o) })));
      if (type !== 'boolean' && options.some(o => typeof o !== 'string')) kind = 'json';
    } else if (type === 'integer' || type === 'number') {
      input = el('input', Object.assign({ type: 'number', step: type === 'integer' ? '1' : 'any' }, attrs));
      if (typeof spec.minimum === 'number') input.min = spec.minimum;
      if (typeof spec.maximum === 'number') input.max = spec.maximum;
    } else if (type === 'string') {
      input = el('input', Object.assign({ type: 'text', spellcheck: false }, attrs));
    } else {
      kind = 'json';
      input = el('textarea', Object.assign({ rows: 2, spellcheck: false, placeholder: type === 'array' ? '["a", "b"]' : '{"key": "value"}' }, attrs));
    }
    const limits = [typeof spec.minimum === 'number' ? 'min ' + spec.minimum : '', typeof spec.maximum === 'number' ? 'max ' + spec.maximum : '']
      .filter(Boolean).join(', ');
    const hint = [type + (kind === 'json' && type !== 'string' ? ' as JSON' : ''), limits, required ? 'required' : ''].filter(Boolean).join(' · ');
    const node = el('div', { className: 'config-field' },
      el('label', { htmlFor: inputID }, el('span', { textContent: key }), required ? el('span', { className: 'required', textContent: ' *', 'aria-hidden': 'true' }) : null),
      input, el('span', { className: 'hint', id: inputID + '-hint', textContent: hint + (spec.description ? ' — ' + spec.description : '') }));
    input.setAttribute('aria-describedby', inputID + '-hint');
    return { key, kind, input, node };
  }

  function fill(members) {
    const stored = new Map(members || []);
    for (const f of inputs) {
      const text = stored.get(f.key);
      const v = text === undefined ? undefined : parse(text);
      // Numbers and JSON from the stored text itself (exact digits); text from its value, and a choice as its option
      // is written (the option of a number is JS's own spelling of it, which may not be the server's: 1e20).
      f.input.value = v === undefined || v === null ? '' : typeof v === 'string' ? v
        : f.input.tagName === 'SELECT' ? String(v) : unslashed(text);
    }
  }

  async function refresh() {
    const [s, current] = await Promise.all([api(base + '/schema'), api(base)]);
    const text = JSON.stringify(s.schema);
    if (text !== schemaText) { schema = s.schema; schemaText = text; draw(); dirty = false; }
    storedMembers = current.json ? jsonMembers(current.json) : null;
    stored.textContent = !current.yaml ? '(none stored)' : storedMembers
      ? (storedMembers.length ? '{\n' + storedMembers.map(([k, v]) => '  ' + JSON.stringify(k) + ': ' + unslashed(v)).join(',\n') + '\n}' : '{}')
      : current.json;
    if (!dirty) { fill(storedMembers); raw.value = current.yaml || ''; }
  }

  return { node, refresh };
}

// [key, JSON text] pairs as YAML text for the raw editor (JSON per value, which YAML reads), and as a JSON object.
function yamlOf(pairs) {
  return pairs.map(([k, v]) => JSON.stringify(k) + ': ' + v).join('\n') + (pairs.length ? '\n' : '');
}
function jsonOf(pairs) {
  return '{' + pairs.map(([k, v]) => JSON.stringify(k) + ':' + v).join(',') + '}';
}

// The members of the JSON object `text` as [key, value text] pairs, each value exactly as written (an integer past
// 2^53 keeps its digits, which JSON.parse would round); null when `text` is not a JSON object.
function jsonMembers(text) {
  let i = 0;
  const space = () => { while (i < text.length && ' \t\n\r'.includes(text[i])) i++; };
  const string = () => {
    const start = i++;
    while (i < text.length && text[i] !== '"') i += text[i] === '\\' ? 2 : 1;
    return text.slice(start, ++i);
  };
  const value = () => {
    const start = i;
    let depth = 0;
    while (i < text.length) {
      const c = text[i];
      if (c === '"') { string(); continue; }
      if (c === '{' || c === '[') depth++;
      else if (c === '}' || c === ']') { if (depth === 0) break; depth--; }
      else if (c === ',' && depth === 0) break;
      i++;
    }
    return text.slice(start, i).trim();
  };
  try {
    const members = [];
    space();
    if (text[i++] !== '{') return null;
    for (space(); text[i] !== '}';) {
      if (text[i] !== '"') return null;
      const key = JSON.parse(string());
      space();
      if (text[i++] !== ':') return null;
      space();
      members.push([key, value()]);
      space();
      if (text[i] === ',') { i++; space(); } else if (text[i] !== '}') return null;
    }
    return members;
  } catch (_) { return null; }
}

// JSON text with its escaped slashes (`\/`, which the server's encoder writes) as plain ones: the same JSON, as people
// write it. A backslash that is itself escaped (`\\/`) is left alone.
function unslashed(text) {
  return text.replace(/\\(\\|\/)/g, (match, c) => c === '/' ? '/' : match);
}
