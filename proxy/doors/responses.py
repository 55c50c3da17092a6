"""``POST /v1/responses``, ``GET`` and ``DELETE /v1/responses/{id}``: OpenAI's Responses API on
every persona (docs/design.md, "More front doors").

The request goes through the router like chat's. Each candidate of the persona's chain gets it
as one internal chat call (translators/responses_door.py) whose answer becomes a ``Response``
object or its event stream, except an ``openai`` provider with ``responses: native``, which gets
the body as it came (proxy/doors/openai_native.py). ``store`` (default true, as at OpenAI)
keeps a translated conversation in the usage store's ``responses`` table
(proxy/doors/responses_store.py), so ``previous_response_id`` continues it on any persona and
any replica; a natively served one is stored (or not) by its upstream. So a
``previous_response_id`` the proxy holds skips native candidates, and one it does not hold (the
upstream's) skips translated ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import orjson
from aiohttp import web

from proxy.doors import openai_native, responses_store
from proxy.doors.common import (
    Door,
    chunks_of,
    door_plan,
    has_native,
    open_route,
    read_json,
    route,
)
from proxy.doors.passthrough import NativeAnswer, NativeStream
from proxy.doors.responses_store import RESPONSE_STORE
from proxy.errors import InvalidRequest, ProxyError, json_error
from proxy.governance.gate import CLIENT_KEY, check_persona_allowed, estimate_chat_tokens
from proxy.handlers import resolve_persona
from proxy.router import PeekedStream, complete_once, open_stream
from proxy.routing.runtime import RUNTIME
from proxy.sse import SSE_HEADERS
from translators import responses_door as tr
from translators.base import TranslationError

log = logging.getLogger(__name__)


def setup_routes(app: web.Application) -> None:
    app.cleanup_ctx.append(responses_store.response_store_ctx)
    app.router.add_post("/v1/responses", create)
    app.router.add_post("/responses", create)
    app.router.add_get("/v1/responses/{id}", retrieve)
    app.router.add_delete("/v1/responses/{id}", delete)
    app.router.add_get("/v1/responses/{id}/input_items", input_items)


def _not_found(response_id: str) -> ProxyError:
    return ProxyError(
        f"No response found with id '{response_id}'.",
        status=404,
        type="invalid_request_error",
        code="response_not_found",
        param="response_id",
    )


def _validate(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidRequest("The request body must be a JSON object.")
    if body.get("input") is None and not body.get("previous_response_id"):
        raise InvalidRequest(
            "Missing required parameter: 'input'.", param="input", code="missing_required_parameter"
        )
    for key in ("store", "stream", "parallel_tool_calls"):
        if body.get(key) is not None and not isinstance(body[key], bool):
            raise InvalidRequest(f"Invalid type for '{key}': expected a boolean.", param=key)
    mot = body.get("max_output_tokens")
    if mot is not None and (isinstance(mot, bool) or not isinstance(mot, int)):
        raise InvalidRequest(
            "Invalid type for 'max_output_tokens': expected an integer.", param="max_output_tokens"
        )
    return body


def _sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class _Turn:
    """The translated form of one request: its chat body and the conversation it continues
    (what ``store`` saves). ``missing``: ``previous_response_id`` names a response the proxy
    does not hold (only a native upstream may know it), so no translated candidate can serve."""

    __slots__ = ("body", "history", "missing", "conversation")

    def __init__(self, body: dict[str, Any], history: list[dict[str, Any]], missing: bool) -> None:
        self.body, self.history, self.missing = body, history, missing
        self.conversation: list[dict[str, Any]] = []

    def translate(self) -> dict[str, Any]:
        if self.missing:
            raise TranslationError(
                "the previous response is not stored by the proxy", param="previous_response_id"
            )
        self.conversation = self.history + tr.input_items(self.body.get("input"))
        return tr.chat_request(self.body, self.conversation)


async def create(request: web.Request) -> web.StreamResponse:
    response_id = responses_store.new_response_id()
    door = Door(request, request_id=response_id, api="responses")
    try:
        body = _validate(await read_json(request))
        stream = door.rec.stream = bool(body.get("stream"))
        name, persona, _ = door.resolve(request, body.get("model"))
        chain = door.runtime.router.chains[name]
        native_head = openai_native.is_native(chain[0])
        native_any = native_head or has_native(door, openai_native.is_native)
        db = request.app[RESPONSE_STORE]
        previous = body.get("previous_response_id")
        history: list[dict[str, Any]] = []
        missing, native_gap = False, None
        if previous and not all(openai_native.is_native(c) for c in chain):
            stored = await db.load(str(previous))
            if stored is not None and not _visible(request, stored):
                stored = None  # another team's conversation: as if it did not exist
            if stored is None:
                if not native_any:
                    raise InvalidRequest(
                        f"Previous response with id '{previous}' not found.",
                        param="previous_response_id",
                        code="previous_response_not_found",
                    )
                missing = True
            else:
                history = stored.items + stored.response.get("output", [])
                native_gap = ("the conversation the proxy stored", "previous_response_id")
        turn = _Turn(body, history, missing)
        chat = None
        if native_head:
            await door.admit(lambda: max(1, len(orjson.dumps(body.get("input"))) // 4))
        else:
            try:
                chat = turn.translate()
            except TranslationError as exc:
                if not native_any or native_gap is not None:
                    raise InvalidRequest(exc.message, param=exc.param) from None
            await door.admit(
                lambda: (
                    estimate_chat_tokens(chat)
                    if chat
                    else max(1, len(orjson.dumps(body.get("input"))) // 4)
                )
            )
        plan = door_plan(
            door,
            is_native=openai_native.is_native,
            native=openai_native.tries(body, stream=stream),
            once=open_stream if stream else complete_once,
            chat=chat,
            translate=turn.translate,
            native_gap=native_gap,
        )
        created = int(time.time())
        store = body.get("store", True) is not False
        if stream:
            base = tr.envelope(
                body, response_id=response_id, created_at=created, model=persona.model, status=""
            )
            async with open_route(door, plan, completion_id=response_id) as opened:
                if isinstance(opened, NativeStream):
                    return await openai_native.relay_stream(request, door, opened)
                return await _stream(request, door, opened, base, name, turn, store)
        result = await route(door, plan, completion_id=response_id)
        if isinstance(result, NativeAnswer):
            return openai_native.answer(door, result)
        response = tr.response_from_completion(
            result.body, body, response_id=response_id, created_at=created, usage=result.usage
        )
        if store:
            db.save(response=response, persona=name, items=turn.conversation)
        return web.Response(
            body=orjson.dumps(response), content_type="application/json", headers=door.headers
        )
    except ProxyError as exc:
        door.rec.fail(exc, http_status=exc.status)
        if exc.status >= 500:
            log.warning("%s %s persona=%s: %s", response_id, exc.status, door.name, exc.message)
        return json_error(exc, headers=door.headers)
    except (asyncio.CancelledError, ConnectionResetError):
        door.rec.status, door.rec.http_status = "cancelled", None
        raise
    except Exception:
        log.exception("%s: internal error", response_id)
        err = ProxyError(f"The proxy hit an internal error (request {response_id}); see its log.")
        door.rec.fail(err, http_status=500)
        return json_error(err, headers=door.headers)
    finally:
        await door.finish()


async def _stream(
    request: web.Request,
    door: Door,
    peeked: PeekedStream,
    base: dict[str, Any],
    persona: str,
    turn: _Turn,
    store: bool,
) -> web.StreamResponse:
    stream = peeked.stream
    base["model"] = stream.model
    events = tr.ResponsesStream(base)
    resp = web.StreamResponse(headers={**SSE_HEADERS, **door.headers})
    await resp.prepare(request)
    write = resp.write
    finished = False
    try:
        for event in events.start() + events.feed(peeked.first):
            await write(_sse(event))
        async for chunk in chunks_of(peeked):
            for event in events.feed(chunk):
                await write(_sse(event))
        for event in events.finish(stream.usage, stream.finish_reason):
            await write(_sse(event))
        finished = True
    except ProxyError as exc:
        # After the status line: response.failed in-band (what the SDK raises on).
        door.rec.fail(exc)
        for event in events.fail(exc.code, exc.message):
            await write(_sse(event))
    finally:
        door.rec.finish_reason = stream.finish_reason
        door.rec.add_usage(stream.usage)
        door.upstream_model(stream.model)
    if finished and store:
        request.app[RESPONSE_STORE].save(
            response=events.response, persona=persona, items=turn.conversation
        )
    await resp.write_eof()
    return resp


async def retrieve(request: web.Request) -> web.Response:
    return await _stored(request, "GET")


async def delete(request: web.Request) -> web.Response:
    return await _stored(request, "DELETE")


async def _stored(request: web.Request, method: str) -> web.Response:
    """A response the proxy stored, else one the persona's native upstream stored (a
    natively served response is the upstream's: its id is the upstream's own)."""
    response_id = request.match_info["id"]
    store = request.app[RESPONSE_STORE]
    try:
        found = await store.load(response_id)
        if found is not None:
            if not _visible(request, found):
                return json_error(_not_found(response_id))
            if method == "GET":
                return web.Response(
                    body=orjson.dumps(found.response), content_type="application/json"
                )
            if await store.delete(response_id):
                return web.json_response(
                    {"id": response_id, "object": "response.deleted", "deleted": True}
                )
            return json_error(_not_found(response_id))  # deleted meanwhile
        provider = _native_provider(request)
        if provider is not None:
            answer = await openai_native.stored(provider, method, response_id)
            if answer is not None:
                return answer
    except ProxyError as exc:
        return json_error(exc)
    return json_error(_not_found(response_id))


async def input_items(request: web.Request) -> web.Response:
    """The items used to generate a stored response (the whole conversation up to it), a
    page at a time as OpenAI lists them: ``limit`` 1-100 (20), ``order`` desc (default) or asc,
    ``after`` and ``before`` item ids."""
    response_id = request.match_info["id"]
    query = request.query
    try:
        limit = _limit(query.get("limit"))
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            raise InvalidRequest("Invalid 'order': expected 'asc' or 'desc'.", param="order")
        found = await request.app[RESPONSE_STORE].load(response_id)
        if found is None:
            provider = _native_provider(request)
            answer = None
            if provider is not None:
                answer = await openai_native.stored(
                    provider, "GET", response_id, sub="/input_items", query=query
                )
            return answer or json_error(_not_found(response_id))
        if not _visible(request, found):
            return json_error(_not_found(response_id))
        items = tr.listed_items(found.items, response_id)
        if order == "desc":
            items.reverse()
        ids = [item["id"] for item in items]
        start, end = 0, len(items)
        if query.get("after") in ids:
            start = ids.index(query["after"]) + 1
        if query.get("before") in ids:
            end = ids.index(query["before"])
        page = items[start:end][:limit]
        return web.json_response(
            {
                "object": "list",
                "data": page,
                "first_id": page[0]["id"] if page else None,
                "last_id": page[-1]["id"] if page else None,
                "has_more": end - start > limit,
            }
        )
    except ProxyError as exc:
        return json_error(exc)


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if not 1 <= limit <= 100:
        raise InvalidRequest("Invalid 'limit': expected an integer from 1 to 100.", param="limit")
    return limit


def _visible(request: web.Request, stored: responses_store.Stored) -> bool:
    """A stored response is the business of the keys that may use the persona that made it:
    a key limited to some personas neither reads, continues nor deletes another's (404, as for
    an unknown id, so an id does not tell whether it exists)."""
    key = request.get(CLIENT_KEY)
    return key is None or key.personas is None or stored.persona in key.personas


def _native_provider(request: web.Request) -> Any:
    """The first ``responses: native`` provider of the chain of the persona the request names
    (header, else the default persona), if any; 403 when the client key may not use that
    persona (the lookup spends the persona's upstream credentials)."""
    runtime = request.app[RUNTIME].current
    settings = runtime.settings
    try:
        name, _ = resolve_persona(
            settings, request.headers.get(settings.server.persona_header), None
        )
    except ProxyError:  # no persona named and no default: only the proxy's own store
        return None
    native = next((c for c in runtime.router.chains[name] if openai_native.is_native(c)), None)
    if native is None:
        return None
    check_persona_allowed(request, name)
    return native.provider
