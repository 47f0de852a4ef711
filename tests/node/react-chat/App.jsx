// A useChat page for the browser tests: the AI SDK's own React hook and transport
// against /api/chat (the example app's AI SDK mount), rendering every part a reply with
// parts carries. A client-side tool `getLocation` (or `get_location`, the scripted
// backend's name for it) answers from the page (addToolOutput) and the chat posts the
// output back on its own. Query parameters: ?chat=<id> names the
// chat (so a reload can resume it), ?resume=1 resumes its active reply on load.
// Built by `node build.mjs` into bundle.js; served by index.html.
import { useChat } from "@ai-sdk/react";
import {
  DefaultChatTransport,
  getToolName,
  isToolUIPart,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";
import { useState } from "react";

const params = new URLSearchParams(window.location.search);
export const LOCATION = { city: "Paris", lat: 48.86, lon: 2.35 };
const CLIENT_TOOLS = { getLocation: LOCATION, get_location: LOCATION };

const json = (value) => (value === undefined ? "" : JSON.stringify(value));

function Part({ part }) {
  if (part.type === "text") {
    return <p data-testid="text" data-state={part.state}>{part.text}</p>;
  }
  if (part.type === "reasoning") {
    return (
      <details data-testid="reasoning" data-state={part.state} open={part.state === "streaming"}>
        <summary>Reasoning</summary>
        <pre>{part.text}</pre>
      </details>
    );
  }
  if (isToolUIPart(part)) {
    return (
      <div data-testid="tool" data-tool={getToolName(part)} data-state={part.state}
           data-call-id={part.toolCallId}>
        <strong data-testid="tool-name">{getToolName(part)}</strong>
        <code data-testid="tool-input">{json(part.input)}</code>
        {part.state === "output-available" && (
          <code data-testid="tool-output">{json(part.output)}</code>)}
        {part.state === "output-error" && (
          <code data-testid="tool-error">{part.errorText}</code>)}
      </div>
    );
  }
  if (part.type === "source-url") {
    return <a data-testid="source" href={part.url}>{part.title ?? part.url}</a>;
  }
  if (part.type.startsWith("data-")) {
    return <code data-testid="data" data-name={part.type.slice(5)}>{json(part.data)}</code>;
  }
  return null; // step-start and the rest have nothing to show
}

export function App() {
  const [input, setInput] = useState("");
  const { messages, sendMessage, status, error, stop, addToolOutput } = useChat({
    id: params.get("chat") ?? "react-chat",
    resume: params.has("resume"),
    transport: new DefaultChatTransport({ api: "/api/chat" }),
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      const output = CLIENT_TOOLS[toolCall.toolName];
      if (output !== undefined) {
        // not awaited: awaiting inside onToolCall deadlocks (the SDK's docs)
        addToolOutput({ tool: toolCall.toolName, toolCallId: toolCall.toolCallId, output });
      }
    },
  });
  const submit = (event) => {
    event.preventDefault();
    if (input.trim()) {
      sendMessage({ text: input });
      setInput("");
    }
  };
  return (
    <main>
      <ol data-testid="messages">
        {messages.map((message) => (
          <li key={message.id} data-testid="message" data-role={message.role}
              data-id={message.id}>
            {message.parts.map((part, index) => <Part key={index} part={part} />)}
          </li>
        ))}
      </ol>
      <p data-testid="status">{status}</p>
      {error && <p data-testid="error">{error.message}</p>}
      <form onSubmit={submit}>
        <input data-testid="input" value={input} onChange={(e) => setInput(e.target.value)}
               placeholder="Say something" />
        <button type="submit">Send</button>
        <button type="button" data-testid="stop" onClick={() => stop()}>Stop</button>
      </form>
    </main>
  );
}
