// sse-client.js: Server-Sent Events over fetch(), for requests EventSource cannot make
// (POST with a JSON body, custom headers).
//
// The parser follows the WHATWG HTML "server-sent events" interpretation rules:
// https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
//
// FetchEventSource behaves like the browser's EventSource, so one handler works for both:
//   - events arrive as MessageEvent on addEventListener(type) / onmessage,
//   - "open" when a 200 text/event-stream response arrives,
//   - "error" when the connection drops (readyState CONNECTING: it will retry) or fails for
//     good (readyState CLOSED: an HTTP error, a wrong content type, or 204 "nothing more");
//     the error event is a CustomEvent whose `detail` holds {status, message, body}.
// Reconnection waits the server's `retry:` time and re-sends the same request with a
// `Last-Event-ID` header (or, for an id a header cannot carry, a `lastEventId` query
// parameter), so the server continues where the stream broke off. A request is never
// re-sent once close() was called or the server ended it with 204 or an error.
//
// The module needs no DOM: Node (18+) imports it as is (tests/node/sse-client.test.mjs).

export const CONNECTING = 0;
export const OPEN = 1;
export const CLOSED = 2;

/** Incremental event-stream parser: feed it decoded text, it calls back per event. */
export class EventStreamParser {
  /**
   * @param {object} handlers
   * @param {(e: {type: string, data: string, lastEventId: string}) => void} handlers.onEvent
   * @param {(ms: number) => void} [handlers.onRetry]
   * @param {(text: string) => void} [handlers.onComment]
   * @param {string} [lastEventId] where an earlier connection left off
   */
  constructor({ onEvent, onRetry = () => {}, onComment = () => {} }, lastEventId = "") {
    Object.assign(this, { onEvent, onRetry, onComment });
    this.lastEventId = lastEventId; // the id of the last *dispatched* event
    this.lineEnd = /\r\n|\n|\r/g;
    this.reset();
  }

  /** Forget a half-received line or event (a new connection starts clean). */
  reset() {
    this.line = ""; // the start of a line whose end has not arrived yet
    this.skipLF = false; // the last chunk ended in CR; a leading LF belongs to it
    this.data = "";
    this.eventType = "";
    this.idBuffer = this.lastEventId; // an id whose event never completed does not count
  }

  /**
   * Feed a chunk of decoded text. Lines end with CRLF, LF or CR.
   *
   * Only the new chunk is searched for line ends, never what is held from earlier chunks,
   * so a long line arriving in many small chunks costs time linear in its length.
   */
  feed(chunk) {
    if (chunk === "") return; // keep skipLF: an empty chunk may sit between CR and LF
    let start = 0;
    if (this.skipLF && chunk[0] === "\n") start = 1;
    this.skipLF = false;
    const lineEnd = this.lineEnd;
    lineEnd.lastIndex = start;
    let match;
    while ((match = lineEnd.exec(chunk)) !== null) {
      const end = match.index;
      // A CR at the very end may be the first half of a CRLF split across chunks.
      if (match[0] === "\r" && end === chunk.length - 1) this.skipLF = true;
      const line = this.line + chunk.slice(start, end);
      this.line = "";
      start = lineEnd.lastIndex;
      this.processLine(line);
    }
    this.line += chunk.slice(start);
  }

  processLine(line) {
    if (line === "") return this.dispatch();
    if (line.startsWith(":")) return this.onComment(line.slice(line.startsWith(": ") ? 2 : 1));
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);

    switch (field) {
      case "event":
        this.eventType = value;
        break;
      case "data":
        this.data += value + "\n";
        break;
      case "id":
        if (!value.includes("\0")) this.idBuffer = value;
        break;
      case "retry":
        if (/^[0-9]+$/.test(value)) this.onRetry(parseInt(value, 10));
        break;
      default: // unknown fields are ignored
    }
  }

  dispatch() {
    // The id takes effect when its event is complete, even one without data.
    this.lastEventId = this.idBuffer;
    if (this.data === "") {
      this.eventType = "";
      return;
    }
    const event = {
      type: this.eventType || "message",
      data: this.data.slice(0, -1), // drop the last "\n"
      lastEventId: this.lastEventId,
    };
    this.data = "";
    this.eventType = "";
    this.onEvent(event);
  }
}

/**
 * EventSource over fetch().
 *
 *   const source = new FetchEventSource("/chat/stream", {
 *     method: "POST",
 *     headers: { "Content-Type": "application/json" },
 *     body: JSON.stringify({ message: "Hello" }),
 *   });
 *   source.addEventListener("message", (e) => console.log(JSON.parse(e.data)));
 *   source.addEventListener("close", () => source.close());
 */
export class FetchEventSource extends EventTarget {
  /**
   * @param {string} url
   * @param {object} [options]
   * @param {string} [options.method] "GET" (default) or "POST", ...
   * @param {Record<string,string>} [options.headers]
   * @param {BodyInit} [options.body] re-sent as-is on every reconnection
   * @param {RequestCredentials} [options.credentials]
   * @param {number} [options.retry] reconnection delay (ms) until the server sends `retry:`
   * @param {number} [options.maxRetryDelay] cap for the back-off after failed attempts (ms)
   * @param {string} [options.lastEventId] resume an earlier stream right away
   */
  constructor(url, options = {}) {
    super();
    this.url = new URL(url, globalThis.document?.baseURI ?? globalThis.location?.href).href;
    this.options = options;
    this.readyState = CONNECTING;
    this.lastEventId = options.lastEventId ?? "";
    this.retry = options.retry ?? 1000;
    this.maxRetryDelay = options.maxRetryDelay ?? 30000;
    this.reconnects = 0; // connections made after the first one
    this.failures = 0; // consecutive attempts that ended without a single event
    this.controller = null;
    this.timer = null;
    this.parser = new EventStreamParser({
      onEvent: (e) => this.receive(e),
      onRetry: (ms) => (this.retry = ms),
    }, this.lastEventId);
    this.connect();
  }

  /** Stop for good: abort the request in flight and cancel any pending reconnection. */
  close() {
    this.readyState = CLOSED;
    clearTimeout(this.timer);
    this.controller?.abort();
  }

  async connect() {
    const { method = "GET", body, credentials = "same-origin" } = this.options;
    let url;
    let headers;
    try {
      ({ url, headers } = this.request());
    } catch (error) {
      // Bad headers in the options: sending the request again cannot help. (Await first:
      // the first attempt runs inside the constructor, before any listener is added.)
      await null;
      if (this.readyState === CLOSED) return;
      return this.fail({ status: 0, message: String(error?.message ?? error), body: null });
    }

    this.controller = new AbortController();
    this.parser.reset();
    this.progress = false;
    try {
      const response = await fetch(url, {
        method, body, headers, credentials,
        cache: "no-store",
        signal: this.controller.signal,
      });
      if (this.readyState === CLOSED) return;
      if (!(await this.accept(response))) return;

      this.readyState = OPEN;
      this.headers = response.headers; // unlike EventSource, the headers can be read
      this.emit(new Event("open"));
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.readyState === CLOSED) break;
        this.parser.feed(value);
        this.lastEventId = this.parser.lastEventId;
      }
      // The server ended the response without saying it is finished: resume.
    } catch (error) {
      if (this.readyState === CLOSED) return; // aborted by close()
      this.lastError = error; // a network error: resume below
    }
    if (this.readyState === CLOSED) return;
    this.controller.abort(); // whatever ended the read, let go of this response's connection
    this.failures = this.progress ? 0 : this.failures + 1;
    this.scheduleReconnect();
  }

  /**
   * The URL and headers of the next attempt. Ids are kept exactly as received, but not
   * every id survives a header: Headers.set throws beyond Latin-1, drops leading and
   * trailing spaces, and servers decode non-ASCII header bytes each their own way. Such an
   * id goes in the `lastEventId` query parameter instead (UTF-8, percent-encoded), which
   * flask-sse-stream's last_event_id() reads when there is no header.
   */
  request() {
    const headers = new Headers(this.options.headers);
    headers.set("Accept", "text/event-stream");
    const id = this.lastEventId;
    if (!id) return { url: this.url, headers };
    if (isHeaderSafe(id)) {
      headers.set("Last-Event-ID", id);
      return { url: this.url, headers };
    }
    const url = new URL(this.url);
    url.searchParams.set("lastEventId", id);
    return { url: url.href, headers };
  }

  /** Check the response; fail the source (no retry) unless it is a 200 event stream. */
  async accept(response) {
    const type = response.headers.get("Content-Type") || "";
    if (response.status === 200 && isEventStream(type)) return true;

    let message;
    let body = null;
    if (response.status === 204) {
      message = "The server has nothing more to send (204).";
    } else {
      const text = await response.text().catch(() => "");
      try {
        body = JSON.parse(text);
      } catch {
        body = text;
      }
      message = body?.error || `${response.status} ${response.statusText}`.trim();
      if (response.ok) message = `Not an event stream (${type || "no Content-Type"})`;
    }
    this.fail({ status: response.status, message, body });
    return false;
  }

  fail(detail) {
    this.close();
    this.emit(new CustomEvent("error", { detail }));
  }

  scheduleReconnect() {
    this.readyState = CONNECTING;
    this.emit(new CustomEvent("error", { detail: { status: 0, message: "connection lost" } }));
    if (this.readyState === CLOSED) return; // a listener called close()
    // Exponential back-off only while attempts keep failing without any progress.
    const delay = Math.min(this.retry * 2 ** Math.max(0, this.failures - 1), this.maxRetryDelay);
    this.timer = setTimeout(() => {
      if (this.readyState === CLOSED) return;
      this.reconnects += 1;
      this.connect();
    }, delay);
  }

  receive({ type, data, lastEventId }) {
    if (this.readyState === CLOSED) return; // close() was called while parsing a chunk
    this.lastEventId = lastEventId;
    this.progress = true;
    this.emit(new MessageEvent(type, { data, lastEventId, origin: new URL(this.url).origin }));
  }

  emit(event) {
    const handler = this[`on${event.type}`];
    if (typeof handler === "function") {
      try {
        handler.call(this, event);
      } catch (error) {
        // As with EventSource (and addEventListener listeners): a handler's exception is
        // reported, and the stream goes on. Thrown through the parser it would end the
        // read, drop the rest of the chunk and reconnect.
        report(error);
      }
    }
    this.dispatchEvent(event);
  }
}

function report(error) {
  if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  else setTimeout(() => { throw error; });
}

/**
 * Whether `value` is the `text/event-stream` MIME type, parameters allowed
 * ("text/event-stream; charset=utf-8"), not merely a type starting with it.
 */
export function isEventStream(contentType) {
  const essence = contentType.split(";", 1)[0].trim().toLowerCase();
  return essence === "text/event-stream";
}

/** Whether a Last-Event-ID header carries `id` unchanged: printable ASCII, no edge spaces. */
export function isHeaderSafe(id) {
  return /^(?:[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?)?$/.test(id);
}

FetchEventSource.CONNECTING = CONNECTING;
FetchEventSource.OPEN = OPEN;
FetchEventSource.CLOSED = CLOSED;
