// The real `ai` (Vercel AI SDK) and `openai` npm packages against the example app's
// /api/chat and /v1 mounts; prints one JSON object for tests/test_node_protocols.py.
//   node protocols.mjs http://127.0.0.1:PORT
import { DefaultChatTransport, readUIMessageStream } from "ai";
import OpenAI from "openai";

const base = process.argv[2];
const transport = new DefaultChatTransport({ api: `${base}/api/chat` });

function userMessage(text) {
  return { id: `u-${Math.random()}`, role: "user", parts: [{ type: "text", text }] };
}

const textOf = (message) =>
  message.parts.filter((p) => p.type === "text").map((p) => p.text).join("");

async function send(chatId, text, abortSignal) {
  return transport.sendMessages({
    chatId, messages: [userMessage(text)], trigger: "submit-message",
    messageId: undefined, abortSignal,
  });
}

// The whole reply, assembled by the SDK itself.
async function assemble(stream) {
  let last = null;
  for await (const message of readUIMessageStream({ stream, terminateOnError: true })) {
    last = message;
  }
  return last;
}

// Raw chunks of a UI message stream until it ends (or `stopAfter` text deltas).
async function chunks(stream, stopAfter = Infinity) {
  const out = [];
  const reader = stream.getReader();
  let deltas = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    out.push(value);
    if (value.type === "text-delta" && ++deltas >= stopAfter) {
      await reader.cancel();
      break;
    }
  }
  return out;
}

async function whole() {
  const message = await assemble(await send("node-whole", "assemble this"));
  return { text: textOf(message), metadata: message.metadata ?? null };
}

async function cutAndResume() {
  const ctrl = new AbortController();
  const first = await chunks(await send("node-resume", "cut me off", ctrl.signal), 3);
  ctrl.abort(); // the connection drops mid-reply
  const resumed = await transport.reconnectToStream({ chatId: "node-resume" });
  const message = await assemble(resumed);
  const after = await transport.reconnectToStream({ chatId: "node-resume" });
  return {
    firstDeltas: first.filter((c) => c.type === "text-delta").length,
    text: textOf(message),
    afterFinish: after === null ? null : "stream",
    never: (await transport.reconnectToStream({ chatId: "node-never" })) === null ? null : "stream",
  };
}

async function stopMidReply() {
  const stream = await send("node-stop", "stop me please");
  const reader = stream.getReader();
  const seen = [];
  let deleted = null;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    seen.push(value.type);
    if (value.type === "text-delta" && deleted === null) {
      deleted = (await fetch(`${base}/api/chat/node-stop/stream`, { method: "DELETE" })).status;
    }
  }
  return { deleted, types: seen.filter((t) => t !== "text-delta") };
}

async function viaOpenAI() {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: "not-needed", maxRetries: 0 });
  const messages = [{ role: "user", content: "hello from the openai npm package" }];
  const stream = await client.chat.completions.create({
    model: "whatever", messages, stream: true, stream_options: { include_usage: true },
  });
  let text = "";
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      text += choice.delta?.content ?? "";
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  const completion = await client.chat.completions.create({ model: "whatever", messages });
  let error = null;
  try {
    await client.chat.completions.create({ model: "m", messages: [] });
  } catch (e) {
    error = { status: e.status, type: e.type ?? e.error?.type ?? null, message: e.message };
  }
  return {
    stream: { text, usage, finish },
    whole: { text: completion.choices[0].message.content, finish: completion.choices[0].finish_reason },
    error,
  };
}

const [w, r, s, o] = await Promise.all([whole(), cutAndResume(), stopMidReply(), viaOpenAI()]);
console.log(JSON.stringify({ whole: w, resume: r, stop: s, openai: o }));
