"""The ``doors`` phase: what the Messages and Responses doors add, next to the chat door on the
same upstream (issue 15: within 1.2x of chat's added latency).

Pairs (direct to the mock vs through the proxy), measured by ``phase_latency`` like the
``latency`` phase:

* ``chat-openai`` / ``chat-anthropic``: the chat door, the baseline for each upstream;
* ``messages-anthropic``: ``/v1/messages`` on the anthropic persona (native pass-through);
* ``messages-openai``: ``/v1/messages`` on the openai persona (translated through chat);
* ``responses-openai``: ``/v1/responses`` on the openai persona (translated, ``store: false``
  so the timing is the door's, not the responses table's; ``store`` is measured separately as
  ``responses-openai-store``).

The direct baseline of each pair is the request the proxy sends upstream for it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench.__main__ import (
    ANTHROPIC_HEADERS,
    CLIENT_SYSTEM,
    USER_TEXT,
    Target,
    anthropic_body,
    openai_body,
    targets_for,
)


def _dumps(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":")).encode()


def messages_body(model: str) -> bytes:
    return _dumps(
        {
            "model": model,
            "max_tokens": 64,
            "system": CLIENT_SYSTEM,
            "messages": [{"role": "user", "content": [{"type": "text", "text": USER_TEXT}]}],
        }
    )


def responses_body(model: str, *, store: bool) -> bytes:
    return _dumps(
        {
            "model": model,
            "instructions": CLIENT_SYSTEM,
            "input": USER_TEXT,
            "max_output_tokens": 64,
            "store": store,
        }
    )


def pairs(mock_port: int, proxy_port: int, workdir: Path) -> dict[str, tuple[Target, Target]]:
    out: dict[str, tuple[Target, Target]] = {}
    out["chat-openai"] = targets_for("openai", mock_port, proxy_port)
    out["chat-anthropic"] = targets_for("anthropic", mock_port, proxy_port)
    direct_openai = Target(
        "direct-openai-door", mock_port, "/v1/chat/completions",
        openai_body("gpt-4o-mini", persona_system=True), {},
    )  # fmt: skip
    direct_anthropic = Target(
        "direct-anthropic-door", mock_port, "/v1/messages", anthropic_body(), ANTHROPIC_HEADERS
    )
    out["messages-anthropic"] = (
        direct_anthropic,
        Target(
            "proxy-messages-anthropic", proxy_port, "/v1/messages",
            messages_body("bench-anthropic"), ANTHROPIC_HEADERS,
        ),
    )  # fmt: skip
    out["messages-openai"] = (
        direct_openai,
        Target(
            "proxy-messages-openai", proxy_port, "/v1/messages",
            messages_body("bench-openai"), ANTHROPIC_HEADERS,
        ),
    )  # fmt: skip
    out["responses-openai"] = (
        direct_openai,
        Target(
            "proxy-responses-openai", proxy_port, "/v1/responses",
            responses_body("bench-openai", store=False), {},
        ),
    )  # fmt: skip
    out["responses-openai-store"] = (
        direct_openai,
        Target(
            "proxy-responses-openai-store", proxy_port, "/v1/responses",
            responses_body("bench-openai", store=True), {},
        ),
    )  # fmt: skip
    for direct, via in out.values():
        direct.prepare(workdir)
        via.prepare(workdir)
    return out


def compare(result: dict[str, Any]) -> dict[str, Any]:
    """Each door's added p50 over the chat door's on the same upstream, per topology."""
    ratios: dict[str, Any] = {}
    for topo, rows in result.items():
        base = {
            "openai": rows["chat-openai"]["added_p50_ms"]["median"],
            "anthropic": rows["chat-anthropic"]["added_p50_ms"]["median"],
        }
        ratios[topo] = {
            name: round(row["added_p50_ms"]["median"] / max(base[name.split("-")[1]], 0.001), 2)
            for name, row in rows.items()
            if not name.startswith("chat-")
        }
    return ratios
