// UI message streams framed by flask_sse_stream (ai_sdk_stream.UIMessageFramer), read by
// several releases of the real `ai` package exactly as useChat reads them: the bytes go
// through DefaultChatTransport (its own JSON event stream parser and chunk schemas, via a
// `fetch` that serves them) into readUIMessageStream, or into the SDK's Chat engine
// (AbstractChat: what useChat wraps) for a client-side tool round trip and a resume.
// No server: tests/test_ai_sdk_node.py writes the framed bodies as JSON on stdin
//   {"streams": {name: body}, "resume": {"prefix", "replay"},
//    "roundTrip": {"first", "second", "secondNewId", "output"}}
// and reads one JSON object from stdout: {release: {version, streams, resume, roundTrip}}.
import { readFileSync } from "node:fs";

// The releases under test: the newest, the newest 6, and the last ones of 6 and 5 whose
// chunk schemas were strict (an unknown field fails the stream: 6.0.230, 5.0.216).
const RELEASES = ["ai", "ai6", "ai6-strict", "ai5-strict"];
const HEADERS = {
  "content-type": "text/event-stream",
  "x-vercel-ai-ui-message-stream": "v1",
};

const input = JSON.parse(readFileSync(0, "utf8"));

function versionOf(name) {
  const url = new URL(`./node_modules/${name}/package.json`, import.meta.url);
  return JSON.parse(readFileSync(url, "utf8")).version;
}

// A body served in 7-byte pieces: chunks and UTF-8 sequences split across reads, as
// they arrive from a network.
function piecewise(text) {
  const bytes = new TextEncoder().encode(text);
  let at = 0;
  return new ReadableStream({
    pull(controller) {
      if (at >= bytes.length) {
        controller.close();
        return;
      }
      controller.enqueue(bytes.slice(at, at + 7));
      at += 7;
    },
  });
}

// A fetch that answers each request with the next body (204 when none is left) and
// records what was sent.
function stubFetch(bodies, requests) {
  return async (url, init = {}) => {
    requests.push({
      url: String(url),
      method: init.method ?? "GET",
      body: init.body ? JSON.parse(init.body) : null,
    });
    const body = bodies.shift();
    if (body == null) return new Response(null, { status: 204 });
    return new Response(piecewise(body), { status: 200, headers: HEADERS });
  };
}

const userMessage = (text) => ({
  id: `user-${text.length}`, role: "user", parts: [{ type: "text", text }],
});

function errorText(error) {
  return error instanceof Error ? `${error.name}: ${error.message}` : String(error);
}

// The assistant message readUIMessageStream assembles from one body, and every error the
// SDK reports on the way (a schema failure, a malformed sequence, an `error` chunk).
async function assemble(sdk, body) {
  const requests = [];
  const transport = new sdk.DefaultChatTransport({
    api: "http://stub.invalid/api/chat", fetch: stubFetch([body], requests),
  });
  const stream = await transport.sendMessages({
    chatId: "chat-read", messages: [userMessage("hi")], trigger: "submit-message",
    messageId: undefined, abortSignal: undefined,
  });
  const errors = [];
  const types = [];
  const counted = stream.pipeThrough(new TransformStream({
    transform(chunk, controller) {
      types.push(chunk.type);
      controller.enqueue(chunk);
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
    errors.push(errorText(e));
  }
  return { message, errors, types };
}

// ChatState as a plain object (what useChat keeps in React state).
class PlainState {
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

function makeChat(sdk, { id, messages, bodies, requests, ...init }) {
  class Chat extends sdk.AbstractChat {
    constructor() {
      super({
        id,
        state: new PlainState(messages),
        transport: new sdk.DefaultChatTransport({
          api: "http://stub.invalid/api/chat", fetch: stubFetch(bodies, requests),
        }),
        ...init,
      });
    }
    get messages() { return this.state.messages; }
  }
  return new Chat();
}

// A client-side tool: the first reply ends waiting for it (finish "tool-calls"); the
// app's onToolCall adds its output; the chat posts again on its own (as
// `sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls` does) and the
// second reply continues the same assistant message.
async function roundTrip(sdk, first, second, output) {
  const requests = [];
  const errors = [];
  const finishes = [];
  let chat;
  let settle;
  const twoReplies = new Promise((resolve) => { settle = resolve; });
  chat = makeChat(sdk, {
    id: "chat-tools", messages: [], bodies: [first, second], requests,
    sendAutomaticallyWhen: sdk.lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      // not awaited, as the SDK's docs say (awaiting inside onToolCall deadlocks)
      chat.addToolOutput({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output });
    },
    onError: (e) => errors.push(errorText(e)),
    onFinish: ({ finishReason }) => {
      finishes.push(finishReason ?? null);
      if (finishes.length === 2) settle();
    },
  });
  await chat.sendMessage({ text: "Where am I?" });
  let timer;
  await Promise.race([ // a second reply that never comes is reported below, not a hang
    twoReplies, new Promise((resolve) => { timer = setTimeout(resolve, 10000); }),
  ]);
  clearTimeout(timer);
  const posted = requests.map((r) => r.body);
  const continued = posted[1]?.messages ?? null;
  let validation = null;
  let modelMessages = null;
  if (continued) {
    if (sdk.validateUIMessages) {
      try {
        await sdk.validateUIMessages({ messages: continued });
        validation = "valid";
      } catch (e) {
        validation = errorText(e);
      }
    }
    modelMessages = await sdk.convertToModelMessages(continued);
  }
  return {
    requests: requests.length, finishes, errors, posted, modelMessages, validation,
    messages: chat.messages, status: chat.status,
  };
}

// The connection dropped after `prefix`; the page still shows what it got, then
// resumeStream() fetches the reply replayed from its start.
async function resume(sdk, { prefix, replay }) {
  const partial = (await assemble(sdk, prefix)).message;
  const requests = [];
  const errors = [];
  const chat = makeChat(sdk, {
    id: "chat-resume", messages: [userMessage("hi"), partial], bodies: [replay], requests,
    onError: (e) => errors.push(errorText(e)),
  });
  await chat.resumeStream();
  return { partial, messages: chat.messages, errors, requests: requests.map((r) => r.url) };
}

const out = {};
const rt = input.roundTrip;
for (const name of RELEASES) {
  const sdk = await import(name);
  const streams = {};
  for (const [key, body] of Object.entries(input.streams)) {
    streams[key] = await assemble(sdk, body);
  }
  out[name] = {
    version: versionOf(name),
    streams,
    resume: await resume(sdk, input.resume),
    roundTrip: await roundTrip(sdk, rt.first, rt.second, rt.output),
    // the second reply's `start` naming a new message instead of the continued one
    roundTripNewId: await roundTrip(sdk, rt.first, rt.secondNewId, rt.output),
  };
}
console.log(JSON.stringify(out));
