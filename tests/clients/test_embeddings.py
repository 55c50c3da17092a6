"""``POST /v1/embeddings`` through the wire: the openai SDK, LangChain ``OpenAIEmbeddings`` and
LlamaIndex ``OpenAIEmbedding`` against a proxy whose personas sit on a fake OpenAI, a fake
Gemini (``batchEmbedContents``) and echo; plus the 400 for a provider without embeddings."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import ProxyHandle
from tests.fakes.server import FakeUpstream, Recorded, Reply


class EmbeddingUpstream(FakeUpstream):
    """Answers OpenAI ``/embeddings`` and Gemini ``:batchEmbedContents`` from the request:
    input i gets the vector ``[i + 1, len(text), 0, ...]`` normalised, of the asked length."""

    async def _handle(self, request: Any) -> Any:
        body = await request.read()
        rec = Recorded(request.method, request.path, {}, {}, body)
        data = rec.json
        if request.path.endswith(":batchEmbedContents"):
            vectors = [
                _vector(i, r["content"]["parts"][0]["text"], r.get("outputDimensionality") or 8)
                for i, r in enumerate(data["requests"])
            ]
            self.replies.append(Reply(json={"embeddings": [{"values": v} for v in vectors]}))
        else:
            inputs = data["input"] if isinstance(data["input"], list) else [data["input"]]
            dims = data.get("dimensions") or 8
            vectors = [_vector(i, str(t), dims) for i, t in enumerate(inputs)]
            b64 = data.get("encoding_format") == "base64"
            self.replies.append(
                Reply(
                    json={
                        "object": "list",
                        "data": [
                            {
                                "object": "embedding",
                                "index": i,
                                "embedding": base64.b64encode(
                                    struct.pack(f"<{len(v)}f", *v)
                                ).decode()
                                if b64
                                else v,
                            }
                            for i, v in enumerate(vectors)
                        ],
                        "model": "text-embedding-3-small",
                        "usage": {"prompt_tokens": 7, "total_tokens": 7},
                    }
                )
            )
        return await super()._handle(request)


def _vector(i: int, text: str, dims: int) -> list[float]:
    v = [float(i + 1), float(len(text))] + [0.0] * (dims - 2)
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


@pytest.fixture
def proxy(start_fake: Callable[..., Any], start_proxy: Callable[..., ProxyHandle]) -> Any:
    fake = start_fake(EmbeddingUpstream())
    handle = start_proxy(
        {
            "providers": {
                "oa": {"type": "openai", "api_key": "sk-fake", "base_url": fake.url + "/v1"},
                "gm": {"type": "gemini", "api_key": "g-fake", "base_url": fake.url},
                "an": {"type": "anthropic", "api_key": "a-fake", "base_url": fake.url},
                "ec": {"type": "echo"},
            },
            "personas": {
                "emb-openai": {"provider": "oa", "model": "text-embedding-3-small"},
                "emb-gemini": {"provider": "gm", "model": "gemini-embedding-001"},
                "emb-anthropic": {"provider": "an", "model": "claude-sonnet-4-5"},
                "emb-echo": {"provider": "ec", "model": "echo-embed"},
            },
        }
    )
    return handle, fake


def _client(handle: ProxyHandle) -> openai.OpenAI:
    return openai.OpenAI(base_url=handle.base_url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("persona", ["emb-openai", "emb-gemini", "emb-echo"])
@pytest.mark.parametrize("encoding", ["float", "base64", None])
def test_openai_sdk_embeddings(proxy: Any, persona: str, encoding: str | None) -> None:
    handle, fake = proxy
    kwargs: dict[str, Any] = {"encoding_format": encoding} if encoding else {}
    raw = _client(handle).embeddings.with_raw_response.create(
        model=persona, input=["alpha beta", "gamma"], dimensions=16, **kwargs
    )
    result = raw.parse()
    assert [d.index for d in result.data] == [0, 1]
    vectors = [
        # Asked for explicitly, base64 stays the caller's to decode (little-endian float32).
        list(struct.unpack("<16f", base64.b64decode(d.embedding)))
        if encoding == "base64"
        else d.embedding
        for d in result.data
    ]
    for v in vectors:
        assert len(v) == 16
        assert math.isclose(math.sqrt(sum(x * x for x in v)), 1.0, rel_tol=1e-5)
    assert vectors[0] != vectors[1]
    assert raw.headers["x-persona"] == persona
    request_id = raw.headers["x-request-id"]
    row = next(r for r in handle.rows() if r["id"] == request_id)
    assert row["status"] == "ok" and row["prompt_tokens"] > 0
    assert row["model"] == result.model == raw.headers["x-upstream-model"]
    if "api" in row:
        assert row["api"] == "embeddings"
    if persona == "emb-openai":
        sent = fake.last.json
        assert sent["model"] == "text-embedding-3-small" and sent["dimensions"] == 16
        assert row["prompt_tokens"] == 7 and row["cost_usd"] is not None
    if persona == "emb-gemini":
        assert fake.last.path == "/v1beta/models/gemini-embedding-001:batchEmbedContents"
        assert fake.last.json["requests"][1] == {
            "model": "models/gemini-embedding-001",
            "content": {"parts": [{"text": "gamma"}]},
            "outputDimensionality": 16,
        }


def test_echo_vectors_are_deterministic(proxy: Any) -> None:
    handle, _ = proxy
    client = _client(handle)
    one = client.embeddings.create(model="emb-echo", input="same text").data[0].embedding
    two = client.embeddings.create(model="emb-echo", input=["same text", "other"]).data
    assert two[0].embedding == pytest.approx(one, rel=1e-6)
    assert two[1].embedding != two[0].embedding


def test_token_arrays_pass_through_to_openai(proxy: Any) -> None:
    handle, fake = proxy
    result = _client(handle).embeddings.create(model="emb-openai", input=[[1, 2, 3], [4, 5]])
    assert len(result.data) == 2
    assert fake.last.json["input"] == [[1, 2, 3], [4, 5]]
    with pytest.raises(openai.BadRequestError) as err:
        _client(handle).embeddings.create(model="emb-gemini", input=[[1, 2, 3]])
    assert err.value.code == "unsupported_capability"


def test_provider_without_embeddings_is_400(proxy: Any) -> None:
    handle, fake = proxy
    before = len(fake.requests)
    with pytest.raises(openai.BadRequestError) as err:
        _client(handle).embeddings.create(model="emb-anthropic", input="x")
    assert err.value.code == "unsupported_capability"
    assert len(fake.requests) == before
    row = handle.rows()[-1]
    assert row["status"] == "error" and row["http_status"] == 400


def test_bad_input_is_400(proxy: Any) -> None:
    handle, _ = proxy
    with pytest.raises(openai.BadRequestError) as err:
        _client(handle).embeddings.create(model="emb-echo", input=[])
    assert err.value.param == "input"


@pytest.mark.parametrize("persona", ["emb-openai", "emb-gemini", "emb-echo"])
def test_langchain_openai_embeddings(proxy: Any, persona: str) -> None:
    from langchain_openai import OpenAIEmbeddings

    handle, _ = proxy
    emb = OpenAIEmbeddings(
        model=persona,
        base_url=handle.base_url,
        api_key="unused",  # type: ignore[arg-type]
        check_embedding_ctx_length=False,  # no tiktoken download: the proxy gets the text
        max_retries=0,
    )
    docs = emb.embed_documents(["one doc", "another doc"])
    query = emb.embed_query("one doc")
    assert len(docs) == 2 and len(docs[0]) == len(query) > 0
    assert docs[0] == pytest.approx(query, rel=1e-5)


@pytest.mark.parametrize("persona", ["emb-openai", "emb-gemini", "emb-echo"])
def test_llamaindex_openai_embedding(proxy: Any, persona: str) -> None:
    from llama_index.embeddings.openai import OpenAIEmbedding

    handle, _ = proxy
    # model_name is the persona; LlamaIndex checks 'model' against OpenAI's names, so the
    # persona goes in the header and model_name stays one it knows.
    emb = OpenAIEmbedding(
        model_name="text-embedding-3-small",
        api_base=handle.base_url,
        api_key="unused",
        default_headers={"X-Persona": persona},
        max_retries=0,
    )
    vectors = emb.get_text_embedding_batch(["first", "second"])
    assert len(vectors) == 2 and vectors[0] != vectors[1]
    assert emb.get_query_embedding("first") == pytest.approx(vectors[0], rel=1e-5)
