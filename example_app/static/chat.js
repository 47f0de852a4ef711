// chat.js: the demo page. One reply at a time streams from /chat/stream, either through the
// browser's EventSource (GET) or through FetchEventSource (POST, see sse-client.js). POST
// sends the conversation so far as `messages` (user and assistant turns); GET can only put
// the last message in its URL. Both expose the same events, so one Exchange class drives
// either:
//   message     {"content": "..."}                   -> append to the reply
//   reasoning   {"content": "..."}                   -> append to the folded reasoning above it
//   tool-call   {"id", "name", "arguments"}          -> a tool card with its arguments
//   tool-result {"id", "result"} / {"id", "error"}   -> that card's result (or error)
//   source      {"url", "title"}                     -> a link under the reply
//   data        {"name", "data"}                     -> an app-defined value, shown as JSON
//   close       {"finish_reason": ..., "error"?: ...} -> the reply is over: close the source
//   error    readyState CONNECTING: reconnecting (it resumes with Last-Event-ID)
//            readyState CLOSED: failed for good (HTTP error, or 204 "nothing more")
// Everything the model or the user wrote is put on the page with textContent / Text nodes,
// never parsed as HTML.

import { conversation } from "./conversation.js";
import { FetchEventSource } from "./sse-client.js";

const $ = (id) => document.getElementById(id);
const ui = {
  form: $("chat-form"),
  message: $("message"),
  send: $("send"),
  stop: $("stop"),
  status: $("status"),
  error: $("error"),
  transcript: $("transcript"),
  placeholder: $("placeholder"),
};
const CHAT_URL = new URL(document.body.dataset.chatUrl, document.baseURI);
const TICKER_URL = new URL(document.body.dataset.tickerUrl, document.baseURI);
const MODE_LABEL = { get: "GET · EventSource", post: "POST · fetch()" };
// With CHAT_TOKEN set on the server, fetch() requests carry it in a `token` header;
// EventSource cannot set headers and relies on the cookie the page came with.
const TOKEN = document.body.dataset.chatToken || "";
const AUTH = TOKEN ? { token: TOKEN } : {};
// The server's limits on `messages` (CHAT_MAX_MESSAGES, CHAT_MAX_CHARS).
const LIMITS = {
  messages: Number(document.body.dataset.maxMessages) || Infinity,
  chars: Number(document.body.dataset.maxChars) || Infinity,
};

/** The finished turns, oldest first: what POST sends back as `messages`. */
const history = [];

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function showError(message) {
  ui.error.textContent = message;
  ui.error.hidden = !message;
}

/** Split an event id "<stream_id>:<seq>" (the stream id itself may contain ":"). */
function parseId(id) {
  const colon = id.lastIndexOf(":");
  if (colon < 0) return { streamId: "", seq: NaN };
  return { streamId: id.slice(0, colon), seq: Number(id.slice(colon + 1)) };
}

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

/** JSON for people: indented, and text as it is. */
function pretty(value) {
  if (typeof value === "string") return value;
  try {
    return JSON.stringify(value, null, 2) ?? "null";
  } catch {
    return String(value);
  }
}

/** An http(s) URL a link may point to, else "" (a model's "javascript:" stays text). */
function safeUrl(value) {
  try {
    const url = new URL(String(value));
    return url.protocol === "http:" || url.protocol === "https:" ? url.href : "";
  } catch {
    return "";
  }
}

function element(tag, className, text) {
  const el = document.createElement(tag);
  if (className) el.className = className;
  if (text !== undefined) el.textContent = text;
  return el;
}

/** Keep the newest text in view, unless the reader scrolled up. */
function followScroll(wasAtBottom) {
  if (wasAtBottom) ui.transcript.scrollTop = ui.transcript.scrollHeight;
}

function atBottom() {
  const t = ui.transcript;
  return t.scrollHeight - t.scrollTop - t.clientHeight < 40;
}

/** One user message and its streamed reply. */
class Exchange {
  constructor(text, mode) {
    this.mode = mode;
    this.prompt = text;
    this.streamId = "";
    this.lastSeq = 0;
    this.stats = { events: 0, duplicates: 0, gaps: 0, reconnects: 0 };
    this.opened = false;
    this.dropped = false;
    this.done = false;
    this.render(text);
    this.source = this.open(text);
    this.listen();
    setStatus("connecting", `connecting (${MODE_LABEL[mode]})…`);
  }

  render(text) {
    const wasAtBottom = atBottom();
    ui.placeholder?.remove();
    // Only the reply being written has id="reply".
    document.getElementById("reply")?.removeAttribute("id");

    const user = element("li", "turn user");
    user.append(element("p", "bubble", text));

    const assistant = element("li", "turn assistant");
    assistant.dataset.mode = this.mode;
    const meta = element("p", "meta");
    meta.append(element("span", `badge badge-${this.mode}`, MODE_LABEL[this.mode]));
    this.info = element("span", "info", "");
    meta.append(this.info);

    // Reasoning folds above the reply; tool calls follow it; the reply's text, then its
    // sources and data. Parts appear only when the backend sends them.
    this.reasoning = element("details", "reasoning");
    this.reasoning.hidden = true;
    this.reasoningLabel = element("summary", "", "Thinking…");
    this.reasoningText = document.createTextNode("");
    const reasoningBody = element("p", "reasoning-text");
    reasoningBody.append(this.reasoningText);
    this.reasoning.append(this.reasoningLabel, reasoningBody);
    this.tools = element("ol", "tools");
    this.tools.hidden = true;
    this.toolCards = new Map();

    this.reply = element("p", "bubble reply");
    this.reply.id = "reply";
    this.reply.setAttribute("aria-busy", "true");
    this.text = document.createTextNode("");
    this.reply.append(this.text);
    this.reply.dataset.state = "streaming";
    this.extras = element("div", "extras");
    this.sources = element("ul", "sources");
    this.sources.hidden = true;
    this.extras.append(this.sources);
    assistant.append(meta, this.reasoning, this.tools, this.reply, this.extras);

    ui.transcript.append(user, assistant);
    followScroll(wasAtBottom);
  }

  open(text) {
    if (this.mode === "get") {
      const url = new URL(CHAT_URL);
      url.searchParams.set("message", text);
      this.url = url;
      this.sent = 1;
      return new EventSource(url);
    }
    const messages = conversation(history, text, LIMITS);
    this.sent = messages.length;
    return new FetchEventSource(CHAT_URL, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...AUTH },
      body: JSON.stringify({ messages }),
    });
  }

  listen() {
    const s = this.source;
    s.addEventListener("open", () => this.onOpen());
    s.addEventListener("message", (e) => this.onPiece(e));
    s.addEventListener("reasoning", (e) => this.onPart(e, (d) => this.addReasoning(d)));
    s.addEventListener("tool-call", (e) => this.onPart(e, (d) => this.addToolCall(d)));
    s.addEventListener("tool-result", (e) => this.onPart(e, (d) => this.addToolResult(d)));
    s.addEventListener("source", (e) => this.onPart(e, (d) => this.addSource(d)));
    s.addEventListener("data", (e) => this.onPart(e, (d) => this.addData(d)));
    s.addEventListener("close", (e) => this.onClose(e));
    s.addEventListener("error", (e) => this.onError(e));
  }

  /** Track ids: ignore anything already shown (a replay overlap) and count gaps. */
  accept(e) {
    const { streamId, seq } = parseId(e.lastEventId || "");
    if (!Number.isFinite(seq)) return true; // no usable id: nothing to check
    if (this.streamId && streamId !== this.streamId) return false; // another generation
    this.streamId = streamId;
    if (seq <= this.lastSeq) {
      this.stats.duplicates += 1;
      return false;
    }
    if (seq !== this.lastSeq + 1) this.stats.gaps += 1;
    this.lastSeq = seq;
    this.stats.events += 1;
    return true;
  }

  onOpen() {
    // fetch() can read the response headers: the stream id is known before any event,
    // so Stop can cancel a generation that has not produced its first piece yet.
    this.streamId ||= this.source.headers?.get("X-Stream-ID") || "";
    if (this.dropped) this.stats.reconnects += 1;
    this.opened = true;
    this.dropped = false;
    setStatus("open", `streaming (${MODE_LABEL[this.mode]})`);
    this.update();
  }

  onPiece(e) {
    if (this.done || !this.accept(e)) return this.update();
    const piece = parseJSON(e.data)?.content;
    if (typeof piece === "string") {
      const wasAtBottom = atBottom();
      this.text.appendData(piece); // a Text node: never parsed as HTML
      this.foldReasoning();
      followScroll(wasAtBottom);
    }
    this.update();
  }

  /** A part event: checked like a piece (replays and gaps), then shown by `show`. */
  onPart(e, show) {
    if (this.done || !this.accept(e)) return this.update();
    const data = parseJSON(e.data);
    if (data && typeof data === "object") {
      const wasAtBottom = atBottom();
      show(data);
      followScroll(wasAtBottom);
    }
    this.update();
  }

  addReasoning(data) {
    if (typeof data.content !== "string") return;
    this.reasoning.hidden = false;
    this.reasoningText.appendData(data.content);
  }

  /** The reply's text has begun (or the reply ended): the reasoning is done. */
  foldReasoning() {
    if (this.reasoning.hidden || this.reasoning.dataset.done) return;
    this.reasoning.dataset.done = "true";
    const words = this.reasoningText.data.trim().split(/\s+/).filter(Boolean).length;
    this.reasoningLabel.textContent = `Reasoning (${words} ${words === 1 ? "word" : "words"})`;
  }

  addToolCall(data) {
    const id = String(data.id ?? "");
    const card = element("li", "tool");
    card.dataset.toolId = id;
    card.dataset.state = "running";
    const head = element("p", "tool-head");
    head.append(element("span", "tool-name", String(data.name ?? "tool")),
      element("span", "tool-state", "running…"));
    card.append(head, element("pre", "tool-args", pretty(data.arguments ?? {})));
    this.tools.hidden = false;
    this.tools.append(card);
    this.toolCards.set(id, card);
  }

  addToolResult(data) {
    const card = this.toolCards.get(String(data.id ?? ""));
    if (!card) return;
    const failed = typeof data.error === "string";
    card.dataset.state = failed ? "error" : "done";
    card.querySelector(".tool-state").textContent = failed ? "failed" : "done";
    card.append(element("pre", failed ? "tool-error" : "tool-result",
      failed ? data.error : pretty(data.result)));
  }

  addSource(data) {
    const url = safeUrl(data.url);
    const item = element("li", "source");
    const label = String(data.title || data.url || "");
    if (url) {
      const link = element("a", "", label);
      link.href = url;
      link.rel = "noopener noreferrer";
      link.target = "_blank";
      item.append(link);
    } else {
      item.textContent = label; // not an http(s) URL: shown, never followed
    }
    this.sources.hidden = false;
    this.sources.append(item);
  }

  addData(data) {
    const box = element("div", "data-part");
    box.dataset.name = String(data.name ?? "");
    box.append(element("span", "data-name", String(data.name ?? "data")),
      element("pre", "data-value", pretty(data.data)));
    this.extras.append(box);
  }

  onClose(e) {
    if (this.done) return;
    this.accept(e);
    const info = parseJSON(e.data) || {};
    this.source.close(); // otherwise EventSource would reconnect and get a 204
    this.reply.dataset.finishReason = info.finish_reason || "";
    if (info.finish_reason === "error") {
      this.finish("error", "error");
      showError(info.error || "The reply failed.");
    } else if (info.finish_reason === "cancelled") {
      this.finish("stopped", "stopped (cancelled on the server)");
    } else if (info.finish_reason === "tool_calls") {
      this.finish("done", "done: the model asks this page to run a tool");
    } else {
      this.finish("done", "done");
    }
  }

  onError(e) {
    if (this.done) return;
    if (this.source.readyState !== EventSource.CLOSED) {
      // The connection broke: both sources retry on their own, with Last-Event-ID.
      this.dropped = true;
      const from = this.lastSeq ? ` after ${this.streamId}:${this.lastSeq}` : "";
      setStatus("reconnecting", `connection lost, reconnecting to resume${from}…`);
      return;
    }
    const detail = e.detail || {};
    if (detail.status >= 400) {
      this.fail(detail.message); // FetchEventSource read the JSON error body
    } else if (detail.status === 204 || this.opened) {
      // 204 on a resume: the server has nothing more for this stream (it ended or expired).
      this.finish("ended", "ended: the server has nothing more for this stream");
    } else {
      this.explainRefusal(); // EventSource cannot read an error response: ask again
    }
  }

  /** EventSource failed before it opened: fetch the same URL to read the JSON error. */
  async explainRefusal() {
    const controller = new AbortController();
    let message = "The server refused the stream.";
    try {
      const response = await fetch(this.url, {
        headers: { Accept: "text/event-stream", ...AUTH },
        signal: controller.signal,
      });
      if (!response.ok) {
        message = parseJSON(await response.text())?.error || `${response.status} ${response.statusText}`;
      }
    } catch {
      message = "Cannot reach the server.";
    } finally {
      controller.abort(); // if it streams this time, do not keep it open
    }
    this.fail(message);
  }

  fail(message) {
    this.finish("error", "error");
    showError(message || "Request failed.");
  }

  /** Stop button: stop reading at once and tell the server to stop generating. */
  stop() {
    if (this.done) return;
    this.source.close();
    this.finish("stopped", "stopped");
    if (!this.streamId) return; // nothing arrived yet: the server drops it on disconnect
    const url = new URL(`${CHAT_URL.pathname}/${encodeURIComponent(this.streamId)}`, CHAT_URL);
    fetch(url, { method: "DELETE", headers: AUTH })
      .then((response) => (this.reply.dataset.deleteStatus = String(response.status)))
      .catch(() => (this.reply.dataset.deleteStatus = "network-error"));
  }

  finish(state, text) {
    this.done = true;
    this.foldReasoning();
    for (const card of this.toolCards.values()) {
      if (card.dataset.state === "running") {
        // no result came: a client-side tool (finish_reason "tool_calls"), or stopped
        card.dataset.state = "waiting";
        card.querySelector(".tool-state").textContent =
          this.reply.dataset.finishReason === "tool_calls" ? "for the client to run" : "no result";
      }
    }
    // The turn joins the conversation if the user got a reply (whole or stopped part).
    const reply = this.text.data;
    if (state !== "error" && reply.trim()) {
      history.push({ role: "user", content: this.prompt }, { role: "assistant", content: reply });
    }
    this.reply.dataset.state = state;
    this.reply.removeAttribute("aria-busy");
    setStatus(state, text);
    this.update();
    current = null;
    ui.send.disabled = false;
    ui.stop.disabled = true;
  }

  /** Show and expose (data-*) what happened on the wire. */
  update() {
    const { events, duplicates, gaps, reconnects } = this.stats;
    Object.assign(this.reply.dataset, {
      sentMessages: String(this.sent),
      streamId: this.streamId,
      lastSeq: String(this.lastSeq),
      events: String(events),
      duplicates: String(duplicates),
      gaps: String(gaps),
      reconnects: String(reconnects),
    });
    const parts = [this.sent === 1 ? "sent 1 message" : `sent ${this.sent} messages`];
    parts.push(`${events} events`);
    if (this.streamId) parts.push(`last id ${this.streamId}:${this.lastSeq}`);
    if (reconnects) parts.push(`resumed ${reconnects}×`);
    if (duplicates) parts.push(`${duplicates} duplicates ignored`);
    if (gaps) parts.push(`${gaps} gaps`);
    this.info.textContent = parts.join(" · ");
  }
}

let current = null;

function send() {
  const text = ui.message.value.trim();
  if (!text || current) return;
  showError("");
  const mode = document.querySelector('input[name="mode"]:checked')?.value || "get";
  ui.message.value = "";
  ui.send.disabled = true;
  ui.stop.disabled = false;
  current = new Exchange(text, mode);
}

ui.form.addEventListener("submit", (e) => {
  e.preventDefault();
  send();
});

ui.message.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    send();
  }
});

ui.stop.addEventListener("click", () => current?.stop());

// --- Live ticker: a channel the server publishes to with sse.publish() -----------------
// The stream URL carries a subscribe token from /ticker-token (EventSource cannot send
// headers). A reconnect with an expired token gets 401, and EventSource treats any non-200
// as final: then we fetch a fresh token and open a new EventSource, passing the last id
// seen as ?lastEventId= so the channel resumes where it stopped.

const TICKER_TOKEN_URL = new URL(document.body.dataset.tickerTokenUrl || "ticker-token",
  document.baseURI);

async function tickerUrl(lastId) {
  const url = new URL(TICKER_URL);
  try {
    const response = await fetch(TICKER_TOKEN_URL, { cache: "no-store" });
    const { token } = response.ok ? await response.json() : {};
    if (token) url.searchParams.set("token", token);
  } catch {
    // no token: fine if the server does not require one, else the 401 brings us back
  }
  if (lastId) url.searchParams.set("lastEventId", lastId);
  return url;
}

function startTicker() {
  const box = $("ticker");
  const status = $("ticker-status");
  const set = (state, text) => {
    box.dataset.state = state;
    status.textContent = text;
  };
  let lastId = "";
  let failures = 0;
  const show = (e) => {
    const data = parseJSON(e.data) || {};
    const time = new Date(data.time);
    $("ticker-tick").textContent = String(data.tick ?? "–");
    $("ticker-time").textContent = Number.isNaN(time.getTime())
      ? String(data.time ?? "–")
      : time.toLocaleTimeString();
    $("ticker-streams").textContent = String(data.open_streams ?? "–");
    lastId = e.lastEventId || lastId;
    box.dataset.lastId = lastId;
    set("live", "live");
    box.classList.remove("pulse");
    void box.offsetWidth; // restart the CSS animation
    box.classList.add("pulse");
  };
  const connect = async () => {
    const source = new EventSource(await tickerUrl(lastId));
    box.dataset.sources = String(Number(box.dataset.sources || 0) + 1);
    source.addEventListener("open", () => {
      failures = 0;
      set("live", "live");
    });
    // The example app publishes with event="tick"; plain messages are shown the same way.
    source.addEventListener("tick", show);
    source.addEventListener("message", show);
    // After a reconnect the server says whether it could replay everything we missed.
    source.addEventListener("reset", () => set("live", "live (resynced: some ticks were missed)"));
    source.addEventListener("error", () => {
      if (source.readyState !== EventSource.CLOSED) {
        set("reconnecting", "reconnecting…");
        return;
      }
      // Final (e.g. 401: the token expired): a new token and a new EventSource, backing off.
      source.close();
      failures += 1;
      set("reconnecting", "reconnecting (new token)…");
      const delay = Math.min(30000, 500 * 2 ** Math.min(failures, 6)) * (0.5 + Math.random());
      setTimeout(connect, delay);
    });
  };
  connect();
}

startTicker();
ui.message.focus();
