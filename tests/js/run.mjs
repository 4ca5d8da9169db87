// Streams cases with the official JavaScript SDKs and prints each SDK's final result as JSON.
//
// Input (stdin): {"baseURL": "http://127.0.0.1:PORT", "cases": [{id, api, scenario, seed}, ...]}
// with api one of "chat", "responses", "messages" and scenario a simulator behaviour (x-sim-scenario).
// Output (stdout): {id: {ok, final | error, deltas}} where `final` is the SDK's own accumulated result
// (finalChatCompletion, finalResponse, finalMessage) without the wall-clock fields, `error` the
// SDK's error name and message, and `deltas` the text/argument/thinking deltas the SDK yielded.
// Driven by tests/e2e/test_js_sdks.py, which runs it once direct and once through streamwatch.

import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const VOLATILE = new Set(["created", "created_at", "sim_sent_ns"]);
const TOOL = { name: "lookup", description: "look something up" };
const PROMPT = "Tell me a story.";

function stable(value) {
  return JSON.parse(JSON.stringify(value, (key, v) => (VOLATILE.has(key) ? undefined : v)));
}

function headers(c) {
  return { "x-sim-scenario": c.scenario, "x-sim-seed": String(c.seed), "x-request-id": c.id };
}

async function chat(baseURL, c, deltas) {
  const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "sk-test", maxRetries: 0 });
  const body = {
    model: "m",
    messages: [{ role: "user", content: PROMPT }],
    stream_options: { include_usage: true },
  };
  if (c.scenario === "tool_call") {
    body.tools = [{ type: "function", function: { ...TOOL, parameters: { type: "object" } } }];
  }
  if (c.scenario === "reasoning") body.reasoning_effort = "medium";
  const stream = client.chat.completions.stream(body, { headers: headers(c) });
  for await (const chunk of stream) {
    for (const choice of chunk.choices) {
      if (choice.delta?.content) deltas.push(choice.delta.content);
      for (const call of choice.delta?.tool_calls ?? []) {
        if (call.function?.arguments) deltas.push(call.function.arguments);
      }
    }
  }
  return stream.finalChatCompletion();
}

async function responses(baseURL, c, deltas) {
  const client = new OpenAI({ baseURL: `${baseURL}/v1`, apiKey: "sk-test", maxRetries: 0 });
  const body = { model: "m", input: PROMPT };
  if (c.scenario === "tool_call") {
    body.tools = [{ type: "function", ...TOOL, parameters: { type: "object" }, strict: false }];
  }
  if (c.scenario === "reasoning") body.reasoning = { effort: "medium", summary: "auto" };
  const stream = client.responses.stream(body, { headers: headers(c) });
  for await (const event of stream) {
    if (event.type.endsWith(".delta") && typeof event.delta === "string") deltas.push(event.delta);
  }
  return stream.finalResponse();
}

async function messages(baseURL, c, deltas) {
  const client = new Anthropic({ baseURL, apiKey: "sk-test", maxRetries: 0 });
  const body = { model: "claude-x", max_tokens: 1024, messages: [{ role: "user", content: PROMPT }] };
  if (c.scenario === "tool_call") body.tools = [{ ...TOOL, input_schema: { type: "object" } }];
  if (c.scenario === "reasoning") body.thinking = { type: "enabled", budget_tokens: 512 };
  const stream = client.messages.stream(body, { headers: headers(c) });
  for await (const event of stream) {
    if (event.type !== "content_block_delta") continue;
    const d = event.delta;
    const piece = d.text ?? d.partial_json ?? d.thinking;
    if (piece) deltas.push(piece);
  }
  return stream.finalMessage();
}

const RUN = { chat, responses, messages };

async function runCase(baseURL, c) {
  const deltas = [];
  try {
    const final = await RUN[c.api](baseURL, c, deltas);
    return { ok: true, final: stable(final), deltas };
  } catch (err) {
    return { ok: false, error: { name: err?.constructor?.name, message: String(err?.message) }, deltas };
  }
}

async function main() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  const { baseURL, cases } = JSON.parse(Buffer.concat(chunks).toString("utf8"));
  const results = {};
  // Concurrently, as an application's clients would: streamwatch keeps them apart.
  await Promise.all(
    cases.map(async (c) => {
      results[c.id] = await runCase(baseURL, c);
    }),
  );
  process.stdout.write(JSON.stringify(results));
}

await main();
