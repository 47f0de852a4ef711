// An assistant-ui page for the browser tests: its AI SDK runtime (useChatRuntime, over
// @ai-sdk/react's useChat, with AssistantChatTransport) against /api/chat, rendering
// reasoning, tool calls (name, arguments, result) and text with assistant-ui's own
// message primitives. ?resumable=1 turns on assistant-ui's own resume: the transport
// keeps the x-resumable-stream-id of a running reply in sessionStorage and a reload
// resumes it from /api/chat/<that id>/stream. Built by `node build.mjs --page
// assistant-ui`; served by assistant-ui.html.
import {
  AssistantRuntimeProvider,
  ComposerPrimitive,
  MessagePrimitive,
  ThreadPrimitive,
  useAuiState,
} from "@assistant-ui/react";
import {
  AssistantChatTransport,
  createResumableSessionStorage,
  useChatRuntime,
} from "@assistant-ui/react-ai-sdk";

const resumable = new URLSearchParams(window.location.search).has("resumable")
  ? { storage: createResumableSessionStorage(), resumeApi: (id) => `/api/chat/${id}/stream` }
  : undefined;
const transport = new AssistantChatTransport({ api: "/api/chat", resumable });

const json = (value) => (value === undefined ? "" : JSON.stringify(value));

const Text = ({ text }) => <p data-testid="text">{text}</p>;
const Reasoning = ({ text }) => (
  <details data-testid="reasoning"><summary>Reasoning</summary><pre>{text}</pre></details>
);
const Tool = ({ toolName, args, result, isError, status }) => (
  <div data-testid="tool" data-tool={toolName} data-status={status?.type}
       data-error={isError ? "1" : "0"}>
    <strong data-testid="tool-name">{toolName}</strong>
    <code data-testid="tool-input">{json(args)}</code>
    {result !== undefined && <code data-testid="tool-output">{json(result)}</code>}
  </div>
);
const PARTS = { Text, Reasoning, tools: { Fallback: Tool } };

const Message = ({ role }) => (
  <MessagePrimitive.Root data-testid="message" data-role={role}>
    <MessagePrimitive.Parts components={PARTS} />
  </MessagePrimitive.Root>
);

function Status() {
  const running = useAuiState((state) => state.thread.isRunning);
  return <p data-testid="status">{running ? "running" : "ready"}</p>;
}

export function App() {
  const runtime = useChatRuntime({ transport });
  return (
    <AssistantRuntimeProvider runtime={runtime}>
      <ThreadPrimitive.Root>
        <ThreadPrimitive.Messages components={{
          UserMessage: () => <Message role="user" />,
          AssistantMessage: () => <Message role="assistant" />,
        }} />
        <Status />
        <ComposerPrimitive.Root>
          <ComposerPrimitive.Input data-testid="input" placeholder="Say something" />
          <ComposerPrimitive.Send>Send</ComposerPrimitive.Send>
        </ComposerPrimitive.Root>
      </ThreadPrimitive.Root>
    </AssistantRuntimeProvider>
  );
}
