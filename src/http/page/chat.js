// Chat over /api/ws: names the backend and model it talks to and streams the answer.
// Continuing a stored session is the server's to offer: only when api/connection lists the
// `chat_sessions` feature does the page show a session field and send `session_id` with
// each message (and keep the one the server names in its `start` or `done` frame).
'use strict';

let chat = null;
let current = null;
let chatSessions = false;
// The stored session holding this tab's conversation, so a reload continues it.
const SESSION_KEY = 'hermes-chat-session';

function addMessage(kind, text) {
  const li = el('li', {class: kind}, text);
  $('messages').append(li);
  li.scrollIntoView({block: 'nearest'});
  return li;
}

// The session a frame names, kept for the next message (chat_sessions only).
function keepSession(msg) {
  if (!chatSessions || !msg.session_id) return;
  $('chat-session').value = msg.session_id;
  sessionStorage.setItem(SESSION_KEY, msg.session_id);
}

// Shows the stored conversation this tab continues (forgotten if the store lost it).
async function loadConversation() {
  const id = sessionStorage.getItem(SESSION_KEY);
  if (!id) return;
  try {
    const stored = await api('api/sessions/' + encodeURIComponent(id));
    $('chat-session').value = id;
    for (const m of stored.messages) addMessage(m.role === 'user' ? 'user' : 'assistant', m.content);
  } catch (e) {
    sessionStorage.removeItem(SESSION_KEY);
  }
}

// A new chat: a new socket and no session named, so the server begins a new one.
function newConversation() {
  sessionStorage.removeItem(SESSION_KEY);
  $('chat-session').value = '';
  $('messages').replaceChildren();
  if (chat) chat.close();
  chat = null;
}

function onChatFrame(e) {
  const msg = JSON.parse(e.data);
  if (msg.type === 'start') { keepSession(msg); current = addMessage('assistant', ''); }
  else if (msg.type === 'delta' && current) current.textContent += msg.text;
  else if (msg.type === 'done') { keepSession(msg); current = null; }
  else if (msg.type === 'error') { addMessage('notice', msg.message); current = null; }
}

function openChat() {
  return socketUrl('api/ws').then((url) => new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => { chat = ws; resolve(ws); };
    ws.onerror = () => reject(new Error('the chat connection failed'));
    ws.onclose = () => { chat = null; current = null; };
    ws.onmessage = onChatFrame;
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
    const frame = {message: text};
    const session = chatSessions && $('chat-session').value.trim();
    if (session) frame.session_id = session;
    ws.send(JSON.stringify(frame));
    input.value = '';
  } catch (err) { $('chat-error').textContent = err.message; }
}

starters.push((conn) => {
  $('chat-form').onsubmit = send;
  $('chat-with').textContent = conn.model
    ? `With ${conn.model} on the ${conn.backend} backend${conn.upstream_model ? ' (' + conn.upstream_model + ')' : ''}.`
    : 'The backend is unknown (api/connection did not answer).';
  chatSessions = (conn.features || []).includes('chat_sessions');
  $('chat-session-row').hidden = !chatSessions;
  $('chat-new').onclick = newConversation;
  if (chatSessions) loadConversation();
});
