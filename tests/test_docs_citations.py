"""Every "why" comment cites a document that is in the repository, and the section it names.

Comments in ``proxy/``, ``translators/``, ``tests/`` and ``bench/`` cite ``docs/<file>.md`` with a
section number (``docs/wire-formats.md 4.8``, list items as ``4.2.3``), a quoted section title
(``docs/design.md, "Errors"``) or a decision (``docs/decisions.md D7``). A citation of a file
outside the repository, or of a section that does not exist, fails here with the place to fix.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SCANNED = ("proxy", "translators", "tests", "bench")
SUFFIXES = {".py", ".md", ".sh", ".mjs", ".yaml"}

#: Documents that lived outside the repository before docs/ existed.
OUTSIDE = re.compile(
    r"\.\./shared|shared/reference|(?<![\w/-])reference/|(?<![\w/.])DESIGN(\.md)?\b"
    r"|style-anchors|(?<![\w/])(wire-formats|peers|claude-agent-sdk)(\.md)?(?= \d|\.md)"
)
CITATION = re.compile(
    r"docs/(?P<file>[\w-]+\.md)"
    r"(?:,? (?:sections? |item )?(?P<num>\d+(?:\.\d+)*)(?:(?:-| and |, )(?P<num2>\d+(?:\.\d+)*))?"
    r'|,? "(?P<title>[^"]+)"'
    r"|,? (?P<decision>D\d+))?"
)


def _sources() -> list[Path]:
    out = []
    for top in SCANNED:
        for path in (ROOT / top).rglob("*"):
            if path.suffix in SUFFIXES and "node_modules" not in path.parts and path.is_file():
                out.append(path)
    return sorted(out) + [ROOT / "README.md"]


def _headings(doc: Path) -> list[str]:
    return [line.lstrip("#").strip() for line in doc.read_text().splitlines() if line[:1] == "#"]


def _has_number(doc: Path, num: str) -> bool:
    """``4.8`` is a heading ``4.8 ...``; ``4.2.3`` may also be item 3 of section 4.2."""
    heads = _headings(doc)
    if any(re.match(rf"{re.escape(num)}\.?(\s|$)", h) for h in heads):
        return True
    section, _, item = num.rpartition(".")
    text = doc.read_text()
    if not section:  # a top-level numbered item (docs/peers.md 7)
        return re.search(rf"^{item}\. ", text, re.M) is not None
    start = next((m.end() for m in re.finditer(rf"^#+ {re.escape(section)}\s.*$", text, re.M)), -1)
    if start < 0:
        return False
    body = re.split(r"^#", text[start:], maxsplit=1, flags=re.M)[0]
    return re.search(rf"^{item}\. ", body, re.M) is not None


def _this_file(path: Path) -> bool:
    return path == Path(__file__).resolve()


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_citations_resolve(path: Path) -> None:
    if _this_file(path):
        return
    problems = []
    for lineno, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        where = f"{path.relative_to(ROOT)}:{lineno}"
        if OUTSIDE.search(re.sub(r"docs/[\w-]+\.md", "", line)):
            problems.append(f"{where}: cites a document outside the repository: {line.strip()}")
        for m in CITATION.finditer(line):
            doc = DOCS / m["file"]
            if not doc.is_file():
                problems.append(f"{where}: docs/{m['file']} does not exist")
                continue
            for num in filter(None, (m["num"], m["num2"])):
                if not _has_number(doc, num):
                    problems.append(f"{where}: docs/{m['file']} has no section {num}")
            if m["title"] and m["title"] not in _headings(doc):
                problems.append(f'{where}: docs/{m["file"]} has no section "{m["title"]}"')
            if m["decision"] and f"**{m['decision']}." not in doc.read_text():
                problems.append(f"{where}: docs/{m['file']} has no decision {m['decision']}")
    assert not problems, "\n".join(problems)


def test_the_checker_can_fail(tmp_path: Path) -> None:
    doc = DOCS / "wire-formats.md"
    assert _has_number(doc, "4.8") and _has_number(doc, "4.2.3") and _has_number(doc, "3.2.1")
    assert not _has_number(doc, "4.99") and not _has_number(doc, "4.2.42")
    assert OUTSIDE.search("see wire-formats.md 4.8") and OUTSIDE.search("(DESIGN.md, Errors)")
    assert not OUTSIDE.search("see docs/wire-formats.md 4.8 and docs/design.md")
