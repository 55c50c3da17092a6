"""curl: every curl command in README.md, run as written on every persona type (only the
address and the persona name substituted), its output checked byte by byte."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from openai.types.chat import ChatCompletion

from tests.clients.checks import check_sse, stream_text
from tests.clients.conftest import PERSONA_TYPES
from tests.clients.readme import curl_blocks

CURL = shutil.which("curl")
pytestmark = pytest.mark.skipif(CURL is None, reason="curl is not installed")


def run_curl(command: str) -> bytes:
    proc = subprocess.run(["bash", "-c", command], capture_output=True, timeout=30)
    assert proc.returncode == 0, proc.stderr.decode()
    return proc.stdout


def test_readme_has_the_curl_commands():
    commands = [b.code for b in curl_blocks()]
    assert any('"stream": true' in c for c in commands)
    assert any("/v1/models" in c for c in commands)
    assert any('"stream"' not in c and "/chat/completions" in c for c in commands)


@pytest.mark.parametrize("block", curl_blocks(), ids=lambda b: b.id)
def test_readme_curl(persona_env, block):
    command = block.for_proxy(persona_env.proxy.url, persona_env.persona)
    out = run_curl(command)
    if "/chat/completions" in command and '"stream": true' in command:
        usage = '"include_usage": true' in command
        chunks = check_sse(out, usage=usage)
        assert stream_text(chunks) == "Stream this, please"
        assert chunks[0]["model"] == persona_env.upstream_model
        assert persona_env.row(chunks[0]["id"])["persona"] == persona_env.persona
    elif "/chat/completions" in command:
        completion = ChatCompletion.model_validate_json(out)
        assert completion.choices[0].message.content == "Hello, proxy!"
        assert completion.model == persona_env.upstream_model
        assert persona_env.row(completion.id)["persona"] == persona_env.persona
    elif command.rstrip().endswith("/v1/models"):
        listing = json.loads(out)
        assert listing["object"] == "list"
        assert [m["id"] for m in listing["data"]] == [k.persona for k in PERSONA_TYPES]
        assert all(m["object"] == "model" for m in listing["data"])
    else:
        pytest.fail(f"README.md:{block.line}: no check for this curl command; add one here")
