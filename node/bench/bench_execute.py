"""`fedrollup bench execute`: how fast a block of plain transfers executes and commits.

A genesis of N funded accounts goes into a real ChainStore (LevelDB) in a temporary dir; K
blocks of B transfers (B = the node's default block_max_actions) are signed and decoded
before anything is timed. Each block then runs exactly what the sequencer runs per block
(`Chain.execute` + `Chain.commit`, as node.core.service `_execute_and_commit` does, minus
its metrics), timed per block. Reported: the median transfers/s over the blocks, the split
between execute and commit, one core's ed25519 verification rate measured in the same run
(the issue's yardstick) and the final head hash and state root (fixed keys and timestamps:
any code change that keeps consensus must print the same ones). `--profile` adds a cProfile
breakdown of the timed part in microseconds per transfer. Also reported: the time the
cyclic garbage collector took during the timed blocks.
"""

import argparse
import cProfile
import gc
import json
import os
import pstats
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.bench.bench_ingest import CHAIN_ID, Signer, bench_keys, verify_rate_one_core
from node.config import NodeConfig
from rollup.chain import Chain
from rollup.codec import SignedAction, decode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore

_BALANCE = 10**24
_BLOCK_INTERVAL_MS = 250
_PROFILE_ROWS = 25


@dataclass(frozen=True)
class BlockTiming:
    transfers: int
    execute_s: float
    commit_s: float
    cpu_s: float  # this thread's CPU time: steadier than wall time on a shared machine

    @property
    def per_s(self) -> float:
        return self.transfers / (self.execute_s + self.commit_s)


def signed_blocks(accounts: int, blocks: int, per_block: int) -> list[list[SignedAction]]:
    """Pre-signed, decoded transfers, round-robin over the accounts (as bench ingest sends)."""
    signer = Signer(bench_keys(accounts))
    return [
        [decode_action(wire, CHAIN_ID, verify=False) for _, wire in signer.next_tagged(per_block)]
        for _ in range(blocks)
    ]


def _execute_and_commit(chain: Chain, actions: list[SignedAction], seq: int) -> BlockTiming:
    timestamp_ms = chain.next_timestamp(chain.head.timestamp_ms + _BLOCK_INTERVAL_MS)
    cpu_started, started = time.thread_time(), time.perf_counter()
    executed = chain.execute(actions, timestamp_ms)
    executed_at = time.perf_counter()
    chain.commit(executed, seq)
    committed_at, cpu_s = time.perf_counter(), time.thread_time() - cpu_started
    failed = [r for r in executed.record.receipts if not r.ok]
    if failed:  # a refused transfer would make the bench measure the wrong path
        raise RuntimeError(f"{len(failed)} transfers failed, first: {failed[0].error}")
    return BlockTiming(len(actions), executed_at - started, committed_at - executed_at, cpu_s)


def run_execute_bench(
    accounts: int, blocks: int, per_block: int, profile: bool = False
) -> dict[str, Any]:
    keys = bench_keys(accounts)
    genesis = Genesis(CHAIN_ID, 0, {bytes(k.verify_key): _BALANCE for k in keys})
    prepared = signed_blocks(accounts, blocks, per_block)
    profiler = cProfile.Profile() if profile else None
    timings: list[BlockTiming] = []
    gc_clock = GcClock()
    with tempfile.TemporaryDirectory(prefix="fedrollup-bench-exec-") as tmp:
        store = ChainStore(Path(tmp) / "data")
        try:
            chain = Chain(store, genesis)
            seq = 0
            gc.callbacks.append(gc_clock.observe)
            for actions in prepared:
                seq += len(actions)
                if profiler is not None:
                    profiler.enable()
                timings.append(_execute_and_commit(chain, actions, seq))
                if profiler is not None:
                    profiler.disable()
            head = chain.head
        finally:
            if gc_clock.observe in gc.callbacks:
                gc.callbacks.remove(gc_clock.observe)
            store.close()
    verify = statistics.median(verify_rate_one_core(0.5) for _ in range(3))
    rates = [t.per_s for t in timings]
    median = statistics.median(rates)
    report: dict[str, Any] = {
        "accounts": accounts,
        "blocks": blocks,
        "transfers_per_block": per_block,
        "cpu_count": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "transfers_per_s": round(median),
        "runs_transfers_per_s": [round(r) for r in rates],
        "us_per_transfer": round(1e6 / median, 1),
        "execute_us_per_transfer": _median_us(timings, lambda t: t.execute_s),
        "commit_us_per_transfer": _median_us(timings, lambda t: t.commit_s),
        "cpu_us_per_transfer": _median_us(timings, lambda t: t.cpu_s),
        "cpu_us_per_transfer_best": round(min(1e6 * t.cpu_s / t.transfers for t in timings), 1),
        "gc_us_per_transfer": round(1e6 * gc_clock.seconds / (blocks * per_block), 1),
        "gc_full_collections": gc_clock.full_collections,
        "verify_per_s_one_core": round(verify),
        "ratio_to_verify": round(median / verify, 3),
        "head_height": head.height,
        "head_hash": "0x" + head.hash().hex(),
        "state_root": "0x" + head.state_root.hex(),
    }
    if profiler is not None:
        report["profile"] = profile_rows(profiler, blocks * per_block)
    return report


class GcClock:
    """Time the cyclic garbage collector takes while blocks run (it scans every container
    object, the prepared blocks included, as it scans a node's mempool)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.full_collections = 0
        self._started = 0.0

    def observe(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            return
        self.seconds += time.perf_counter() - self._started
        self.full_collections += info["generation"] == 2


def _median_us(timings: list[BlockTiming], part: Callable[[BlockTiming], float]) -> float:
    return round(statistics.median(1e6 * part(t) / t.transfers for t in timings), 1)


def profile_rows(profiler: cProfile.Profile, transfers: int) -> list[dict[str, Any]]:
    """The top functions by cumulative time, in microseconds per transfer."""
    stats = pstats.Stats(profiler)
    rows = []
    for (path, line, name), entry in stats.stats.items():  # type: ignore[attr-defined]
        _, calls, tottime, cumtime, _ = entry
        where = f"{Path(path).parent.name}/{Path(path).name}:{line}" if line else path
        rows.append(
            {
                "function": f"{where}({name})",
                "calls": calls,
                "cum_us": round(1e6 * cumtime / transfers, 2),
                "own_us": round(1e6 * tottime / transfers, 2),
            }
        )
    rows.sort(key=lambda r: r["cum_us"], reverse=True)
    return rows[:_PROFILE_ROWS]


def format_report(report: dict[str, Any]) -> str:
    v = report["verify_per_s_one_core"]
    lines = [
        f"execute: {report['blocks']} blocks of {report['transfers_per_block']:,} transfers, "
        f"{report['accounts']:,} funded accounts, LevelDB, load average "
        f"{report['load_average']}",
        f"  execute + commit   {report['transfers_per_s']:>8,} transfers/s (median of blocks; "
        f"{report['us_per_transfer']} us each: execute {report['execute_us_per_transfer']} + "
        f"commit {report['commit_us_per_transfer']}); blocks {report['runs_transfers_per_s']}",
        f"  CPU time           {report['cpu_us_per_transfer']:>8} us per transfer (median; "
        f"best block {report['cpu_us_per_transfer_best']}); in the cyclic GC "
        f"{report['gc_us_per_transfer']} us ({report['gc_full_collections']} full collections)",
        f"  ed25519 verify     {v:>8,}/s on one core; ratio {report['ratio_to_verify']:.2f}x",
        f"  head {report['head_height']} {report['head_hash']}",
        f"  state root {report['state_root']}",
    ]
    for row in report.get("profile", []):
        lines.append(
            f"  {row['cum_us']:>8.2f} us cum {row['own_us']:>8.2f} us own "
            f"{row['calls']:>9,}  {row['function']}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    accounts, blocks, per_block = args.accounts, args.blocks, NodeConfig().block_max_actions
    if args.quick:
        accounts, blocks, per_block = 1000, 3, 1000
    report = run_execute_bench(accounts, blocks, per_block, args.profile)
    print(format_report(report))
    print(json.dumps(report))
    return 0
