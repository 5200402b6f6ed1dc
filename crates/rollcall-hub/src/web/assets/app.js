// The dashboard's behaviour: fetch /api/map, draw it, keep it current from
// /api/events, and send settings through /api/hosts/.../set/.... Cards are
// rebuilt only when hosts, services or descriptions change; a new value
// updates its own row in place, so a switch is never pulled from under a
// click. Plain DOM: every text from the network goes through textContent,
// never innerHTML.
'use strict';

const state = {
  map: null,
  fetchedAt: 0,
  // What the cards were built from; values are not part of it.
  shape: '',
  picture: '',
  // Functions that put the current map's values into the built cards.
  updaters: [],
  timer: null,
  drawTimer: null,
  // A slider being dragged: a rebuild now would pull it from under the pointer.
  holding: false,
  pendingDraw: false,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function toast(message) {
  const t = el('div', { class: 'toast', text: message });
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), 6000);
}

async function refresh() {
  try {
    const r = await fetch('/api/map', { cache: 'no-store' });
    if (!r.ok) throw new Error(`/api/map: HTTP ${r.status}`);
    state.map = await r.json();
    state.fetchedAt = Date.now();
    draw();
  } catch (e) {
    document.getElementById('summary').textContent = `cannot read the map: ${e.message}`;
  }
}

// Bursts of changes (a roll-call brings many) become one fetch.
function refreshSoon() {
  if (state.timer) return;
  state.timer = setTimeout(() => { state.timer = null; refresh(); }, 150);
}

function drawSoon() {
  if (state.drawTimer) return;
  state.drawTimer = setTimeout(() => { state.drawTimer = null; draw(); }, 100);
}

function findService(hostName, serviceName) {
  const host = state.map && (state.map.hosts || []).find((h) => h.name === hostName);
  return host && (host.services || []).find((s) => s.name === serviceName);
}

// A new value on a topic the cards show needs no fetch.
function onChange(message) {
  let ev = null;
  try { ev = JSON.parse(message.data); } catch (_) { /* fetch below */ }
  const service = ev && ev.event === 'value_changed' && findService(ev.host, ev.service);
  if (service && service.values && ev.topic in service.values) {
    service.values[ev.topic] = ev.value;
    drawSoon();
  } else {
    refreshSoon();
  }
}

// Someone typing into a field or dragging a slider.
function busy() {
  const a = document.activeElement;
  return state.holding || (a && a.tagName === 'INPUT' && a.type !== 'range' && a.closest('#hosts'));
}

function shapeOf(map) {
  return JSON.stringify((map.hosts || []).map((h) => [
    h.name, h.status, h.ipaddr, h.extaddr, h.pin_conflicts,
    (h.services || []).map((s) => [s.name, s.present, s.health, s.description, Object.keys(s.values || {})]),
  ]).concat([map.unfed || []]));
}

// The topics of a service that nothing feeds (`unfed` in /api/map).
function unfedOf(map, host, service) {
  return (map.unfed || []).filter((e) => e.host === host && e.service === service).map((e) => e.topic);
}

function draw() {
  const map = state.map;
  if (!map) return;
  const hosts = map.hosts || [];
  const online = hosts.filter((h) => h.status === 'online').length;
  const services = hosts.reduce((n, h) => n + (h.services || []).length, 0);
  const edges = map.edges || [];
  const stale = edges.filter((e) => e.stale).length;
  const unfed = (map.unfed || []).length;
  document.getElementById('summary').textContent =
    `${online} of ${hosts.length} hosts online, ${services} services, ${edges.length} data-flow edges` +
    (stale ? `, ${stale} stale` : '') + (unfed ? `, ${unfed} unfed ${unfed === 1 ? 'input' : 'inputs'}` : '');
  const shape = shapeOf(map);
  if (shape !== state.shape) {
    if (busy()) {
      state.pendingDraw = true;
    } else {
      state.pendingDraw = false;
      state.shape = shape;
      state.updaters = [];
      document.getElementById('hosts').replaceChildren(...(hosts.length
        ? hosts.map(hostCard)
        : [el('p', { class: 'empty', text: 'No host has answered yet.' })]));
    }
  }
  for (const update of state.updaters) update(map);
  drawFlow(map);
}

function ago(ms) {
  if (!ms) return 'never';
  const now = (state.map.now_ms || ms) + (Date.now() - state.fetchedAt);
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 90) return `${s} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

function hostCard(h) {
  const status = h.status || (h.online ? 'online' : 'offline');
  const addr = [h.ipaddr, h.extaddr && `external ${h.extaddr}`].filter(Boolean).join(', ');
  const meta = el('p', { class: 'meta' });
  state.updaters.push((map) => {
    const now = (map.hosts || []).find((x) => x.name === h.name);
    if (now) meta.textContent = `${addr || 'address unknown'} · last seen ${ago(now.last_seen_ms)}`;
  });
  return el('article', { class: `host ${status}`, 'data-host': h.name },
    el('header', {},
      el('h2', { text: h.name }),
      el('span', { class: `badge ${status}`, 'data-status': status, text: status })),
    meta,
    (h.pin_conflicts || []).map((c) => el('p', { class: 'conflict', text: `pin conflict: ${conflictText(c)}` })),
    (h.services || []).map((s) => serviceBlock(h, s)));
}

function conflictText(c) {
  if (c && typeof c === 'object' && 'pin' in c) {
    const who = c.claimed_by || c.claims;
    return `pin ${c.pin}` + (Array.isArray(who) ? `: ${who.join(', ')}` : '');
  }
  return typeof c === 'string' ? c : JSON.stringify(c);
}

function healthOf(s) {
  const h = s.health || (s.description && s.description.health);
  if (!h) return null;
  return typeof h === 'string' ? { status: h } : h;
}

function serviceBlock(host, s) {
  const d = s.description || {};
  const ifs = d.interfaces || {};
  const outputs = ifs.outputs || [];
  const inputs = ifs.inputs || [];
  const values = s.values || {};
  const health = healthOf(s);
  const present = s.present !== false;
  const rows = [];
  const shown = new Set();
  for (const o of outputs) {
    // A settable input of the same name drives this output: one row for both.
    const input = inputs.find((i) => i.name === o.name && setItem(host.name, s.name, i.topic) !== null);
    rows.push(itemRow(host, s, o, input));
    shown.add(o.topic);
    if (input) shown.add(input.topic);
  }
  for (const i of inputs) {
    if (shown.has(i.topic) || setItem(host.name, s.name, i.topic) === null || i.type === 'json') continue;
    rows.push(itemRow(host, s, i, i));
    shown.add(i.topic);
  }
  for (const topic of Object.keys(values)) {
    if (shown.has(topic)) continue;
    rows.push(itemRow(host, s, { name: topic, topic, type: 'json' }, null));
  }
  let topicList = ['inputs', 'outputs', 'functions', 'controls']
    .flatMap((k) => (ifs[k] || []).map((i) => el('li', {}, `${k.slice(0, -1)} `, el('code', { text: i.topic }), i.doc ? ` — ${i.doc}` : '')));
  if (!topicList.length) {
    // A service known only by the notes' flat fields.
    topicList = ['inputs', 'outputs', 'control']
      .filter((k) => typeof s[k] === 'string')
      .map((k) => el('li', {}, `${k} `, el('code', { text: s[k] })));
  }
  return el('section', { class: `service${present ? '' : ' missing'}`, 'data-service': s.name },
    el('h3', {},
      s.name,
      present ? null : el('span', { class: 'badge missing', text: 'missing' }),
      health ? el('span', { class: `badge ${health.status}`, text: health.status }) : null,
      unfedBadge(host, s)),
    d.doc ? el('p', { class: 'doc', text: d.doc }) : null,
    health && health.reason ? el('p', { class: 'reason', text: health.reason }) : null,
    rows.length ? el('table', { class: 'items' }, el('tbody', {}, rows)) : null,
    topicList.length ? el('details', { class: 'topics' }, el('summary', { text: 'topics' }), el('ul', {}, topicList)) : null);
}

// A warning on a service with an input nothing feeds.
function unfedBadge(host, s) {
  const topics = unfedOf(state.map, host.name, s.name);
  if (!topics.length) return null;
  return el('span', {
    class: 'badge unfed',
    text: 'unfed input',
    title: `nothing described writes ${topics.join(', ')}`,
  });
}

// The item of a `/{host}/{service}/set/{item}` topic, whatever the root.
function setItem(host, service, topic) {
  const marker = `/${host}/${service}/set/`;
  const at = topic.indexOf(marker);
  if (at < 0) return null;
  const item = topic.slice(at + marker.length);
  return item || null;
}

function readingValue(reading) {
  if (reading && typeof reading === 'object' && !Array.isArray(reading) && 'value' in reading) return reading.value;
  return reading;
}

// One row: the interface's name, and its value or a control for it. The
// row keeps itself current through an updater.
function itemRow(host, s, iface, input) {
  const cell = el('td', { class: 'value' });
  let show;
  if (input && input.type === 'bool') {
    show = toggle(host, s, input, cell);
  } else if (input && (input.type === 'float' || input.type === 'int') && input.min != null && input.max != null) {
    show = slider(host, s, input, iface, cell);
  } else if (input && input.type !== 'json') {
    show = textSetter(host, s, input, cell);
  } else {
    show = (reading) => {
      const value = readingValue(reading);
      const unit = (reading && reading.unit) || iface.unit || '';
      cell.replaceChildren(showValue(iface, value),
        unit && value !== undefined && value !== null ? el('span', { class: 'unit', text: unit }) : '');
    };
  }
  let last;
  const update = (map) => {
    const service = (map.hosts || []).find((h) => h.name === host.name);
    const now = service && (service.services || []).find((x) => x.name === s.name);
    const reading = now && now.values ? now.values[iface.topic] : undefined;
    const key = JSON.stringify(reading === undefined ? null : reading);
    if (key === last) return;
    last = key;
    show(reading);
  };
  state.updaters.push(update);
  return el('tr', { 'data-topic': iface.topic },
    el('td', { class: 'name', title: iface.doc || iface.topic, text: iface.name }), cell);
}

function showValue(iface, value) {
  if (value === undefined || value === null) return el('span', { class: 'empty', text: '–' });
  // A character display's contents: {"rows":[..],"brightness":N}, or the rows alone.
  const rows = Array.isArray(value) ? value : value && typeof value === 'object' ? value.rows : null;
  if (Array.isArray(rows) && rows.length && rows.every((r) => typeof r === 'string')) {
    const dark = value.brightness === 0;
    return el('span', { class: `lcd${dark ? ' dark' : ''}`, 'data-display': '', text: rows.join('\n') });
  }
  if (iface.type === 'bool' || typeof value === 'boolean') {
    const on = isOn(value);
    return el('span', { class: `level ${on ? 'on' : 'off'}`, text: on ? 'on' : 'off' });
  }
  if (Array.isArray(value) && value.every((r) => typeof r === 'number')) {
    return el('span', { text: value.map(formatNumber).join(', ') });
  }
  if (typeof value === 'number') return el('span', { text: formatNumber(value) });
  if (typeof value === 'string') return el('span', { class: 'text', text: value });
  return el('code', { text: JSON.stringify(value) });
}

function formatNumber(v) {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

function isOn(value) {
  return value === true || value === 1 || value === '1' || value === 'on' || value === 'true';
}

function toggle(host, s, input, cell) {
  const item = setItem(host.name, s.name, input.topic);
  const b = el('button', {
    class: 'toggle', role: 'switch', type: 'button', 'aria-checked': 'false',
    'aria-label': `${host.name} ${s.name} ${item}`,
    'data-host': host.name, 'data-service': s.name, 'data-item': item,
  });
  b.addEventListener('click', async () => {
    const on = b.getAttribute('aria-checked') === 'true';
    b.setAttribute('aria-busy', 'true');
    try {
      await setValue(host.name, s.name, item, !on);
    } catch (e) {
      toast(e.message);
    }
    b.removeAttribute('aria-busy');
  });
  cell.append(b);
  return (reading) => {
    const on = isOn(readingValue(reading));
    b.setAttribute('aria-checked', on ? 'true' : 'false');
    b.title = `${input.topic}: ${reading === undefined ? 'unknown' : on ? 'on' : 'off'}`;
  };
}

function niceStep(input) {
  if (input.type === 'int') return 1;
  const span = input.max - input.min;
  return span >= 50 ? 1 : Number((span / 100).toPrecision(1));
}

function slider(host, s, input, iface, cell) {
  const item = setItem(host.name, s.name, input.topic);
  const unit = input.unit || iface.unit || '';
  const out = el('output', {});
  const range = el('input', {
    type: 'range', min: input.min, max: input.max, step: niceStep(input), value: input.min,
    'aria-label': `${host.name} ${s.name} ${item}`,
    'data-host': host.name, 'data-service': s.name, 'data-item': item,
  });
  const label = (v) => { out.textContent = `${formatNumber(Number(v))}${unit ? ` ${unit}` : ''}`; };
  range.addEventListener('pointerdown', () => { state.holding = true; });
  range.addEventListener('input', () => label(range.value));
  range.addEventListener('change', async () => {
    state.holding = false;
    try {
      await setValue(host.name, s.name, item, Number(range.value));
    } catch (e) {
      toast(e.message);
    }
  });
  cell.append(el('span', { class: 'slider' }, range, out));
  return (reading) => {
    const value = readingValue(reading);
    if (typeof value !== 'number') { out.textContent = '–'; return; }
    if (state.holding && document.activeElement === range) return;
    range.value = value;
    label(value);
  };
}

function textSetter(host, s, input, cell) {
  const item = setItem(host.name, s.name, input.topic);
  const field = el('input', {
    type: input.type === 'string' ? 'text' : 'number', size: 8, step: 'any',
    'aria-label': `${host.name} ${s.name} ${item}`,
    'data-host': host.name, 'data-service': s.name, 'data-item': item,
  });
  const form = el('form', {}, field, ' ', el('button', { type: 'submit', text: 'set' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = input.type === 'string' ? field.value : Number(field.value);
    try {
      await setValue(host.name, s.name, item, v);
      field.value = '';
    } catch (e) {
      toast(e.message);
    }
  });
  cell.append(form);
  return (reading) => {
    const value = readingValue(reading);
    field.placeholder = value === undefined || value === null ? '' : String(value);
  };
}

async function setValue(host, service, item, value) {
  const path = item.split('/').map(encodeURIComponent).join('/');
  const r = await fetch(`/api/hosts/${encodeURIComponent(host)}/services/${encodeURIComponent(service)}/set/${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ value }),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${host}/${service} ${item}: ${body.error || `HTTP ${r.status}`}`);
  return body;
}

function drawFlow(map) {
  const edges = map.edges || [];
  const end = (e) => `${e.host}/${e.service}`;
  // When a message last crossed each edge: kept current at every draw.
  document.getElementById('edges').replaceChildren(...edges.map((e) =>
    el('li', { class: e.stale ? 'stale' : '' }, `${end(e.from)} → ${end(e.to)} `,
      el('code', { text: e.from.topic === e.to.topic ? e.from.topic : `${e.from.topic} → ${e.to.topic}` }),
      ' ',
      e.stale ? el('span', { class: 'badge stale', text: 'stale' }) : null,
      el('span', { class: 'crossed', text: e.last_crossed_ms ? ` last message ${ago(e.last_crossed_ms)}` : ' no message seen' }))));
  const topicList = (list) => el('ul', {}, list.map((e) => el('li', {}, `${end(e)} `, el('code', { text: e.topic }))));
  const unfed = map.unfed || [];
  const unread = map.unread || [];
  document.getElementById('wiring').replaceChildren(
    unfed.length
      ? el('div', { class: 'unfed' },
        el('p', { text: `Unfed ${unfed.length === 1 ? 'input' : 'inputs'}: nothing described writes ${unfed.length === 1 ? 'it' : 'them'}.` }),
        topicList(unfed))
      : el('p', { class: 'empty', text: 'Every input is fed by a described output.' }),
    unread.length
      ? el('details', { class: 'unread' },
        el('summary', { text: `${unread.length} unread ${unread.length === 1 ? 'output' : 'outputs'} (for information: read by people, or by nothing described)` }),
        topicList(unread))
      : null);
  // Redraw the picture only when hosts, services, edges or their staleness change.
  const picture = JSON.stringify([state.shape, edges.map((e) => [e.from, e.to, e.stale]), unfed]);
  if (picture === state.picture) return;
  state.picture = picture;
  document.getElementById('flow-picture').src = `/api/docs/cluster.svg?v=${Date.now()}`;
}

function listen() {
  const live = document.getElementById('live');
  const events = new EventSource('/api/events');
  events.addEventListener('open', () => {
    live.className = 'live on';
    live.textContent = 'live';
    // Anything may have changed while the stream was down.
    refreshSoon();
  });
  events.addEventListener('error', () => {
    live.className = 'live off';
    live.textContent = 'reconnecting';
  });
  events.addEventListener('map', onChange);
  events.addEventListener('resync', refreshSoon);
}

document.addEventListener('DOMContentLoaded', () => {
  const picture = document.getElementById('flow-picture');
  picture.addEventListener('error', () => {
    picture.hidden = true;
    document.getElementById('flow-missing').hidden = false;
  });
  picture.addEventListener('load', () => {
    picture.hidden = false;
    document.getElementById('flow-missing').hidden = true;
  });
  document.addEventListener('pointerup', () => {
    if (state.holding) { state.holding = false; if (state.pendingDraw) draw(); }
  });
  document.addEventListener('focusout', () => setTimeout(() => { if (state.pendingDraw) draw(); }, 0));
  refresh();
  listen();
  // "last seen" stays true between changes.
  setInterval(() => { if (state.map) draw(); }, 5000);
});
