"""Prometheus text-format metrics, kept by hand: a few counters, gauges and a histogram."""

from collections import defaultdict
from collections.abc import Callable

_LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    def __init__(self, buckets: tuple[float, ...] = _LATENCY_BUCKETS_S) -> None:
        self.buckets = buckets
        self.counts = [0] * len(buckets)
        self.total = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.total += 1
        self.sum += value
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                break

    def render(self, name: str) -> list[str]:
        lines = [f"# TYPE {name} histogram"]
        running = 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{le="{bound}"}} {running}')
        lines += [
            f'{name}_bucket{{le="+Inf"}} {self.total}',
            f"{name}_sum {self.sum}",
            f"{name}_count {self.total}",
        ]
        return lines


class Metrics:
    def __init__(self) -> None:
        # Counters exist from the start: Prometheus expects a 0, not a missing series.
        self.counters: dict[str, int] = defaultdict(
            int, {"accepted": 0, "executed": 0, "failed": 0, "blocks": 0}
        )
        self.rejected: dict[str, int] = defaultdict(int)
        self.accept_latency = Histogram()
        self.block_seconds = Histogram()
        self.gauges: dict[str, Callable[[], float]] = {}

    def render(self) -> str:
        lines: list[str] = []
        for name in sorted(self.counters):
            lines += [
                f"# TYPE fedrollup_{name}_total counter",
                f"fedrollup_{name}_total {self.counters[name]}",
            ]
        lines.append("# TYPE fedrollup_rejected_total counter")
        for code in sorted(self.rejected):
            lines.append(f'fedrollup_rejected_total{{code="{code}"}} {self.rejected[code]}')
        for name in sorted(self.gauges):
            lines += [f"# TYPE fedrollup_{name} gauge", f"fedrollup_{name} {self.gauges[name]()}"]
        lines += self.accept_latency.render("fedrollup_accept_latency_seconds")
        lines += self.block_seconds.render("fedrollup_block_build_seconds")
        return "\n".join(lines) + "\n"
