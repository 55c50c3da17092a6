"""Observability: the one hook every front door calls when a request is over.

``request_finished(app, rec)`` is called once per client request, from the handler's
``finally`` (success, error, or a client that went away). It queues the usage row and hands the
finished :class:`~proxy.usage.store.UsageRecord` to the observers configured for this app
(metrics, access log); each observer is a plain callable built once at startup, so with
everything off the hook costs one queue put and one empty loop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from aiohttp import web

from proxy.app import USAGE_WRITER
from proxy.usage.store import UsageRecord

Observer = Callable[[UsageRecord], None]
log = logging.getLogger(__name__)

OBSERVERS = web.AppKey("observers", list[Observer])


def request_finished(app: web.Application, rec: UsageRecord) -> None:
    """Queue ``rec``'s usage row and feed the observers; never raises into the request."""
    app[USAGE_WRITER].record(rec)
    for observe in app.get(OBSERVERS, ()):
        try:
            observe(rec)
        except Exception:  # an observer's bug must not turn a served request into a 500
            log.exception("observer %r failed on request %s", observe, rec.id)
