// The turns the example page sends back (example_app/static/conversation.js).
import { test } from "node:test";
import assert from "node:assert/strict";
import { conversation } from "../../example_app/static/conversation.js";

const NO_LIMIT = { messages: Infinity, chars: Infinity };
const turns = (n) => Array.from({ length: n }, (_, i) => [
  { role: "user", content: `question ${i}` },
  { role: "assistant", content: `answer ${i}` },
]).flat();

test("the whole history and the new message, in order", () => {
  const got = conversation(turns(2), "next", NO_LIMIT);
  assert.deepEqual(got, [...turns(2), { role: "user", content: "next" }]);
  assert.deepEqual(conversation([], "first", NO_LIMIT), [{ role: "user", content: "first" }]);
});

test("the oldest turns go first to fit the message limit, never a lone answer first", () => {
  const got = conversation(turns(3), "next", { messages: 4, chars: Infinity });
  // 4 would start with "answer 1"; it starts at the question of a kept turn instead.
  assert.deepEqual(got.map((m) => m.content), ["question 2", "answer 2", "next"]);
  assert.ok(got.length <= 4);
});

test("the character limit counts every message", () => {
  const history = turns(3); // each content is 10 characters ("question 0", "answer 0" 8)
  const limit = "next".length + "question 2".length + "answer 2".length;
  const got = conversation(history, "next", { messages: Infinity, chars: limit });
  assert.deepEqual(got.map((m) => m.content), ["question 2", "answer 2", "next"]);
  assert.ok(got.reduce((n, m) => n + m.content.length, 0) <= limit);
});

test("the new message is always sent, even alone over the limit (the server says why)", () => {
  const got = conversation(turns(1), "x".repeat(50), { messages: 50, chars: 10 });
  assert.deepEqual(got, [{ role: "user", content: "x".repeat(50) }]);
});
