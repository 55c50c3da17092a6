"""OpenAI chat-completions request -> Gemini ``generateContent`` body (docs/wire-formats.md 3.2, 4).

Pure. Re-exported by :mod:`translators.gemini`, whose docstring lists what is mapped, refused and
dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from translators.base import JSONDict, TranslationError, parse_data_url, text_of
from translators.gemini_schema import SchemaBudget, clean_parameters, clean_schema

#: What Gemini 3 accepts in place of a thought signature for function calls it did not produce
#: (history from another model, or a client that dropped the signature and a proxy that forgot
#: it). docs/wire-formats.md 3.6 and 4.10.
SIGNATURE_SENTINEL = "skip_thought_signature_validator"

#: ``reasoning_effort`` -> Gemini 3 ``thinkingLevel``. Gemini 3 cannot switch thinking off, so
#: ``none`` asks for the least. ``xhigh``/``max`` stop at ``HIGH``: it is the top level every
#: Gemini 3 model accepts.
THINKING_LEVELS: dict[str, str] = {
    "none": "MINIMAL",
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
    "xhigh": "HIGH",
    "max": "HIGH",
}

#: ``reasoning_effort`` -> Gemini 2.x ``thinkingBudget`` tokens (0 switches thinking off;
#: 24576 is the largest budget 2.5 Flash accepts).
THINKING_BUDGETS: dict[str, int] = {
    "none": 0,
    "minimal": 512,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
    "xhigh": 24576,
    "max": 24576,
}

#: Request keys this translator reads; everything else is dropped (see :func:`dropped_params`).
HANDLED_PARAMS = frozenset(
    {
        "model", "messages", "stream", "stream_options", "max_completion_tokens", "max_tokens",
        "temperature", "top_p", "top_k", "seed", "presence_penalty", "frequency_penalty", "n",
        "stop", "tools", "tool_choice", "functions", "function_call", "response_format",
        "reasoning_effort", "modalities",
    }
)  # fmt: skip

# Function names Gemini accepts (docs/wire-formats.md 3.2.2).
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,127}$")
_GEMINI_MAJOR = re.compile(r"gemini-(\d+)")
_MIME_BY_EXTENSION = {
    "png": "image/png",
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "gif": "image/gif",
    "webp": "image/webp",
    "heic": "image/heic",
    "heif": "image/heif",
    "pdf": "application/pdf",
    "txt": "text/plain",
    "mp3": "audio/mp3",
    "wav": "audio/wav",
    "flac": "audio/flac",
    "ogg": "audio/ogg",
    "mp4": "video/mp4",
    "mov": "video/quicktime",
    "webm": "video/webm",
}


@dataclass(frozen=True, slots=True)
class RememberedCall:
    """What the provider remembers about a tool call it returned to a client.

    Attributes:
        signature: Gemini's ``thoughtSignature`` for the call, if it had one.
        upstream_id: True when the id was Gemini's own ``functionCall.id`` (sent back then);
            synthesised ids are not Gemini's and are left out of the request.
        model: The configured model that produced it: a signature is only valid for that model.
    """

    signature: str | None
    upstream_id: bool
    model: str


CallLookup = Callable[[str], RememberedCall | None]


def needs_signatures(model: str) -> bool:
    """Whether ``model`` rejects function calls without a thought signature (Gemini 3 and later;
    names without a version, such as ``-latest`` aliases and tuned models, are assumed to)."""
    match = _GEMINI_MAJOR.search(model.lower())
    return match is None or int(match.group(1)) >= 3


def translate_request(
    body: JSONDict,
    *,
    model: str,
    system: str | None = None,
    recall: CallLookup | None = None,
) -> JSONDict:
    """The Gemini ``GenerateContentRequest`` for an OpenAI request.

    Args:
        body: The validated OpenAI request (persona applied). Not modified.
        model: The Gemini model that will serve it (signatures are checked against it).
        system: The persona's system text: the first system part, before the client's.
        recall: The provider's memory of tool calls it returned: signatures for clients that
            drop ``extra_content``, and which ids were Gemini's own.

    Raises:
        TranslationError: Something the request asks for that Gemini cannot do.
    """
    budget = SchemaBudget()
    builder = _ContentBuilder(model=model, recall=recall)
    if system:
        builder.add({"role": "system", "content": system}, param="system")
    for i, msg in enumerate(body["messages"]):
        builder.add(msg, param=f"messages[{i}]")
    contents, system_parts = builder.finish()
    out: JSONDict = {"contents": contents}
    if system_parts:
        out["systemInstruction"] = {"parts": system_parts}
    declarations = _declarations(body, budget)
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
    calling = _function_calling(body, declarations)
    if calling is not None:
        out["toolConfig"] = {"functionCallingConfig": calling}
    generation = _generation_config(body, model, budget)
    if generation:
        out["generationConfig"] = generation
    return out


# --------------------------------------------------------------------------------------------
# messages


class _ContentBuilder:
    """Walks the OpenAI messages once, building ``contents`` and the system parts."""

    def __init__(self, *, model: str, recall: CallLookup | None) -> None:
        self.model = model
        self.recall = recall
        self.sentinel = needs_signatures(model)
        self.contents: list[JSONDict] = []
        self.system: list[JSONDict] = []
        self.names: dict[str, str] = {}  # tool_call_id -> function name, from the history
        self.gemini_ids: set[str] = set()  # ids Gemini issued itself
        self.turn_order: dict[str, int] = {}  # the last model turn's call ids -> position
        self.results: list[tuple[int, int, JSONDict]] = []  # pending functionResponse parts

    def add(self, msg: JSONDict, *, param: str) -> None:
        role = msg.get("role")
        if role in ("tool", "function"):
            self.results.append((*self._result_key(msg), self._result(msg, param=param)))
            return
        self._flush_results()
        if role != "assistant":
            self.turn_order = {}
        if role in ("system", "developer"):
            text = text_of(msg.get("content"), param=f"{param}.content")
            if text:
                self.system.append({"text": text})
        elif role == "user":
            self._append("user", _user_parts(msg.get("content"), param=f"{param}.content"))
        elif role == "assistant":
            self._append("model", self._assistant(msg, param=param))
        else:  # pragma: no cover - validation admits only the roles above
            raise TranslationError(f"unsupported role {role!r}", param=f"{param}.role")

    def finish(self) -> tuple[list[JSONDict], list[JSONDict]]:
        self._flush_results()
        if not self.contents and self.system:
            # Gemini needs at least one content: a request of system text alone is asked as
            # the user's turn rather than failing (docs/peers.md item 7).
            self.contents.append({"role": "user", "parts": self.system})
            return self.contents, []
        if not self.contents:
            raise TranslationError("'messages' has no content to send", param="messages")
        return self.contents, self.system

    def _append(self, role: str, parts: list[JSONDict]) -> None:
        if not parts:
            return  # Gemini rejects empty contents (docs/wire-formats.md 3.2.1)
        if self.contents and self.contents[-1]["role"] == role:
            # Consecutive same-role turns are merged: Gemini wants user and model to alternate.
            self.contents[-1]["parts"].extend(parts)
        else:
            self.contents.append({"role": role, "parts": parts})

    # -- assistant turns

    def _assistant(self, msg: JSONDict, *, param: str) -> list[JSONDict]:
        parts = [{"text": t} for t in _assistant_texts(msg.get("content"), param=param) if t]
        calls = msg.get("tool_calls") or []
        legacy = msg.get("function_call")
        if not calls and isinstance(legacy, dict):
            calls = [{"id": "", "type": "function", "function": legacy}]
        for k, call in enumerate(calls):
            where = f"{param}.tool_calls[{k}]"
            if call.get("type", "function") != "function":
                raise TranslationError(
                    "only function tool calls can be sent to Gemini", param=where
                )
            fn = call["function"]
            call_id = call.get("id") or ""
            name = fn["name"]
            if call_id:
                self.names[call_id] = name
                # Consecutive assistant messages form one model turn: positions run on.
                self.turn_order.setdefault(call_id, len(self.turn_order))
            part: JSONDict = {"functionCall": {"name": name, "args": _arguments(fn, where)}}
            memo = self.recall(call_id) if self.recall and call_id else None
            if memo is not None and memo.upstream_id:
                part["functionCall"] = {"id": call_id, **part["functionCall"]}
                self.gemini_ids.add(call_id)
            signature = self._signature(call, memo)
            if signature is None and k == 0 and self.sentinel:
                signature = SIGNATURE_SENTINEL
            if signature is not None:
                part["thoughtSignature"] = signature
            parts.append(part)
        return parts

    def _signature(self, call: JSONDict, memo: RememberedCall | None) -> str | None:
        """The call's signature: the client's copy, else the provider's; ``None`` when there is
        none or it belongs to another model (Gemini rejects a foreign signature)."""
        if memo is not None and memo.model != self.model:
            return None
        extra = call.get("extra_content")
        google = extra.get("google") if isinstance(extra, dict) else None
        signature = google.get("thought_signature") if isinstance(google, dict) else None
        if isinstance(signature, str) and signature:
            return signature
        return memo.signature if memo is not None else None

    # -- tool results

    def _result_key(self, msg: JSONDict) -> tuple[int, int]:
        # Gemini pairs results with calls by position when there are no ids, so the results
        # of one turn are put in the order of that turn's calls, whatever order they came in.
        call_id = msg.get("tool_call_id") or ""
        return self.turn_order.get(call_id, len(self.turn_order)), len(self.results)

    def _result(self, msg: JSONDict, *, param: str) -> JSONDict:
        call_id = msg.get("tool_call_id") or ""
        name = self.names.get(call_id) or msg.get("name")
        if not isinstance(name, str) or not name:
            if msg.get("role") == "function":
                raise TranslationError(
                    "a 'function' message needs its 'name'", param=f"{param}.name"
                )
            raise TranslationError(
                f"tool_call_id {call_id!r} does not match any tool call of an earlier assistant "
                "message; Gemini needs the function's name for each tool result",
                param=f"{param}.tool_call_id",
            )
        text = text_of(msg.get("content"), param=f"{param}.content")
        response: JSONDict = {"name": name, "response": _response_object(text)}
        if call_id in self.gemini_ids:
            response = {"id": call_id, **response}
        return {"functionResponse": response}

    def _flush_results(self) -> None:
        if self.results:
            self.results.sort(key=lambda r: (r[0], r[1]))
            self._append("user", [part for _, _, part in self.results])
            self.results = []
            self.turn_order = {}


def _response_object(text: str) -> JSONDict:
    """A tool's output as ``functionResponse.response``, which must be a JSON object: a JSON
    object result is passed as it is, anything else as ``{"output": text}`` (Gemini's own
    convention, docs/wire-formats.md 3.2.1)."""
    if text.lstrip().startswith("{"):
        try:
            value = orjson.loads(text)
        except orjson.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            return value
    return {"output": text}


def _arguments(fn: JSONDict, where: str) -> JSONDict:
    raw = fn.get("arguments") or "{}"
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise TranslationError(
            "function arguments must be a JSON object", param=f"{where}.function.arguments"
        ) from None
    if not isinstance(args, dict):
        raise TranslationError(
            "function arguments must be a JSON object", param=f"{where}.function.arguments"
        )
    return args


def _assistant_texts(content: Any, *, param: str) -> list[str]:
    if content is None or isinstance(content, str):
        return [content or ""]
    texts: list[str] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind == "text":
            texts.append(part.get("text") or "")
        elif kind == "refusal":
            texts.append(part.get("refusal") or "")
        else:
            raise TranslationError(
                f"assistant content part type {kind!r} cannot be sent to Gemini",
                param=f"{param}.content[{j}]",
            )
    return texts


def _user_parts(content: Any, *, param: str) -> list[JSONDict]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[JSONDict] = []
    for j, part in enumerate(content):
        where = f"{param}[{j}]"
        kind = part.get("type")
        if kind == "text":
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "image_url":
            parts.append(_image_part(part.get("image_url"), param=where))
        elif kind == "input_audio":
            audio = part.get("input_audio") or {}
            fmt = audio.get("format")
            if fmt not in ("wav", "mp3") or not isinstance(audio.get("data"), str):
                raise TranslationError(
                    "input_audio needs 'data' and a 'format' of wav or mp3", param=where
                )
            parts.append({"inlineData": {"mimeType": f"audio/{fmt}", "data": audio["data"]}})
        elif kind == "file":
            parts.append(_file_part(part.get("file") or {}, param=where))
        else:
            raise TranslationError(
                f"content part type {kind!r} cannot be sent to Gemini", param=where
            )
    return parts


def _image_part(image: Any, *, param: str) -> JSONDict:
    url = image.get("url") if isinstance(image, dict) else None
    if not isinstance(url, str) or not url:
        raise TranslationError("image_url needs a 'url'", param=f"{param}.image_url.url")
    if url.startswith("data:"):
        mime, data = parse_data_url(url, param=f"{param}.image_url.url")
        return {"inlineData": {"mimeType": mime, "data": data}}
    if url.startswith(("https://", "http://", "gs://")):
        # Gemini fetches public and signed URLs itself (and gs:// on Vertex): the proxy never
        # downloads, so nothing is fetched on the event loop or from private addresses.
        return {"fileData": {"mimeType": _guess_mime(url, "image/jpeg"), "fileUri": url}}
    raise TranslationError(
        "image URLs must be data:, https:// or gs:// URLs", param=f"{param}.image_url.url"
    )


def _file_part(file: JSONDict, *, param: str) -> JSONDict:
    if file.get("file_id"):
        raise TranslationError(
            "uploaded file ids cannot be sent to Gemini; send 'file_data'",
            param=f"{param}.file.file_id",
        )
    data = file.get("file_data")
    if not isinstance(data, str) or not data:
        raise TranslationError("file parts need 'file_data'", param=f"{param}.file.file_data")
    if data.startswith("data:"):
        mime, payload = parse_data_url(data, param=f"{param}.file.file_data")
        return {"inlineData": {"mimeType": mime, "data": payload}}
    filename = file.get("filename") or ""
    mime = _guess_mime(filename, "")
    if not mime:
        raise TranslationError(
            "cannot tell the file's type: send 'file_data' as a data: URL "
            "or give a 'filename' with an extension",
            param=f"{param}.file",
        )
    return {"inlineData": {"mimeType": mime, "data": data}}


def _guess_mime(name: str, default: str) -> str:
    path = name.split("?", 1)[0].split("#", 1)[0]
    ext = path.rsplit(".", 1)[-1].lower() if "." in path.rsplit("/", 1)[-1] else ""
    return _MIME_BY_EXTENSION.get(ext, default)


# --------------------------------------------------------------------------------------------
# tools


def _function_defs(body: JSONDict) -> list[tuple[str, JSONDict]]:
    defs: list[tuple[str, JSONDict]] = []
    for i, tool in enumerate(body.get("tools") or []):
        where = f"tools[{i}]"
        if tool.get("type", "function") != "function":
            raise TranslationError(
                f"tool type {tool.get('type')!r} cannot be sent to Gemini; only function tools",
                param=f"{where}.type",
            )
        defs.append((f"{where}.function", tool["function"]))
    for i, fn in enumerate(body.get("functions") or []):  # the deprecated predecessor
        defs.append((f"functions[{i}]", fn))
    return defs


def _declarations(body: JSONDict, budget: SchemaBudget) -> list[JSONDict]:
    out: list[JSONDict] = []
    for where, fn in _function_defs(body):
        name = fn.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise TranslationError(
                f"function name {name!r} is not valid for Gemini: it must start with a letter "
                "or '_' and use only letters, digits, '_', '.', ':' and '-' (at most 128)",
                param=f"{where}.name",
            )
        decl: JSONDict = {"name": name}
        if isinstance(fn.get("description"), str) and fn["description"]:
            decl["description"] = fn["description"]
        schema = clean_parameters(fn.get("parameters"), param=f"{where}.parameters", budget=budget)
        if schema is not None:
            decl["parametersJsonSchema"] = schema
        out.append(decl)
    return out


def _function_calling(body: JSONDict, declarations: list[JSONDict]) -> JSONDict | None:
    choice = body.get("tool_choice")
    if choice is None and body.get("function_call") is not None:
        legacy = body["function_call"]
        choice = {"type": "function", "function": legacy} if isinstance(legacy, dict) else legacy
    if choice is None:
        return None
    known = {d["name"] for d in declarations}
    if choice == "none":
        return {"mode": "NONE"} if declarations else None
    if choice == "auto":
        return {"mode": "AUTO"} if declarations else None
    if not declarations:
        raise TranslationError("tool_choice needs 'tools'", param="tool_choice")
    if choice == "required":
        return {"mode": "ANY"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        _check_known(name, known, "tool_choice.function.name")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") or {}
        names = []
        for k, tool in enumerate(allowed.get("tools") or []):
            name = (tool.get("function") or {}).get("name") if isinstance(tool, dict) else None
            _check_known(name, known, f"tool_choice.allowed_tools.tools[{k}]")
            names.append(name)
        # VALIDATED: call or answer, calls restricted to the list (docs/wire-formats.md 4.5).
        mode = "ANY" if allowed.get("mode") == "required" else "VALIDATED"
        return {"mode": mode, "allowedFunctionNames": names}
    raise TranslationError(
        f"tool_choice {_short(choice)} cannot be sent to Gemini", param="tool_choice"
    )


def _check_known(name: Any, known: set[str], param: str) -> None:
    if not isinstance(name, str) or name not in known:
        raise TranslationError(
            f"tool_choice names function {name!r}, which is not in 'tools'", param=param
        )


# --------------------------------------------------------------------------------------------
# generation config


def _generation_config(body: JSONDict, model: str, budget: SchemaBudget) -> JSONDict:
    out: JSONDict = {}
    for ours, theirs in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("top_k", "topK"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = body.get(ours)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[theirs] = value
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        out["candidateCount"] = n
    limit = body.get("max_completion_tokens")
    if limit is None:
        limit = body.get("max_tokens")
    if isinstance(limit, int):
        out["maxOutputTokens"] = limit
    stop = body.get("stop")
    if stop:
        sequences = [stop] if isinstance(stop, str) else list(stop)
        if len(sequences) > 5:
            raise TranslationError("Gemini accepts at most 5 stop sequences", param="stop")
        out["stopSequences"] = sequences
    _response_format(body.get("response_format"), out, budget)
    modalities = body.get("modalities")
    if modalities and list(modalities) != ["text"]:
        raise TranslationError(
            "only text output is supported for Gemini personas", param="modalities"
        )
    thinking = _thinking(body.get("reasoning_effort"), model)
    if thinking:
        out["thinkingConfig"] = thinking
    return out


def _response_format(fmt: Any, out: JSONDict, budget: SchemaBudget) -> None:
    if not isinstance(fmt, dict) or fmt.get("type") in (None, "text"):
        return
    kind = fmt["type"]
    if kind == "json_object":
        out["responseMimeType"] = "application/json"
    elif kind == "json_schema":
        out["responseMimeType"] = "application/json"
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema is not None:
            out["responseJsonSchema"] = clean_schema(
                schema, param="response_format.json_schema.schema", budget=budget
            )
    else:
        raise TranslationError(
            f"response_format type {kind!r} is not supported", param="response_format.type"
        )


def _thinking(effort: Any, model: str) -> JSONDict | None:
    if effort is None:
        return None
    if effort not in THINKING_BUDGETS:
        raise TranslationError(
            f"reasoning_effort {effort!r} is not one of {', '.join(THINKING_BUDGETS)}",
            param="reasoning_effort",
        )
    match = _GEMINI_MAJOR.search(model.lower())
    if match is not None and int(match.group(1)) < 3:
        budget = THINKING_BUDGETS[effort]
        if budget == 0 and "pro" in model.lower():
            budget = 128  # 2.5 Pro cannot switch thinking off; 128 is its least
        config: JSONDict = {"thinkingBudget": budget}
    else:
        config = {"thinkingLevel": THINKING_LEVELS[effort]}
    if effort != "none":
        # The thinking text comes back as reasoning_content (docs/design.md).
        config["includeThoughts"] = True
    return config


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 80 else text[:77] + "..."


def dropped_params(body: JSONDict) -> list[str]:
    """The request keys this translator does not use, sorted (for the provider's log-once)."""
    return sorted(k for k in body if k not in HANDLED_PARAMS)
