"""The one way tests fold an OpenAI chunk stream into the completion a client ends up with.

It runs the openai SDK's own accumulator (``ChatCompletionStreamState``, what
``client.chat.completions.stream()`` uses), so a stream that folds correctly here is one a real
client reads correctly: tool-call deltas merged by ``index``, strings concatenated, extras such
as ``reasoning_content`` kept (docs/wire-formats.md 0.2). It returns the accumulator's snapshot,
not ``get_final_completion()``, which raises on ``length`` and ``content_filter`` by design (it
exists to parse structured output).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk


def fold(chunks: Iterable[dict[str, Any]]) -> ChatCompletion:
    """The completion that ``chunks`` (``chat.completion.chunk`` dicts) add up to."""
    state = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(ChatCompletionChunk.model_validate(chunk))
    return state.current_completion_snapshot


def summary(completion: ChatCompletion | dict[str, Any]) -> dict[str, Any]:
    """The first choice's content (``""`` for none), tool calls ``{id, name, arguments}`` and
    finish reason: what a stream and its non-stream twin must agree on, whatever else differs."""
    if isinstance(completion, dict):
        completion = ChatCompletion.model_validate(completion)
    choice = completion.choices[0]
    calls = [
        {"id": c.id, "name": c.function.name, "arguments": c.function.arguments}
        for c in choice.message.tool_calls or ()
        if c.type == "function"
    ]
    return {
        "content": choice.message.content or "",
        "tool_calls": calls,
        "finish": choice.finish_reason,
    }
