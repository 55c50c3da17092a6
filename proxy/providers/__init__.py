"""Providers: one module per provider type, found through :mod:`proxy.providers.registry`."""

from __future__ import annotations

from proxy.providers.registry import build_provider

__all__ = ["build_provider"]
