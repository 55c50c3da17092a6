"""The official OpenAI JavaScript SDK (``openai`` from npm, pinned in tests/js/package-lock.json)
on every persona type. One node run (tests/js/client.mjs) walks every persona; the tests check
what it printed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tests.clients.conftest import PERSONA_TYPES, Matrix, PersonaEnv
from tests.clients.scenario import TOOL_RESULT, WEATHER_ARGS, check_upstream_round_trips
from tests.clients.test_openai_sdk import check_chunks, check_headers

NODE = shutil.which("node")
JS_DIR = Path(__file__).resolve().parents[1] / "js"
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js 20+ needed)")


def require_js_sdk() -> None:
    if not (JS_DIR / "node_modules" / "openai" / "package.json").is_file():
        pytest.fail(
            "tests/js/node_modules has no 'openai': run `npm ci` in tests/js "
            "(./scripts/test.sh does it)"
        )


@dataclass
class JsRun:
    result: dict[str, Any]
    marks: dict[str, int]


@pytest.fixture(scope="module")
def js_run(matrix: Matrix) -> JsRun:
    require_js_sdk()
    marks = {name: env.mark() for name, env in matrix.envs.items()}
    proc = subprocess.run(
        [NODE, "client.mjs", *(k.persona for k in PERSONA_TYPES)],
        cwd=JS_DIR,
        env={**os.environ, "PERSONA_PROXY_URL": matrix.proxy.url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return JsRun(json.loads(proc.stdout), marks)


@pytest.fixture
def js(js_run: JsRun, persona_env: PersonaEnv) -> dict[str, Any]:
    return js_run.result["personas"][persona_env.persona]


def completion(data: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(data)


def test_plain_by_header(persona_env, js):
    resp = completion(js["plain"])
    assert resp.choices[0].message.content == "Hello from JavaScript"
    assert resp.model == persona_env.upstream_model
    check_headers(persona_env, js["headers"], resp.id)
    assert persona_env.row(resp.id)["persona"] == persona_env.persona


def test_streaming(persona_env, js):
    chunks = [ChatCompletionChunk.model_validate(c) for c in js["stream"]]
    check_chunks(persona_env, chunks, "streamed from JavaScript", usage=True)


def test_stream_helper(persona_env, js):
    deltas = js["helper"]["deltas"]
    assert "".join(deltas) == "the stream helper" and len(deltas) > 1
    final = completion(js["helper"]["final"])
    assert final.choices[0].message.content == "the stream helper"
    assert final.choices[0].finish_reason == "stop"
    assert final.model == persona_env.upstream_model


def check_call(call: Any) -> None:
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == WEATHER_ARGS


def test_tools_round_trip(persona_env, js, js_run):
    first, second = completion(js["tools"]["first"]), completion(js["tools"]["second"])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    check_call(call)
    assert second.choices[0].message.content == TOOL_RESULT
    streamed_first = completion(js["streamedTools"]["first"])
    [streamed_call] = streamed_first.choices[0].message.tool_calls
    check_call(streamed_call)
    assert [(e["name"], json.loads(e["arguments"])) for e in js["streamedTools"]["argsDone"]] == [
        ("get_weather", WEATHER_ARGS)
    ]
    assert completion(js["streamedTools"]["second"]).choices[0].message.content == TOOL_RESULT
    mark = js_run.marks[persona_env.kind.name]
    check_upstream_round_trips(persona_env, mark, [call.id, streamed_call.id], only=False)


def test_models(js_run):
    result = js_run.result
    assert [m["id"] for m in result["models"]] == [k.persona for k in PERSONA_TYPES]
    assert [m["owned_by"] for m in result["models"]] == [k.name for k in PERSONA_TYPES]
    assert result["retrieved"]["id"] == PERSONA_TYPES[0].persona


def test_unknown_persona_is_not_found(js_run):
    assert js_run.result["unknownPersona"] == {
        "name": "NotFoundError",
        "status": 404,
        "code": "persona_not_found",
        "type": "invalid_request_error",
    }
