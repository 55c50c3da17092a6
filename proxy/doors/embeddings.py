"""``POST /v1/embeddings``: OpenAI's embeddings request and response on every persona whose
provider has embeddings (docs/design.md, "More front doors").

* ``openai``: the body passes through to ``{base_url}/embeddings`` with the persona's model,
  and the answer comes back byte for byte (its ``usage`` is read for the row).
* ``gemini`` (Developer API): ``batchEmbedContents``, ``dimensions`` as
  ``outputDimensionality``; token counts are estimated (Gemini reports none).
* ``echo``: deterministic unit vectors from the text (translators/embeddings.py).
* anything else: skipped (``capability_missing``) for a fallback that has embeddings, else
  400 ``unsupported_capability``.

Each of those is one try of the router (proxy/router.py), so retries, the breaker per provider
and model, fallbacks down the persona's chain and attempt rows apply as on chat.
The row's ``id`` is the ``x-request-id`` (an embeddings answer carries no id of its own).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from proxy.doors.common import Door, read_json, route
from proxy.doors.passthrough import model_of, post_json
from proxy.errors import InvalidRequest, ProxyError, UpstreamError, json_error
from proxy.ids import new_id
from proxy.observe import traced
from proxy.providers.base import translating_errors
from proxy.router import Candidate, RouteContext
from translators import embeddings as tr
from translators.base import TranslationError

log = logging.getLogger(__name__)


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_post("/embeddings", embeddings)


@dataclass(slots=True)
class Embedded:
    """One try's answer: the upstream's bytes and usage (openai, relayed as they are) or the
    vectors and the prompt tokens counted for them (gemini, echo). ``model`` names the upstream
    model for the attempt row and ``x-upstream-model``."""

    model: str
    raw: bytes | None = None
    usage: dict[str, Any] | None = None
    vectors: list[list[float]] | None = None
    prompt_tokens: int = 0


class EmbeddingsPlan:
    """The embeddings tries on the persona's chain (a :class:`proxy.router.Plan`), by each
    candidate's provider type."""

    __slots__ = ("body", "texts", "tokens")

    def __init__(
        self, body: dict[str, Any], texts: list[str] | None, tokens: list[list[int]] | None
    ) -> None:
        self.body, self.texts, self.tokens = body, texts, tokens

    def gap(self, cand: Candidate) -> tuple[str, str] | None:
        kind = cand.provider.type
        if kind in ("openai", "echo"):
            return None
        if kind == "gemini" and getattr(cand.provider, "vertex", None) is None:
            return None if self.texts is not None else ("token arrays as input", "input")
        return "embeddings", "model"

    def prepare(self, cand: Candidate, ctx: RouteContext) -> Callable[[], Awaitable[Embedded]]:
        provider: Any = cand.provider
        model = cand.persona.model
        body, texts, tokens = self.body, self.texts, self.tokens
        if provider.type == "openai":
            url = provider.config.base_url.rstrip("/") + "/embeddings"
            data = orjson.dumps({**body, "model": model})

            async def openai_once() -> Embedded:
                # Pass-through: only ``model`` changes; the answer's bytes go back untouched.
                raw, answer = await post_json(
                    provider, url, data, provider._headers(), "list of embeddings"
                )
                usage = answer.get("usage")
                return Embedded(
                    model_of(answer.get("model"), model, provider.name),
                    raw=raw,
                    usage=usage if isinstance(usage, dict) else {},
                )

            return openai_once
        if provider.type == "gemini":
            assert texts is not None  # gap() skipped it otherwise

            async def gemini_once() -> Embedded:
                vectors = await _gemini(provider, texts, model, body.get("dimensions"))
                return Embedded(model, vectors=vectors, prompt_tokens=tr.estimate_tokens(texts))

            return gemini_once

        async def echo_once() -> Embedded:
            dims = body.get("dimensions") or tr.ECHO_DIMENSIONS
            inputs = texts if texts is not None else [" ".join(map(str, t)) for t in tokens or []]
            counted = (
                sum(len(t.split()) for t in texts)
                if texts is not None
                else sum(len(t) for t in tokens or [])
            )
            return Embedded(
                model, vectors=[tr.echo_vector(t, dims) for t in inputs], prompt_tokens=counted
            )

        return echo_once


async def embeddings(request: web.Request) -> web.StreamResponse:
    request_id = new_id("emb-")
    door = Door(request, request_id=request_id, api="embeddings")
    try:
        body = await read_json(request)
        try:
            texts, tokens = tr.parse_input(body)
        except TranslationError as exc:
            raise InvalidRequest(exc.message, param=exc.param) from None
        door.resolve(request, body.get("model"))
        await door.admit(
            tr.estimate_tokens(texts) if texts is not None else sum(map(len, tokens or []))
        )
        done: Embedded = await route(
            door, EmbeddingsPlan(body, texts, tokens), completion_id=request_id
        )
        door.upstream_model(done.model)
        rec = door.rec
        rec.completion_tokens = 0
        if done.raw is not None:
            usage = done.usage or {}
            rec.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            rec.total_tokens = int(usage.get("total_tokens") or rec.prompt_tokens)
            rec.usage_json = orjson.dumps(usage).decode() if usage else None
            return web.Response(
                body=done.raw, content_type="application/json", headers=door.headers
            )
        rec.prompt_tokens = rec.total_tokens = done.prompt_tokens
        answer = tr.response(
            done.vectors or [],
            model=done.model,
            prompt_tokens=done.prompt_tokens,
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


async def _gemini(
    provider: Any, texts: list[str], model: str, dimensions: int | None
) -> list[list[float]]:
    url = provider.url(model, stream=False).replace(":generateContent", ":batchEmbedContents")
    data = orjson.dumps(tr.gemini_request(texts, model=model, dimensions=dimensions))
    with translating_errors(provider.name):
        headers = traced(await provider._headers())
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
