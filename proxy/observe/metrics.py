"""Prometheus metrics (docs/design.md, "Observability"): aggregated per process from finished
requests, rendered by prometheus-client at scrape time, summed over the workers of one server.

Why not prometheus-client's own Counter/Histogram objects: updating the ten series one request
touches costs about 45 us with them (a lock and a label lookup per series; measured with the
script in README "Observability"), about 1 us with the plain lists below, and that 1 us is spent
on the observe thread in batches, not in the request. prometheus-client still renders the
exposition format (``generate_latest`` over a custom collector), so the text is exactly theirs.

Workers: ``serve --workers N`` gives the server a private directory
(``PERSONA_PROXY_METRICS_DIR``, removed when the server stops); every worker writes its totals
there after each drain (a few times a second, only when they changed) and a scrape sums the
scraped worker's live totals with the others' latest files. A worker's series are therefore at
most one drain interval old in another worker's scrape; its own are exact.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from proxy.config import Settings

if TYPE_CHECKING:
    from prometheus_client.core import HistogramMetricFamily, Metric

# prometheus_client is imported at the first scrape, not at start-up (~30-90 ms of every
# start, and a server nobody scrapes never needs it): see _histogram, _Collector and render.

log = logging.getLogger(__name__)

METRICS_DIR_ENV = "PERSONA_PROXY_METRICS_DIR"

# LLM calls take seconds to minutes; the proxy's own time takes microseconds to milliseconds.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
OVERHEAD_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
TOKEN_KINDS = ("prompt", "completion", "cached", "reasoning", "cache_write")

# The governor's refusals (docs/design.md, "Client keys") -> the ``limit`` label.
_LIMIT_OF_CODE = {
    "too_many_parallel_requests": "max_parallel",
    "insufficient_quota": "budget",
}

# One entry per key (persona, provider, model, status, code, stream, api), laid out as:
_KEY_LEN = 7
_N, _DUR_SUM, _DUR_B, _OV_SUM, _OV_B, _TTFT_SUM, _TTFT_B, _TOK, _COST = range(9)

CircuitSource = Callable[[], Iterable[tuple[str, str, bool]]]


def _entry() -> list[Any]:
    return [
        0,
        0.0,
        [0] * (len(DURATION_BUCKETS) + 1),
        0.0,
        [0] * (len(OVERHEAD_BUCKETS) + 1),
        0.0,
        [0] * (len(DURATION_BUCKETS) + 1),
        [0] * len(TOKEN_KINDS),
        None,  # cost: None until a priced request
    ]


def limit_of(code: str | None, error_type: str | None) -> str | None:
    if code == "rate_limit_exceeded":
        return "tpm" if error_type == "tokens" else "rpm"
    return _LIMIT_OF_CODE.get(code or "")


class Totals:
    """One process's (or a merged) set of totals; plain dicts and lists, JSON-able."""

    def __init__(self) -> None:
        self.series: dict[tuple[str, ...], list[Any]] = {}
        self.attempts: dict[tuple[str, str, str], int] = {}
        self.rate_limited: dict[tuple[str, str], int] = {}
        self.live: dict[str, int] = {}
        self.circuits: dict[tuple[str, str], int] = {}

    def add(self, req: Any) -> None:
        """Account one finished request (an ``observe.Req``)."""
        rec = req.rec
        stream = "true" if rec.stream else "false"
        code = (rec.error_code or "") if rec.status == "error" else ""
        key = (
            rec.persona or "",
            rec.provider or "",
            rec.model or "",
            rec.status,
            code,
            stream,
            getattr(rec, "api", None) or "chat",
        )
        e = self.series.get(key)
        if e is None:
            e = self.series[key] = _entry()
        e[_N] += 1
        latency = (rec.latency_ms or 0.0) / 1000
        e[_DUR_SUM] += latency
        e[_DUR_B][bisect_left(DURATION_BUCKETS, latency)] += 1
        overhead = max(latency - req.wait, 0.0)
        e[_OV_SUM] += overhead
        e[_OV_B][bisect_left(OVERHEAD_BUCKETS, overhead)] += 1
        if rec.stream and rec.status == "ok" and rec.ttft_ms is not None:
            ttft = rec.ttft_ms / 1000
            e[_TTFT_SUM] += ttft
            e[_TTFT_B][bisect_left(DURATION_BUCKETS, ttft)] += 1
        if rec.prompt_tokens is not None or rec.completion_tokens is not None:
            tok = e[_TOK]
            tok[0] += rec.prompt_tokens or 0
            tok[1] += rec.completion_tokens or 0
            tok[2] += rec.cached_tokens or 0
            tok[3] += rec.reasoning_tokens or 0
            tok[4] += rec.cache_write_tokens or 0
        if rec.cost_usd is not None:
            e[_COST] = (e[_COST] or 0.0) + rec.cost_usd
        rows = getattr(rec, "attempt_rows", None)
        if rows:
            for row in rows:
                akey = (row.provider or "", row.model or "", row.outcome)
                self.attempts[akey] = self.attempts.get(akey, 0) + 1
        elif req.n_attempts:  # no router rows: the handler's own single attempt
            akey = (rec.provider or "", rec.model or "", "ok" if rec.status == "ok" else "failed")
            self.attempts[akey] = self.attempts.get(akey, 0) + req.n_attempts
        limit = limit_of(rec.error_code, rec.error_type) if rec.status == "error" else None
        if limit is not None:
            rkey = (rec.client or "", limit)
            self.rate_limited[rkey] = self.rate_limited.get(rkey, 0) + 1

    # --- snapshots between workers --------------------------------------------------------

    def dump(self) -> bytes:
        return orjson.dumps(
            {
                "series": [[*k, *v] for k, v in self.series.items()],
                "attempts": [[*k, v] for k, v in self.attempts.items()],
                "rate_limited": [[*k, v] for k, v in self.rate_limited.items()],
                "live": self.live,
                "circuits": [[*k, v] for k, v in self.circuits.items()],
            }
        )

    def merge(self, data: dict[str, Any]) -> None:
        for row in data.get("series", ()):
            key, vals = tuple(row[:_KEY_LEN]), row[_KEY_LEN:]
            e = self.series.get(key)
            if e is None:
                e = self.series[key] = _entry()
            for i in (_N, _DUR_SUM, _OV_SUM, _TTFT_SUM):
                e[i] += vals[i]
            for i in (_DUR_B, _OV_B, _TTFT_B, _TOK):
                e[i] = [a + b for a, b in zip(e[i], vals[i], strict=True)]
            if vals[_COST] is not None:
                e[_COST] = (e[_COST] or 0.0) + vals[_COST]
        for *k, v in data.get("attempts", ()):
            self.attempts[tuple(k)] = self.attempts.get(tuple(k), 0) + v
        for *k, v in data.get("rate_limited", ()):
            self.rate_limited[tuple(k)] = self.rate_limited.get(tuple(k), 0) + v
        for persona, n in data.get("live", {}).items():
            self.live[persona] = self.live.get(persona, 0) + n
        for *k, v in data.get("circuits", ()):
            # Without shared state each worker has its own breaker: open if any has it open.
            self.circuits[tuple(k)] = max(self.circuits.get(tuple(k), 0), v)

    def copy(self) -> Totals:
        out = Totals()
        out.merge(orjson.loads(self.dump()))
        return out


def _cumulative(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, n in zip(bounds, counts, strict=False):
        total += n
        out.append((repr(float(bound)), total))
    out.append(("+Inf", total + counts[-1]))
    return out


def _sum_by(
    series: dict[tuple[str, ...], list[Any]], idx: tuple[int, ...]
) -> dict[tuple[str, ...], list[list[Any]]]:
    groups: dict[tuple[str, ...], list[list[Any]]] = {}
    for key, e in series.items():
        groups.setdefault(tuple(key[i] for i in idx), []).append(e)
    return groups


def _histogram(
    name: str,
    doc: str,
    labels: list[str],
    groups: dict[tuple[str, ...], list[list[Any]]],
    sum_i: int,
    b_i: int,
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:
    from prometheus_client.core import HistogramMetricFamily  # noqa: PLC0415 (first scrape)

    fam = HistogramMetricFamily(name, doc, labels=labels)
    for key, entries in sorted(groups.items()):
        counts = [sum(col) for col in zip(*(e[b_i] for e in entries), strict=True)]
        if not sum(counts):
            continue
        fam.add_metric(list(key), _cumulative(counts, bounds), sum(e[sum_i] for e in entries))
    return fam


class _Collector:
    def __init__(self, totals: Totals) -> None:
        self.totals = totals

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import (  # noqa: PLC0415 (first scrape)
            CounterMetricFamily,
            GaugeMetricFamily,
        )

        t = self.totals
        s = t.series
        requests = CounterMetricFamily(
            "persona_proxy_requests",
            "Client requests by persona, provider, upstream model, status, error code and front "
            "door (api: chat, responses, messages, embeddings).",
            labels=["persona", "provider", "model", "status", "code", "api"],
        )
        for key, entries in sorted(_sum_by(s, (0, 1, 2, 3, 4, 6)).items()):
            requests.add_metric(list(key), sum(e[_N] for e in entries))
        yield requests
        yield _histogram(
            "persona_proxy_request_duration_seconds",
            "Whole request latency, errors included, by front door (api) too.",
            ["persona", "provider", "stream", "api"],
            _sum_by(s, (0, 1, 5, 6)),
            _DUR_SUM,
            _DUR_B,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "persona_proxy_time_to_first_token_seconds",
            "Time to the first streamed chunk, successful streams.",
            ["persona", "provider"],
            _sum_by(s, (0, 1)),
            _TTFT_SUM,
            _TTFT_B,
            DURATION_BUCKETS,
        )
        yield _histogram(
            "persona_proxy_overhead_seconds",
            "Time spent in the proxy itself, waiting on upstreams excluded.",
            ["persona", "provider"],
            _sum_by(s, (0, 1)),
            _OV_SUM,
            _OV_B,
            OVERHEAD_BUCKETS,
        )
        tokens = CounterMetricFamily(
            "persona_proxy_tokens",
            "Tokens by kind (OpenAI meaning: prompt includes cached, completion reasoning).",
            labels=["persona", "provider", "model", "kind"],
        )
        cost = CounterMetricFamily(
            "persona_proxy_cost_usd",
            "Cost in USD of the priced requests.",
            labels=["persona", "provider", "model"],
        )
        for key, entries in sorted(_sum_by(s, (0, 1, 2)).items()):
            if any(any(e[_TOK]) or e[_COST] is not None for e in entries):
                for i, kind in enumerate(TOKEN_KINDS):
                    tokens.add_metric([*key, kind], sum(e[_TOK][i] for e in entries))
            priced = [e[_COST] for e in entries if e[_COST] is not None]
            if priced:
                cost.add_metric(list(key), sum(priced))
        yield tokens
        yield cost
        attempts = CounterMetricFamily(
            "persona_proxy_upstream_attempts",
            "Upstream attempts by outcome (ok, failed, skipped).",
            labels=["provider", "model", "outcome"],
        )
        for akey, n in sorted(t.attempts.items()):
            attempts.add_metric(list(akey), n)
        yield attempts
        live = GaugeMetricFamily(
            "persona_proxy_in_flight_requests", "Requests in flight.", labels=["persona"]
        )
        for persona, n in sorted(t.live.items()):
            live.add_metric([persona], n)
        yield live
        limited = CounterMetricFamily(
            "persona_proxy_rate_limited",
            "Requests refused by a limit (rpm, tpm, max_parallel, budget).",
            labels=["key", "limit"],
        )
        for rkey, n in sorted(t.rate_limited.items()):
            limited.add_metric(list(rkey), n)
        yield limited
        circuit = GaugeMetricFamily(
            "persona_proxy_circuit_open",
            "1 while the circuit breaker of a provider and model is open.",
            labels=["provider", "model"],
        )
        for ckey, v in sorted(t.circuits.items()):
            circuit.add_metric(list(ckey), v)
        yield circuit


class Metrics:
    """The observe thread's side: ``consume`` batches, ``publish`` for the other workers,
    ``render`` for a scrape. Every method runs on the observe thread only."""

    def __init__(self, settings: Settings) -> None:
        self.totals = Totals()
        directory = os.environ.get(METRICS_DIR_ENV)
        self.dir = Path(directory) if directory else None
        self.path = self.dir / f"{os.getpid()}.json" if self.dir else None
        self.circuit_source: CircuitSource | None = None
        self._dirty = True

    def open(self) -> None:
        if self.dir is not None:
            self.dir.mkdir(parents=True, exist_ok=True)

    def consume(self, batch: list[Any]) -> None:
        for req in batch:
            self.totals.add(req)
        if batch:
            self._dirty = True

    def _circuits(self) -> dict[tuple[str, str], int]:
        if self.circuit_source is None:
            return {}
        try:
            return {(p, m): int(bool(o)) for p, m, o in self.circuit_source()}
        except Exception:
            log.exception("reading circuit breaker states failed")
            return {}

    def publish(self, live: dict[str, int]) -> None:
        """Write this worker's totals for the other workers' scrapes, when they changed."""
        if live != self.totals.live:
            self.totals.live = live
            self._dirty = True
        if self.path is None or not self._dirty:
            return
        self.totals.circuits = self._circuits()
        tmp = self.path.with_suffix(".tmp")
        tmp.write_bytes(self.totals.dump())
        tmp.replace(self.path)  # atomic: a scrape never reads half a file
        self._dirty = False

    def render(self) -> bytes:
        totals = self.totals
        totals.circuits = self._circuits()
        if self.dir is not None:
            totals = totals.copy()
            for path in self.dir.glob("*.json"):
                if path == self.path:
                    continue
                try:
                    totals.merge(orjson.loads(path.read_bytes()))
                except (OSError, orjson.JSONDecodeError, ValueError, TypeError):
                    log.warning("skipping unreadable metrics file %s", path)
        from prometheus_client import CollectorRegistry, generate_latest  # noqa: PLC0415

        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Collector(totals))
        return generate_latest(registry)

    def close(self) -> None:
        # The last totals stay for the server's remaining workers: counters never go back.
        self._dirty = True
        self.publish({})
