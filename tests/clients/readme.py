"""The README's code blocks, as the tests run them.

The snippets are written for a proxy on the default address serving the built-in ``echo``
persona. The tests run them unchanged except for two placeholders, substituted textually:
:data:`README_URL` (the proxy's address) and the persona name ``echo`` where the snippet names a
persona (``"echo"`` in code, ``X-Persona: echo`` in a curl header).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://127.0.0.1:8080"
README_PERSONA = "echo"
CLIENTS_START, CLIENTS_END = "<!-- clients:start -->", "<!-- clients:end -->"
# What every client snippet prints: the answer to its first message, then the streamed second.
EXPECTED_OUTPUT = "Hello, proxy!\nStream this, please\n"

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    """One fenced code block: its language tag, code, line in README.md and heading."""

    lang: str
    code: str
    line: int
    heading: str

    @property
    def id(self) -> str:
        return f"{self.heading or 'top'}:L{self.line}".replace(" ", "-")

    def for_proxy(self, url: str, persona: str) -> str:
        """The code with the placeholders replaced; fails if the snippet has none to replace."""
        assert README_URL in self.code, f"README.md:{self.line} must use {README_URL}"
        code = self.code.replace(README_URL, url)
        return re.sub(
            rf'(?<=["\']){README_PERSONA}(?=["\'])|(?<=X-Persona: ){README_PERSONA}\b',
            persona,
            code,
        )


def blocks(text: str | None = None) -> list[Block]:
    """Every fenced block of README.md, in order."""
    text = README.read_text() if text is None else text
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        headings = re.findall(r"^#+ (.+)$", text[: m.start()], re.M)
        out.append(Block(m.group(1), m.group(2), line, headings[-1] if headings else ""))
    return out


def client_blocks() -> list[Block]:
    """The blocks of the "use it from your client" section (between the markers)."""
    text = README.read_text()
    start, end = text.index(CLIENTS_START), text.index(CLIENTS_END)
    return [b for b in blocks() if start < _offset(text, b) < end]


def curl_blocks() -> list[Block]:
    """Every bash block of README.md that is a curl command (the quick start's too)."""
    return [b for b in blocks() if b.lang == "bash" and b.code.lstrip().startswith("curl ")]


def _offset(text: str, block: Block) -> int:
    return sum(len(line) + 1 for line in text.split("\n")[: block.line - 1])
