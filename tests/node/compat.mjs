// The official `openai` Node client against a running gateway; run by tests/it/compat.rs
// as `node compat.mjs BASE_URL API_KEY` (after `npm ci` in this directory, see .ci/deps).
// Exits non-zero with a message on the first thing that is not as the gateway promises.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });

const models = [];
for await (const m of client.models.list()) models.push(m.id);
assert.deepEqual(models, ['hermes-agent']);
const model = await client.models.retrieve('hermes-agent');
assert.equal(model.id, 'hermes-agent');

await assert.rejects(client.models.retrieve('gpt-nope'), (e) => {
  assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  assert.equal(e.code, 'model_not_found');
  assert.match(e.message, /gpt-nope/);
  return true;
});

const r = await client.chat.completions.create({
  model: 'hermes-agent',
  messages: [{ role: 'user', content: 'hello from node' }],
});
assert.equal(r.choices[0].message.content, 'hello from node');
assert.ok(r.id.startsWith('chatcmpl-'));

// include_usage: the last chunk has no choices and carries the usage.
const chunks = [];
const stream = await client.chat.completions.create({
  model: 'hermes-agent',
  stream: true,
  stream_options: { include_usage: true },
  messages: [{ role: 'user', content: 'three streamed words' }],
});
for await (const c of stream) chunks.push(c);
const text = chunks.map((c) => c.choices[0]?.delta?.content ?? '').join('');
assert.equal(text, 'three streamed words');
const last = chunks.at(-1);
assert.deepEqual(last.choices, []);
assert.equal(last.usage.completion_tokens, 3);
assert.equal(last.usage.total_tokens, last.usage.prompt_tokens + 3);

// A refused content part names itself.
await assert.rejects(
  client.chat.completions.create({
    model: 'hermes-agent',
    messages: [{ role: 'user', content: [{ type: 'file', file: { file_id: 'file-1' } }] }],
  }),
  (e) => {
    assert.ok(e instanceof OpenAI.BadRequestError, String(e));
    assert.equal(e.param, 'messages[0].content');
    assert.equal(e.code, 'unsupported_content_type');
    return true;
  },
);

// An unknown route is a readable error, not "404 status code (no body)".
await assert.rejects(client.get('/no-such-route'), (e) => {
  assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  assert.equal(e.code, 'not_found');
  assert.doesNotMatch(e.message, /no body/);
  assert.match(e.message, /no-such-route/);
  return true;
});

const bad = new OpenAI({ baseURL: base, apiKey: 'wrong-key', maxRetries: 0 });
await assert.rejects(bad.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
console.log('node openai client ok');
