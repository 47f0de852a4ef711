// Real npm SSE clients against the chat routes; prints one JSON object for the Python test.
//   node interop.mjs http://127.0.0.1:PORT "prompt"
import { EventSource } from "eventsource";
import { fetchEventSource } from "@microsoft/fetch-event-source";

// fetch-event-source is written for browsers: it reaches for window and document.
globalThis.window = globalThis;
globalThis.document = { hidden: false, addEventListener() {}, removeEventListener() {} };

const [base, prompt] = process.argv.slice(2);

function viaEventSource() {
  return new Promise((resolve, reject) => {
    const out = { text: "", ids: [], close: null, errors: 0 };
    const es = new EventSource(`${base}/chat/stream?message=${encodeURIComponent(prompt)}`);
    es.onmessage = (e) => { out.text += JSON.parse(e.data).content; out.ids.push(e.lastEventId); };
    es.addEventListener("close", (e) => {
      out.close = JSON.parse(e.data);
      out.ids.push(e.lastEventId);
      es.close();
      resolve(out);
    });
    es.onerror = () => { out.errors += 1; if (out.errors > 3) { es.close(); reject(new Error("EventSource errors")); } };
  });
}

async function viaFetch({ stopAfter = Infinity, lastEventId = null } = {}) {
  const out = { text: "", ids: [], close: null, messages: 0 };
  const ctrl = new AbortController();
  const headers = { "Content-Type": "application/json" };
  if (lastEventId) headers["Last-Event-ID"] = lastEventId;
  await fetchEventSource(`${base}/chat/stream`, {
    method: "POST",
    headers,
    body: JSON.stringify({ message: prompt }),
    signal: ctrl.signal,
    openWhenHidden: true,
    async onopen(response) {
      if (!response.ok || !response.headers.get("content-type").startsWith("text/event-stream")) {
        throw new Error(`bad response ${response.status}`);
      }
    },
    onmessage(msg) {
      out.messages += 1;
      out.ids.push(msg.id);
      if (msg.event === "close") { out.close = JSON.parse(msg.data); ctrl.abort(); return; }
      out.text += JSON.parse(msg.data).content; // throws on a phantom empty message
      if (out.messages >= stopAfter) ctrl.abort();
    },
    onclose() { ctrl.abort(); },
    onerror(err) { throw err; }, // no silent retries in a test
  }).catch((err) => { if (err.name !== "AbortError") throw err; });
  return out;
}

const get = await viaEventSource();
const post = await viaFetch();
const first = await viaFetch({ stopAfter: 5 });
const rest = await viaFetch({ lastEventId: first.ids[first.ids.length - 1] });
console.log(JSON.stringify({ get, post, resumed: { first, rest } }));
