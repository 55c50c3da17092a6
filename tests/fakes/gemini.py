"""Gemini ``generateContent`` replies for :class:`tests.fakes.server.FakeUpstream`.

Fixtures live in ``tests/fixtures/gemini/`` as pairs: ``NAME.json`` (the non-streaming
``GenerateContentResponse``) and ``NAME.sse`` (the same answer as ``:streamGenerateContent?alt=sse``
sends it: ``data:`` lines only, CRLF line ends, no ``[DONE]``; docs/wire-formats.md 3.4). Names
are in :data:`FIXTURE_NAMES`.

Builders for hand-made answers (:func:`text_response`, :func:`call_part`, :func:`response`) and
errors in Gemini's shape (:func:`gemini_error`, :func:`rate_limited`, :func:`bad_api_key`).

Example::

    fake_upstream.reply(gemini_reply("parallel_tool_calls", stream=True))
    fake_upstream.reply(rate_limited(retry_delay="17s"))
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from tests.fakes.server import Reply

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
