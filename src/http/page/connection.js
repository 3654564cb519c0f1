// The connection panel: where the API server is, the model and backend, whether a key is
// required, and client snippets (curl, Python openai) to copy. From GET api/connection,
// which carries no secret: the key is named as an environment variable.
'use strict';

// A shell single-quoted string.
function shellQuote(s) { return "'" + s.replace(/'/g, "'\\''") + "'"; }

function curlSnippet(c) {
  const body = JSON.stringify({model: c.model, messages: [{role: 'user', content: 'Hello'}]});
  return [`curl ${c.api_base_url}/chat/completions \\`,
    ...(c.key_required ? ['  -H "Authorization: Bearer $API_SERVER_KEY" \\'] : []),
    '  -H "Content-Type: application/json" \\',
    `  -d ${shellQuote(body)}`].join('\n');
}

function pythonSnippet(c) {
  const key = c.key_required ? 'os.environ["API_SERVER_KEY"]' : '"not-needed"  # no API_SERVER_KEY is set';
  return [...(c.key_required ? ['import os', ''] : []),
    'from openai import OpenAI', '',
    `client = OpenAI(base_url=${JSON.stringify(c.api_base_url)},`,
    `                api_key=${key})`,
    'reply = client.chat.completions.create(',
    `    model=${JSON.stringify(c.model)},`,
    '    messages=[{"role": "user", "content": "Hello"}],',
    ')',
    'print(reply.choices[0].message.content)'].join('\n');
}

async function copyText(id) {
  const text = $(id).textContent;
  try {
    await navigator.clipboard.writeText(text);
  } catch (e) {
    // Without the async clipboard (an insecure origin): select it and copy.
    const range = document.createRange();
    range.selectNodeContents($(id));
    const sel = getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
    if (!document.execCommand('copy')) { $('copy-note').textContent = 'Selected: press Ctrl+C to copy.'; return; }
  }
  $('copy-note').textContent = 'Copied to the clipboard.';
}

function showConnection(c) {
  if (!c.model) { $('conn-url').textContent = 'unavailable'; return; }
  $('conn-url').textContent = c.api_base_url || 'off (gateway.api_server.enabled: false)';
  $('conn-model').textContent = c.model;
  $('conn-backend').textContent = c.backend + (c.upstream_model ? ' (upstream model ' + c.upstream_model + ')' : '');
  $('conn-key').textContent = c.key_required ? 'required: Authorization: Bearer $API_SERVER_KEY' : 'not required (no API_SERVER_KEY)';
  const snippets = c.api_base_url ? [curlSnippet(c), pythonSnippet(c)] : ['# the API server is off', '# the API server is off'];
  $('snippet-curl').textContent = snippets[0];
  $('snippet-python').textContent = snippets[1];
  for (const b of document.querySelectorAll('button.copy')) b.onclick = () => copyText(b.dataset.copy);
}

starters.push(showConnection);
