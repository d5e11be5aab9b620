"""Prometheus metrics through prometheus_client, one registry per node.

The node's code counts with plain integers (`counters`, `rejected`) and registers read-outs
(`gauges`); this module turns them into metric families with HELP lines when /metrics is
scraped, so the hot path costs a dict increment. Read-outs that only ever grow are exposed as
counters (named `..._total`); the rest are gauges. The two latency histograms are
prometheus_client histograms; process metrics (CPU, memory, open fds) and Python's GC and
platform metrics come from prometheus_client's own collectors.
"""

import asyncio
from collections import defaultdict
from collections.abc import Callable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_ACCEPT_LATENCY = "fedrollup_accept_latency_seconds"
_ACCEPT_LATENCY_HELP = "Seconds from a request's arrival to its actions being accepted (durable)."

# name (without the fedrollup_ prefix and _total suffix) -> HELP text
COUNTER_HELP = {
    "accepted": "Actions accepted (durably in the mempool log, answered 202).",
    "executed": "Actions executed in a block with a successful receipt.",
    "failed": "Actions executed in a block whose receipt says failed.",
    "blocks": "Blocks committed to the chain store.",
    "l1_messages": "L1 messages (deposits, stakes, ...) included in blocks.",
    "rejected": "Actions refused at the door, by error code.",
    "follower_verified_blocks": "Follower: sequencer blocks re-executed, checked and committed.",
    "follower_fetch_errors": "Follower: failed requests to the sequencer (each retried).",
    "follower_divergences": "Follower: sequencer blocks its re-execution did not reproduce.",
    "follower_batch_mismatches": "Follower: sequencer batches that did not re-derive.",
}
# read-outs registered in `Metrics.gauges`: name -> (type, HELP); an unknown name is a gauge
READOUT_HELP: dict[str, tuple[str, str]] = {
    "head_height": ("gauge", "Height of the chain head."),
    "mempool_pending": ("gauge", "Actions accepted and not yet executed."),
    "mempool_fsyncs": ("counter", "fsync calls made by the mempool log."),
    "uptime_seconds": ("gauge", "Seconds since the node started."),
    "l1_batches_committed": ("gauge", "Batches committed (or finalized) on L1."),
    "l1_batches_finalized": ("gauge", "Batches finalized on L1."),
    "l1_errors": ("counter", "Errors talking to L1 (each retried)."),
    "l1_deep_reorgs": ("counter", "L1 reorgs deeper than the confirmation depth."),
    "keeper_executed": ("counter", "Settlement records the keeper executed on L1."),
    "follower_sequencer_reachable": ("gauge", "Follower: 1 if the sequencer last answered."),
    "follower_sequencer_head": ("gauge", "Follower: the sequencer's head height, last seen."),
    "follower_lag_blocks": ("gauge", "Follower: blocks the sequencer has that it lacks."),
}


def _package_version() -> str:
    try:
        return version("fedrollup")
    except PackageNotFoundError:  # pragma: no cover - running from a bare source tree
        return "unknown"


def _event_loop_name() -> str:
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "none"
    cls = type(loop)
    return f"{cls.__module__}.{cls.__qualname__}"


MetricFamily = InfoMetricFamily | CounterMetricFamily | GaugeMetricFamily | HistogramMetricFamily


class _NodeCollector(Collector):
    def __init__(self, metrics: "Metrics") -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[MetricFamily]:
        m = self.metrics
        if m.door is not None:  # a split node: the ingress process counts what it took
            m.counters["accepted"] = int(m.door["accepted"])
            m.rejected.clear()
            m.rejected.update(m.door["rejected"])
        yield InfoMetricFamily(
            "fedrollup_node",
            "The node's version and the event loop serving this request.",
            value={"version": _package_version(), "event_loop": _event_loop_name()},
        )
        for name in sorted(m.counters):
            help_text = COUNTER_HELP.get(name, f"Count of {name.replace('_', ' ')}.")
            yield CounterMetricFamily(f"fedrollup_{name}", help_text, value=m.counters[name])
        rejected = CounterMetricFamily(
            "fedrollup_rejected", COUNTER_HELP["rejected"], labels=["code"]
        )
        for code in sorted(m.rejected):
            rejected.add_metric([code], m.rejected[code])
        yield rejected
        for name in sorted(m.gauges):
            kind, help_text = READOUT_HELP.get(name, ("gauge", name.replace("_", " ") + "."))
            value = float(m.gauges[name]())
            if kind == "counter":
                yield CounterMetricFamily(f"fedrollup_{name}", help_text, value=value)
            else:
                yield GaugeMetricFamily(f"fedrollup_{name}", help_text, value=value)
        if m.accept_latency is None:
            door = m.door or {"latency_buckets": [0] * (len(_LATENCY_BUCKETS_S) + 1)}
            les = [*(str(b) for b in _LATENCY_BUCKETS_S), "+Inf"]
            counts = [float(c) for c in door["latency_buckets"]]
            yield HistogramMetricFamily(
                _ACCEPT_LATENCY,
                _ACCEPT_LATENCY_HELP,
                buckets=list(zip(les, counts, strict=True)),
                sum_value=float(door.get("latency_sum", 0.0)),
            )


class Metrics:
    """`door_elsewhere`: a split node's executor; its ingress process accepts and refuses
    actions, and sends its `door_snapshot()` with each scrape it forwards (set as `door`)."""

    def __init__(self, door_elsewhere: bool = False) -> None:
        # Counters exist from the start: Prometheus expects a 0, not a missing series.
        self.counters: dict[str, int] = defaultdict(
            int, {"accepted": 0, "executed": 0, "failed": 0, "blocks": 0, "l1_messages": 0}
        )
        self.rejected: dict[str, int] = defaultdict(int)
        self.gauges: dict[str, Callable[[], float]] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.door: dict[str, Any] | None = None
        self.accept_latency: Histogram | None = None
        if not door_elsewhere:
            self.accept_latency = Histogram(
                _ACCEPT_LATENCY,
                _ACCEPT_LATENCY_HELP,
                buckets=_LATENCY_BUCKETS_S,
                registry=self.registry,
            )
        self.block_seconds = Histogram(
            "fedrollup_block_build_seconds",
            "Seconds to execute and commit one block.",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(_NodeCollector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    def render(self) -> str:
        return generate_latest(self.registry).decode()

    def observe_accept(self, seconds: float) -> None:
        if self.accept_latency is not None:
            self.accept_latency.observe(seconds)

    def door_snapshot(self) -> dict[str, Any]:
        """What the door counted: accepted, refused by code, and the accept-latency histogram
        (cumulative bucket counts, +Inf last, and the sum)."""
        buckets: list[float] = []
        total = 0.0
        if self.accept_latency is not None:
            for family in self.accept_latency.collect():
                for sample in family.samples:
                    if sample.name.endswith("_bucket"):
                        buckets.append(sample.value)
                    elif sample.name.endswith("_sum"):
                        total = sample.value
        return {
            "accepted": self.counters["accepted"],
            "rejected": dict(self.rejected),
            "latency_buckets": buckets,
            "latency_sum": total,
        }
