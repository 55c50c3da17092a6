"""The cached linear pricing must agree with genai-prices itself, call after call."""

from __future__ import annotations

import random

import pytest
from genai_prices import Usage, calc_price

from proxy.usage.pricing import price_usd

MODELS = [
    ("anthropic", "anthropic", "claude-sonnet-4-5"),
    ("anthropic", "anthropic", "claude-haiku-4-5"),
    ("openai", "openai", "gpt-4.1-mini"),
    ("openai", "openai", "gpt-4o"),
    ("gemini", "google", "gemini-2.5-flash"),
    ("gemini", "google", "gemini-2.5-pro"),  # priced in tiers by prompt size
]


@pytest.mark.parametrize(("ptype", "provider_id", "model"), MODELS)
def test_matches_genai_prices(ptype, provider_id, model):
    rng = random.Random(7)
    for _ in range(40):
        prompt = rng.randrange(0, 400_000)
        cached = rng.randrange(0, prompt + 1)
        completion = rng.randrange(0, 20_000)
        ours = price_usd(
            provider_type=ptype,
            model=model,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cached_tokens=cached,
        )
        exact = calc_price(
            Usage(input_tokens=prompt, output_tokens=completion, cache_read_tokens=cached or None),
            model,
            provider_id=provider_id,
        ).total_price
        assert ours == pytest.approx(float(exact), rel=1e-9, abs=1e-12)


def test_unknown_model_is_none():
    assert (
        price_usd(
            provider_type="openai", model="no-such-model", prompt_tokens=1, completion_tokens=1
        )
        is None
    )
    assert (
        price_usd(provider_type="echo", model="echo-1", prompt_tokens=1, completion_tokens=1)
        is None
    )
