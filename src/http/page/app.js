// The dashboard page's core: API calls and socket URLs, the confirmation dialog, time
// formatting in the cron zone, live status over /api/events (handing the other messages
// to the charts, jobs and activity scripts), the drain controls, and the start.
// Relative URLs throughout, so the page works behind a path prefix.
'use strict';

const token = document.querySelector('meta[name="hermes-session-token"]').content;
const loopback = token !== '' && !token.startsWith('{{');
const $ = (id) => document.getElementById(id);

function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (loopback) h['X-Hermes-Session-Token'] = token;
  return h;
}

async function api(path, options) {
  const opts = Object.assign({credentials: 'same-origin'}, options || {});
  opts.headers = headers(opts.headers);
  const r = await fetch(path, opts);
  const body = await r.json().catch(() => ({}));
  // The session gate's 401 carries login_url; a token route's 401 (drain secret) does not.
  if (r.status === 401 && body.login_url) { location.href = 'login'; throw new Error('signed out'); }
  if (!r.ok) throw new Error(body.detail || (body.error && (body.error.message || body.error)) || ('HTTP ' + r.status));
  return body;
}

function sendJson(path, method, value) {
  return api(path, {method, headers: {'Content-Type': 'application/json'}, body: JSON.stringify(value)});
}

// A socket URL with a fresh single-use ticket.
async function socketUrl(path) {
  const {ticket} = await api('api/auth/ws-ticket', {method: 'POST'});
  const url = new URL(path, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('ticket', ticket);
  return url.toString();
}

function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- time, in the zone cron schedules are written in --------------------------------

let cronZone = 'UTC';
let zoneFormat = null;

function setCronZone(zone) {
  try {
    zoneFormat = new Intl.DateTimeFormat('en-GB', {timeZone: zone, year: 'numeric', month: '2-digit',
      day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit', hourCycle: 'h23', timeZoneName: 'shortOffset'});
    cronZone = zone;
  } catch (e) {
    // A zone this browser does not know: show UTC, and say so.
    zoneFormat = null;
    cronZone = 'UTC';
  }
}

// "2026-03-29 09:00:00 GMT+2" in the cron zone (the offset: unambiguous in any locale).
function fmtZoned(iso) {
  if (!iso) return '–';
  const d = new Date(iso);
  if (!zoneFormat) return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  const p = Object.fromEntries(zoneFormat.formatToParts(d).map((x) => [x.type, x.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}

// The browser's local time of day, for live events.
function fmtClock(iso) { return iso ? new Date(iso).toLocaleTimeString([], {hour12: false}) : '–'; }

// ---- the confirmation dialog ----------------------------------------------------------

// Asks in a modal dialog; resolves true on OK (Enter: OK has focus), false on Cancel or
// Escape. Focus goes back where it was.
function askConfirm(title, text, okLabel) {
  const d = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  const opener = document.activeElement;
  d.returnValue = '';
  d.showModal();
  $('confirm-ok').focus();
  return new Promise((resolve) => {
    d.addEventListener('close', () => {
      resolve(d.returnValue === 'ok');
      if (opener && typeof opener.focus === 'function') opener.focus();
    }, {once: true});
  });
}

// ---- status and drain -----------------------------------------------------------------

// After a drain change, focus moves to the control that undoes it once it is enabled.
let focusNext = null;

function showStatus(msg) {
  const s = msg.status, d = msg.drain;
  const state = $('state');
  state.textContent = s.gateway_state;
  state.dataset.state = s.gateway_state;
  $('active').textContent = String(s.active_agents);
  $('oldest').textContent = d.oldest_active_seconds ? d.oldest_active_seconds.toFixed(1) + ' s' : '–';
  $('drain-by').textContent = d.draining ? (d.principal || '?') + ' at ' + fmtZoned(d.requested_at) : '–';
  $('version').textContent = s.version;
  $('drain').disabled = s.gateway_state !== 'running';
  $('undrain').disabled = s.gateway_state !== 'draining';
  moveFocus();
}

function moveFocus() {
  if (focusNext && !$(focusNext).disabled) { $(focusNext).focus(); focusNext = null; }
}

async function drain(action) {
  const ok = action === 'drain'
    ? await askConfirm('Drain the gateway?', 'New turns are refused until you cancel the drain; turns in flight finish.', 'Drain')
    : await askConfirm('Cancel the drain?', 'The gateway accepts new turns again.', 'Cancel drain');
  if (!ok) return;
  $('drain-error').textContent = '';
  try {
    await sendJson('api/gateway/drain', 'POST', {action});
    // The status that enables it may have come before this answer, or come after it.
    focusNext = action === 'drain' ? 'undrain' : 'drain';
    moveFocus();
  } catch (e) { $('drain-error').textContent = e.message; }
}

// ---- the live events socket -----------------------------------------------------------

// Message type → its handlers; the other scripts add theirs with onEvent.
const eventHandlers = {};
function onEvent(type, handle) { (eventHandlers[type] = eventHandlers[type] || []).push(handle); }
onEvent('status', showStatus);

function connectEvents(delay) {
  socketUrl('api/events').then((url) => {
    const ws = new WebSocket(url);
    ws.onopen = () => { $('live').textContent = 'live'; delay = 500; };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      for (const handle of eventHandlers[msg.type] || []) handle(msg);
    };
    ws.onclose = () => {
      $('live').textContent = 'reconnecting…';
      setTimeout(() => connectEvents(Math.min(delay * 2, 10000)), delay);
    };
  }).catch(() => {
    $('live').textContent = 'offline, retrying…';
    setTimeout(() => connectEvents(Math.min(delay * 2, 10000)), delay);
  });
}

// ---- start ----------------------------------------------------------------------------

// What the other scripts start once signed in, given the connection facts.
const starters = [];

async function start() {
  $('drain').onclick = () => drain('drain');
  $('undrain').onclick = () => drain('cancel');
  $('logout').onclick = async () => { await api('auth/logout', {method: 'POST'}).catch(() => {}); location.href = 'login'; };
  try {
    const me = await api('api/auth/me');
    $('who').textContent = me.mode === 'gated' ? 'Signed in as ' + me.user.id : 'Local session';
    $('logout').hidden = me.mode !== 'gated';
  } catch (e) { return; }
  const conn = await api('api/connection').catch(() => ({features: [], cron_timezone: 'UTC'}));
  setCronZone(conn.cron_timezone || 'UTC');
  showStatus({status: await api('api/status'), drain: {}});
  for (const f of starters) f(conn);
  connectEvents(500);
}

document.addEventListener('DOMContentLoaded', start);
