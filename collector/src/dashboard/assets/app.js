// telemetry-collector's dashboard: devices, their latest values and a chart per field, read
// from the local store through the JSON API (/api/v1/, docs/http-api.md). No dependencies,
// nothing from elsewhere: the charts are drawn here as SVG.
//
// The state lives in the URL's hash, so a view can be bookmarked:
//   #device=dev-0001&range=1h&refresh=5
//   #device=dev-0001&from=1700000000000&to=1700000030000&step=1s   (ms since the epoch or RFC 3339)
'use strict';

const SVG = 'http://www.w3.org/2000/svg';
const RANGES = { '5m': 300e3, '15m': 900e3, '1h': 3600e3, '6h': 21600e3, '24h': 86400e3, '7d': 604800e3 };
// Steps (seconds) for downsampling and for time ticks.
const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 172800, 604800];
const BUCKETS = 300; // about this many points per chart
const $ = (id) => document.getElementById(id);
let timer = null;
let generation = 0;

function state() {
  const h = new URLSearchParams(location.hash.slice(1));
  const refresh = Number(h.get('refresh') ?? 5);
  return {
    device: h.get('device'),
    range: RANGES[h.get('range')] ? h.get('range') : '1h',
    from: h.get('from'),
    to: h.get('to'),
    step: h.get('step'),
    refresh: Number.isFinite(refresh) && refresh >= 0 ? refresh : 5,
  };
}

function setHash(changes) {
  const h = new URLSearchParams(location.hash.slice(1));
  for (const [k, v] of Object.entries(changes)) {
    if (v === null) h.delete(k); else h.set(k, v);
  }
  location.hash = h.toString();
}

function toMs(s) {
  const t = /^-?\d+$/.test(s) ? Number(s) : Date.parse(s);
  if (!Number.isFinite(t)) throw new Error(`not a time: ${s}`);
  return t;
}

function timeWindow(st, now) {
  if (st.from) return { from: toMs(st.from), to: st.to ? toMs(st.to) : now };
  return { from: now - RANGES[st.range], to: now };
}

function autoStep(spanMs) {
  const want = spanMs / 1000 / BUCKETS;
  return `${STEPS.find((s) => s >= want) ?? Math.ceil(want)}s`;
}

async function api(path, params) {
  const r = await fetch(`/api/v1/${path}?${new URLSearchParams(params)}`, { cache: 'no-store' });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(`${path}: ${body.error || `${r.status} ${r.statusText}`}`);
  return body;
}

async function load() {
  clearTimeout(timer);
  const gen = ++generation;
  const st = state();
  $('range').value = st.from ? 'custom' : st.range;
  $('refresh').value = String(st.refresh);
  try {
    const { from, to } = timeWindow(st, Date.now());
    const [devices, latest] = await Promise.all([
      api('devices', { epoch: 'ms' }),
      api('latest', { epoch: 'ms' }),
    ]);
    if (gen !== generation) return;
    const first = devices.devices.find((d) => d.device !== null);
    const selected = st.device || (first ? first.device : null);
    renderDevices(devices, latest, selected);
    let data = null;
    if (selected) {
      const step = st.step || autoStep(to - from);
      data = await api('downsample', {
        device: selected,
        from: new Date(from).toISOString(),
        to: new Date(to).toISOString(),
        step,
        epoch: 'ms',
      });
      if (gen !== generation) return;
    }
    renderCharts(selected, data, from, to);
    showError(null);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.state = 'ready';
  } catch (e) {
    if (gen !== generation) return;
    showError(e.message);
    document.body.dataset.state = 'error';
  }
  if (st.refresh > 0) timer = setTimeout(refresh, st.refresh * 1000);
}

function refresh() {
  if (document.hidden) document.addEventListener('visibilitychange', load, { once: true });
  else load();
}

function showError(message) {
  $('error').hidden = !message;
  $('error').textContent = message || '';
}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  e.append(...children);
  return e;
}

function fmt(v) {
  if (typeof v !== 'number') return String(v);
  if (Number.isInteger(v)) return String(v);
  const a = Math.abs(v);
  return a !== 0 && (a >= 1e7 || a < 1e-3) ? v.toExponential(3) : String(+v.toPrecision(6));
}

function ago(ms) {
  const s = Math.round(ms / 1000);
  if (s < 0) return `${fmtSpan(-s)} ahead`;
  return `${fmtSpan(s)} ago`;
}

function fmtSpan(s) {
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86400)} d`;
}

function tagText(tags) {
  return Object.entries(tags).map(([k, v]) => `${k}=${v}`).join(' ');
}

function renderDevices(devices, latest, selected) {
  const values = new Map();
  for (const s of latest.series) {
    const d = s.tags.device ?? null;
    if (!values.has(d)) values.set(d, []);
    values.get(d).push(s);
  }
  const rows = devices.devices.map((d) => {
    const series = values.get(d.device) || [];
    const several = new Set(series.map((s) => s.measurement)).size > 1;
    const text = series
      .map((s) => `${several ? `${s.measurement}.` : ''}${s.field} ${fmt(s.value)}`)
      .join(' · ');
    const tr = el('tr', { 'data-device': d.device ?? '', 'data-status': d.status },
      el('td', {}, d.device ?? '(no device tag)'),
      el('td', { class: 'muted' }, tagText(d.tags)),
      el('td', { class: `status ${d.status}` }, d.status),
      el('td', { title: new Date(d.last_seen).toISOString() }, ago(devices.now - d.last_seen)),
      el('td', { class: 'values' }, text));
    if (d.device !== null) tr.addEventListener('click', () => setHash({ device: d.device }));
    if (d.device === selected) tr.classList.add('selected');
    return tr;
  });
  document.querySelector('#devices tbody').replaceChildren(...rows);
  const stale = devices.devices.filter((d) => d.status === 'stale').length;
  $('device-count').textContent = `${devices.devices.length}${devices.truncated ? '+' : ''} ` +
    `(${stale} not seen for ${fmtSpan(devices.stale_after_s)})`;
}

function renderCharts(device, data, from, to) {
  const charts = $('charts');
  charts.replaceChildren();
  $('charts-title').textContent = device ? `Charts: ${device}` : 'Charts';
  if (!data) {
    $('charts-note').textContent = 'No device yet.';
    return;
  }
  const stepMs = data.step_s * 1000;
  $('charts-note').textContent = `${new Date(from).toLocaleString()} to ${new Date(to).toLocaleString()}, ` +
    `one point per ${fmtSpan(data.step_s)}: the mean, and the band from min to max` +
    (data.series.length ? '' : ' (no numeric values in this range)');
  for (const s of data.series) {
    const value = el('span', { class: 'muted' });
    const fig = el('figure', {
      class: 'chart',
      'data-device': device,
      'data-series': `${s.measurement}.${s.field}`,
      'data-tags': tagText(s.tags),
      'data-points': String(s.buckets.length),
    }, el('figcaption', {}, el('span', {}, `${s.field} `, el('span', { class: 'muted' }, s.measurement)), value));
    charts.append(fig);
    drawChart(fig, value, s.buckets, from, to, stepMs);
  }
}

function drawChart(fig, label, buckets, x0, x1, stepMs) {
  const w = Math.max(300, fig.clientWidth - 14);
  const h = 180;
  const m = { l: 52, r: 10, t: 8, b: 20 };
  let lo = Infinity;
  let hi = -Infinity;
  for (const b of buckets) {
    lo = Math.min(lo, b[2]);
    hi = Math.max(hi, b[3]);
  }
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const yt = ticks(lo, hi, 4);
  [lo, hi] = [yt[0], yt[yt.length - 1]];
  const X = (t) => Math.min(w - m.r, Math.max(m.l, m.l + ((t - x0) / (x1 - x0)) * (w - m.l - m.r)));
  const Y = (v) => m.t + ((hi - v) / (hi - lo)) * (h - m.t - m.b);
  const mid = (b) => b[0] + stepMs / 2;
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('viewBox', `0 0 ${w} ${h}`);
  svg.setAttribute('style', `height:${h}px`);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (const v of yt) {
    add('line', { class: 'grid', x1: m.l, x2: w - m.r, y1: Y(v), y2: Y(v) });
    add('text', { x: m.l - 6, y: Y(v) + 4, 'text-anchor': 'end' }, fmt(v));
  }
  for (const [t, text] of timeTicks(x0, x1, (w - m.l - m.r) / 90)) {
    add('text', { x: X(t), y: h - 4, 'text-anchor': 'middle' }, text);
  }
  // Runs of consecutive buckets; a missing bucket breaks the line.
  const runs = [];
  for (const b of buckets) {
    const run = runs[runs.length - 1];
    if (run && b[0] - run[run.length - 1][0] <= stepMs * 1.5) run.push(b);
    else runs.push([b]);
  }
  for (const run of runs) {
    if (run.length === 1) {
      add('circle', { class: 'dot', cx: X(mid(run[0])), cy: Y(run[0][4]), r: 2 });
      continue;
    }
    const top = run.map((b) => `${X(mid(b)).toFixed(1)},${Y(b[3]).toFixed(1)}`);
    const bottom = run.map((b) => `${X(mid(b)).toFixed(1)},${Y(b[2]).toFixed(1)}`).reverse();
    add('path', { class: 'band', d: `M${top.join('L')}L${bottom.join('L')}Z` });
    add('path', { class: 'mean', d: `M${run.map((b) => `${X(mid(b)).toFixed(1)},${Y(b[4]).toFixed(1)}`).join('L')}` });
  }
  const last = buckets[buckets.length - 1];
  const resting = last ? `${fmt(last[4])} at ${new Date(mid(last)).toLocaleTimeString()}` : '';
  label.textContent = resting;
  const cursor = add('line', { class: 'cursor', y1: m.t, y2: h - m.b, visibility: 'hidden' });
  svg.addEventListener('mousemove', (ev) => {
    const box = svg.getBoundingClientRect();
    const x = ((ev.clientX - box.left) / box.width) * w;
    let best = null;
    for (const b of buckets) if (!best || Math.abs(X(mid(b)) - x) < Math.abs(X(mid(best)) - x)) best = b;
    if (!best) return;
    cursor.setAttribute('x1', X(mid(best)));
    cursor.setAttribute('x2', X(mid(best)));
    cursor.setAttribute('visibility', 'visible');
    label.textContent = `${new Date(best[0]).toLocaleTimeString()}: mean ${fmt(best[4])}, ` +
      `min ${fmt(best[2])}, max ${fmt(best[3])} (${best[1]} values)`;
  });
  svg.addEventListener('mouseleave', () => {
    cursor.setAttribute('visibility', 'hidden');
    label.textContent = resting;
  });
  fig.append(svg);
}

// About n round values spanning [lo, hi], from a multiple of the step below lo to one above hi.
function ticks(lo, hi, n) {
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const out = [];
  for (let i = Math.floor(lo / step); i <= Math.ceil(hi / step); i++) out.push(+(i * step).toPrecision(12));
  return out;
}

// Round local times within [x0, x1], at most about n of them, with their labels.
function timeTicks(x0, x1, n) {
  const step = (STEPS.find((s) => (x1 - x0) / (s * 1000) <= n) ?? 604800) * 1000;
  const offset = -new Date(x0).getTimezoneOffset() * 60e3;
  const opts = step >= 86400e3 ? { month: 'short', day: 'numeric' }
    : step >= 60e3 ? { hour: '2-digit', minute: '2-digit' }
      : { hour: '2-digit', minute: '2-digit', second: '2-digit' };
  const out = [];
  for (let t = Math.ceil((x0 + offset) / step) * step - offset; t <= x1; t += step) {
    out.push([t, new Date(t).toLocaleString([], opts)]);
  }
  return out;
}

$('range').addEventListener('change', (e) => setHash({ range: e.target.value, from: null, to: null, step: null }));
$('refresh').addEventListener('change', (e) => setHash({ refresh: e.target.value }));
window.addEventListener('hashchange', load);
let resizing = null;
window.addEventListener('resize', () => {
  clearTimeout(resizing);
  resizing = setTimeout(load, 300);
});
load();
