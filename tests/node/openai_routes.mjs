// The real `openai` npm package against a real server's /v1 (tests/apps/protocols_app.py
// with the scripted backend, heartbeats between every two events): Chat Completions and
// Responses, streamed and not; prints one JSON object for tests/test_openai_routes_sdk.py.
//   node openai_routes.mjs http://127.0.0.1:PORT/v1
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.argv[2], apiKey: "not-needed", maxRetries: 0 });
const user = (text) => [{ role: "user", content: text }];
const chatTools = [{
  type: "function",
  function: { name: "get_location", parameters: { type: "object", properties: {} } },
}];
const responseTools = [{ type: "function", name: "get_location", parameters: { type: "object", properties: {} }, strict: false }];

async function chatStreamed() {
  const stream = await client.chat.completions.create({
    model: "m", messages: user("parts"), stream: true, stream_options: { include_usage: true },
  });
  let content = "";
  let reasoning = "";
  let usage = null;
  let finish = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const choice of chunk.choices) {
      content += choice.delta?.content ?? "";
      reasoning += choice.delta?.reasoning_content ?? "";
      if (choice.finish_reason) finish = choice.finish_reason;
    }
  }
  return { content, reasoning, usage, finish };
}

// The SDK's accumulating helper, strict about tool call fragments.
async function chatToolCalls() {
  const runner = client.chat.completions.stream({ model: "m", messages: user("client-tool"), tools: chatTools });
  const choice = (await runner.finalChatCompletion()).choices[0];
  return {
    finish: choice.finish_reason,
    content: choice.message.content,
    calls: (choice.message.tool_calls ?? []).map((c) => [c.id, c.function.name, JSON.parse(c.function.arguments)]),
  };
}

async function chatWhole() {
  const message = (await client.chat.completions.create({ model: "m", messages: user("parts") })).choices[0].message;
  return { content: message.content, reasoning: message.reasoning_content ?? null };
}

async function responsesStreamed() {
  const stream = await client.responses.create({ model: "m", input: "parts", stream: true });
  const types = [];
  const sequence = [];
  let text = "";
  let reasoning = "";
  let last = null;
  for await (const event of stream) {
    types.push(event.type);
    sequence.push(event.sequence_number);
    if (event.type === "response.output_text.delta") text += event.delta;
    if (event.type === "response.reasoning_text.delta") reasoning += event.delta;
    if (event.response) last = event.response;
  }
  return { types, sequence, text, reasoning, usage: last?.usage ?? null };
}

// The SDK's ResponseStream helper (strict about item ids and order), with a tool call.
async function responsesFinal() {
  const stream = client.responses.stream({ model: "m", input: "client-tool", tools: responseTools });
  const response = await stream.finalResponse();
  return {
    status: response.status,
    text: response.output_text,
    types: response.output.map((item) => item.type),
    calls: response.output.filter((i) => i.type === "function_call").map((c) => [c.call_id, c.name, JSON.parse(c.arguments)]),
  };
}

async function responsesWhole() {
  const response = await client.responses.create({ model: "m", input: "parts" });
  return { text: response.output_text, status: response.status };
}

async function responsesRefused() {
  try {
    await client.responses.create({ model: "m", input: "x", previous_response_id: "resp_1" });
    return null;
  } catch (e) {
    return { status: e.status, param: e.param ?? null, type: e.type ?? null };
  }
}

const [streamed, toolCalls, whole, rStreamed, rFinal, rWhole, refused] = await Promise.all([
  chatStreamed(), chatToolCalls(), chatWhole(), responsesStreamed(), responsesFinal(),
  responsesWhole(), responsesRefused(),
]);
console.log(JSON.stringify({
  chat: { streamed, toolCalls, whole },
  responses: { streamed: rStreamed, final: rFinal, whole: rWhole, refused },
}));
