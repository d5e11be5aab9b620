"""Benchmark: exact integer Krum distances vs float64 baselines.

Not consensus code: uses numpy's seeded RNG and wall-clock timing.  Compares
(a) exact ``pairwise_sq_distances`` + ``krum_scores`` (stf.robust),
(b) a float64 Gram-matrix distance computation (the speed ceiling), and
(c) the per-pair ``np.sum((X[i] - X[j]) ** 2)`` loop common in FL frameworks
(skipped, reported as ``None``, when estimated above ~60 s).
"""

from __future__ import annotations

import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

from stf.fixedpoint import DEFAULT_MAX_ABS
from stf.robust import krum_scores, pairwise_sq_distances

Row = dict[str, float | int | None]
_PAIRLOOP_BUDGET_S = 60.0
_PAIRLOOP_PROBE_PAIRS = 5


def _median_time(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _krum_f(n: int) -> int:
    return max(0, (n - 3) // 2)


def _exact_krum(x: npt.NDArray[np.int32]) -> list[int]:
    return krum_scores(pairwise_sq_distances(x), _krum_f(x.shape[0]))


def _gram_f64(x: npt.NDArray[np.int32]) -> npt.NDArray[np.float64]:
    xf = x.astype(np.float64)
    g = xf @ xf.T
    diag = np.diag(g)
    dists: npt.NDArray[np.float64] = diag[:, None] + diag[None, :] - 2.0 * g
    return dists


def _pair_dist(xf: npt.NDArray[np.float64], i: int, j: int) -> float:
    return float(np.sum((xf[i] - xf[j]) ** 2))


def _pairloop(xf: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    n = xf.shape[0]
    out = np.zeros((n, n), dtype=np.float64)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = _pair_dist(xf, i, j)
    return out


def _time_pairloop(x: npt.NDArray[np.int32], repeats: int) -> float | None:
    """Median per-pair loop time on a pre-converted float64 copy, or None if too slow."""
    n = x.shape[0]
    pairs = n * (n - 1) // 2
    xf = x.astype(np.float64)
    probe = min(pairs, _PAIRLOOP_PROBE_PAIRS)
    start = time.perf_counter()
    for k in range(probe):
        _pair_dist(xf, k % n, (k + 1) % n)
    estimate = (time.perf_counter() - start) / max(probe, 1) * pairs
    if estimate > _PAIRLOOP_BUDGET_S:
        return None
    runs = max(1, min(repeats, int(_PAIRLOOP_BUDGET_S // max(estimate, 1e-9))))
    return _median_time(lambda: _pairloop(xf), runs)


def _peak_mb(fn: Callable[[], object]) -> float:
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


def _bench_one(n: int, d: int, repeats: int, rng: np.random.Generator) -> Row:
    x = rng.integers(-DEFAULT_MAX_ABS, DEFAULT_MAX_ABS + 1, size=(n, d), dtype=np.int32)
    exact_s = _median_time(lambda: _exact_krum(x), repeats)
    gram_s = _median_time(lambda: _gram_f64(x), repeats)
    return {
        "n": n,
        "d": d,
        "exact_s": exact_s,
        "gram_f64_s": gram_s,
        "pairloop_s": _time_pairloop(x, repeats),
        "ratio_exact_vs_gram": exact_s / gram_s,
        "peak_mb": _peak_mb(lambda: _exact_krum(x)),
    }


def run_krum_bench(
    ns: Sequence[int] = (10, 50, 100),
    ds: Sequence[int] = (10**4, 10**5, 10**6),
    repeats: int = 3,
    seed: int = 0,
) -> list[Row]:
    """Time exact Krum vs float64 Gram vs per-pair loop for every (n, d)."""
    rng = np.random.default_rng(seed)
    return [_bench_one(n, d, repeats, rng) for n in ns for d in ds]


def _fmt(value: float | int | None, spec: str) -> str:
    return "skipped" if value is None else format(value, spec)


def format_krum_table(rows: Sequence[Row]) -> str:
    """Render benchmark rows as a fixed-width text table."""
    header = (
        f"{'n':>5} {'d':>9} {'exact_s':>9} {'gram_f64_s':>10} {'pairloop_s':>10} "
        f"{'exact/gram':>10} {'peak_mb':>8}"
    )
    lines = [header, "-" * len(header)]
    for r in rows:
        lines.append(
            f"{_fmt(r['n'], 'd'):>5} {_fmt(r['d'], 'd'):>9} {_fmt(r['exact_s'], '.4f'):>9} "
            f"{_fmt(r['gram_f64_s'], '.4f'):>10} {_fmt(r['pairloop_s'], '.3f'):>10} "
            f"{_fmt(r['ratio_exact_vs_gram'], '.2f'):>10} {_fmt(r['peak_mb'], '.1f'):>8}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_krum_table(run_krum_bench()))


def time_full_aggregate(n: int = 100, d: int = 10**6, seed: int = 0) -> dict[str, float]:
    """Time one whole `aggregate` action of the STF (free-rider checks, exact Krum, weighted
    average, records) for a round of n submissions of d parameters, on an in-memory state."""
    from stf.accounts import Account, set_account
    from stf.aggregation import Rules
    from stf.context import Action, BlockInfo, Effects
    from stf.fixedpoint import pack_int32
    from stf.jobs import (
        ROUND_REVEAL,
        AggregateRound,
        Job,
        JobTerms,
        Round,
        SubmissionInfo,
        global_key,
        job_key,
        params_key,
        process_aggregate,
        round_key,
        set_stake,
        submission_key,
    )
    from stf.state import DictKV

    rng = np.random.default_rng(seed)
    owner = b"\x01" * 32
    clients = [i.to_bytes(32, "big") for i in range(2, n + 2)]
    f = (n - 3) // 2 // 2
    terms = JobTerms(1, 2 * f + 3, n, f, 1, 10**6, 0, b"", 1, 5000, 10**6, 0, Rules())
    state = DictKV()
    set_account(state, owner, Account(0, 10**24))
    job = Job(1, "bench", owner, terms, 10**21, 10**21, 1, "active", d, 16)
    state.put(job_key(1), job.encode())
    base = rng.integers(-(2**16), 2**16, d, dtype=np.int32)
    state.put(global_key(1, 0), pack_int32(base))
    direction = rng.integers(-(2**10), 2**10, d, dtype=np.int32)
    for c in clients:
        noise = rng.integers(-(2**8), 2**8, d, dtype=np.int32)
        fixed = base + direction + noise  # |v| < 2**24: exact as float32, quantizes back
        state.put(params_key(1, 1, c), (fixed / 2**16).astype("<f4").tobytes())
        revealed = SubmissionInfo(b"\x00" * 32, 1, 100, b"\x01" * 32, 1)
        state.put(submission_key(1, 1, c), revealed.encode())
        set_stake(state, c, 10**18)
    rnd = Round(1, 1, 1, 10**6, tuple(clients), ROUND_REVEAL, reveal_deadline_height=10**6)
    state.put(round_key(1, 1), rnd.encode())
    action = Action("aggregate", owner, 1, AggregateRound(1, 1, 0), b"\x00" * 32)
    del base, direction  # only the state holds the submissions now
    before = _reset_peak_rss()
    start = time.perf_counter()
    process_aggregate(state, action, BlockInfo(1, 2, 0), Effects())
    elapsed = time.perf_counter() - start
    peak = _peak_rss()
    submissions = n * d * 4
    return {
        "n": n,
        "d": d,
        "aggregate_s": elapsed,
        "submissions_mb": submissions / 2**20,
        # The process's peak resident memory during the action, above what it held before
        # (the state with the submissions in it): the aggregation's own working memory.
        "peak_extra_mb": (peak - before) / 2**20 if peak and before else float("nan"),
        "peak_extra_ratio": (peak - before) / submissions if peak and before else float("nan"),
    }


def _proc_status_bytes(field: str) -> int:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (Linux clear_refs 5); the current RSS, 0 if unknown."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        return 0
    return _proc_status_bytes("VmRSS")


def _peak_rss() -> int:
    return _proc_status_bytes("VmHWM")
