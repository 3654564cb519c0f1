// The dashboard page: live status over /api/events, drain controls, jobs and runs, and a
// chat over /api/ws. Relative URLs throughout, so it works behind a path prefix.
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

// A socket URL with a fresh single-use ticket.
async function socketUrl(path) {
  const {ticket} = await api('api/auth/ws-ticket', {method: 'POST'});
  const url = new URL(path, location.href);
  url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
  url.searchParams.set('ticket', ticket);
  return url.toString();
}

function fmtTime(iso) { return iso ? new Date(iso).toLocaleString() : '–'; }

// ---- status -------------------------------------------------------------------------

function showStatus(msg) {
  const s = msg.status, d = msg.drain;
  const state = $('state');
  state.textContent = s.gateway_state;
  state.dataset.state = s.gateway_state;
  $('active').textContent = String(s.active_agents);
  $('oldest').textContent = d.oldest_active_seconds ? d.oldest_active_seconds.toFixed(1) + ' s' : '–';
  $('drain-by').textContent = d.draining ? (d.principal || '?') + ' at ' + fmtTime(d.requested_at) : '–';
  $('version').textContent = s.version;
  $('drain').disabled = s.gateway_state !== 'running';
  $('undrain').disabled = s.gateway_state !== 'draining';
}

function connectEvents(delay) {
  socketUrl('api/events').then((url) => {
    const ws = new WebSocket(url);
    ws.onopen = () => { $('live').textContent = 'live'; delay = 500; };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === 'status') showStatus(msg);
      else if (msg.type === 'run') { loadJobs(); if (msg.job_id === selectedJob) loadRuns(selectedJob); }
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

async function drain(action) {
  const question = action === 'drain'
    ? 'Drain the gateway? New turns are refused until you cancel; turns in flight finish.'
    : 'Cancel the drain and accept new turns again?';
  if (!confirm(question)) return;
  $('drain-error').textContent = '';
  try {
    await api('api/gateway/drain', {method: 'POST', headers: {'Content-Type': 'application/json'},
                                    body: JSON.stringify({action})});
  } catch (e) { $('drain-error').textContent = e.message; }
}

// ---- jobs and runs ------------------------------------------------------------------

let selectedJob = null;

async function loadJobs() {
  try {
    const {jobs} = await api('api/jobs');
    const body = $('jobs');
    body.replaceChildren();
    if (!jobs.length) {
      const tr = document.createElement('tr');
      tr.innerHTML = '<td colspan="5" class="muted">No jobs yet.</td>';
      body.append(tr);
    }
    for (const j of jobs) {
      const tr = document.createElement('tr');
      tr.tabIndex = 0;
      tr.setAttribute('aria-selected', String(j.id === selectedJob));
      for (const text of [j.name, j.schedule, j.state, fmtTime(j.next_run_at), j.last_status || '–']) {
        const td = document.createElement('td');
        td.textContent = text;
        tr.append(td);
      }
      const pick = () => { selectedJob = j.id; $('runs-of').textContent = '(' + j.name + ')'; loadJobs(); loadRuns(j.id); };
      tr.onclick = pick;
      tr.onkeydown = (e) => { if (e.key === 'Enter') pick(); };
      body.append(tr);
    }
  } catch (e) { $('jobs').innerHTML = '<tr><td colspan="5" class="error"></td></tr>'; $('jobs').querySelector('td').textContent = e.message; }
}

async function loadRuns(id) {
  const list = $('runs');
  try {
    const {runs} = await api('api/jobs/' + encodeURIComponent(id) + '/runs?limit=10');
    list.replaceChildren();
    if (!runs.length) { list.innerHTML = '<li class="muted">No runs yet.</li>'; }
    for (const r of runs) {
      const li = document.createElement('li');
      li.textContent = fmtTime(r.started_at) + ' · ' + r.status + (r.error ? ' · ' + r.error : '');
      list.append(li);
    }
  } catch (e) { list.textContent = e.message; }
}

// ---- chat ---------------------------------------------------------------------------

let chat = null;
let pending = [];
let current = null;
// The stored session holding this tab's conversation (named by the server's `start`), so
// a reload or a new socket continues it.
const SESSION_KEY = 'hermes-chat-session';
let sessionId = sessionStorage.getItem(SESSION_KEY);

function addMessage(kind, text) {
  const li = document.createElement('li');
  li.className = kind;
  li.textContent = text;
  $('messages').append(li);
  li.scrollIntoView({block: 'end'});
  return li;
}

function openChat() {
  return socketUrl('api/ws').then((url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => { chat = ws; resolve(ws); };
    ws.onerror = () => reject(new Error('the chat connection failed'));
    ws.onclose = () => { chat = null; current = null; };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.type === 'start') {
        current = addMessage('assistant', '');
        sessionId = msg.session_id;
        sessionStorage.setItem(SESSION_KEY, sessionId);
      }
      else if (msg.type === 'delta' && current) current.textContent += msg.text;
      else if (msg.type === 'done') current = null;
      else if (msg.type === 'error') { addMessage('notice', msg.message); current = null; }
    };
  }));
}

async function send(e) {
  e.preventDefault();
  const input = $('chat-input');
  const text = input.value.trim();
  if (!text) return;
  $('chat-error').textContent = '';
  try {
    const ws = chat || await openChat();
    addMessage('user', text);
    ws.send(JSON.stringify(sessionId ? {message: text, session_id: sessionId} : {message: text}));
    input.value = '';
  } catch (err) { $('chat-error').textContent = err.message; }
}

// Shows the stored conversation this tab continues (forgotten if the store no longer has it).
async function loadConversation() {
  if (!sessionId) return;
  try {
    const stored = await api('api/sessions/' + encodeURIComponent(sessionId));
    for (const m of stored.messages) addMessage(m.role === 'user' ? 'user' : 'assistant', m.content);
  } catch (e) {
    sessionId = null;
    sessionStorage.removeItem(SESSION_KEY);
  }
}

// A new socket begins a new session (a socket keeps the last one it was told of).
function newConversation() {
  sessionId = null;
  sessionStorage.removeItem(SESSION_KEY);
  $('messages').replaceChildren();
  if (chat) chat.close();
  chat = null;
}

// ---- start --------------------------------------------------------------------------

async function start() {
  $('drain').onclick = () => drain('drain');
  $('undrain').onclick = () => drain('cancel');
  $('chat-form').onsubmit = send;
  $('chat-new').onclick = newConversation;
  $('logout').onclick = async () => { await api('auth/logout', {method: 'POST'}).catch(() => {}); location.href = 'login'; };
  try {
    const me = await api('api/auth/me');
    $('who').textContent = me.mode === 'gated' ? 'Signed in as ' + me.user.id : 'Local session';
    $('logout').hidden = me.mode !== 'gated';
  } catch (e) { return; }
  showStatus({status: await api('api/status'), drain: {}});
  loadJobs();
  loadConversation();
  connectEvents(500);
}

start();
