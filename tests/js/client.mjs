// The official OpenAI JavaScript SDK against persona-proxy: one run walks every persona given on
// the command line and prints one JSON object with what the SDK returned, for
// tests/clients/test_js_sdk.py to check.
//
//   PERSONA_PROXY_URL=http://127.0.0.1:8080 node client.mjs echo-persona openai-persona
//
// With CLIENT_MODE=failures it instead makes, per persona, one stream request and one plain
// request whose upstream the test has scripted to fail (a dropped stream, then a 429), and
// prints what the SDK raised.
import OpenAI from "openai";

const baseURL = `${process.env.PERSONA_PROXY_URL}/v1`;
const personas = process.argv.slice(2);

const QUESTION = "What is the weather in Paris?";
const TOOL_RESULT = "22 degrees and sunny";
const WEATHER_TOOL = {
  type: "function",
  function: {
    name: "get_weather",
    description: "The current weather in a city.",
    parameters: {
      type: "object",
      properties: {
        city: { type: "string" },
        unit: { type: "string", enum: ["celsius", "fahrenheit"] },
      },
      required: ["city", "unit"],
    },
  },
};
const HEADERS = ["x-persona", "x-provider", "x-upstream-model", "x-request-id"];

const user = (content) => [{ role: "user", content }];

async function walk(persona) {
  // Persona by header on one client, by model on the other.
  const byHeader = new OpenAI({
    baseURL,
    apiKey: "unused",
    maxRetries: 0,
    defaultHeaders: { "X-Persona": persona },
  });
  const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
  const out = {};

  const { data: plain, response } = await byHeader.chat.completions
    .create({ model: "gpt-4o", messages: user("Hello from JavaScript") })
    .withResponse();
  out.plain = plain;
  out.headers = Object.fromEntries(HEADERS.map((h) => [h, response.headers.get(h)]));

  const stream = await client.chat.completions.create({
    model: persona,
    messages: user("streamed from JavaScript"),
    stream: true,
    stream_options: { include_usage: true },
  });
  out.stream = [];
  for await (const chunk of stream) out.stream.push(chunk);

  const helper = client.chat.completions.stream({
    model: persona,
    messages: user("the stream helper"),
  });
  const deltas = [];
  helper.on("content", (delta) => deltas.push(delta));
  out.helper = { deltas, final: await helper.finalChatCompletion() };

  // Tool round trip, non-streaming: a forced call, then the tool's result.
  const messages = user(QUESTION);
  const first = await client.chat.completions.create({
    model: persona,
    messages,
    tools: [WEATHER_TOOL],
    tool_choice: "required",
  });
  const call = first.choices[0].message.tool_calls[0];
  messages.push(first.choices[0].message, {
    role: "tool",
    tool_call_id: call.id,
    content: TOOL_RESULT,
  });
  const second = await client.chat.completions.create({ model: persona, messages, tools: [WEATHER_TOOL] });
  out.tools = { first, second };

  // The same round trip through the streaming helper, which assembles the tool-call deltas.
  const streamed = user(QUESTION);
  const toolStream = client.chat.completions.stream({
    model: persona,
    messages: streamed,
    tools: [WEATHER_TOOL],
    tool_choice: { type: "function", function: { name: "get_weather" } },
  });
  const argsDone = [];
  toolStream.on("tool_calls.function.arguments.done", (e) => argsDone.push(e));
  const streamedFirst = await toolStream.finalChatCompletion();
  const streamedCall = streamedFirst.choices[0].message.tool_calls[0];
  streamed.push(streamedFirst.choices[0].message, {
    role: "tool",
    tool_call_id: streamedCall.id,
    content: TOOL_RESULT,
  });
  const streamedSecond = await client.chat.completions
    .stream({ model: persona, messages: streamed, tools: [WEATHER_TOOL] })
    .finalChatCompletion();
  out.streamedTools = { first: streamedFirst, argsDone, second: streamedSecond };
  return out;
}

function describe(err) {
  return {
    name: err.constructor.name,
    status: err.status ?? null,
    message: err.message,
    code: err.code ?? null,
    type: err.type ?? null,
    retryAfter: err.headers?.get?.("retry-after") ?? null,
  };
}

async function failures(persona) {
  const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
  const out = { chunks: [], streamError: null, rateLimit: null };
  try {
    const stream = await client.chat.completions.create({
      model: persona,
      messages: user("one two three four five six"),
      stream: true,
    });
    for await (const chunk of stream) out.chunks.push(chunk);
  } catch (err) {
    out.streamError = describe(err);
  }
  try {
    await client.chat.completions.create({ model: persona, messages: user("hi") });
  } catch (err) {
    out.rateLimit = describe(err);
  }
  return out;
}

async function main() {
  if (process.env.CLIENT_MODE === "failures") {
    const result = {};
    for (const persona of personas) result[persona] = await failures(persona);
    process.stdout.write(JSON.stringify(result));
    return;
  }
  const client = new OpenAI({ baseURL, apiKey: "unused", maxRetries: 0 });
  const result = { models: [], personas: {} };
  for await (const model of client.models.list()) result.models.push(model);
  result.retrieved = await client.models.retrieve(personas[0]);
  try {
    await client.chat.completions.create({
      model: "gpt-4o",
      messages: user("hi"),
      // An unknown persona in the header is a 404 the SDK raises as NotFoundError.
    }, { headers: { "X-Persona": "no-such-persona" } });
    result.unknownPersona = null;
  } catch (err) {
    result.unknownPersona = { name: err.constructor.name, status: err.status, code: err.code, type: err.type };
  }
  for (const persona of personas) result.personas[persona] = await walk(persona);
  process.stdout.write(JSON.stringify(result));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
