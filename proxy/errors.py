"""The error tree and the OpenAI error envelope.

Every error a client sees, whatever raised it, is ``{"error": {"message", "type", "param",
"code"}}`` with one of these statuses::

    ProxyError                      500 server_error
    ├── InvalidRequest              400 invalid_request_error  (ours, or the upstream's 400/422)
    │   └── PersonaRequired         400 code persona_required
    ├── AuthenticationFailed        401 code invalid_api_key   (the client's key to the proxy)
    ├── PersonaNotFound             404 code persona_not_found
    ├── PayloadTooLarge             413 code request_too_large
    └── UpstreamError               502 upstream_error         (refused credentials, unknown model,
        │                                                        5xx, unparseable answer)
        ├── UpstreamRateLimited     429 rate_limit_error       (Retry-After passed on)
        ├── UpstreamUnavailable     503 service_unavailable_error (503, Anthropic 529, our own
        │                                                        concurrency limit)
        └── UpstreamTimeout         504 timeout_error          (connect, first byte, idle, total)

Messages never contain credentials: every message is redacted when the error is made
(``proxy/redact.py``), since some upstreams echo the key they were sent in their own message.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from proxy.redact import redact


class ProxyError(Exception):
    status: int = 500
    type: str = "server_error"
    code: str | None = None
    # The upstream's HTTP status when this error is the upstream's verdict (set by
    # upstream_status_error); the router tells an upstream 400 (fall back) from our own (never).
    upstream_status: int | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        type: str | None = None,  # noqa: A002 (mirrors the envelope's field name)
        headers: dict[str, str] | None = None,
    ) -> None:
        message = redact(message)
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        self.headers = headers or {}

    def envelope(self) -> dict[str, Any]:
        return error_envelope(
            redact(self.message), type=self.type, param=self.param, code=self.code
        )

    def body(self) -> bytes:
        return orjson.dumps(self.envelope())


class InvalidRequest(ProxyError):
    status = 400
    type = "invalid_request_error"


class PersonaRequired(InvalidRequest):
    code = "persona_required"


class AuthenticationFailed(ProxyError):
    status = 401
    type = "invalid_request_error"
    code = "invalid_api_key"


class PersonaNotFound(ProxyError):
    status = 404
    type = "invalid_request_error"
    code = "persona_not_found"


class PayloadTooLarge(ProxyError):
    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamError(ProxyError):
    status = 502
    type = "upstream_error"


class UpstreamRateLimited(UpstreamError):
    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"


class UpstreamUnavailable(UpstreamError):
    status = 503
    type = "service_unavailable_error"
    code = "server_is_overloaded"


class UpstreamTimeout(UpstreamError):
    status = 504
    type = "timeout_error"
    code = "upstream_timeout"


def error_envelope(
    message: str,
    *,
    type: str,
    param: str | None = None,
    code: str | None = None,  # noqa: A002
) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def upstream_status_error(
    *,
    provider: str,
    status: int,
    message: str,
    retry_after: str | None = None,
    upstream_type: str | None = None,
) -> ProxyError:
    """Map an upstream HTTP error status to our error, per the error table (docs/design.md, Errors).

    Args:
        provider: The provider's name in the config (for the operator reading the message).
        status: The upstream HTTP status.
        message: The upstream's own error message (already free of secrets).
        retry_after: The upstream's ``Retry-After`` in seconds, if it gave one.
        upstream_type: The upstream's error type, kept in the message for diagnosis.
    """
    err = _upstream_status_error(provider, status, message, retry_after, upstream_type)
    err.upstream_status = status
    return err


def _upstream_status_error(
    provider: str,
    status: int,
    message: str,
    retry_after: str | None,
    upstream_type: str | None,
) -> ProxyError:
    detail = f"{message}" if message else "(no message)"
    where = f"upstream provider {provider!r} answered HTTP {status}"
    if upstream_type:
        where += f" ({upstream_type})"
    if status in (400, 422):
        return InvalidRequest(message or f"{where}: the request was rejected")
    if status == 413:
        return PayloadTooLarge(f"{where}: {detail}")
    if status == 429:
        headers = {"Retry-After": retry_after} if retry_after else {}
        return UpstreamRateLimited(f"{where}: {detail}", headers=headers)
    if status in (401, 403):
        return UpstreamError(
            f"{where}: it refused the proxy's credentials. Check the API key configured for "
            f"provider {provider!r}. Upstream said: {detail}",
            code="upstream_auth_failed",
        )
    if status == 404:
        return UpstreamError(
            f"{where}: not found; the persona's model may not exist there. Upstream said: {detail}",
            code="upstream_not_found",
        )
    if status in (503, 529):
        headers = {"Retry-After": retry_after} if retry_after else {}
        return UpstreamUnavailable(f"{where}: {detail}", headers=headers)
    if status == 504:
        return UpstreamTimeout(f"{where}: {detail}")
    return UpstreamError(f"{where}: {detail}", code="upstream_error")


def json_error(exc: ProxyError, *, headers: dict[str, str] | None = None) -> web.Response:
    """``exc`` as a JSON error response (its status, envelope and headers, plus ``headers``)."""
    resp = web.Response(
        status=exc.status,
        body=exc.body(),
        content_type="application/json",
        headers={**exc.headers, **(headers or {})},
    )
    if exc.status == 408:  # the body never arrived (proxy/wire.py): do not wait for the rest
        resp.force_close()
    return resp
