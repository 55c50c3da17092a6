"""Gemini ``generateContent`` replies for :class:`tests.fakes.server.FakeUpstream`.

Fixtures live in ``tests/fixtures/gemini/`` as pairs: ``NAME.json`` (the non-streaming
``GenerateContentResponse``) and ``NAME.sse`` (the same answer as ``:streamGenerateContent?alt=sse``
sends it: ``data:`` lines only, CRLF line ends, no ``[DONE]``; docs/wire-formats.md 3.4). Names
are in :data:`FIXTURE_NAMES`.

Builders for hand-made answers (:func:`text_response`, :func:`call_part`, :func:`response`) and
errors in Gemini's shape (:func:`gemini_error`, :func:`rate_limited`, :func:`bad_api_key`), and
:class:`GeminiWire`, which answers by the echo rules (:mod:`tests.fakes.auto`).

Example::

    fake_upstream.reply(gemini_reply("parallel_tool_calls", stream=True))
    fake_upstream.reply(rate_limited(retry_delay="17s"))
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import orjson

from tests.fakes.auto import WORDS, Sent, Wire, decide
from tests.fakes.server import Recorded, Reply

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "gemini"

#: Every fixture pair, for tests that want to run over all of them.
FIXTURE_NAMES = sorted(p.stem for p in FIXTURES.glob("*.json"))

DEFAULT_MODEL_VERSION = "gemini-3-flash-preview"
SSE_HEADERS = {"Content-Type": "text/event-stream"}


def load_response(name: str) -> dict[str, Any]:
    """The non-streaming ``GenerateContentResponse`` of fixture ``name``."""
    return orjson.loads((FIXTURES / f"{name}.json").read_bytes())


def load_sse(name: str) -> list[str]:
    """The ``data`` text of each event of fixture ``name``'s stream, in order."""
    text = (FIXTURES / f"{name}.sse").read_text().replace("\r\n", "\n")
    events = []
    for block in text.split("\n\n"):
        lines = [
            line[5:].removeprefix(" ") for line in block.split("\n") if line.startswith("data:")
        ]
        if lines:
            events.append("\n".join(lines))
    return events


def load_events(name: str) -> list[dict[str, Any]]:
    """The parsed events of fixture ``name`` (what the stream translator is fed)."""
    return [orjson.loads(data) for data in load_sse(name)]


def gemini_reply(name: str, stream: bool, **reply: Any) -> Reply:
    """A 200 reply replaying fixture ``name``.

    The stream is replayed byte for byte (CRLF framing and all) unless a :class:`Reply` option
    that needs separate events is given (``stall_after``, ``disconnect_after``,
    ``event_delay``), in which case the events are re-framed with LF.
    """
    headers = {"x-goog-request-id": f"fixture-{name}", **reply.pop("headers", {})}
    if not stream:
        return Reply(json=load_response(name), headers=headers, **reply)
    if reply:
        return Reply(
            events=[(None, d) for d in load_sse(name)], headers={**SSE_HEADERS, **headers}, **reply
        )
    return Reply(raw=(FIXTURES / f"{name}.sse").read_bytes(), headers={**SSE_HEADERS, **headers})


def stream_reply(chunks: list[dict[str, Any]], **reply: Any) -> Reply:
    """A 200 ``alt=sse`` reply sending each of ``chunks`` as one ``data:`` event."""
    headers = {**SSE_HEADERS, **reply.pop("headers", {})}
    return Reply(events=[(None, c) for c in chunks], headers=headers, **reply)


def call_part(
    name: str,
    args: dict[str, Any] | None = None,
    *,
    signature: str | None = None,
    call_id: str | None = None,
) -> dict[str, Any]:
    """A ``functionCall`` part (arguments omitted when ``args`` is None, as Gemini does)."""
    call: dict[str, Any] = {"name": name}
    if call_id is not None:
        call = {"id": call_id, **call}
    if args is not None:
        call["args"] = args
    part: dict[str, Any] = {"functionCall": call}
    if signature is not None:
        part["thoughtSignature"] = signature
    return part


def response(
    parts: list[dict[str, Any]] | None,
    *,
    finish: str | None = "STOP",
    prompt_tokens: int = 10,
    candidates_tokens: int = 5,
    thoughts_tokens: int | None = None,
    model: str = DEFAULT_MODEL_VERSION,
    response_id: str | None = "fake-response-id",
    index: int = 0,
) -> dict[str, Any]:
    """One ``GenerateContentResponse`` (or one stream chunk: pass ``finish=None`` mid-stream)."""
    candidate: dict[str, Any] = {}
    if parts is not None:
        candidate["content"] = {"parts": parts, "role": "model"}
    if finish is not None:
        candidate["finishReason"] = finish
    candidate["index"] = index
    usage: dict[str, Any] = {
        "promptTokenCount": prompt_tokens,
        "candidatesTokenCount": candidates_tokens,
        "totalTokenCount": prompt_tokens + candidates_tokens + (thoughts_tokens or 0),
    }
    if thoughts_tokens is not None:
        usage["thoughtsTokenCount"] = thoughts_tokens
    out: dict[str, Any] = {"candidates": [candidate], "usageMetadata": usage, "modelVersion": model}
    if response_id is not None:
        out["responseId"] = response_id
    return out


def text_response(text: str, **kw: Any) -> dict[str, Any]:
    """A one-candidate answer holding ``text``."""
    return response([{"text": text}], **kw)


def error_body(
    code: int, status: str, message: str, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Gemini's error body (docs/wire-formats.md 3.5)."""
    err: dict[str, Any] = {"code": code, "message": message, "status": status}
    if details is not None:
        err["details"] = details
    return {"error": err}


def gemini_error(
    code: int,
    status: str,
    message: str,
    *,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Reply:
    """An error response, e.g. ``(503, "UNAVAILABLE", "The model is overloaded.")``."""
    return Reply(
        status=code, json=error_body(code, status, message, details), headers=dict(headers or {})
    )


def rate_limited(retry_delay: str = "17s", **kw: Any) -> Reply:
    """429 ``RESOURCE_EXHAUSTED`` with a ``RetryInfo`` detail, as the Developer API sends it."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.QuotaFailure",
            "violations": [
                {
                    "quotaMetric": "generativelanguage.googleapis.com/"
                    "generate_content_free_tier_requests",
                    "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                    "quotaDimensions": {"location": "global", "model": "gemini-3-flash"},
                    "quotaValue": "10",
                }
            ],
        },
        {
            "@type": "type.googleapis.com/google.rpc.Help",
            "links": [
                {
                    "description": "Learn more about Gemini API quotas",
                    "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
                }
            ],
        },
        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": retry_delay},
    ]
    return gemini_error(
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details.",
        details=details,
        **kw,
    )


def bad_api_key() -> Reply:
    """What the Developer API answers to a wrong key: a 400 whose ErrorInfo says API_KEY_INVALID."""
    details = [
        {
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "API_KEY_INVALID",
            "domain": "googleapis.com",
            "metadata": {"service": "generativelanguage.googleapis.com"},
        },
        {
            "@type": "type.googleapis.com/google.rpc.LocalizedMessage",
            "locale": "en-US",
            "message": "API key not valid. Please pass a valid API key.",
        },
    ]
    return gemini_error(
        400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", details=details
    )


def token_reply(token: str, expires_in: int = 3600) -> Reply:
    """The OAuth token endpoint's answer to a refresh (for the Vertex credentials path)."""
    return Reply(
        json={
            "access_token": token,
            "expires_in": expires_in,
            "token_type": "Bearer",
            "scope": "https://www.googleapis.com/auth/cloud-platform",
        }
    )


# --------------------------------------------------------------------- answering by echo rules

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
            for p in WORDS.findall(text)
        ]
        return Reply(
            events=[(None, c) for c in chunks],
            headers={"Content-Type": "text/event-stream"},
            disconnect_after=2,
        )

    def rate_limited(self, seconds: int) -> Reply:
        return rate_limited(f"{seconds}s")

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
