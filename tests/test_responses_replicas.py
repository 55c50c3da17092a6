"""Stored responses across processes (docs/design.md, "More front doors": ``store`` and
``previous_response_id`` work on any replica).

Each process writes its stored responses behind the answer, batched over the usage writer's
window (proxy/doors/responses_store.py), so right after a turn its row may be only in that
process's memory. Two real ``persona-proxy serve`` processes share one store (a SQLite file,
then a PostgreSQL database); every next step goes to the *other* process at once, through the
official client: continuing, retrieving and deleting must all see the row.
"""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest

from tests.procs import ServeProcess


def config(database: str, tmp_path: Path, name: str) -> dict:
    return {
        "usage": {"database": database, "journal_dir": str(tmp_path / f"{name}.journal")},
        "providers": {"e": {"type": "echo"}},
        "personas": {"bot": {"provider": "e", "model": "echo"}},
    }


@pytest.fixture(params=["sqlite", "postgresql"])
def two_processes(request, tmp_path):
    if request.param == "sqlite":
        database = str(tmp_path / "usage.db")
        yield from _start(database, tmp_path)
    else:
        from tests.pgdb import scratch_database  # noqa: PLC0415

        with scratch_database() as url:
            yield from _start(url, tmp_path)


def _start(database: str, tmp_path: Path):
    procs = [ServeProcess(config(database, tmp_path, n), tmp_path, name=n) for n in ("a", "b")]
    try:
        for p in procs:
            p.start()
        yield procs
    finally:
        for p in procs:
            p.stop()


def client(proc: ServeProcess) -> openai.OpenAI:
    return openai.OpenAI(base_url=proc.url + "/v1", api_key="k", max_retries=0)


def test_the_other_process_continues_retrieves_and_deletes_at_once(two_processes) -> None:
    a, b = (client(p) for p in two_processes)
    for turn in range(3):  # several rounds: some land before the writer, some after
        first = a.responses.create(model="bot", input=f"remember {turn}")
        second = b.responses.create(model="bot", input="and me", previous_response_id=first.id)
        assert second.previous_response_id == first.id
        assert second.output_text == "and me"
        assert a.responses.retrieve(second.id).output_text == "and me"
        assert b.responses.retrieve(first.id).output_text == f"remember {turn}"
        third = a.responses.create(model="bot", input="gone soon")
        b.responses.delete(third.id)
        with pytest.raises(openai.NotFoundError):
            a.responses.retrieve(third.id)


def test_an_unknown_id_is_a_404_after_a_bounded_wait(two_processes) -> None:
    a, _ = (client(p) for p in two_processes)
    started = time.monotonic()
    with pytest.raises(openai.NotFoundError) as err:
        a.responses.retrieve("resp_" + "0" * 24)  # the proxy's shape: looked up again
    assert err.value.status_code == 404
    assert time.monotonic() - started < 2
    with pytest.raises(openai.BadRequestError) as bad:
        a.responses.create(model="bot", input="x", previous_response_id="resp_" + "1" * 24)
    assert bad.value.code == "previous_response_not_found"
