"""``POST /v1/embeddings``: OpenAI's embeddings request and response on every persona whose
provider has embeddings (docs/design.md, "More front doors").

* ``openai``: the body passes through to ``{base_url}/embeddings`` with the persona's model,
  and the answer comes back byte for byte (its ``usage`` is read for the row).
* ``gemini`` (Developer API): ``batchEmbedContents``, ``dimensions`` as
  ``outputDimensionality``; token counts are estimated (Gemini reports none).
* ``echo``: deterministic unit vectors from the text (translators/embeddings.py).
* anything else: 400 ``unsupported_capability``.

The row's ``id`` is the ``x-request-id`` (an embeddings answer carries no id of its own).
"""

from __future__ import annotations

import asyncio
import logging
from random import getrandbits
from typing import Any

import orjson
from aiohttp import web

from proxy.doors.common import Door, read_json
from proxy.errors import InvalidRequest, ProxyError, UpstreamError, json_error
from proxy.providers.base import (
    Provider,
    parse_error_body,
    raise_for_upstream_status,
    translating_errors,
)
from translators import embeddings as tr
from translators.base import TranslationError

log = logging.getLogger(__name__)

EMBEDDING_PROVIDERS = frozenset({"openai", "gemini", "echo"})


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)


def unsupported(provider: Provider, persona: str) -> ProxyError:
    return InvalidRequest(
        f"Persona {persona!r} (provider {provider.name!r}, type {provider.type!r}) has no "
        "embeddings; personas on openai, gemini or echo providers do.",
        code="unsupported_capability",
        param="model",
    )


async def embeddings(request: web.Request) -> web.StreamResponse:
    request_id = f"emb-{getrandbits(96):024x}"
    door = Door(request, request_id=request_id, api="embeddings")
    try:
        body = await read_json(request)
        try:
            texts, tokens = tr.parse_input(body)
        except TranslationError as exc:
            raise InvalidRequest(exc.message, param=exc.param) from None
        name, persona, provider = door.resolve(request, body.get("model"))
        await door.admit(
            tr.estimate_tokens(texts) if texts is not None else sum(map(len, tokens or []))
        )
        if provider.type == "openai":
            return await _openai(door, provider, body, persona.model)
        if provider.type == "gemini" and getattr(provider, "vertex", None) is None:
            if texts is None:
                raise InvalidRequest(
                    "Token arrays as 'input' need an openai persona; Gemini embeds text only.",
                    param="input",
                    code="unsupported_capability",
                )
            vectors = await _gemini(provider, texts, persona.model, body.get("dimensions"))
            prompt_tokens = tr.estimate_tokens(texts)
        elif provider.type == "echo":
            dims = body.get("dimensions") or tr.ECHO_DIMENSIONS
            inputs = texts if texts is not None else [" ".join(map(str, t)) for t in tokens or []]
            vectors = [tr.echo_vector(t, dims) for t in inputs]
            prompt_tokens = (
                sum(len(t.split()) for t in texts)
                if texts is not None
                else sum(len(t) for t in tokens or [])
            )
        else:
            raise unsupported(provider, name)
        door.upstream_model(persona.model)
        door.rec.prompt_tokens = door.rec.total_tokens = prompt_tokens
        door.rec.completion_tokens = 0
        answer = tr.response(
            vectors,
            model=persona.model,
            prompt_tokens=prompt_tokens,
            encoding_format=body.get("encoding_format"),
        )
        return web.Response(
            body=orjson.dumps(answer), content_type="application/json", headers=door.headers
        )
    except ProxyError as exc:
        door.rec.fail(exc, http_status=exc.status)
        return json_error(exc, headers=door.headers)
    except (asyncio.CancelledError, ConnectionResetError):
        door.rec.status, door.rec.http_status = "cancelled", None
        raise
    except Exception:
        log.exception("%s: internal error", request_id)
        err = ProxyError(f"The proxy hit an internal error (request {request_id}); see its log.")
        door.rec.fail(err, http_status=500)
        return json_error(err, headers=door.headers)
    finally:
        await door.finish()


async def _openai(door: Door, provider: Any, body: dict[str, Any], model: str) -> web.Response:
    """Pass-through: only ``model`` changes; the answer's bytes go back untouched."""
    url = provider.config.base_url.rstrip("/") + "/embeddings"
    with translating_errors(provider.name):
        async with provider.session.post(
            url,
            data=orjson.dumps({**body, "model": model}),
            headers=provider._headers(),
            timeout=provider.timeout,
        ) as resp:
            await raise_for_upstream_status(resp, provider=provider.name, parse=parse_error_body)
            raw = await resp.read()
        answer = orjson.loads(raw)
    if not isinstance(answer, dict):
        raise UpstreamError(
            f"upstream provider {provider.name!r} sent an embeddings answer that is not an object",
            code="upstream_bad_response",
        )
    door.upstream_model(str(answer.get("model") or model))
    usage = answer.get("usage") or {}
    door.rec.prompt_tokens = int(usage.get("prompt_tokens") or 0)
    door.rec.total_tokens = int(usage.get("total_tokens") or door.rec.prompt_tokens)
    door.rec.completion_tokens = 0
    door.rec.usage_json = orjson.dumps(usage).decode() if usage else None
    return web.Response(body=raw, content_type="application/json", headers=door.headers)


async def _gemini(
    provider: Any, texts: list[str], model: str, dimensions: int | None
) -> list[list[float]]:
    url = provider.url(model, stream=False).replace(":generateContent", ":batchEmbedContents")
    data = orjson.dumps(tr.gemini_request(texts, model=model, dimensions=dimensions))
    with translating_errors(provider.name):
        headers = await provider._headers()
        async with provider.session.post(
            url, data=data, headers=headers, timeout=provider.timeout
        ) as resp:
            await provider._raise_for_status(resp)
            answer = orjson.loads(await resp.read())
        vectors = tr.gemini_vectors(answer)
    if len(vectors) != len(texts):
        raise UpstreamError(
            f"upstream provider {provider.name!r} returned {len(vectors)} embeddings for "
            f"{len(texts)} inputs",
            code="upstream_bad_response",
        )
    return vectors
