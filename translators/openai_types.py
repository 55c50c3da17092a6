"""TypedDicts for the OpenAI chat shapes the translators build and read most.

Field names and meanings follow the OpenAI API reference
(https://platform.openai.com/docs/api-reference/chat/object and
https://platform.openai.com/docs/api-reference/chat-streaming). Only what the proxy itself
builds is spelled out; provider extras (``reasoning_content``, ``thinking_blocks``,
``extra_content``) are optional keys.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

FinishReason = Literal["stop", "length", "tool_calls", "content_filter", "function_call"]


class FunctionCall(TypedDict):
    name: str
    arguments: str  # JSON text, as OpenAI sends it


class ToolCall(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCall
    extra_content: NotRequired[dict[str, Any]]  # Gemini's thought signature travels here


class ChatMessage(TypedDict):
    """An assistant message of a ``chat.completion`` (what the proxy answers)."""

    role: Literal["assistant"]
    content: str | None
    refusal: str | None
    tool_calls: NotRequired[list[ToolCall]]
    reasoning_content: NotRequired[str]
    thinking_blocks: NotRequired[list[dict[str, Any]]]


class PromptTokensDetails(TypedDict):
    cached_tokens: int
    cache_write_tokens: NotRequired[int]


class CompletionTokensDetails(TypedDict):
    reasoning_tokens: int


class CompletionUsage(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails
    completion_tokens_details: CompletionTokensDetails


class ChunkChoice(TypedDict):
    index: int
    delta: dict[str, Any]
    logprobs: None
    finish_reason: FinishReason | None


class ChatCompletionChunk(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: NotRequired[CompletionUsage | None]
