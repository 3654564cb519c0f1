// The last hour, drawn as SVG from the `history` messages of /api/events: turns in flight
// (the peak of each minute), turns by outcome and fires by outcome (stacked bars). Between
// messages the axis keeps moving: quiet minutes are added as time passes.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';
const CHART = {w: 360, h: 140, left: 30, right: 6, top: 8, bottom: 20};
const TURN_OUTCOMES = ['completed', 'failed', 'interrupted', 'refused'];
const FIRE_OUTCOMES = ['started', 'duplicate', 'not_due', 'paused', 'unknown_job',
  'draining', 'unavailable', 'unauthorized', 'bad_request'];

let lastHistory = null;
let historyAt = 0;
// Turns in flight now, from the live status (the history comes at most once a second).
let liveInFlight = null;

function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// The snapshot moved on by the minutes that passed since it came: quiet minutes, the
// in-flight level carried.
function currentMinutes() {
  const h = lastHistory;
  const passed = Math.max(0, Math.floor((Date.now() - historyAt) / (h.minute_seconds * 1000)));
  const quiet = Array.from({length: Math.min(passed, h.minutes.length)},
    () => ({turns: {}, fires: {}, in_flight: h.in_flight}));
  return h.minutes.slice(quiet.length).concat(quiet);
}

// A nice round top for the y axis.
function niceMax(v) {
  if (v <= 4) return 4;
  const step = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 5, 10]) if (v <= m * step) return m * step;
  return 10 * step;
}

// Axes and grid: the y scale's top and middle, the x axis from -60 min to now.
function frame(chart, top, n) {
  const {w, h, left, right, top: pad, bottom} = CHART;
  chart.replaceChildren();
  const y0 = h - bottom, x1 = w - right;
  for (const f of [0, 0.5, 1]) {
    const y = y0 - f * (y0 - pad);
    chart.append(svg('line', {x1: left, x2: x1, y1: y, y2: y, class: f === 0 ? 'axis' : 'grid'}));
    chart.append(svg('text', {x: left - 4, y: y + 3, class: 'tick', 'text-anchor': 'end'}, String(Math.round(top * f))));
  }
  for (const [label, at] of [['−' + n + ' min', 0], ['−' + n / 2, 0.5], ['now', 1]]) {
    chart.append(svg('text', {x: left + at * (x1 - left), y: h - 5, class: 'tick',
      'text-anchor': at === 0 ? 'start' : at === 1 ? 'end' : 'middle'}, label));
  }
  return {y0, scaleY: (v) => (v / top) * (y0 - pad), slot: (x1 - left) / n};
}

function drawInFlight(minutes) {
  const chart = $('chart-inflight');
  const values = minutes.map((m) => m.in_flight);
  const peak = Math.max(0, ...values);
  const f = frame(chart, niceMax(peak), minutes.length);
  const pts = values.map((v, i) => [CHART.left + (i + 0.5) * f.slot, f.y0 - f.scaleY(v)]);
  const line = pts.map(([x, y], i) => (i ? 'L' : 'M') + x.toFixed(1) + ' ' + y.toFixed(1)).join(' ');
  const last = pts[pts.length - 1];
  chart.append(svg('path', {d: line + ` L${last[0].toFixed(1)} ${f.y0} L${pts[0][0].toFixed(1)} ${f.y0} Z`, class: 'area'}));
  chart.append(svg('path', {d: line, class: 'line'}));
  chart.append(svg('circle', {cx: last[0], cy: last[1], r: 3, class: 'line-dot'}));
  chart.dataset.points = values.join(',');
  chart.dataset.peak = String(peak);
  const now = liveInFlight === null ? lastHistory.in_flight : liveInFlight;
  $('inflight-summary').textContent = `${now} now · peak ${peak}`;
}

// Stacked bars of `key` ("turns" or "fires") by outcome; returns the totals by outcome.
function drawStacked(id, minutes, key, order) {
  const chart = $(id);
  const seen = new Set(order);
  for (const m of minutes) for (const o of Object.keys(m[key])) seen.add(o);
  const outcomes = [...seen];
  const totals = Object.fromEntries(outcomes.map((o) => [o, 0]));
  let top = 0;
  for (const m of minutes) {
    let sum = 0;
    for (const [o, n] of Object.entries(m[key])) { sum += n; totals[o] += n; }
    top = Math.max(top, sum);
  }
  const f = frame(chart, niceMax(top), minutes.length);
  minutes.forEach((m, i) => {
    let y = f.y0;
    for (const o of outcomes) {
      const n = m[key][o] || 0;
      if (!n) continue;
      const hgt = f.scaleY(n);
      y -= hgt;
      const bar = svg('rect', {x: CHART.left + i * f.slot + 0.5, y, width: Math.max(1, f.slot - 1), height: hgt, class: 'bar o-' + o});
      bar.append(svg('title', {}, `${n} ${o.replace('_', ' ')}${m.start ? ' at ' + fmtZoned(m.start) : ''}`));
      chart.append(bar);
    }
  });
  chart.dataset.total = String(Object.values(totals).reduce((a, b) => a + b, 0));
  return totals;
}

function legend(id, totals, order) {
  const ul = $(id);
  ul.replaceChildren();
  for (const [o, n] of Object.entries(totals)) {
    if (!n && !order.slice(0, 2).includes(o)) continue;
    const li = el('li', {}, `${o.replace('_', ' ')} ${n}`);
    li.prepend(el('span', {class: 'swatch o-' + o, 'aria-hidden': 'true'}));
    ul.append(li);
  }
}

function drawCharts() {
  if (!lastHistory) return;
  const minutes = currentMinutes();
  drawInFlight(minutes);
  const turns = drawStacked('chart-turns', minutes, 'turns', TURN_OUTCOMES);
  legend('turns-legend', turns, TURN_OUTCOMES);
  $('turns-summary').textContent = `${$('chart-turns').dataset.total} in the last hour`;
  const fires = drawStacked('chart-fires', minutes, 'fires', FIRE_OUTCOMES);
  legend('fires-legend', fires, FIRE_OUTCOMES);
  $('fires-summary').textContent = `${$('chart-fires').dataset.total} in the last hour`;
}

onEvent('history', (msg) => {
  lastHistory = msg;
  historyAt = Date.now();
  drawCharts();
});

onEvent('status', (msg) => {
  liveInFlight = msg.status.active_agents;
  if (lastHistory) $('inflight-summary').textContent = `${liveInFlight} now · peak ${$('chart-inflight').dataset.peak}`;
});

starters.push(() => setInterval(drawCharts, 15000));
