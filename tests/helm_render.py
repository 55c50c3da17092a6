"""A small renderer for the subset of Helm's template language deploy/helm/persona-proxy uses,
so the chart is rendered and checked offline when no ``helm`` binary is installed.

Supported: ``{{ .Values.a.b }}``, ``.Release.Name``/``.Namespace``, ``.Chart.*``, ``.``, string
and integer literals, pipelines, ``include``, ``define``, ``if``/``else``/``end``, ``not``,
``default``, ``quote``, ``toYaml``, ``indent``, ``nindent``, ``sha256sum``, and ``{{-``/``-}}``
whitespace trimming (https://helm.sh/docs/chart_template_guide/). Anything else raises, so a
template that grows beyond the subset fails the test instead of rendering wrongly.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

_TAG = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.S)


def _tokens(src: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    trim_next = False
    for m in _TAG.finditer(src):
        text = src[pos : m.start()]
        if trim_next:
            text = text.lstrip()
        if m.group(1):
            text = text.rstrip()
        out.append(("text", text))
        out.append(("action", m.group(2)))
        trim_next = bool(m.group(3))
        pos = m.end()
    tail = src[pos:]
    out.append(("text", tail.lstrip() if trim_next else tail))
    return out


def _parse(tokens: list[tuple[str, str]], i: int = 0) -> tuple[list[Any], int, str | None]:
    """Nodes until an ``end``/``else``; returns (nodes, next index, the stopping keyword)."""
    nodes: list[Any] = []
    while i < len(tokens):
        kind, value = tokens[i]
        i += 1
        if kind == "text":
            nodes.append(("text", value))
            continue
        word = value.split(None, 1)[0] if value else ""
        if word in ("end", "else"):
            return nodes, i, word
        if word == "if":
            body, i, stop = _parse(tokens, i)
            other: list[Any] = []
            if stop == "else":
                other, i, stop = _parse(tokens, i)
            nodes.append(("if", value[2:].strip(), body, other))
        elif word == "define":
            name = shlex.split(value)[1]
            body, i, _ = _parse(tokens, i)
            nodes.append(("define", name, body))
        elif value.startswith("/*"):
            continue
        else:
            nodes.append(("expr", value))
    return nodes, i, None


class Renderer:
    def __init__(self, chart: Path, values: dict[str, Any] | None = None, release: str = "rel"):
        self.chart = chart
        meta = yaml.safe_load((chart / "Chart.yaml").read_text())
        base = yaml.safe_load((chart / "values.yaml").read_text())
        self.root = {
            "Values": _merge(base, values or {}),
            "Release": {"Name": release, "Namespace": "default"},
            "Chart": {
                "Name": meta["name"],
                "Version": meta["version"],
                "AppVersion": meta.get("appVersion", ""),
            },
        }
        self.defines: dict[str, list[Any]] = {}
        for helper in sorted((chart / "templates").glob("_*.tpl")):
            self._render(_parse(_tokens(helper.read_text()))[0], self.root)

    def render(self) -> dict[str, str]:
        out = {}
        for path in sorted((self.chart / "templates").glob("*.yaml")):
            out[path.name] = self._render(_parse(_tokens(path.read_text()))[0], self.root)
        return out

    def _render(self, nodes: list[Any], ctx: Any) -> str:
        parts: list[str] = []
        for node in nodes:
            if node[0] == "text":
                parts.append(node[1])
            elif node[0] == "define":
                self.defines[node[1]] = node[2]
            elif node[0] == "if":
                branch = node[2] if _truthy(self._pipeline(node[1], ctx)) else node[3]
                parts.append(self._render(branch, ctx))
            else:
                value = self._pipeline(node[1], ctx)
                parts.append("" if value is None else _str(value))
        return "".join(parts)

    def _pipeline(self, expr: str, ctx: Any) -> Any:
        value: Any = _MISSING
        for stage in expr.split("|"):
            args = shlex.split(stage.strip(), posix=False)
            if value is not _MISSING:
                args.append(_Value(value))
            value = self._call(args, ctx)
        return value

    def _call(self, args: list[Any], ctx: Any) -> Any:
        head, rest = args[0], args[1:]
        if not isinstance(head, str) or head.startswith(('"', ".")) or head.isdigit():
            assert not rest, f"unexpected arguments after {head!r}"
            return self._arg(head, ctx)
        vals = [self._arg(a, ctx) for a in rest]
        if head == "include":
            return self._render(self.defines[vals[0]], vals[1]).strip("\n")
        if head == "toYaml":
            return yaml.safe_dump(vals[0], default_flow_style=False, sort_keys=True).rstrip("\n")
        if head == "nindent":
            return "\n" + _indent(int(vals[0]), _str(vals[1]))
        if head == "indent":
            return _indent(int(vals[0]), _str(vals[1]))
        if head == "quote":
            return '"' + _str(vals[0]).replace('"', '\\"') + '"'
        if head == "default":
            return vals[1] if _truthy(vals[1]) else vals[0]
        if head == "not":
            return not _truthy(vals[0])
        if head == "sha256sum":
            return hashlib.sha256(_str(vals[0]).encode()).hexdigest()
        raise NotImplementedError(f"template function {head!r} is outside the tested subset")

    def _arg(self, arg: Any, ctx: Any) -> Any:
        if isinstance(arg, _Value):
            return arg.value
        if arg == ".":
            return ctx
        if arg.startswith("."):
            value = ctx
            for part in arg[1:].split("."):
                value = value.get(part) if isinstance(value, dict) else None
            return value
        if arg.startswith('"'):
            return arg[1:-1]
        if arg.isdigit():
            return int(arg)
        raise NotImplementedError(f"template argument {arg!r} is outside the tested subset")


class _Value:
    def __init__(self, value: Any) -> None:
        self.value = value


_MISSING = object()


def _truthy(value: Any) -> bool:
    return bool(value)


def _str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _indent(n: int, text: str) -> str:
    return "\n".join((" " * n + line) if line else line for line in text.split("\n"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def render_chart(chart: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every manifest the chart renders, parsed."""
    docs: list[dict[str, Any]] = []
    for text in Renderer(chart, values).render().values():
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs
