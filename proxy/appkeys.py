"""The typed keys under which the application and each request keep their shared objects.

Its own module so that handlers, the app factory and every helper module can import the keys
without importing each other (the app factory imports the route table, which imports the
handlers).
"""

from __future__ import annotations

from aiohttp import web

from proxy.config import Settings
from proxy.providers.base import Provider
from proxy.usage.store import UsageWriter

SETTINGS = web.AppKey("settings", Settings)
USAGE_WRITER = web.AppKey("usage_writer", UsageWriter)
PROVIDERS = web.AppKey("providers", dict[str, Provider])
CLIENT_NAME = web.RequestKey("client_name", str)
