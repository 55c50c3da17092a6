"""Auto-answering fake upstreams, one per wire format, that behave like the ``echo`` persona.

Every persona type in the client matrix must answer the same conversation the same way, so that
one client test runs unchanged on all of them. The built-in ``echo`` provider sets the rules and
these fakes follow them in their own provider's wire format, deciding from the request itself:

* a forced tool choice -> one call of that tool, with arguments that satisfy its schema's
  required fields (:func:`example`);
* a JSON schema response format -> a JSON object that satisfies the schema;
* otherwise -> the text of the last user message, or of the last tool result.

Each fake also has an *inspector* that reads what the proxy sent upstream back into one neutral
shape (:class:`Sent`), so a test can assert, for instance, that the second request of a tool
round trip carried the assistant's call and the tool result, whatever the provider's format.

Scripting by hand stays possible: a reply queued with ``FakeUpstream.reply`` wins over the
automatic one.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.clients.schema_example import example
from tests.fakes.anthropic import anthropic_error
from tests.fakes.gemini import rate_limited as gemini_rate_limited
from tests.fakes.openai import completion_body, error_reply, stream_events
from tests.fakes.server import FakeUpstream, Recorded, Reply

_WORDS = re.compile(r"\s*\S+")
_ids = itertools.count(1)


@dataclass
class Answer:
    """What the model says: text, or tool calls ``(id, name, arguments)``."""

    text: str = ""
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        words = len(self.text.split()) + sum(
            len(json.dumps(a).split()) for *_, a in self.tool_calls
        )
        return max(words, 1)

    @property
    def pieces(self) -> list[str]:
        return _WORDS.findall(self.text) or [self.text]


def decide(
    *,
    last_text: str,
    forced_tool: tuple[str, dict[str, Any]] | None,
    schema: dict[str, Any] | None,
    prompt_words: int,
    id_prefix: str,
) -> Answer:
    """echo's rules, in its order: a forced tool, then a JSON schema, then the echo."""
    prompt_tokens = max(prompt_words, 1)
    if forced_tool is not None:
        name, params = forced_tool
        call = (f"{id_prefix}{next(_ids):04d}", name, example(params) or {})
        return Answer(tool_calls=[call], prompt_tokens=prompt_tokens)
    if schema is not None:
        return Answer(json.dumps(example(schema)), prompt_tokens=prompt_tokens)
    return Answer(last_text, prompt_tokens=prompt_tokens)


@dataclass
class Sent:
    """What the proxy sent upstream, in neutral form.

    Attributes:
        system: The system texts, in order.
        messages: ``(role, text)`` of the conversation turns, in order (tool results have role
            ``tool``).
        tool_calls: ``(id, name, arguments)`` of every assistant tool call in the history.
        tool_results: ``(tool call id, text)`` of every tool result in the history.
        tools: The names of the tools offered.
    """

    system: list[str] = field(default_factory=list)
    messages: list[tuple[str, str]] = field(default_factory=list)
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    tool_results: list[tuple[str, str]] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)


class AutoUpstream(FakeUpstream):
    """A :class:`FakeUpstream` that, with nothing queued, answers with ``respond(request)``."""

    def __init__(self, wire: Wire) -> None:
        super().__init__()
        self.wire = wire

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if not self.replies:
            body = await request.read()  # aiohttp caches the body for the base handler
            rec = Recorded(request.method, request.path, dict(request.query), {}, body)
            self.replies.append(self.wire.respond(rec))
        return await super()._handle(request)

    def last_sent(self) -> Sent:
        return self.wire.inspect(self.last)


class Wire:
    """One provider's wire format: answer a request, read one back."""

    #: Whether tool calls and results carry ids on this wire.
    carries_ids = True

    def respond(self, rec: Recorded) -> Reply:
        raise NotImplementedError

    def inspect(self, rec: Recorded) -> Sent:
        raise NotImplementedError

    def broken_stream(self, text: str) -> Reply:
        """A stream of ``text`` whose connection drops after the first pieces."""
        raise NotImplementedError

    def rate_limited(self, seconds: int) -> Reply:
        """This provider's 429, asking to retry after ``seconds``."""
        raise NotImplementedError


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")


# ---------------------------------------------------------------------------------------- openai


class OpenAIWire(Wire):
    """Chat Completions, as OpenAI itself answers it (usage chunk when asked, ``[DONE]``)."""

    def __init__(self, model: str) -> None:
        self.model = model

    def respond(self, rec: Recorded) -> Reply:
        body = rec.json
        messages = body["messages"]
        last = next((m for m in reversed(messages) if m["role"] in ("user", "tool")), messages[-1])
        tools = {t["function"]["name"]: t["function"] for t in body.get("tools") or []}
        choice = body.get("tool_choice")
        forced = None
        if tools and choice == "required":
            fn = next(iter(tools.values()))
            forced = (fn["name"], fn.get("parameters") or {})
        elif tools and isinstance(choice, dict):
            fn = tools[choice["function"]["name"]]
            forced = (fn["name"], fn.get("parameters") or {})
        fmt = body.get("response_format") or {}
        schema = fmt["json_schema"].get("schema") if fmt.get("type") == "json_schema" else None
        answer = decide(
            last_text=_text_of(last.get("content")),
            forced_tool=forced,
            schema=schema,
            prompt_words=sum(len(_text_of(m.get("content")).split()) for m in messages),
            id_prefix="call_fake",
        )
        usage = {
            "prompt_tokens": answer.prompt_tokens,
            "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        }
        calls = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in answer.tool_calls
        ]
        finish = "tool_calls" if calls else "stop"
        if body.get("stream"):
            with_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            pieces = [] if calls else answer.pieces
            events = stream_events(
                pieces,
                model=self.model,
                tool_calls=calls,
                finish_reason=finish,
                usage=usage,
                with_usage=with_usage,
            )
            return Reply(events=events)
        text = None if calls else answer.text
        return Reply(
            json=completion_body(
                text, model=self.model, tool_calls=calls, finish_reason=finish, usage=usage
            )
        )

    def broken_stream(self, text: str) -> Reply:
        return Reply(
            events=stream_events(_WORDS.findall(text), model=self.model), disconnect_after=3
        )

    def rate_limited(self, seconds: int) -> Reply:
        return error_reply(
            429,
            "Rate limit reached for gpt-4.1-mini on requests per min (RPM): Limit 3.",
            type="requests",
            code="rate_limit_exceeded",
            headers={"retry-after": str(seconds)},
        )

    def inspect(self, rec: Recorded) -> Sent:
        sent = Sent()
        body = rec.json
        sent.tools = [t["function"]["name"] for t in body.get("tools") or []]
        for m in body["messages"]:
            role, text = m["role"], _text_of(m.get("content"))
            if role in ("system", "developer"):
                sent.system.append(text)
                continue
            sent.messages.append((role, text))
            for tc in m.get("tool_calls") or []:
                fn = tc["function"]
                sent.tool_calls.append((tc["id"], fn["name"], json.loads(fn["arguments"] or "{}")))
            if role == "tool":
                sent.tool_results.append((m["tool_call_id"], text))
        return sent


# ------------------------------------------------------------------------------------- anthropic


class AnthropicWire(Wire):
    """The Messages API: a ``Message`` object, or its event stream."""

    def __init__(self, model: str) -> None:
        self.model = model

    def respond(self, rec: Recorded) -> Reply:
        body = rec.json
        messages = body["messages"]
        last = next((m for m in reversed(messages) if m["role"] == "user"), messages[-1])
        content = last["content"]
        if isinstance(content, str):
            last_text = content
        else:
            results = [b for b in content if b.get("type") == "tool_result"]
            last_text = _text_of(results[-1].get("content")) if results else _text_of(content)
        tools = {t["name"]: t for t in body.get("tools") or []}
        choice = body.get("tool_choice") or {}
        forced = None
        if tools and choice.get("type") == "any":
            tool = next(iter(tools.values()))
            forced = (tool["name"], tool["input_schema"])
        elif tools and choice.get("type") == "tool":
            tool = tools[choice["name"]]
            forced = (tool["name"], tool["input_schema"])
        fmt = (body.get("output_config") or {}).get("format") or {}
        words = sum(len(_text_of(m["content"]).split()) for m in messages)
        answer = decide(
            last_text=last_text,
            forced_tool=forced,
            schema=fmt.get("schema") if fmt.get("type") == "json_schema" else None,
            prompt_words=words,
            id_prefix="toolu_fake",
        )
        blocks: list[dict[str, Any]] = [
            {"type": "tool_use", "id": i, "name": n, "input": a} for i, n, a in answer.tool_calls
        ] or [{"type": "text", "text": answer.text}]
        stop = "tool_use" if answer.tool_calls else "end_turn"
        usage = {
            "input_tokens": answer.prompt_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
            "output_tokens": answer.completion_tokens,
            "service_tier": "standard",
        }
        message = {
            "id": f"msg_fake{next(_ids):04d}",
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": usage,
        }
        if not body.get("stream"):
            return Reply(json=message)
        events: list[tuple[str | None, Any]] = [
            (
                "message_start",
                {
                    "type": "message_start",
                    "message": {**message, "content": [], "stop_reason": None}
                    | {"usage": {**usage, "output_tokens": 1}},
                },
            )
        ]
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                start = {"type": "text", "text": ""}
                deltas = [{"type": "text_delta", "text": p} for p in answer.pieces]
            else:
                start = {**block, "input": {}}
                args = json.dumps(block["input"])
                half = len(args) // 2
                deltas = [
                    {"type": "input_json_delta", "partial_json": part}
                    for part in (args[:half], args[half:])
                ]
            events.append(
                (
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": start},
                )
            )
            events.append(("ping", {"type": "ping"}))
            for delta in deltas:
                events.append(
                    (
                        "content_block_delta",
                        {"type": "content_block_delta", "index": index, "delta": delta},
                    )
                )
            events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
        events.append(
            (
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": answer.completion_tokens},
                },
            )
        )
        events.append(("message_stop", {"type": "message_stop"}))
        return Reply(events=events)

    def broken_stream(self, text: str) -> Reply:
        request = {"messages": [{"role": "user", "content": text}], "stream": True}
        reply = self.respond(Recorded("POST", "/v1/messages", {}, {}, json.dumps(request).encode()))
        reply.disconnect_after = 5  # message_start, block start, ping, two deltas
        return reply

    def rate_limited(self, seconds: int) -> Reply:
        return anthropic_error(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization.",
            headers={"retry-after": str(seconds)},
        )

    def inspect(self, rec: Recorded) -> Sent:
        body = rec.json
        system = body.get("system") or []
        sent = Sent(system=[system] if isinstance(system, str) else [b["text"] for b in system])
        sent.tools = [t["name"] for t in body.get("tools") or []]
        for m in body["messages"]:
            content = m["content"]
            if isinstance(content, str):
                sent.messages.append((m["role"], content))
                continue
            for block in content:
                kind = block["type"]
                if kind == "text":
                    sent.messages.append((m["role"], block["text"]))
                elif kind == "tool_use":
                    sent.tool_calls.append((block["id"], block["name"], block["input"]))
                elif kind == "tool_result":
                    text = _text_of(block.get("content"))
                    sent.tool_results.append((block["tool_use_id"], text))
                    sent.messages.append(("tool", text))
        return sent


# ---------------------------------------------------------------------------------------- gemini

SIGNATURE_SENTINEL = "skip_thought_signature_validator"


def gemini_signature(name: str, args: dict[str, Any]) -> str:
    """The thought signature the fake puts on a call: opaque base64, derived from the call so
    the fake can check, statelessly, that the proxy sent back exactly what it received."""
    raw = f"sig:{name}:{json.dumps(args, sort_keys=True)}".encode()
    return base64.b64encode(raw).decode()


class GeminiWire(Wire):
    """``generateContent`` and ``streamGenerateContent?alt=sse`` as a Gemini 3 model answers:
    function calls without ids, each carrying a thought signature that must come back on the
    next turn exactly as sent (else the 400 Gemini 3 gives), CRLF-framed events, no
    ``[DONE]``."""

    carries_ids = False

    def __init__(self, model: str) -> None:
        self.model = model

    def _signature_error(self, body: dict[str, Any]) -> Reply | None:
        for i, content in enumerate(body.get("contents") or []):
            calls = [p for p in content.get("parts") or [] if "functionCall" in p]
            if content.get("role") != "model" or not calls:
                continue
            fc = calls[0]["functionCall"]
            expected = gemini_signature(fc["name"], fc.get("args") or {})
            if calls[0].get("thoughtSignature") != expected:
                message = (
                    "Function call is missing a thought_signature in functionCall parts. This "
                    "is required for tools to work correctly, and missing thought_signature "
                    f"may lead to degraded model performance. position {i}"
                )
                return Reply(
                    status=400,
                    json={"error": {"code": 400, "message": message, "status": "INVALID_ARGUMENT"}},
                )
        return None

    def respond(self, rec: Recorded) -> Reply:
        body = rec.json
        if (error := self._signature_error(body)) is not None:
            return error
        contents = body["contents"]
        last = next((c for c in reversed(contents) if c.get("role") == "user"), contents[-1])
        results = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
        if results:
            response = results[-1].get("response") or {}
            last_text = response.get("output", json.dumps(response))
        else:
            last_text = "".join(p.get("text", "") for p in last["parts"])
        decls = {
            d["name"]: d
            for tool in body.get("tools") or []
            for d in tool.get("functionDeclarations") or []
        }
        config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        forced = None
        if decls and config.get("mode") == "ANY":
            names = config.get("allowedFunctionNames") or list(decls)
            decl = decls[names[0]]
            forced = (decl["name"], decl.get("parametersJsonSchema") or decl.get("parameters"))
        gen = body.get("generationConfig") or {}
        words = sum(len(p.get("text", "").split()) for c in contents for p in c["parts"])
        answer = decide(
            last_text=last_text,
            forced_tool=forced,
            schema=gen.get("responseJsonSchema") or gen.get("responseSchema"),
            prompt_words=words,
            id_prefix="unused",
        )
        usage = {
            "promptTokenCount": answer.prompt_tokens,
            "candidatesTokenCount": answer.completion_tokens,
            "totalTokenCount": answer.prompt_tokens + answer.completion_tokens,
        }
        calls = [
            {"functionCall": {"name": n, "args": a}, "thoughtSignature": gemini_signature(n, a)}
            for _, n, a in answer.tool_calls
        ]

        def response(parts: list[dict[str, Any]], finish: str | None) -> dict[str, Any]:
            candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}}
            if finish:
                candidate["finishReason"] = finish
            candidate["index"] = 0
            out: dict[str, Any] = {"candidates": [candidate], "modelVersion": self.model}
            out["usageMetadata"] = (
                usage if finish else {"promptTokenCount": usage["promptTokenCount"]}
            )
            out["responseId"] = "fake-gemini-response"
            return out

        if not rec.path.endswith(":streamGenerateContent"):
            return Reply(json=response(calls or [{"text": answer.text}], "STOP"))
        if calls:
            chunks = [response(calls, "STOP")]
        else:
            *head, tail = answer.pieces
            chunks = [response([{"text": p}], None) for p in head]
            chunks.append(response([{"text": tail}], "STOP"))
        raw = b"".join(b"data: " + json.dumps(c).encode() + b"\r\n\r\n" for c in chunks)
        return Reply(raw=raw, headers={"Content-Type": "text/event-stream"})

    def broken_stream(self, text: str) -> Reply:
        chunks = [
            {
                "candidates": [{"content": {"parts": [{"text": p}], "role": "model"}, "index": 0}],
                "modelVersion": self.model,
            }
            for p in _WORDS.findall(text)
        ]
        return Reply(
            events=[(None, c) for c in chunks],
            headers={"Content-Type": "text/event-stream"},
            disconnect_after=2,
        )

    def rate_limited(self, seconds: int) -> Reply:
        return gemini_rate_limited(f"{seconds}s")

    def inspect(self, rec: Recorded) -> Sent:
        body = rec.json
        system = (body.get("systemInstruction") or {}).get("parts") or []
        sent = Sent(system=[p.get("text", "") for p in system])
        sent.tools = [
            d["name"]
            for tool in body.get("tools") or []
            for d in tool.get("functionDeclarations") or []
        ]
        for content in body["contents"]:
            role = "assistant" if content.get("role") == "model" else "user"
            for part in content["parts"]:
                if "text" in part:
                    sent.messages.append((role, part["text"]))
                elif "functionCall" in part:
                    fc = part["functionCall"]
                    sent.tool_calls.append((fc.get("id"), fc["name"], fc.get("args") or {}))
                elif "functionResponse" in part:
                    fr = part["functionResponse"]
                    response = fr.get("response") or {}
                    text = response.get("output", json.dumps(response))
                    sent.tool_results.append((fr.get("id"), text))
                    sent.messages.append(("tool", text))
        return sent


# ---------------------------------------------------------------------------------- claude-agent


class CliWire(Wire):
    """What a fake Claude Code CLI process was given: its offered tools, the seeded session
    transcript (the history) and the prompt, from the logs of :mod:`tests.fakes.fake_claude_cli`.
    Tool names lose the proxy's MCP prefix, so they read as the client's."""

    def inspect(self, rec: Any) -> Sent:
        from translators.claude_agent import CONTINUE_PROMPT, TOOL_PREFIX

        def name(n: str) -> str:
            return n.removeprefix(TOOL_PREFIX)

        argv = rec.argv
        sent = Sent()
        if "--system-prompt" in argv:
            sent.system.append(argv[argv.index("--system-prompt") + 1])
        tools = rec.first("tools")
        sent.tools = [name(t["name"]) for t in (tools["tools"] if tools else [])]
        seeded = rec.first("transcript")
        for entry in seeded["entries"] if seeded else []:
            message = entry["message"]
            content = message["content"]
            if isinstance(content, str):
                sent.messages.append((message["role"], content))
                continue
            for block in content:
                if block["type"] == "text":
                    sent.messages.append((message["role"], block["text"]))
                elif block["type"] == "tool_use":
                    sent.tool_calls.append((block["id"], name(block["name"]), block["input"]))
                elif block["type"] == "tool_result":
                    text = _text_of(block.get("content"))
                    sent.tool_results.append((block["tool_use_id"], text))
                    sent.messages.append(("tool", text))
        prompt = _text_of(rec.user_messages[-1]["message"]["content"])
        if prompt != CONTINUE_PROMPT:
            sent.messages.append(("user", prompt))
        return sent


class CliUpstream:
    """The fake CLI processes a ``claude-agent`` provider started, one per request, in order."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.wire = CliWire()

    @property
    def requests(self) -> list[Any]:
        from tests.fakes.claude_cli import read_runs

        def started(run: Any) -> int:
            return next((e["t"] for e in run.events if e["event"] == "echo_start"), 0)

        return sorted(read_runs(self.log_dir), key=started)
