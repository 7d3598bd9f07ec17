"""Prometheus metrics (served on `GET /metrics` by `health.py`), one registry per app so several apps
can live in one process.

Each figure is measured where it is true:

- latency of the answer as `api/` receives it from the engine: time to first token, inter-token
  latency and end-to-end latency, timed around the delta stream of every request (`observe`, which
  `submission.py` puts around every request it submits); queue time is measured by the engine
  itself (`Usage.queue_time`), which never imports prometheus;
- running and waiting sequences, token counts, aborts, disconnects, resumes: read at scrape time
  from the snapshot the engine publishes and from the stream manager, so there is one source of
  truth and no gauge can go stale;
- what the client sees on the wire, and requests by route and status: `api/wire.py`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from streamchat.engine.types import Delta

if TYPE_CHECKING:
    from streamchat.api.state import ServerState

# Seconds. Token gaps on a CPU are tens of milliseconds; first tokens under load take seconds.
_FIRST = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_GAP = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)
_WHOLE = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


class Metrics:
    """The instruments of one app; `state` is read at scrape time."""

    def __init__(self, state: ServerState) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram(
            "streamchat_time_to_first_token_seconds", "From submit to the first generated token", buckets=_FIRST,
            registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "streamchat_inter_token_latency_seconds", "Between consecutive tokens of one request", buckets=_GAP,
            registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "streamchat_e2e_request_latency_seconds", "From submit to the last delta", buckets=_WHOLE, registry=r
        )
        self.queue = Histogram(
            "streamchat_queue_time_seconds", "From arrival to first scheduled, in the engine", buckets=_FIRST,
            registry=r,
        )  # fmt: skip
        self.wire_first_byte = Histogram(
            "streamchat_wire_first_byte_seconds",
            "Event streams: from request start to the first body bytes taken by the server",
            buckets=_FIRST,
            registry=r,
        )
        self.wire_gap = Histogram(
            "streamchat_wire_chunk_gap_seconds",
            "Event streams: between consecutive body chunks taken by the server",
            buckets=_GAP,
            registry=r,
        )
        self.requests = Counter(
            "streamchat_http_requests", "HTTP requests by method, route and status", ["method", "route", "status"],
            registry=r,
        )  # fmt: skip
        r.register(_StateCollector(state))

    async def observe(self, deltas: AsyncIterator[Delta]) -> AsyncIterator[Delta]:
        """`deltas`, timed; closing this closes `deltas` (a reader that leaves aborts the request)."""
        start = last = time.perf_counter()
        first = True
        try:
            async for d in deltas:
                now = time.perf_counter()
                if d.token_ids:
                    (self.ttft if first else self.itl).observe(now - (start if first else last))
                    first, last = False, now
                if d.finished:
                    self.e2e.observe(now - start)
                    if d.usage is not None and d.usage.queue_time is not None:
                        self.queue.observe(d.usage.queue_time)
                yield d
        finally:
            await deltas.aclose()  # type: ignore[attr-defined]  # a reader that leaves aborts the request


class _StateCollector(Collector):
    """Gauges and counters read from the engine's snapshot and the stream manager when /metrics is scraped."""

    def __init__(self, state: ServerState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        engine = self.state.engine
        snap = engine.snapshot() if engine is not None else None
        running = snap.running if snap is not None else 0
        waiting = snap.waiting if snap is not None else 0
        yield GaugeMetricFamily("streamchat_num_requests_running", "Sequences in the running batch", value=running)
        yield GaugeMetricFamily("streamchat_num_requests_waiting", "Requests accepted, not yet running", value=waiting)
        for name, attr, doc in _ENGINE_COUNTERS:
            yield CounterMetricFamily(name, doc, value=getattr(snap.counters, attr) if snap is not None else 0)
        if snap is not None and snap.mask_seconds:
            yield _quantiles(
                "streamchat_grammar_mask_seconds", "Per step, computing the grammar masks of constrained rows "
                "(recent steps)", snap.mask_seconds,
            )  # fmt: skip
        if self.state.extra_models is not None:
            yield from _model_gauges(self.state)
        counters = self.state.streams.counters
        for name, attr, doc in _STREAM_COUNTERS:
            yield CounterMetricFamily(name, doc, value=getattr(counters, attr))


def _model_gauges(state: ServerState) -> Iterator[Metric]:
    """Per model served beside the default one (the unlabelled figures are the default model's)."""
    loaded = GaugeMetricFamily("streamchat_model_loaded", "1 when the model is loaded and serving", labels=["model"])
    running = GaugeMetricFamily("streamchat_model_requests_running", "Sequences running, per model", labels=["model"])
    generated = CounterMetricFamily(
        "streamchat_model_generation_tokens", "Tokens generated, per model", labels=["model"]
    )
    for name, slot in state.extra_models.slots.items():  # type: ignore[union-attr]
        loaded.add_metric([name], 1.0 if slot.status == "ready" else 0.0)
        snap = slot.engine.snapshot() if slot.engine is not None else None
        running.add_metric([name], snap.running if snap is not None else 0)
        generated.add_metric([name], snap.counters.generated_tokens if snap is not None else 0)
    yield from (loaded, running, generated)


def _quantiles(name: str, doc: str, samples: tuple[float, ...]) -> Metric:
    ordered = sorted(samples)
    family = GaugeMetricFamily(name, doc, labels=["quantile"])
    for q in (0.5, 0.9, 0.99):
        family.add_metric([str(q)], ordered[min(len(ordered) - 1, int(q * len(ordered)))])
    return family


_ENGINE_COUNTERS = (
    ("streamchat_prompt_tokens", "prompt_tokens", "Prompt tokens of accepted requests"),
    ("streamchat_generation_tokens", "generated_tokens", "Tokens generated"),
    ("streamchat_reused_prompt_tokens", "reused_tokens", "Prompt tokens whose keys/values an earlier request left"),
    ("streamchat_requests_finished", "finished", "Requests that ended by stop or length"),
    ("streamchat_requests_aborted", "aborted", "Requests aborted in the engine (client left, cancel, shutdown)"),
    ("streamchat_preemptions", "preempted", "Sequences preempted for cache room"),
    ("streamchat_prefill_tokens", "prefilled_tokens", "Tokens fed to prefill forwards (reused prefixes excluded)"),
    ("streamchat_engine_steps", "steps", "Engine steps run"),
    ("streamchat_spec_draft_tokens", "draft_tokens", "Draft tokens proposed by prompt lookup (speculative decoding)"),
    ("streamchat_spec_accepted_tokens", "accepted_tokens", "Draft tokens kept: acceptance rate = accepted / draft"),
    ("streamchat_spec_guessed_tokens", "guessed_tokens", "One-token guesses fed where a lone row needs a second query"),
    ("streamchat_spec_guessed_kept_tokens", "guessed_kept", "Guesses kept: tokens decoded for nothing"),
)
_STREAM_COUNTERS = (
    ("streamchat_streams_started", "started", "Event streams started"),
    ("streamchat_stream_disconnects", "disconnects", "Streams whose last reader left before the end"),
    ("streamchat_stream_resumes", "resumed", "Reconnections that resumed a stream"),
    ("streamchat_streams_abandoned", "abandoned", "Dropped streams nobody resumed within the grace period"),
    ("streamchat_streams_cancelled", "cancelled", "Streams cancelled with DELETE /v1/streams/{id}"),
    ("streamchat_streams_taken_over", "taken_over", "Streams this process continued after their producer died"),
)
