// The real `openai` npm package reading this library's two OpenAI wire formats (Chat
// Completions chunks, the Responses event stream) from a tiny server that serves fixed
// replies (the reply is picked by `model`); prints one JSON object for
// tests/test_openai_wire_sdk.py.
//   node openai_wire.mjs http://127.0.0.1:PORT/v1
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "not-needed", maxRetries: 0 });
const user = (text) => [{ role: "user", content: text }];
const tools = [
  { type: "function", function: { name: "get_weather", parameters: { type: "object" } } },
  { type: "function", function: { name: "get_time" } },
];

async function chatStreamed(model) {
  const stream = await client.chat.completions.create({
    model, messages: user("hi"), stream: true, stream_options: { include_usage: true },
  });
  let content = "";
  let reasoning = "";
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      content += choice.delta?.content ?? "";
      reasoning += choice.delta?.reasoning_content ?? "";
    }
  }
  return { content, reasoning, usage };
}

// The SDK's own accumulating helper, strict about tool call fragments.
async function chatToolCalls() {
  const runner = client.chat.completions.stream({ model: "client_tool", messages: user("hi"), tools });
  const completion = await runner.finalChatCompletion();
  const choice = completion.choices[0];
  return {
    finish: choice.finish_reason,
    content: choice.message.content,
    calls: (choice.message.tool_calls ?? []).map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
  };
}

async function chatWhole() {
  const completion = await client.chat.completions.create({ model: "reasoning", messages: user("hi") });
  const message = completion.choices[0].message;
  return { content: message.content, reasoning: message.reasoning_content ?? null };
}

async function chatFailure() {
  try {
    for await (const _ of await client.chat.completions.create({ model: "failure", messages: user("hi"), stream: true })) {
      // read until the error event
    }
    return null;
  } catch (e) {
    return e.message;
  }
}

async function responsesEvents(model) {
  const stream = await client.responses.create({ model, input: "hi", stream: true });
  const events = [];
  for await (const event of stream) events.push(event);
  return {
    types: events.map((e) => e.type),
    sequence: events.map((e) => e.sequence_number),
    text: events.filter((e) => e.type === "response.output_text.delta").map((e) => e.delta).join(""),
    reasoning: events.filter((e) => e.type === "response.reasoning_text.delta").map((e) => e.delta).join(""),
    last: events.at(-1).response,
  };
}

async function responsesFinal(model) {
  const stream = client.responses.stream({ model, input: "hi" });
  const response = await stream.finalResponse();
  return {
    status: response.status,
    text: response.output_text,
    types: response.output.map((item) => item.type),
    calls: response.output.filter((item) => item.type === "function_call")
      .map((item) => [item.call_id, item.name, JSON.parse(item.arguments)]),
  };
}

async function responsesWhole() {
  const response = await client.responses.create({ model: "server_tool", input: "hi" });
  return { text: response.output_text, status: response.status };
}

async function responsesRefused() {
  try {
    await client.responses.create({ model: "text", input: "hi", previous_response_id: "resp_x" });
    return null;
  } catch (e) {
    return { status: e.status, param: e.param ?? null, type: e.type ?? null };
  }
}

const result = {
  chat: {
    reasoning: await chatStreamed("reasoning"),
    serverTool: await chatStreamed("server_tool"),
    toolCalls: await chatToolCalls(),
    whole: await chatWhole(),
    failure: await chatFailure(),
  },
  responses: {
    reasoning: await responsesEvents("reasoning"),
    failure: await responsesEvents("failure"),
    cancel: await responsesEvents("cancel"),
    finalText: await responsesFinal("text"),
    finalTool: await responsesFinal("client_tool"),
    whole: await responsesWhole(),
    refused: await responsesRefused(),
  },
};
console.log(JSON.stringify(result));
