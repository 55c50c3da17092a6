"""Auto-answering fake upstreams: the echo provider's rules, spoken in any provider's wire.

Every persona type in the client matrix must answer the same conversation the same way, so that
one client test runs unchanged on all of them. The built-in ``echo`` provider sets the rules and
:func:`decide` applies them to what a request asks for:

* a forced tool choice -> one call of that tool, with arguments that satisfy its schema's
  required fields (:func:`tests.fakes.schema_example.example`);
* a JSON schema response format -> a JSON object that satisfies the schema;
* otherwise -> the text of the last user message, or of the last tool result.

Each provider module beside this one (``openai``, ``anthropic``, ``gemini``, ``claude_cli``)
has a :class:`Wire`: it answers a request in its own format (``respond``) and reads what the
proxy sent back into one neutral shape (``inspect`` -> :class:`Sent`), so a test can assert,
for instance, that the second request of a tool round trip carried the assistant's call and the
tool result, whatever the provider's format. :class:`AutoUpstream` is a
:class:`tests.fakes.server.FakeUpstream` driven by a wire; a reply queued with
``FakeUpstream.reply`` wins over the automatic one.
"""

from __future__ import annotations

import itertools
import json
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.fakes.schema_example import example
from tests.fakes.server import FakeUpstream, Recorded, Reply

WORDS = re.compile(r"\s*\S+")
ids = itertools.count(1)


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
        return WORDS.findall(self.text) or [self.text]


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
        call = (f"{id_prefix}{next(ids):04d}", name, example(params) or {})
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


def text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if p.get("type") == "text")
