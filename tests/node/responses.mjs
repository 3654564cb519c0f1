// The official `openai` Node client against the gateway's Responses API; run by
// tests/it/responses.rs as `node responses.mjs BASE_URL API_KEY` (after `npm ci` here).
// Exits non-zero with a message on the first thing that is not as the gateway promises.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [base, key] = process.argv.slice(2);
const client = new OpenAI({ baseURL: base, apiKey: key, maxRetries: 0 });

const r = await client.responses.create({ model: 'hermes-agent', input: 'hello from node' });
assert.equal(r.object, 'response');
assert.equal(r.status, 'completed');
assert.ok(r.id.startsWith('resp_'), r.id);
assert.equal(r.output_text, 'hello from node');
assert.equal(r.usage.total_tokens, r.usage.input_tokens + r.usage.output_tokens);

// Streamed: the Responses event sequence, numbered in order.
const events = [];
const stream = await client.responses.create({ model: 'hermes-agent', input: 'three streamed words', stream: true });
for await (const e of stream) events.push(e);
const kinds = events.map((e) => e.type);
assert.deepEqual(kinds.slice(0, 4), [
  'response.created', 'response.in_progress', 'response.output_item.added', 'response.content_part.added',
]);
assert.deepEqual(kinds.slice(-4), [
  'response.output_text.done', 'response.content_part.done', 'response.output_item.done', 'response.completed',
]);
assert.deepEqual(events.map((e) => e.sequence_number), events.map((_, i) => i));
const text = events.filter((e) => e.type === 'response.output_text.delta').map((e) => e.delta).join('');
assert.equal(text, 'three streamed words');
assert.equal(events.at(-1).response.output[0].content[0].text, 'three streamed words');

// A chain of three turns; retrieve; delete.
const first = await client.responses.create({ model: 'hermes-agent', input: 'one', instructions: 'be brief' });
const second = await client.responses.create({ model: 'hermes-agent', input: 'two', previous_response_id: first.id });
const third = await client.responses.create({ model: 'hermes-agent', input: 'three', previous_response_id: second.id });
assert.equal(third.previous_response_id, second.id);
assert.equal(third.instructions, 'be brief');
assert.equal(third.output_text, 'three');
const got = await client.responses.retrieve(second.id);
assert.equal(got.id, second.id);
assert.equal(got.previous_response_id, first.id);
assert.equal(got.output[0].content[0].text, 'two');
await client.responses.delete(second.id);
await assert.rejects(client.responses.retrieve(second.id), (e) => {
  assert.ok(e instanceof OpenAI.NotFoundError, String(e));
  assert.match(e.message, new RegExp(`Response not found: ${second.id}`));
  return true;
});
const fourth = await client.responses.create({ model: 'hermes-agent', input: 'four', previous_response_id: third.id });
assert.equal(fourth.output_text, 'four');
console.log('node openai responses ok');
