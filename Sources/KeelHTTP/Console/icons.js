'use strict';
// Icons: a small set drawn as inline SVG (outline, 24×24, in the text colour), by the names menu entries use in
// plugin.yaml (`icon: wave`) and the console's own views use. Any other name, or none, gets the first letter of the
// title in a tinted circle. Built with DOM calls: no markup strings, nothing the CSP would have to allow.
const iconPaths = {
  overview: ['M3 3h8v8H3z', 'M13 3h8v5h-8z', 'M13 10h8v11h-8z', 'M3 13h8v8H3z'],
  plugins: ['M9 2v5', 'M15 2v5', 'M6 7h12v4a6 6 0 0 1-12 0z', 'M12 17v5'],
  services: ['M10 13a5 5 0 0 0 7.5.5l3-3a5 5 0 0 0-7-7l-1.7 1.7', 'M14 11a5 5 0 0 0-7.5-.5l-3 3a5 5 0 0 0 7 7l1.7-1.7'],
  commands: ['M4 17l6-6-6-6', 'M12 19h8'],
  tenants: ['M17 21v-2a4 4 0 0 0-4-4H5a4 4 0 0 0-4 4v2', 'M9 3a4 4 0 1 0 0 8a4 4 0 1 0 0-8z', 'M23 21v-2a4 4 0 0 0-3-3.9',
            'M16 3.1a4 4 0 0 1 0 7.8'],
  repositories: ['M4 6c0-1.7 3.6-3 8-3s8 1.3 8 3-3.6 3-8 3-8-1.3-8-3z', 'M4 6v12c0 1.7 3.6 3 8 3s8-1.3 8-3V6',
                 'M4 12c0 1.7 3.6 3 8 3s8-1.3 8-3'],
  catalog: ['M3 7l9-4 9 4-9 4z', 'M3 7v10l9 4 9-4V7', 'M12 11v10'],
  wave: ['M7 11V5.5a1.5 1.5 0 0 1 3 0V10', 'M10 10V4a1.5 1.5 0 0 1 3 0v6', 'M13 10V5a1.5 1.5 0 0 1 3 0v6',
         'M16 11V8a1.5 1.5 0 0 1 3 0v6a7 7 0 0 1-7 7h-1a6 6 0 0 1-5-2.7L3.3 14a1.5 1.5 0 0 1 2.4-1.8L7 14'],
  smile: ['M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z', 'M8 14s1.5 2 4 2 4-2 4-2', 'M9 9h.01', 'M15 9h.01'],
  rocket: ['M4.5 16.5c-1.5 1.3-2 5-2 5s3.7-.5 5-2c.7-.8.7-2.1-.1-2.9a2.2 2.2 0 0 0-2.9-.1z',
           'M12 15l-3-3a22 22 0 0 1 2-4A13 13 0 0 1 22 2c0 2.7-.8 7.5-6 11a22 22 0 0 1-4 2z',
           'M9 12H4s.6-3 2-4c1.6-1.1 5 0 5 0', 'M12 15v5s3-.6 4-2c1.1-1.6 0-5 0-5'],
  gear: ['M12 9a3 3 0 1 0 0 6a3 3 0 1 0 0-6z',
         'M19.4 15a1.7 1.7 0 0 0 .3 1.8l.1.1a2 2 0 1 1-2.8 2.8l-.1-.1a1.7 1.7 0 0 0-2.9 1.2V21a2 2 0 1 1-4 0v-.1a1.7 1.7 0 0 0-2.9-1.2l-.1.1a2 2 0 1 1-2.8-2.8l.1-.1A1.7 1.7 0 0 0 3 14.9H3a2 2 0 1 1 0-4h.1a1.7 1.7 0 0 0 1.2-2.9l-.1-.1a2 2 0 1 1 2.8-2.8l.1.1A1.7 1.7 0 0 0 9 4.6V3a2 2 0 1 1 4 0v.1a1.7 1.7 0 0 0 2.9 1.2l.1-.1a2 2 0 1 1 2.8 2.8l-.1.1a1.7 1.7 0 0 0 1.2 2.9H21a2 2 0 1 1 0 4h-.1a1.7 1.7 0 0 0-1.5 1z'],
  key: ['M21 2l-2 2', 'M15.5 7.5l3 3L22 7l-3-3', 'M11.4 11.6a5.5 5.5 0 1 1-7.8 7.8a5.5 5.5 0 0 1 7.8-7.8z', 'M11.4 11.6L19 4'],
  chart: ['M3 3v18h18', 'M7 16v-5', 'M12 16V8', 'M17 16v-9'],
  file: ['M14 2H6a2 2 0 0 0-2 2v16a2 2 0 0 0 2 2h12a2 2 0 0 0 2-2V8z', 'M14 2v6h6', 'M8 13h8', 'M8 17h8'],
  bell: ['M18 8a6 6 0 0 0-12 0c0 7-3 9-3 9h18s-3-2-3-9', 'M13.7 21a2 2 0 0 1-3.4 0'],
  globe: ['M12 2a10 10 0 1 0 0 20a10 10 0 1 0 0-20z', 'M2 12h20', 'M12 2a15 15 0 0 1 0 20a15 15 0 0 1 0-20z'],
  shield: ['M12 22s8-4 8-10V5l-8-3-8 3v7c0 6 8 10 8 10z'],
  sync: ['M21 12a9 9 0 0 1-15 6.7L3 16', 'M3 12a9 9 0 0 1 15-6.7L21 8', 'M21 3v5h-5', 'M3 21v-5h5'],
};
// Names plugins may use for the same pictures.
const iconAliases = { hand: 'wave', happy: 'smile', deploy: 'rocket', settings: 'gear', cog: 'gear', lock: 'key',
                      dashboard: 'overview', home: 'overview', puzzle: 'plugins', plug: 'plugins', link: 'services',
                      terminal: 'commands', users: 'tenants', database: 'repositories', box: 'catalog', package: 'catalog',
                      notifications: 'bell', world: 'globe', security: 'shield', refresh: 'sync', docs: 'file' };

// An icon for `name` (decorative: the title next to it says what it is), or the first letter of `title`.
function icon(name, title) {
  const key = iconAliases[name] || name;
  const paths = iconPaths[key];
  if (!paths) {
    const letter = (String(title || name || '?').trim()[0] || '?').toUpperCase();
    let hash = 0;
    for (const c of String(title || name || '')) hash = (hash * 31 + c.codePointAt(0)) >>> 0;
    return el('span', { className: 'icon letter tint' + (hash % 6), textContent: letter, 'aria-hidden': 'true' });
  }
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  for (const d of paths) {
    const path = document.createElementNS(ns, 'path');
    path.setAttribute('d', d);
    svg.append(path);
  }
  return svg;
}
