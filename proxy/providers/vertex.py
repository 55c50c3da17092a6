"""Vertex AI access for the ``gemini`` provider: the regional host and OAuth access tokens.

Credentials are Application Default Credentials through google-auth, loaded and refreshed in a
worker thread (google-auth is blocking), under a lock, whenever the token is missing or within
:data:`TOKEN_REFRESH_MARGIN` seconds of expiry, so no request ever leaves with a token about to
lapse and the event loop never waits on the token endpoint. The token is never logged nor put in
an error message. Tests substitute the token endpoint through google-auth's own mechanism:
``GOOGLE_APPLICATION_CREDENTIALS`` naming an ``authorized_user`` file whose ``token_uri`` is a
local fake.
"""

from __future__ import annotations

import asyncio
import logging
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from proxy.errors import UpstreamError

log = logging.getLogger(__name__)

CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
TOKEN_REFRESH_MARGIN = 300.0
"""Seconds before expiry at which a Vertex access token is replaced."""


def vertex_host(location: str) -> str:
    """The Vertex AI endpoint for a location (docs/wire-formats.md 3.1)."""
    if location == "global":
        return "https://aiplatform.googleapis.com"
    if location in ("us", "eu"):
        return f"https://aiplatform.{location}.rep.googleapis.com"
    return f"https://{location}-aiplatform.googleapis.com"


def _default_credentials() -> Any:
    """Application Default Credentials with the cloud-platform scope (blocking: a thread)."""
    import google.auth  # noqa: PLC0415 (only Vertex configs pay for the import)

    credentials, _project = google.auth.default(scopes=[CLOUD_PLATFORM_SCOPE])
    return credentials


class VertexCredentials:
    """A Vertex AI access token, refreshed before it expires, without blocking the event loop.

    Args:
        provider: The provider's name, for error messages.
        loader: Returns google-auth credentials; Application Default Credentials by default.
            Called in a worker thread.
        margin: Seconds before expiry at which the token is replaced.
    """

    def __init__(
        self,
        provider: str,
        *,
        loader: Callable[[], Any] | None = None,
        margin: float = TOKEN_REFRESH_MARGIN,
    ) -> None:
        self.provider = provider
        self._loader = loader or _default_credentials
        self._margin = margin
        self._credentials: Any = None
        self._stale = True
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        """Forget the token (the upstream refused it); the next request refreshes."""
        self._stale = True

    async def headers(self) -> dict[str, str]:
        """``Authorization`` (and ``x-goog-user-project`` when the credentials name a quota
        project) for one request."""
        if not self._fresh():
            async with self._lock:
                if not self._fresh():  # another request may have refreshed meanwhile
                    await asyncio.to_thread(self._refresh)
        headers: dict[str, str] = {}
        self._credentials.apply(headers)
        return headers

    def _fresh(self) -> bool:
        creds = self._credentials
        if self._stale or creds is None or not getattr(creds, "token", None):
            return False
        expiry = getattr(creds, "expiry", None)
        if expiry is None:
            return True
        now = datetime.now(UTC)
        if expiry.tzinfo is None:  # google-auth keeps naive UTC datetimes
            now = now.replace(tzinfo=None)
        return bool((expiry - now).total_seconds() > self._margin)

    def _refresh(self) -> None:
        """Load (first time) and refresh the credentials; runs in a worker thread."""
        from google.auth import exceptions  # noqa: PLC0415

        try:
            if self._credentials is None:
                self._credentials = self._loader()
            self._credentials.refresh(UrllibRequest())
        except exceptions.DefaultCredentialsError as exc:
            raise UpstreamError(
                f"provider {self.provider!r} uses Vertex AI but no Google credentials were "
                "found: set GOOGLE_APPLICATION_CREDENTIALS to a service-account or "
                "authorized-user file, run 'gcloud auth application-default login', or run "
                f"on Google Cloud with a service account ({_first_line(exc)})",
                code="upstream_auth_failed",
            ) from None
        except exceptions.GoogleAuthError as exc:
            # Only the exception's first argument: later ones may hold the token response.
            raise UpstreamError(
                f"provider {self.provider!r} could not get a Vertex AI access token: "
                f"{type(exc).__name__}: {_first_line(exc)}",
                code="upstream_auth_failed",
            ) from None
        self._stale = False
        log.info("provider %r: Vertex AI access token refreshed", self.provider)


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else type(exc).__name__
    return text.splitlines()[0][:300] if text else type(exc).__name__


class _Response:
    """The google-auth transport response for :class:`UrllibRequest`."""

    def __init__(self, status: int, headers: dict[str, str], data: bytes) -> None:
        self.status = status
        self.headers = headers
        self.data = data


class UrllibRequest:
    """A google-auth transport on the standard library (``google.auth.transport.Request``).

    google-auth's own transports need ``requests`` or ``urllib3``, which the proxy does not
    otherwise depend on; token refreshes are rare and run in a thread, so ``urllib`` suffices.
    """

    def __call__(
        self,
        url: str,
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
        **_kwargs: Any,
    ) -> _Response:
        from google.auth import exceptions  # noqa: PLC0415

        request = urllib.request.Request(url, data=body, headers=headers or {}, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout or 30) as resp:  # noqa: S310
                return _Response(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as exc:
            return _Response(exc.code, dict(exc.headers), exc.read())
        except (urllib.error.URLError, OSError) as exc:
            raise exceptions.TransportError(  # type: ignore[no-untyped-call]
                f"cannot reach {url}: {exc}"
            ) from exc
