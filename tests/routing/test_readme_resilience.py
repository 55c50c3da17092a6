"""README "Resilience": its worked config loads, and its chain is what the text says."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from proxy.config import settings_from_dict
from proxy.router import fallback_chain

README = Path(__file__).resolve().parents[2] / "README.md"


def test_worked_config_loads_and_chains_claude_gpt_gemini():
    text = README.read_text()
    block = re.search(
        r"<!-- resilience:start -->\n```yaml\n(.*?)```\n<!-- resilience:end -->", text, re.S
    )
    assert block, "README lost its resilience config block"
    env = {"ANTHROPIC_API_KEY": "a" * 10, "OPENAI_API_KEY": "o" * 10, "GEMINI_API_KEY": "g" * 10}
    settings = settings_from_dict(yaml.safe_load(block.group(1)), env=env, source="README")
    assert fallback_chain(settings, "coder") == ["coder", "coder-gpt", "coder-gemini"]
    types = [
        settings.providers[settings.personas[p].provider].type
        for p in ("coder", "coder-gpt", "coder-gemini")
    ]
    assert types == ["anthropic", "openai", "gemini"]
    assert settings.personas["coder"].retries == 1
