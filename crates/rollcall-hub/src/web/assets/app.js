// The dashboard's behaviour: fetch /api/map, draw it, re-fetch when
// /api/events says something changed, and send settings through the
// /api/hosts/.../set/... route. Plain DOM: every text from the network goes
// through textContent, never innerHTML.
'use strict';

const state = {
  map: null,
  fetchedAt: 0,
  structure: '',
  timer: null,
  drawTimer: null,
  // A slider being dragged: drawing now would pull it from under the pointer.
  holding: false,
  pendingDraw: false,
};

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = v;
    else if (k === 'text') node.textContent = v;
    else if (k.startsWith('on')) node.addEventListener(k.slice(2), v);
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

// Someone typing into a field or dragging a slider: wait until they are done.
function busy() {
  const a = document.activeElement;
  return state.holding || (a && a.tagName === 'INPUT' && a.type !== 'range' && a.closest('#hosts'));
}

// A new value needs no fetch: put it into the map we have.
function patchValue(ev) {
  const host = state.map && (state.map.hosts || []).find((h) => h.name === ev.host);
  const service = host && (host.services || []).find((s) => s.name === ev.service);
  if (!service) return false;
  service.values = service.values || {};
  service.values[ev.topic] = ev.value;
  return true;
}

function drawSoon() {
  if (state.drawTimer) return;
  state.drawTimer = setTimeout(() => { state.drawTimer = null; draw(); }, 100);
}

function onChange(message) {
  let ev = null;
  try { ev = JSON.parse(message.data); } catch (_) { /* refetch below */ }
  if (ev && ev.event === 'value_changed' && patchValue(ev)) drawSoon();
  else refreshSoon();
}

function draw() {
  if (busy()) { state.pendingDraw = true; return; }
  state.pendingDraw = false;
  const map = state.map;
  if (!map) return;
  const hosts = map.hosts || [];
  const online = hosts.filter((h) => h.status === 'online').length;
  const services = hosts.reduce((n, h) => n + (h.services || []).length, 0);
  document.getElementById('summary').textContent =
    `${online} of ${hosts.length} hosts online, ${services} services, ${(map.edges || []).length} data-flow edges`;
  const box = document.getElementById('hosts');
  box.replaceChildren(...(hosts.length
    ? hosts.map(hostCard)
    : [el('p', { class: 'empty', text: 'No host has answered yet.' })]));
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
  return el('article', { class: `host ${status}`, 'data-host': h.name },
    el('header', {},
      el('h2', { text: h.name }),
      el('span', { class: `badge ${status}`, 'data-status': status, text: status })),
    el('p', { class: 'meta', 'data-last-seen': h.last_seen_ms },
      `${addr || 'address unknown'} · last seen ${ago(h.last_seen_ms)}`),
    (h.pin_conflicts || []).map((c) => el('p', { class: 'conflict', text: `pin conflict: ${conflictText(c)}` })),
    (h.services || []).map((s) => serviceBlock(h, s)));
}

function conflictText(c) {
  if (c && typeof c === 'object' && 'pin' in c) {
    const who = c.claimed_by || c.claims;
    return `pin ${c.pin}` + (who ? `: ${Array.isArray(who) ? who.map(claimText).join(', ') : JSON.stringify(who)}` : '');
  }
  return typeof c === 'string' ? c : JSON.stringify(c);
}

function claimText(c) {
  if (c && typeof c === 'object') return [c.service, c.name].filter(Boolean).join(' ') || JSON.stringify(c);
  return String(c);
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
    rows.push(itemRow(host, s, o, values[o.topic], input));
    shown.add(o.topic);
    if (input) shown.add(input.topic);
  }
  for (const i of inputs) {
    if (shown.has(i.topic) || setItem(host.name, s.name, i.topic) === null || i.type === 'json') continue;
    rows.push(itemRow(host, s, i, values[i.topic], i));
    shown.add(i.topic);
  }
  for (const [topic, reading] of Object.entries(values)) {
    if (shown.has(topic)) continue;
    rows.push(itemRow(host, s, { name: topic, topic, type: 'json' }, reading, null));
  }
  const topicList = ['inputs', 'outputs', 'functions', 'controls']
    .flatMap((k) => (ifs[k] || []).map((i) => el('li', {}, `${k.slice(0, -1)} `, el('code', { text: i.topic }), i.doc ? ` — ${i.doc}` : '')));
  return el('section', { class: `service${present ? '' : ' missing'}`, 'data-service': s.name },
    el('h3', {},
      s.name,
      present ? null : el('span', { class: 'badge missing', text: 'missing' }),
      health ? el('span', { class: `badge ${health.status}`, text: health.status }) : null),
    d.doc ? el('p', { class: 'doc', text: d.doc }) : null,
    health && health.reason ? el('p', { class: 'reason', text: health.reason }) : null,
    rows.length ? el('table', { class: 'items' }, el('tbody', {}, rows)) : null,
    topicList.length ? el('details', { class: 'topics' }, el('summary', { text: 'topics' }), el('ul', {}, topicList)) : null);
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

function itemRow(host, s, iface, reading, input) {
  const value = readingValue(reading);
  const unit = (reading && reading.unit) || iface.unit || '';
  const cell = el('td', { class: 'value' });
  if (input && (input.type === 'bool')) {
    cell.append(toggle(host, s, input, value));
  } else if (input && (input.type === 'float' || input.type === 'int') && input.min != null && input.max != null) {
    cell.append(slider(host, s, input, value, unit));
  } else if (input && input.type !== 'json') {
    cell.append(textSetter(host, s, input, value));
  } else {
    cell.append(showValue(iface, value), unit && value !== undefined ? el('span', { class: 'unit', text: unit }) : '');
  }
  return el('tr', { 'data-topic': iface.topic }, el('td', { class: 'name', title: iface.doc || iface.topic, text: iface.name }), cell);
}

function showValue(iface, value) {
  if (value === undefined || value === null) return el('span', { class: 'empty', text: '–' });
  if (Array.isArray(value) && value.every((r) => typeof r === 'string')) {
    return el('span', { class: 'lcd', 'data-display': '', text: value.join('\n') });
  }
  if (iface.type === 'bool' || typeof value === 'boolean') {
    const on = value === true || value === 1 || value === '1' || value === 'on';
    return el('span', { class: `level ${on ? 'on' : 'off'}`, text: on ? 'on' : 'off' });
  }
  if (typeof value === 'number') return el('span', { text: formatNumber(value) });
  if (typeof value === 'string') return el('span', { text: value });
  return el('code', { text: JSON.stringify(value) });
}

function formatNumber(v) {
  if (Number.isInteger(v)) return String(v);
  return String(Number(v.toPrecision(4)));
}

function isOn(value) {
  return value === true || value === 1 || value === '1' || value === 'on' || value === 'true';
}

function toggle(host, s, input, value) {
  const item = setItem(host.name, s.name, input.topic);
  const on = isOn(value);
  const b = el('button', {
    class: 'toggle', role: 'switch', type: 'button', 'aria-checked': on ? 'true' : 'false',
    'aria-label': `${host.name} ${s.name} ${item}`, title: `${input.topic}: ${on ? 'on' : 'off'}`,
    'data-host': host.name, 'data-service': s.name, 'data-item': item,
  });
  b.addEventListener('click', async () => {
    b.setAttribute('aria-busy', 'true');
    try {
      await setValue(host.name, s.name, item, !on);
    } catch (e) {
      toast(e.message);
    }
    b.removeAttribute('aria-busy');
    refreshSoon();
  });
  return b;
}

function niceStep(input) {
  if (input.type === 'int') return 1;
  const span = input.max - input.min;
  return span >= 50 ? 1 : Number((span / 100).toPrecision(1));
}

function slider(host, s, input, value, unit) {
  const item = setItem(host.name, s.name, input.topic);
  const current = typeof value === 'number' ? value : input.min;
  const out = el('output', { text: `${formatNumber(current)}${unit ? ` ${unit}` : ''}` });
  const range = el('input', {
    type: 'range', min: input.min, max: input.max, step: niceStep(input), value: current,
    'aria-label': `${host.name} ${s.name} ${item}`,
    'data-host': host.name, 'data-service': s.name, 'data-item': item,
  });
  range.addEventListener('pointerdown', () => { state.holding = true; });
  range.addEventListener('input', () => { out.textContent = `${range.value}${unit ? ` ${unit}` : ''}`; });
  range.addEventListener('change', async () => {
    state.holding = false;
    try {
      await setValue(host.name, s.name, item, Number(range.value));
    } catch (e) {
      toast(e.message);
    }
    refreshSoon();
  });
  return el('span', { class: 'slider' }, range, out);
}

function textSetter(host, s, input, value) {
  const item = setItem(host.name, s.name, input.topic);
  const field = el('input', {
    type: input.type === 'string' ? 'text' : 'number', size: 8,
    placeholder: value === undefined ? '' : String(readingValue(value)),
    'aria-label': `${host.name} ${s.name} ${item}`,
    'data-host': host.name, 'data-service': s.name, 'data-item': item,
  });
  const form = el('form', {}, field, ' ', el('button', { type: 'submit', text: 'set' }));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const v = input.type === 'string' ? field.value : Number(field.value);
    try {
      await setValue(host.name, s.name, item, v);
    } catch (e) {
      toast(e.message);
    }
    refreshSoon();
  });
  return form;
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
  document.getElementById('edges').replaceChildren(...edges.map((e) =>
    el('li', {}, `${end(e.from)} → ${end(e.to)} `, el('code', { text: e.from.topic === e.to.topic ? e.from.topic : `${e.from.topic} → ${e.to.topic}` }))));
  // Redraw the picture only when hosts, services or edges change, not on
  // every value.
  const structure = JSON.stringify([
    (map.hosts || []).map((h) => [h.name, h.status, (h.services || []).map((s) => [s.name, s.present])]),
    edges,
  ]);
  if (structure !== state.structure) {
    state.structure = structure;
    document.getElementById('flow-picture').src = `/api/docs/cluster.svg?v=${Date.now()}`;
  }
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
