"""OpenAI content parts -> Anthropic content blocks (docs/wire-formats.md 4.2-4.4).

The block builders of :mod:`translators.anthropic_request`: text, images, files, assistant
text, tool-call arguments and replayed thinking blocks. Pure functions; errors are
:class:`~translators.base.TranslationError` with the ``param`` at fault.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from translators.base import JSONDict, TranslationError, parse_data_url

IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})


def text_block(text: str, part: JSONDict | None = None) -> JSONDict | None:
    """A text block, or None for text Anthropic would reject as empty (whitespace counts)."""
    if not text or text.isspace():
        return None
    block: JSONDict = {"type": "text", "text": text}
    if part is not None and part.get("prompt_cache_breakpoint"):
        # OpenAI's explicit cache breakpoint is exactly Anthropic's block-level cache_control.
        block["cache_control"] = {"type": "ephemeral"}
    return block


def image_block(part: JSONDict, *, param: str) -> JSONDict:
    image = part.get("image_url")
    url = image.get("url") if isinstance(image, dict) else image
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url.url is required", param=f"{param}.image_url.url")
    if url.startswith("data:"):
        mime, data = parse_data_url(url, param=f"{param}.image_url.url")
        mime = mime.lower()
        if mime == "image/jpg":  # a common client slip; Anthropic only knows image/jpeg
            mime = "image/jpeg"
        if mime not in IMAGE_MEDIA_TYPES:
            raise TranslationError(
                f"image type {mime!r} is not supported by Anthropic; use one of "
                + ", ".join(sorted(IMAGE_MEDIA_TYPES)),
                param=f"{param}.image_url.url",
            )
        source: JSONDict = {"type": "base64", "media_type": mime, "data": data}
    elif url.startswith(("https://", "http://")):
        source = {"type": "url", "url": url}
    else:
        raise TranslationError(
            "image URLs must be https:// URLs or base64 data URLs for Anthropic",
            param=f"{param}.image_url.url",
        )
    # `detail` has no Anthropic equivalent and is dropped.
    return {"type": "image", "source": source}


def file_block(part: JSONDict, *, param: str) -> JSONDict:
    file = part.get("file") or {}
    if file.get("file_id"):
        raise TranslationError(
            "file_id references OpenAI's file store, which Anthropic cannot read; "
            "send the file inline as file_data",
            param=f"{param}.file.file_id",
        )
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise TranslationError("file.file_data is required", param=f"{param}.file.file_data")
    if data.startswith("data:"):
        mime, data = parse_data_url(data, param=f"{param}.file.file_data")
        mime = mime.lower()
    elif data.startswith("JVBER"):  # base64 of "%PDF": a bare PDF without a data: prefix
        mime = "application/pdf"
    else:
        raise TranslationError(
            "file_data must be a data URL ('data:application/pdf;base64,...')",
            param=f"{param}.file.file_data",
        )
    if mime == "application/pdf":
        source: JSONDict = {"type": "base64", "media_type": mime, "data": data}
    elif mime == "text/plain":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise TranslationError(
                "file_data is not base64-encoded UTF-8 text", param=f"{param}.file.file_data"
            ) from exc
        source = {"type": "text", "media_type": "text/plain", "data": text}
    else:
        raise TranslationError(
            f"file type {mime!r} is not supported by Anthropic; only PDF and plain text are",
            param=f"{param}.file.file_data",
        )
    block: JSONDict = {"type": "document", "source": source}
    if file.get("filename"):
        block["title"] = file["filename"]
    return block


def content_blocks(content: Any, *, param: str) -> list[JSONDict]:
    """User (and tool-result) content: a string or parts -> Anthropic blocks, empties dropped."""
    if content is None:
        return []
    if isinstance(content, str):
        block = text_block(content)
        return [block] if block else []
    blocks: list[JSONDict] = []
    for j, part in enumerate(content):
        p = f"{param}[{j}]"
        kind = part.get("type")
        if kind == "text":
            if block := text_block(part.get("text") or "", part):
                blocks.append(block)
        elif kind == "image_url":
            blocks.append(image_block(part, param=p))
        elif kind == "file":
            blocks.append(file_block(part, param=p))
        elif kind == "input_audio":
            raise TranslationError("audio input is not supported by Anthropic models", param=p)
        else:
            raise TranslationError(f"content part type {kind!r} is not supported here", param=p)
    return blocks


def assistant_text_blocks(msg: JSONDict, *, param: str) -> list[JSONDict]:
    content = msg.get("content")
    blocks: list[JSONDict] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type")
            # Refusal parts were the model's own words: replay them as text
            # (docs/wire-formats.md 4.2.3).
            if kind not in ("text", "refusal"):
                raise TranslationError(
                    f"content part type {kind!r} is not allowed in assistant messages",
                    param=f"{param}.content[{j}]",
                )
            if block := text_block(part.get(kind) or "", part):
                blocks.append(block)
    elif isinstance(content, str):
        if block := text_block(content):
            blocks.append(block)
    if not blocks and isinstance(msg.get("refusal"), str):
        if block := text_block(msg["refusal"]):
            blocks.append(block)
    return blocks


def tool_input(arguments: Any, *, param: str) -> JSONDict:
    if arguments is None or (isinstance(arguments, str) and not arguments.strip()):
        return {}
    if isinstance(arguments, dict):  # some clients send the object itself
        return arguments
    try:
        value = json.loads(arguments)
    except (TypeError, ValueError) as exc:
        raise TranslationError(
            "tool call arguments must be a JSON object encoded as a string", param=param
        ) from exc
    if not isinstance(value, dict):
        raise TranslationError("tool call arguments must be a JSON object", param=param)
    return value


def replay_thinking(blocks: Any, *, param: str) -> list[JSONDict]:
    """Client-echoed ``thinking_blocks``: signed ones are passed on unmodified, in order."""
    if not isinstance(blocks, list):
        raise TranslationError("thinking_blocks must be a list", param=param)
    out: list[JSONDict] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        # An unsigned thinking block can only earn a 400, so it is treated like bare
        # reasoning_content: ignored.
        if (kind == "thinking" and block.get("signature")) or (
            kind == "redacted_thinking" and block.get("data")
        ):
            out.append(dict(block))
    return out
