"""`fedrollup bench ingest`: how fast the node accepts and executes signed transfers.

A node is started as its own process on a temporary data dir with a genesis of N funded
accounts; this process drives it over loopback with pre-signed transfers, through a lean
HTTP/1.1 keep-alive client (so the driver spends little of the shared CPU), and reports:
accepted/s and executed/s through the batch endpoint, accepted/s with one action per
request, p50/p99 time to `accepted` at a fixed offered rate, and, measured in the same run,
ed25519 verifications per second on one core (the ceiling for ingest). It measures both node
modes in the same run, each on a fresh node: the single process (the top-level figures) and the
split sequencer (`--split-ingress`, under "split_ingress"), so their ratio is like for like.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.signing import SigningKey

from node.cli_util import node_command
from rollup.codec import encode_action
from rollup.genesis import Genesis
from stf.accounts import Transfer

CHAIN_ID = 4242
T = TypeVar("T")


def bench_keys(count: int) -> list[SigningKey]:
    return [SigningKey(i.to_bytes(32, "big")) for i in range(1, count + 1)]


def verify_rate_one_core(seconds: float = 1.0) -> float:
    key = SigningKey(bytes(range(32)))
    msg = os.urandom(180)
    sig = key.sign(msg).signature
    pk = bytes(key.verify_key)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(200):
            crypto_sign_open(sig + msg, pk)
        count += 200
    return count / (time.perf_counter() - start)


class Signer:
    """Pre-signs transfers round-robin over the accounts, tracking each sender's nonce."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = keys
        self.pubs = [bytes(k.verify_key) for k in keys]
        self.nonces = [0] * len(keys)
        self.cursor = 0

    def next_tagged(self, count: int) -> list[tuple[int, bytes]]:
        """(sender index, signed transfer) pairs, each sender's nonces in increasing order."""
        out = []
        n = len(self.keys)
        for _ in range(count):
            i = self.cursor % n
            self.cursor += 1
            self.nonces[i] += 1
            payload = Transfer(to=self.pubs[(i * 7919 + 1) % n], amount=1)
            wire = encode_action(self.keys[i], CHAIN_ID, "transfer", self.nonces[i], payload)
            out.append((i, wire))
        return out


def lanes_by_sender(
    tagged: list[tuple[int, bytes]], connections: int
) -> list[list[tuple[int, bytes]]]:
    """Split actions over connections so that each sender uses exactly one connection.

    A connection sends one request at a time, so a sender's nonces reach the node in order;
    spreading one sender over several connections lets a later nonce overtake an earlier one,
    and the node rightly answers `nonce_gap`. Each entry keeps its index in the whole run
    (the paced phase schedules by it).
    """
    lanes: list[list[tuple[int, bytes]]] = [[] for _ in range(connections)]
    for index, (sender, wire) in enumerate(tagged):
        lanes[sender % connections].append((index, wire))
    return [lane for lane in lanes if lane]


class Conn:
    """A minimal HTTP/1.1 keep-alive connection: one request at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @staticmethod
    async def open(port: int) -> "Conn":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return Conn(reader, writer)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/msgpack\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        self.writer.write(head.encode() + body)
        status_line = await self.reader.readline()
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        payload = await self.reader.readexactly(length)
        return int(status_line.split()[1]), payload

    def close(self) -> None:
        self.writer.close()


async def _health(port: int) -> dict[str, Any]:
    conn = await Conn.open(port)
    try:
        _, body = await conn.request("GET", "/v1/health")
        result: dict[str, Any] = json.loads(body)
        return result
    finally:
        conn.close()


async def _wait_executed(port: int, target_height_min: int, timeout: float = 300) -> float:
    """Wait until nothing is pending; returns the monotonic time it was first seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        h = await _health(port)
        if h["pending_actions"] == 0 and h["head"]["height"] >= target_height_min:
            return time.monotonic()
        await asyncio.sleep(0.02)
    raise TimeoutError("actions still pending")


@dataclass
class PhaseResult:
    actions: int
    accepted: int
    seconds_to_accept: float
    seconds_to_execute: float
    latencies_ms: list[float]

    def to_json(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "actions": self.actions,
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted / self.seconds_to_accept),
            "executed_per_s": round(self.accepted / self.seconds_to_execute),
            "p50_accept_ms": round(_pct(lat, 50), 2),
            "p99_accept_ms": round(_pct(lat, 99), 2),
        }


def _pct(sorted_values: list[float], pct: float) -> float:
    if not sorted_values:
        return float("nan")
    idx = min(len(sorted_values) - 1, round(pct / 100 * (len(sorted_values) - 1)))
    return sorted_values[idx]


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


async def phase_batch(
    port: int, tagged: list[tuple[int, bytes]], batch: int, connections: int
) -> PhaseResult:
    """Batches of `batch` actions; each sender's actions travel on one connection, in order."""
    lanes = [
        [msgpack.packb([w for _, w in chunk], use_bin_type=True) for chunk in _chunks(lane, batch)]
        for lane in lanes_by_sender(tagged, connections)
    ]
    height0 = (await _health(port))["head"]["height"]
    accepted = 0
    latencies: list[float] = []

    async def worker(bodies: list[bytes]) -> None:
        nonlocal accepted
        conn = await Conn.open(port)
        try:
            for body in bodies:
                t = time.perf_counter()
                status, payload = await conn.request("POST", "/v1/actions/batch", body)
                latencies.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    raise RuntimeError(f"batch answered {status}: {payload[:200]!r}")
                accepted += json.loads(payload)["accepted"]
        finally:
            conn.close()

    start = time.monotonic()
    await asyncio.gather(*(worker(bodies) for bodies in lanes))
    accepted_at = time.monotonic()
    if accepted != len(tagged):
        raise RuntimeError(f"the node accepted {accepted} of {len(tagged)} batched actions")
    executed_at = await _wait_executed(port, height0 + 1)
    return PhaseResult(len(tagged), accepted, accepted_at - start, executed_at - start, latencies)


async def phase_single(
    port: int, tagged: list[tuple[int, bytes]], connections: int, rate: float | None
) -> PhaseResult:
    """One action per request; closed loop (as fast as possible) or open loop at `rate`/s.

    Each sender is pinned to one connection (see `lanes_by_sender`); in the open loop each
    action is due at `start + index / rate` in the order of the whole run.
    """
    height0 = (await _health(port))["head"]["height"]
    accepted = 0
    latencies: list[float] = []
    start = time.monotonic()

    async def worker(lane: list[tuple[int, bytes]]) -> None:
        nonlocal accepted
        conn = await Conn.open(port)
        try:
            for index, wire in lane:
                if rate is not None:
                    delay = start + index / rate - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                t = time.perf_counter()
                status, payload = await conn.request("POST", "/v1/actions", wire)
                latencies.append((time.perf_counter() - t) * 1000)
                if status != 202:
                    raise RuntimeError(f"action answered {status}: {payload[:200]!r}")
                accepted += 1
        finally:
            conn.close()

    await asyncio.gather(*(worker(lane) for lane in lanes_by_sender(tagged, connections)))
    accepted_at = time.monotonic()
    executed_at = await _wait_executed(port, height0 + 1)
    return PhaseResult(len(tagged), accepted, accepted_at - start, executed_at - start, latencies)


MODES = ("--single-process", "--split-ingress")


def _start_node(workdir: Path, genesis: Genesis, port: int, mode: str) -> subprocess.Popen[bytes]:
    gpath = workdir / "genesis.json"
    gpath.write_text(json.dumps(genesis.to_json()))
    cmd = node_command(str(workdir / "data"), port, "--genesis", str(gpath), mode)
    log = (workdir / "node.log").open("wb")
    return subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "FEDROLLUP_LOG_LEVEL": "WARNING"},
    )


async def _wait_up(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("node exited during start-up")
        try:
            await _health(port)
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise TimeoutError("node did not start")


async def run_bench(
    accounts: int,
    actions: int,
    connections: int,
    repeats: int,
    paced_actions: int = 10_000,
    modes: tuple[str, ...] = MODES,
) -> dict[str, Any]:
    keys = bench_keys(accounts)
    genesis = Genesis(CHAIN_ID, 0, {bytes(k.verify_key): 10**24 for k in keys})
    report: dict[str, Any] = {"accounts": accounts, "cpu_count": os.cpu_count()}
    report["verify_per_s_one_core"] = round(
        statistics.median(verify_rate_one_core(0.5) for _ in range(3))
    )
    for mode in modes:
        figures = await _bench_mode(
            mode, genesis, keys, actions, connections, repeats, paced_actions
        )
        if mode == "--split-ingress":
            report["split_ingress"] = figures
        else:
            report.update(figures)
    return report


async def _bench_mode(
    mode: str,
    genesis: Genesis,
    keys: list[SigningKey],
    actions: int,
    connections: int,
    repeats: int,
    paced_actions: int,
) -> dict[str, Any]:
    """The three phases on a fresh node started in `mode`."""
    from node.cli_util import free_port

    signer = Signer(keys)
    with tempfile.TemporaryDirectory(prefix="fedrollup-bench-") as tmp:
        port = free_port()
        proc = _start_node(Path(tmp), genesis, port, mode)
        try:
            await _wait_up(port, proc)
            batch_runs = [
                await phase_batch(port, signer.next_tagged(actions), 1000, 4)
                for _ in range(repeats)
            ]
            single_runs = [
                await phase_single(port, signer.next_tagged(actions // 3), connections, None)
                for _ in range(repeats)
            ]
            paced = await phase_single(port, signer.next_tagged(paced_actions), 32, 2000.0)
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {
        "batch": _median_run(batch_runs),
        "single": _median_run(single_runs),
        "paced_2000_per_s": paced.to_json(),
    }


def _median_run(runs: list[PhaseResult]) -> dict[str, Any]:
    """The run with the median accepted rate, plus every run's rates for the spread."""
    rows = sorted((r.to_json() for r in runs), key=lambda j: j["accepted_per_s"])
    median = dict(rows[len(rows) // 2])
    median["runs_accepted_per_s"] = [r["accepted_per_s"] for r in rows]
    median["runs_executed_per_s"] = [r["executed_per_s"] for r in rows]
    return median


def format_report(report: dict[str, Any]) -> str:
    v = report["verify_per_s_one_core"]
    cores = report["cpu_count"]
    lines = [
        f"ingest: {report['accounts']} funded accounts, {cores} cores, median of runs",
        f"  ed25519 verify on one core   {v:>8,}/s  (the per-core ceiling)",
    ]
    if "batch" in report:
        lines += ["single process:", *_format_mode(report, v)]
    if "split_ingress" in report:
        lines += ["split (ingress process + executor process):"]
        lines += _format_mode(report["split_ingress"], v)
    if "batch" in report and "split_ingress" in report:
        lines.append(_format_ratios(report, report["split_ingress"]))
    return "\n".join(lines)


def _format_ratios(single: dict[str, Any], split: dict[str, Any]) -> str:
    def ratio(phase: str, key: str) -> str:
        return f"{split[phase][key] / single[phase][key]:.2f}x"

    return (
        f"  split / single: batch accepted {ratio('batch', 'accepted_per_s')},"
        f" batch executed {ratio('batch', 'executed_per_s')},"
        f" single accepted {ratio('single', 'accepted_per_s')},"
        f" paced p99 {ratio('paced_2000_per_s', 'p99_accept_ms')}"
    )


def _format_mode(report: dict[str, Any], v: int) -> list[str]:
    b, s, p = report["batch"], report["single"], report["paced_2000_per_s"]
    return [
        f"  batch endpoint, 1000/request {b['accepted_per_s']:>8,} accepted/s"
        f" = {b['accepted_per_s'] / v:.2f}x one core's verify;"
        f" {b['executed_per_s']:,} executed/s; runs {b['runs_accepted_per_s']}",
        f"  one action per request       {s['accepted_per_s']:>8,} accepted/s;"
        f" {s['executed_per_s']:,} executed/s; runs {s['runs_accepted_per_s']}",
        f"  paced at 2,000/s             p50 {p['p50_accept_ms']} ms,"
        f" p99 {p['p99_accept_ms']} ms to accepted",
    ]


def main(args: argparse.Namespace) -> int:
    accounts, actions, repeats, paced = args.accounts, args.actions, args.repeats, 10_000
    if args.quick:
        accounts, actions, repeats, paced = 500, 3000, 1, 2000
    modes = MODES if args.mode == "both" else (f"--{args.mode}",)
    report = asyncio.run(run_bench(accounts, actions, args.connections, repeats, paced, modes))
    print(format_report(report))
    print(json.dumps(report))
    return 0
