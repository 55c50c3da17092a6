"""Property-based fuzz of client request bodies, through the wire: a malformed body is a 400
naming where (``param``), never a 5xx, on every persona type's request translator.

Hypothesis mutates rich, valid chat bodies (replace any value anywhere with any JSON value,
delete a key, add a known key with a wrong value, nest deeply) and sends them through the proxy
to the echo persona and to openai, anthropic and gemini personas whose fake upstreams always
answer well, so any non-2xx comes from the proxy's own validation and translation.

Bounded for CI (``FUZZ_EXAMPLES`` per persona, default 120, derandomised); run more with
``FUZZ_EXAMPLES=2000 FUZZ_RANDOM=1 pytest -s tests/test_fuzz_requests.py``.
"""

from __future__ import annotations

import copy
import os
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fakes import anthropic as anthropic_fake
from tests.fakes import gemini as gemini_fake
from tests.fakes import openai as openai_fake
from tests.fakes.server import FakeUpstream, Recorded, Reply

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "120"))
PERSONAS = ("echo", "openai", "anthropic", "gemini")
#: Statuses per persona, printed at the end (``pytest -s``) for the hardening report.
SEEN: dict[str, Counter[int]] = {p: Counter() for p in PERSONAS}

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
BASES: list[dict[str, Any]] = [
    {
        "model": "x",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "hello there"},
        ],
        "temperature": 0.5,
        "max_tokens": 50,
        "stop": ["END"],
    },
    {
        "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "Rules."}]},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0K"}},
                ],
            },
        ],
        "reasoning_effort": "low",
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": {"type": "object", "properties": {}}},
        },
    },
    {
        "messages": [
            {"role": "user", "content": "weather in Paris?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
        ],
        "tools": [TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    },
    {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "read this"},
                    {
                        "type": "file",
                        "file": {"filename": "a.pdf", "file_data": "data:;base64,AA=="},
                    },
                    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
                ],
            }
        ],
        "n": 1,
        "seed": 3,
        "top_p": 0.9,
        "response_format": {"type": "json_object"},
        "tool_choice": "auto",
        "tools": [TOOL],
    },
]
KEYS = [
    "messages", "role", "content", "type", "text", "image_url", "url", "file", "file_data",
    "filename", "tool_calls", "id", "function", "name", "arguments", "tool_call_id", "tools",
    "parameters", "tool_choice", "reasoning_effort", "response_format", "json_schema", "schema",
    "stream", "stream_options", "include_usage", "n", "stop", "max_tokens", "temperature",
    "input_audio", "thinking_blocks", "modalities", "logit_bias", "metadata", "user", "detail",
    "properties", "required", "items", "$ref", "$defs", "anyOf", "enum", "refusal",
]  # fmt: skip

leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=6)
    | st.sampled_from(["user", "assistant", "tool", "text", "function", "image_url", "file", ""])
)
json_values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def nested(depth: int, leaf: Any, kind: str) -> Any:
    value = leaf
    for _ in range(depth):
        value = [value] if kind == "list" else {"a": value}
    return value


deep_values = st.builds(
    nested, st.integers(50, 400), json_values, st.sampled_from(["list", "dict"])
)
mutation = st.tuples(
    st.integers(min_value=0, max_value=10_000),
    st.sampled_from(["replace", "replace", "replace", "delete", "add", "deep"]),
    json_values,
    st.sampled_from(KEYS),
    deep_values,
)


def _paths(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _paths(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _paths(v, (*path, i))


def mutate(body: dict[str, Any], muts: list[tuple[int, str, Any, str, Any]]) -> Any:
    root: Any = copy.deepcopy(body)
    for index, op, value, key, deep in muts:
        paths = list(_paths(root))
        path = paths[index % len(paths)]
        if not path:
            if op == "replace" and index % 7 == 0:
                root = value  # the whole body
            continue
        parent = root
        for part in path[:-1]:
            parent = parent[part]
        last = path[-1]
        if op == "replace":
            parent[last] = value
        elif op == "deep":
            parent[last] = deep
        elif op == "delete":
            del parent[last]
        elif isinstance(parent[last], dict):
            parent[last][key] = value
        elif isinstance(parent[last], list):
            parent[last].append(value)
    return root


class AlwaysFine(FakeUpstream):
    """Answers every request well in its wire format, whatever it asked."""

    def __init__(self, wire: str) -> None:
        super().__init__()
        self.wire = wire

    async def _handle(self, request: Any) -> Any:
        body = await request.read()
        stream = b'"stream":true' in body or "streamGenerateContent" in request.path
        self.replies.append(self._reply(stream))
        self.requests.clear()  # keep memory flat over thousands of examples
        return await super()._handle(request)

    def _reply(self, stream: bool) -> Reply:
        if self.wire == "anthropic":
            return anthropic_fake.anthropic_reply("plain_text", stream=stream)
        if self.wire == "gemini":
            body = gemini_fake.text_response("Hello")
            return Reply(events=[(None, body)]) if stream else Reply(json=body)
        if stream:
            return openai_fake.stream_reply(["Hello"])
        return openai_fake.completion_reply("Hello")


@pytest.fixture(scope="module")
def fuzz_proxy(bg_loop: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from proxy.app import create_app
    from proxy.config import settings_from_dict

    fakes = {w: AlwaysFine(w) for w in ("openai", "anthropic", "gemini")}
    for fake in fakes.values():
        bg_loop.run(fake.start())
    config = {
        "usage": {"database": str(tmp_path_factory.mktemp("fuzz") / "usage.db")},
        "providers": {
            "echo": {"type": "echo"},
            "openai": {
                "type": "openai",
                "api_key": "sk-f",
                "base_url": fakes["openai"].url + "/v1",
            },
            "anthropic": {"type": "anthropic", "api_key": "k", "base_url": fakes["anthropic"].url},
            "gemini": {"type": "gemini", "api_key": "k", "base_url": fakes["gemini"].url},
        },
        "personas": {
            "echo": {"provider": "echo", "model": "echo-1"},
            "openai": {"provider": "openai", "model": "gpt-4.1-mini"},
            "anthropic": {"provider": "anthropic", "model": "claude-sonnet-4-5"},
            "gemini": {"provider": "gemini", "model": "gemini-2.5-flash"},
        },
    }
    app = create_app(settings_from_dict(config, env={}, source="fuzz"))
    runner, url = bg_loop.serve(app)
    yield url
    # Rows are not counted here: Hypothesis seeds the global `random` for every example, and
    # the proxy (same process) draws its request ids from it, so ids repeat across examples.
    bg_loop.run(runner.cleanup())
    sent = sum(sum(c.values()) for c in SEEN.values())
    print(f"\nfuzz: {sent} fuzzed requests sent")
    for fake in fakes.values():
        bg_loop.run(fake.stop())
    print("\nfuzz statuses per persona:", {p: dict(c) for p, c in SEEN.items()})


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=20) as c:
        yield c


@pytest.mark.parametrize("persona", PERSONAS)
def test_fuzzed_bodies_get_200_or_400_naming_the_field(
    fuzz_proxy: str, client: httpx.Client, persona: str
) -> None:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=not os.environ.get("FUZZ_RANDOM"),
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(base=st.sampled_from(BASES), muts=st.lists(mutation, min_size=1, max_size=3))
    def run(base: dict[str, Any], muts: list[Any]) -> None:
        body = mutate(base, muts)
        resp = client.post(
            fuzz_proxy + "/v1/chat/completions",
            content=_dumps(body),
            headers={"X-Persona": persona, "Content-Type": "application/json"},
        )
        SEEN[persona][resp.status_code] += 1
        assert resp.status_code in (200, 400), (resp.status_code, resp.text[:500], body)
        if resp.status_code == 400:
            err = resp.json()["error"]
            assert err["type"] == "invalid_request_error"
            assert err["message"]

    run()


def _dumps(body: Any) -> bytes:
    import json

    # json, not orjson: orjson refuses to write what is nested deeper than 254 levels, and a
    # client may well send that.
    return json.dumps(body).encode()


def test_mutation_reaches_nested_places() -> None:
    """The mutator can reach a part inside a message inside the body (the fuzz is not shallow)."""
    body = mutate(BASES[1], [(6, "replace", 1, "text", None)])
    assert body != BASES[1]
    assert isinstance(Recorded, type)


def _user(content: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": content}]}


_CALL = {"role": "assistant", "tool_calls": [{"id": [1], "function": {"name": "f"}}]}


def _tool(parameters: Any) -> list[dict[str, Any]]:
    return [{"type": "function", "function": {"name": "f", "parameters": parameters}}]


ISSUE_EXAMPLES: list[tuple[str, dict[str, Any], str]] = [
    ("role object", {"messages": [{"role": {}, "content": "hi"}]}, "messages[0].role"),
    ("text list", _user([{"type": "text", "text": ["a"]}]), "messages[0].content[0].text"),
    ("text number", _user([{"type": "text", "text": 5}]), "messages[0].content[0].text"),
    ("effort list", {**_user("hi"), "reasoning_effort": []}, "reasoning_effort"),
    ("effort object", {**_user("hi"), "reasoning_effort": {}}, "reasoning_effort"),
    ("call id list", {"messages": [_CALL]}, "messages[0].tool_calls[0].id"),
    ("file number", _user([{"type": "file", "file": 5}]), "messages[0].content[0].file"),
    (
        "tool params 130 deep",
        {
            **_user("hi"),
            "tools": _tool(nested(130, 1, "dict")),
        },
        "tools[0].function.parameters",
    ),
    ("field 300 deep", {**_user("hi"), "metadata": nested(300, 1, "list")}, "metadata"),
    ("n huge", {**_user("hi"), "n": 10**6}, "n"),
    ("schema required null", {
        **_user("hi"),
        "tools": _tool({"required": None}),
    }, "tools[0].function.parameters.required"),
]  # fmt: skip


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(
    ("body", "param"), [e[1:] for e in ISSUE_EXAMPLES], ids=[e[0] for e in ISSUE_EXAMPLES]
)
def test_issue_examples_are_400s_naming_the_field(
    fuzz_proxy: str, client: httpx.Client, persona: str, body: dict[str, Any], param: str
) -> None:
    resp = client.post(
        fuzz_proxy + "/v1/chat/completions",
        content=_dumps(body),
        headers={"X-Persona": persona, "Content-Type": "application/json"},
    )
    assert resp.status_code == 400, resp.text
    err = resp.json()["error"]
    assert err["param"].startswith(param), err


def test_nested_min_items_cannot_make_echo_build_billions(
    fuzz_proxy: str, client: httpx.Client
) -> None:
    """`minItems` multiply when nested: the echo persona's example stays bounded (fast, small)."""
    import time

    schema: dict[str, Any] = {"type": "string", "minLength": 100_000}
    for _ in range(4):
        schema = {"type": "array", "minItems": 100_000, "items": schema}
    body = {
        **_user("hi"),
        "response_format": {"type": "json_schema", "json_schema": {"name": "a", "schema": schema}},
    }
    started = time.monotonic()
    resp = client.post(
        fuzz_proxy + "/v1/chat/completions",
        content=_dumps(body),
        headers={"X-Persona": "echo", "Content-Type": "application/json"},
    )
    assert resp.status_code == 200, resp.text[:300]
    assert time.monotonic() - started < 5
    assert len(resp.content) < 50 * 1024 * 1024
