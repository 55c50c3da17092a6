"""The "use it from your client" section of README.md: every snippet runs, as written, on every
persona type (placeholders: see tests/clients/readme.py). curl commands: test_curl.py."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import tempfile

import pytest

from tests.clients.readme import (
    CLIENTS_END,
    CLIENTS_START,
    EXPECTED_OUTPUT,
    README,
    README_PERSONA,
    client_blocks,
)
from tests.clients.test_js_sdk import JS_DIR, NODE, require_js_sdk

BLOCKS = client_blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
JS = [b for b in BLOCKS if b.lang == "js"]


def test_section_has_every_client():
    text = README.read_text()
    assert text.count(CLIENTS_START) == 1 and text.count(CLIENTS_END) == 1
    assert [b.heading for b in BLOCKS if b.lang != "bash"] == [
        "OpenAI Python SDK",
        "OpenAI JavaScript SDK",
        "LangChain",
        "LlamaIndex",
    ]
    assert {b.heading for b in BLOCKS if b.lang == "bash"} == {"curl"}
    # Nothing in the section escapes a test: Python and JS run here, bash in test_curl.py.
    assert {b.lang for b in BLOCKS} == {"python", "js", "bash"}
    for b in BLOCKS:
        if b.lang != "bash":
            assert f'"{README_PERSONA}"' in b.code, f"README.md:{b.line} names no persona"


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_snippet(persona_env, block):
    code = block.for_proxy(persona_env.proxy.url, persona_env.persona)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, f"README.md:{block.line}", "exec"), {"__name__": "readme_snippet"})
    assert out.getvalue() == EXPECTED_OUTPUT


@pytest.mark.skipif(NODE is None, reason="node is not installed (Node.js 20+ needed)")
@pytest.mark.parametrize("block", JS, ids=lambda b: b.id)
def test_js_snippet(persona_env, block):
    require_js_sdk()
    code = block.for_proxy(persona_env.proxy.url, persona_env.persona)
    # Inside tests/js so that `import "openai"` resolves to tests/js/node_modules.
    with tempfile.TemporaryDirectory(dir=JS_DIR, prefix=".readme-") as tmp:
        script = os.path.join(tmp, "hello.mjs")
        with open(script, "w") as f:
            f.write(code)
        proc = subprocess.run(
            [shutil.which("node") or "node", script], capture_output=True, text=True, timeout=30
        )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == EXPECTED_OUTPUT
