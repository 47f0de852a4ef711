// The real `ai` package against a running server's /api/chat (tests/apps/protocols_app.py
// with the scripted backend, tests/apps/scripted.py), as useChat uses it: Node's fetch
// keeps no cookies, so these are the cookie-less, unbound replies.
// Reads one JSON object on stdin:
//   {"base": URL, "resumeBase": URL, "releases": ["ai", ...], "scenarios": [...],
//    "location": {...}}
// scenarios: "parts" (per release: a reply with every part kind, assembled by
// readUIMessageStream), "resume" (the connection cut after the first tool call, then the
// Chat engine's resumeStream() on resumeBase, as a reloaded useChat({resume: true}) page
// does), "roundTrip" (a client-side tool answered by onToolCall + addToolOutput; the chat
// posts the output on its own and the reply continues). Prints one JSON object.
import { readFileSync } from "node:fs";

const input = JSON.parse(readFileSync(0, "utf8"));

function versionOf(name) {
  const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

const userMessage = (text) => ({
  id: `user-${Math.random().toString(36).slice(2)}`, role: "user",
  parts: [{ type: "text", text }],
});

const errorText = (e) => (e instanceof Error ? `${e.name}: ${e.message}` : String(e));

// fetch, recording each request (and its JSON body) in `requests`
const recording = (requests) => async (url, init = {}) => {
  requests.push({
    url: String(url), method: init.method ?? "GET",
    body: typeof init.body === "string" ? JSON.parse(init.body) : null,
  });
  return fetch(url, init);
};

// The assistant message readUIMessageStream assembles, the chunk types, the errors. With
// `cutAfter`, the stream is abandoned (its request aborted) after the first such chunk.
async function assemble(sdk, stream, { cutAfter, abort } = {}) {
  const types = [];
  const errors = [];
  const counted = stream.pipeThrough(new TransformStream({
    transform(chunk, controller) {
      types.push(chunk.type);
      controller.enqueue(chunk);
      if (chunk.type === cutAfter) {
        controller.terminate();
        abort?.();
      }
    },
  }));
  let message = null;
  try {
    for await (const snapshot of sdk.readUIMessageStream({
      stream: counted, onError: (e) => errors.push(errorText(e)),
    })) {
      message = snapshot;
    }
  } catch (e) {
    if (!cutAfter) errors.push(errorText(e));
  }
  return { message, types, errors };
}

async function send(sdk, base, chatId, text, abortSignal) {
  const transport = new sdk.DefaultChatTransport({ api: `${base}/api/chat` });
  return transport.sendMessages({
    chatId, messages: [userMessage(text)], trigger: "submit-message",
    messageId: undefined, abortSignal,
  });
}

class PlainState { // ChatState as a plain object (what useChat keeps in React state)
  constructor(messages = []) {
    this.status = "ready";
    this.error = undefined;
    this.messages = messages;
  }
  pushMessage = (message) => { this.messages = this.messages.concat(message); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), this.snapshot(message),
      ...this.messages.slice(index + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

function makeChat(sdk, { id, messages, api, requests, ...init }) {
  class Chat extends sdk.AbstractChat {
    constructor() {
      super({
        id, state: new PlainState(messages),
        transport: new sdk.DefaultChatTransport({ api, fetch: recording(requests) }), ...init,
      });
    }
    get messages() { return this.state.messages; }
  }
  return new Chat();
}

async function resume(sdk, chatId) {
  const ctrl = new AbortController();
  const user = userMessage("parts cut and resumed");
  const transport = new sdk.DefaultChatTransport({ api: `${input.base}/api/chat` });
  const stream = await transport.sendMessages({
    chatId, messages: [user], trigger: "submit-message", messageId: undefined,
    abortSignal: ctrl.signal,
  });
  const cut = await assemble(sdk, stream, { cutAfter: "tool-input-available",
                                            abort: () => ctrl.abort() });
  // the page reloads with what it had saved, and resumes
  const requests = [];
  const errors = [];
  const chat = makeChat(sdk, {
    id: chatId, messages: [user, cut.message], api: `${input.resumeBase}/api/chat`, requests,
    onError: (e) => errors.push(errorText(e)),
  });
  await chat.resumeStream();
  const after = await new sdk.DefaultChatTransport({ api: `${input.resumeBase}/api/chat` })
    .reconnectToStream({ chatId });
  return {
    cut: { types: cut.types, parts: cut.message?.parts ?? [] },
    messages: chat.messages, errors, status: chat.status,
    requests: requests.map((r) => `${r.method} ${new URL(r.url).pathname}`),
    afterFinish: after === null ? null : "stream",
  };
}

async function roundTrip(sdk, chatId) {
  const requests = [];
  const errors = [];
  const finishes = [];
  let chat;
  let settle;
  const twoReplies = new Promise((resolve) => { settle = resolve; });
  chat = makeChat(sdk, {
    id: chatId, messages: [], api: `${input.base}/api/chat`, requests,
    sendAutomaticallyWhen: sdk.lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      // not awaited, as the SDK's docs say (awaiting inside onToolCall deadlocks)
      chat.addToolOutput({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId,
                           output: input.location });
    },
    onError: (e) => errors.push(errorText(e)),
    onFinish: ({ finishReason }) => {
      finishes.push(finishReason ?? null);
      if (finishes.length === 2) settle();
    },
  });
  await chat.sendMessage({ text: "client-tool please" });
  let timer;
  await Promise.race([ // a second reply that never comes is reported, not a hang
    twoReplies, new Promise((resolve) => { timer = setTimeout(resolve, 15000); }),
  ]);
  clearTimeout(timer);
  return {
    finishes, errors, status: chat.status, messages: chat.messages,
    posted: requests.map((r) => r.body),
  };
}

const out = { releases: {} };
const scenarios = new Set(input.scenarios);
for (const name of input.releases) {
  const sdk = await import(name);
  const release = { version: versionOf(name) };
  if (scenarios.has("parts")) {
    release.parts = await assemble(sdk, await send(sdk, input.base, `parts-${name}`,
                                                   "parts please"));
  }
  out.releases[name] = release;
}
const sdk = await import("ai");
if (scenarios.has("resume")) out.resume = await resume(sdk, `resume-${Date.now()}`);
if (scenarios.has("roundTrip")) out.roundTrip = await roundTrip(sdk, `tools-${Date.now()}`);
console.log(JSON.stringify(out));
