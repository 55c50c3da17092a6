"""Embeddings: OpenAI's ``/v1/embeddings`` request and response, Gemini's
``batchEmbedContents``, and the echo provider's deterministic vectors. Pure: no I/O.

OpenAI: https://platform.openai.com/docs/api-reference/embeddings/create
Gemini: https://ai.google.dev/api/embeddings#method:-models.batchembedcontents
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

from translators.base import JSONDict, TranslationError

ECHO_DIMENSIONS = 256
"""Length of an echo vector when the request gives no ``dimensions``."""


def parse_input(body: Any) -> tuple[list[str] | None, list[list[int]] | None]:
    """Validate an embeddings request's ``input``; return it as texts, or as token arrays.

    Raises:
        TranslationError: when ``input`` is missing or of the wrong shape.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.")
    value = body.get("input")
    if value is None:
        raise TranslationError("Missing required parameter: 'input'.", param="input")
    dims = body.get("dimensions")
    if dims is not None and (isinstance(dims, bool) or not isinstance(dims, int) or dims < 1):
        raise TranslationError("'dimensions' must be a positive integer.", param="dimensions")
    fmt = body.get("encoding_format")
    if fmt is not None and fmt not in ("float", "base64"):
        raise TranslationError(
            f"Invalid value for 'encoding_format': {fmt!r}. Supported values are: 'float' and "
            "'base64'.",
            param="encoding_format",
        )
    if isinstance(value, str):
        return [value], None
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value), None
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return None, [list(value)]
        if all(isinstance(v, list) and v and all(isinstance(t, int) for t in v) for v in value):
            return None, [list(v) for v in value]
    raise TranslationError(
        "'input' must be a non-empty string, array of strings, array of tokens, or array of "
        "token arrays.",
        param="input",
    )


def encode_vector(vector: list[float], encoding_format: str | None) -> list[float] | str:
    """``base64`` is little-endian float32, as OpenAI sends it (and its SDK decodes it)."""
    if encoding_format == "base64":
        return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()
    return vector


def response(
    vectors: list[list[float]], *, model: str, prompt_tokens: int, encoding_format: str | None
) -> JSONDict:
    """OpenAI's embeddings response (a ``list`` of ``embedding`` objects)."""
    return {
        "object": "list",
        "data": [
            {"object": "embedding", "index": i, "embedding": encode_vector(v, encoding_format)}
            for i, v in enumerate(vectors)
        ],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def echo_vector(text: str, dimensions: int) -> list[float]:
    """A deterministic unit vector from ``text``: equal texts give equal vectors, different
    texts (almost surely) different ones. BLAKE2b in counter mode, mapped to [-1, 1]."""
    raw = bytearray()
    counter = 0
    seed = text.encode()
    while len(raw) < dimensions * 4:
        raw += hashlib.blake2b(seed + counter.to_bytes(4, "little"), digest_size=64).digest()
        counter += 1
    ints = struct.unpack(f"<{dimensions}I", bytes(raw[: dimensions * 4]))
    values = [i / 2147483647.5 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [v / norm for v in values]


def gemini_request(texts: list[str], *, model: str, dimensions: int | None) -> JSONDict:
    """``batchEmbedContents`` body: one request per text; ``dimensions`` becomes
    ``outputDimensionality``."""
    name = model if model.startswith(("models/", "tunedModels/")) else f"models/{model}"
    requests: list[JSONDict] = []
    for text in texts:
        one: JSONDict = {"model": name, "content": {"parts": [{"text": text}]}}
        if dimensions is not None:
            one["outputDimensionality"] = dimensions
        requests.append(one)
    return {"requests": requests}


def gemini_vectors(answer: Any) -> list[list[float]]:
    """The vectors of a ``batchEmbedContents`` answer, in request order."""
    from translators.base import UpstreamFormatError  # noqa: PLC0415

    embeddings = answer.get("embeddings") if isinstance(answer, dict) else None
    if not isinstance(embeddings, list):
        raise UpstreamFormatError("batchEmbedContents answer has no 'embeddings' list")
    return [list(e.get("values") or []) for e in embeddings]


def estimate_tokens(texts: list[str]) -> int:
    """Gemini's embedding answers carry no token count: about four characters per token, the
    rule of thumb Google gives (https://ai.google.dev/gemini-api/docs/tokens)."""
    return sum(max(1, math.ceil(len(t) / 4)) for t in texts)
