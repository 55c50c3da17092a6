"""Provider types, looked up by the ``type`` in the config.

Modules are imported on first use so that optional dependencies (the Claude Agent SDK,
google-auth) cost nothing for configs that do not use them.
"""

from __future__ import annotations

import importlib
from typing import Any

import aiohttp

from proxy.providers.base import Provider

PROVIDER_TYPES: dict[str, str] = {
    "openai": "proxy.providers.openai:OpenAIProvider",
    "anthropic": "proxy.providers.anthropic:AnthropicProvider",
    "gemini": "proxy.providers.gemini:GeminiProvider",
    "claude-agent": "proxy.providers.claude_agent:ClaudeAgentProvider",
    "echo": "proxy.providers.echo:EchoProvider",
}


def build_provider(name: str, config: Any, session: aiohttp.ClientSession) -> Provider:
    module_name, _, class_name = PROVIDER_TYPES[config.type].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(name, config, session)
