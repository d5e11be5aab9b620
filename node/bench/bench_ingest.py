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
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass, field
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
    # CPU time per action (µs) of each process while the phase ran, until all was executed
    cpu_us_per_action: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        lat = sorted(self.latencies_ms)
        return {
            "cpu_us_per_action": self.cpu_us_per_action,
            "cores_busy": round(
                sum(self.cpu_us_per_action.values()) * self.actions / 1e6 / self.seconds_to_execute,
                2,
            ),
            "actions": self.actions,
            "accepted": self.accepted,
            "accepted_per_s": round(self.accepted / self.seconds_to_accept),
            "executed_per_s": round(self.accepted / self.seconds_to_execute),
            "p50_accept_ms": round(_pct(lat, 50), 2),
            "p99_accept_ms": round(_pct(lat, 99), 2),
        }


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def child_pids(pid: int) -> list[int]:
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


class CpuMeter:
    """CPU seconds of the node's processes (the executor, its ingress child) and of this
    driver between `start` and `stop`: where a phase's CPU went, per action."""

    def __init__(self, node_pid: int) -> None:
        self.roles = {"executor": node_pid}
        for child in child_pids(node_pid):
            self.roles["ingress"] = child
        self._before: dict[str, float] = {}

    def _now(self) -> dict[str, float]:
        now = {role: process_cpu_seconds(pid) for role, pid in self.roles.items()}
        now["driver"] = time.process_time()
        return now

    def start(self) -> None:
        self._before = self._now()

    def per_action_us(self, actions: int) -> dict[str, float]:
        after = self._now()
        return {
            role: round((after[role] - self._before[role]) * 1e6 / actions, 1) for role in after
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


def _start_node(
    workdir: Path, genesis: Genesis, port: int, mode: str, l1: str = "none"
) -> subprocess.Popen[bytes]:
    """`l1="none"` by default: the embedded py-evm L1 executes EVM transactions (batch
    commits) in the node's own interpreter, a cost a real L1 node bears on its own machine."""
    gpath = workdir / "genesis.json"
    gpath.write_text(json.dumps(genesis.to_json()))
    cmd = node_command(str(workdir / "data"), port, "--genesis", str(gpath), mode, "--l1", l1)
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
    l1: str = "none",
) -> dict[str, Any]:
    keys = bench_keys(accounts)
    genesis = Genesis(CHAIN_ID, 0, {bytes(k.verify_key): 10**24 for k in keys})
    report: dict[str, Any] = {"accounts": accounts, "cpu_count": os.cpu_count(), "l1": l1}
    report["verify_per_s_one_core"] = round(
        statistics.median(verify_rate_one_core(0.5) for _ in range(3))
    )
    for mode in modes:
        figures = await _bench_mode(
            mode, genesis, keys, actions, connections, repeats, paced_actions, l1
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
    l1: str,
) -> dict[str, Any]:
    """The three phases on a fresh node started in `mode`."""
    from node.cli_util import free_port

    signer = Signer(keys)
    with tempfile.TemporaryDirectory(prefix="fedrollup-bench-") as tmp:
        port = free_port()
        proc = _start_node(Path(tmp), genesis, port, mode, l1)
        try:
            await _wait_up(port, proc)
            meter = CpuMeter(proc.pid)
            # Signed before the probe starts: signing blocks this process's loop, the probe's.
            batch_inputs = [signer.next_tagged(actions) for _ in range(repeats)]
            probe = ReadProbe(port, signer.pubs)
            probe.start()
            batch_runs = [
                await _metered(meter, phase_batch(port, tagged, 1000, 4)) for tagged in batch_inputs
            ]
            reads = await probe.stop()
            single_runs = [
                await _metered(
                    meter, phase_single(port, signer.next_tagged(actions // 3), connections, None)
                )
                for _ in range(repeats)
            ]
            paced = await _metered(
                meter, phase_single(port, signer.next_tagged(paced_actions), 32, 2000.0)
            )
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return {
        "batch": _median_run(batch_runs),
        "reads_during_batches": reads,
        "single": _median_run(single_runs),
        "paced_2000_per_s": paced.to_json(),
    }


class ReadProbe:
    """Reads while the batch phase loads the node: GET /v1/accounts on one connection every
    ~5 ms. Reads are served from LevelDB snapshots; this shows whether they wait on blocks."""

    def __init__(self, port: int, pubkeys: list[bytes]) -> None:
        self.port = port
        self.pubkeys = pubkeys
        self.latencies_ms: list[float] = []
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> dict[str, float]:
        self._stop.set()
        if self._task is not None:
            await self._task
        lat = sorted(self.latencies_ms)
        return {
            "reads": len(lat),
            "p50_ms": round(_pct(lat, 50), 2),
            "p99_ms": round(_pct(lat, 99), 2),
            "max_ms": round(lat[-1], 2) if lat else float("nan"),
        }

    async def _run(self) -> None:
        conn = await Conn.open(self.port)
        try:
            index = 0
            while not self._stop.is_set():
                key = "0x" + self.pubkeys[index % len(self.pubkeys)].hex()
                index += 1
                t = time.perf_counter()
                status, payload = await conn.request("GET", f"/v1/accounts/{key}")
                self.latencies_ms.append((time.perf_counter() - t) * 1000)
                if status != 200:
                    raise RuntimeError(f"read answered {status}: {payload[:200]!r}")
                await asyncio.sleep(0.005)
        finally:
            conn.close()


async def _metered(meter: CpuMeter, phase: Awaitable[PhaseResult]) -> PhaseResult:
    meter.start()
    result = await phase
    result.cpu_us_per_action = meter.per_action_us(result.actions)
    return result


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
        f"ingest: {report['accounts']} funded accounts, {cores} cores, L1 {report['l1']},"
        " median of runs",
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
    r = report["reads_during_batches"]
    return [
        f"  batch endpoint, 1000/request {b['accepted_per_s']:>8,} accepted/s"
        f" = {b['accepted_per_s'] / v:.2f}x one core's verify;"
        f" {b['executed_per_s']:,} executed/s; runs {b['runs_accepted_per_s']}",
        f"  one action per request       {s['accepted_per_s']:>8,} accepted/s;"
        f" {s['executed_per_s']:,} executed/s; runs {s['runs_accepted_per_s']}",
        f"  paced at 2,000/s             p50 {p['p50_accept_ms']} ms,"
        f" p99 {p['p99_accept_ms']} ms to accepted",
        f"  reads during the batches     {r['reads']} GET /v1/accounts: p50 {r['p50_ms']} ms,"
        f" p99 {r['p99_ms']} ms, max {r['max_ms']} ms",
        *(
            f"  CPU per action, {name:<14} {_format_cpu(phase)}"
            for name, phase in (("batch", b), ("one a request", s), ("paced", p))
        ),
    ]


def _format_cpu(phase: dict[str, Any]) -> str:
    """Where the CPU went: µs per action by process, and how many cores that kept busy."""
    parts = ", ".join(f"{role} {us:,.0f} µs" for role, us in phase["cpu_us_per_action"].items())
    return f"{parts}; {phase['cores_busy']} cores busy"


def main(args: argparse.Namespace) -> int:
    accounts, actions, repeats, paced = args.accounts, args.actions, args.repeats, 10_000
    if args.quick:
        accounts, actions, repeats, paced = 500, 3000, 1, 2000
    modes = MODES if args.mode == "both" else (f"--{args.mode}",)
    report = asyncio.run(
        run_bench(accounts, actions, args.connections, repeats, paced, modes, args.l1)
    )
    print(format_report(report))
    print(json.dumps(report))
    return 0
