"""`fedrollup bench storage` and `fedrollup bench restart`: the data dir at FL scale.

storage: a job is set up directly through the chain's own block-production code path
(`Chain.execute` + `commit`, as the sequencer runs it), then a node process runs FL rounds over
loopback HTTP (every participant commits and reveals, the aggregator closes the round). After
each phase the node is stopped and the data dir measured twice: as the node left it, and after
a LevelDB compaction (the settled size). Growth is reported against the bytes submitted.

restart: a data dir with N transfers of history is built through the same code path; then
the time from starting a node process on it to its first 200 on the head (`/v1/blocks/latest`)
and on a state read with proof (`/v1/accounts/{key}`).
"""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from nacl.signing import SigningKey

from node.cli_util import free_port, node_command
from node.sdk.client import Client, PendingReveal
from rollup.block import Receipt
from rollup.chain import Chain
from rollup.codec import SignedAction, decode_action, encode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf.accounts import Transfer
from stf.actions import Propose, terms_to_tuple
from stf.aggregation import Rules
from stf.identity import BindL1
from stf.jobs import JobTerms
from stf.l1 import STAKE, L1Message, next_l1_nonce
from stf.models import Upload
from stf.state import DictKV

CHAIN_ID = 4343
_BALANCE = 10**24
_STAKE = 10**18


def bench_key(i: int) -> SigningKey:
    return SigningKey(i.to_bytes(32, "big"))


def _pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


class DirectChain:
    """Blocks cut through the node's own execution and commit path, without HTTP: how the
    benches build a data dir fast. The node opens the result like any data dir."""

    def __init__(self, data_dir: Path, genesis: Genesis) -> None:
        self.store = ChainStore(data_dir / "chain")
        self.chain = Chain(self.store, genesis)
        self.nonces: dict[bytes, int] = {}
        self.time_ms = max(genesis.timestamp_ms, self.chain.head.timestamp_ms)

    def sign(self, key: SigningKey, action_type: str, payload: Any) -> SignedAction:
        sender = _pub(key)
        nonce = self.nonces.get(sender, 0) + 1
        self.nonces[sender] = nonce
        wire = encode_action(key, CHAIN_ID, action_type, nonce, payload)
        return decode_action(wire, CHAIN_ID, verify=False)

    def block(
        self, actions: list[SignedAction], messages: list[L1Message] | None = None
    ) -> list[Receipt]:
        self.time_ms += 1000
        origin = None
        if messages:
            origin = (messages[-1].l1_block, messages[-1].nonce.to_bytes(32, "big"))
        executed = self.chain.execute(actions, self.time_ms, messages, origin)
        self.chain.commit(executed, 0)
        return executed.record.receipts

    def ok(self, actions: list[SignedAction], messages: list[L1Message] | None = None) -> None:
        bad = [(r.error, r.detail) for r in self.block(actions, messages) if not r.ok]
        if bad:
            raise RuntimeError(f"setup action failed: {bad[:3]}")

    def close(self) -> None:
        self.store.close()


# -- storage ----------------------------------------------------------------------------------


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _sizes(data_dir: Path) -> dict[str, int]:
    return {
        "chain": dir_bytes(data_dir / "chain"),
        "mempool": dir_bytes(data_dir / "mempool") if (data_dir / "mempool").exists() else 0,
    }


def _compact(data_dir: Path) -> None:
    store = ChainStore(data_dir / "chain")
    try:
        store.compact()
    finally:
        store.close()


def _measure(data_dir: Path) -> dict[str, dict[str, int]]:
    """The data dir as the node left it, then after a LevelDB compaction."""
    raw = _sizes(data_dir)
    _compact(data_dir)
    return {"as_left": raw, "compacted": _sizes(data_dir)}


def _setup_job(data_dir: Path, participants: int, params: int, rounds: int) -> Genesis:
    owner, clients = bench_key(1), [bench_key(i) for i in range(2, participants + 2)]
    genesis = Genesis(CHAIN_ID, 0, {_pub(k): _BALANCE for k in [owner, *clients]})
    chain = DirectChain(data_dir, genesis)
    try:
        init = np.random.default_rng(0).normal(0, 0.1, params).astype("<f4").tobytes()
        chain.ok(
            [chain.sign(owner, "upload", Upload("bench", (("w", (params,)),), init, 16, 0, b""))]
        )
        f = max(0, (participants - 3) // 4)
        terms = JobTerms(
            rounds + 1, 2 * f + 3, participants, f, _STAKE, 100_000, 0, b"", 1, 5000, 10_000, 0,
            Rules(),
        )  # fmt: skip
        propose = Propose("train", "bench", 10**21, 0, terms_to_tuple(terms))
        chain.ok([chain.sign(owner, "propose", propose)])
        chain.ok([chain.sign(k, "bind_l1", BindL1(_l1_address(i))) for i, k in enumerate(clients)])
        first = next_l1_nonce(DictKV({}))  # the chain has seen no L1 message yet
        stakes = [
            L1Message(first + i, STAKE, _pub(k), _l1_address(i), _STAKE, b"", first + i)
            for i, k in enumerate(clients)
        ]
        chain.ok([], stakes)
    finally:
        chain.close()
    return genesis


def _l1_address(i: int) -> bytes:
    return b"\xb0" + i.to_bytes(19, "big")


class NodeRunner:
    """A node process on loopback over a data dir (`--l1 none`)."""

    def __init__(self, workdir: Path, genesis: Genesis, extra: list[str] | None = None) -> None:
        self.workdir = workdir
        self.data_dir = workdir / "data"
        self.genesis_path = workdir / "genesis.json"
        self.genesis_path.write_text(json.dumps(genesis.to_json()))
        self.extra = extra or []
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spawn(self) -> subprocess.Popen[bytes]:
        cmd = node_command(
            str(self.data_dir), self.port, "--l1", "none", "--genesis", str(self.genesis_path),
            "--log-level", "WARNING", *self.extra,
        )  # fmt: skip
        log = (self.workdir / "node.log").open("ab")
        self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        return self.proc

    def start(self, timeout: float = 120.0) -> Client:
        self.spawn()
        until_200(self.url + "/v1/health", timeout, self.proc)
        return Client(self.url, timeout=600)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=120)
            self.proc = None


def until_200(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> float:
    """Poll `url` until it answers 200; returns the monotonic time it did."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the node exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status == 200:
                    return time.monotonic()
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.01)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


def _round_params(round_: int, participants: int, params: int) -> list[bytes]:
    rng = np.random.default_rng(round_)
    base = rng.normal(0, 0.1, params)
    return [
        (base + rng.normal(0, 0.01, params)).astype("<f4").tobytes() for _ in range(participants)
    ]


def _all_ok(client: Client, hashes: list[str]) -> None:
    for h in hashes:
        status = client.wait(h, timeout=900)
        if status["status"] == "failed":
            raise RuntimeError(f"action failed: {status.get('receipt')}")


def _submit_round(client: Client, job_id: int, round_: int, participants: int, params: int) -> int:
    """Commit, close the commits, reveal; returns the bytes of parameters revealed."""
    owner, clients = bench_key(1), [bench_key(i) for i in range(2, participants + 2)]
    vectors = _round_params(round_, participants, params)

    def commit(i: int) -> tuple[str, PendingReveal]:
        return client.commit_params(
            clients[i], job_id, round_, np.frombuffer(vectors[i], dtype="<f4"), 100
        )

    with ThreadPoolExecutor(4) as pool:
        commits = list(pool.map(commit, range(participants)))
        _all_ok(client, [h for h, _ in commits])
        _all_ok(client, [client.aggregate(owner, job_id, round_)])
        reveals = list(
            pool.map(lambda i: client.reveal_params(clients[i], commits[i][1]), range(participants))
        )
    _all_ok(client, reveals)
    return sum(len(v) for v in vectors)


def run_storage_bench(participants: int, params: int, rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedrollup-bench-storage-") as tmp:
        workdir = Path(tmp)
        genesis = _setup_job(workdir / "data", participants, params, rounds)
        node = NodeRunner(workdir, genesis, ["--block-time-ms", "100"])
        before = _measure(node.data_dir)
        report: dict[str, Any] = {"participants": participants, "params": params, "rounds": []}
        report["setup"] = before
        for round_ in range(1, rounds + 1):
            client = node.start()
            started = time.monotonic()
            submitted = _submit_round(client, 1, round_, participants, params)
            submit_s = time.monotonic() - started
            node.stop()
            revealed = _measure(node.data_dir)
            client = node.start()
            started = time.monotonic()
            _all_ok(client, [client.aggregate(bench_key(1), 1, round_)])
            aggregate_s = time.monotonic() - started
            node.stop()
            after = _measure(node.data_dir)
            report["rounds"].append(
                _round_row(round_, submitted, before, revealed, after, submit_s, aggregate_s)
            )
            before = after
        return report


def _growth(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]], kind: str) -> int:
    return sum(b[kind].values()) - sum(a[kind].values())


def _round_row(
    round_: int,
    submitted: int,
    before: dict[str, dict[str, int]],
    revealed: dict[str, dict[str, int]],
    after: dict[str, dict[str, int]],
    submit_s: float,
    aggregate_s: float,
) -> dict[str, Any]:
    def ratio(a: dict[str, dict[str, int]], b: dict[str, dict[str, int]], kind: str) -> float:
        return round(_growth(a, b, kind) / submitted, 3)

    return {
        "round": round_,
        "submitted_bytes": submitted,
        "reveals_growth_x": {
            "as_left": ratio(before, revealed, "as_left"),
            "compacted": ratio(before, revealed, "compacted"),
        },
        "round_growth_x": {
            "as_left": ratio(before, after, "as_left"),
            "compacted": ratio(before, after, "compacted"),
        },
        "sizes_after_round": after,
        "commit_reveal_s": round(submit_s, 1),
        "aggregate_s": round(aggregate_s, 1),
    }


def format_storage(report: dict[str, Any]) -> str:
    lines = [
        f"storage: {report['participants']} participants x {report['params']:,} f32 parameters,"
        " over HTTP; data-dir growth / bytes submitted (as the node left it | after compaction)"
    ]
    for r in report["rounds"]:
        rv, rd = r["reveals_growth_x"], r["round_growth_x"]
        lines.append(
            f"  round {r['round']}: {r['submitted_bytes'] / 1e6:,.1f} MB submitted;"
            f" reveals {rv['as_left']}x | {rv['compacted']}x;"
            f" whole round (with aggregate) {rd['as_left']}x | {rd['compacted']}x;"
            f" commit+reveal {r['commit_reveal_s']} s, aggregate {r['aggregate_s']} s"
        )
    return "\n".join(lines)


# -- restart ----------------------------------------------------------------------------------


def build_history(data_dir: Path, actions: int, accounts: int, block_actions: int) -> Genesis:
    """`actions` transfers among `accounts` keys, `block_actions` a block."""
    keys = [bench_key(i) for i in range(1, accounts + 1)]
    pubs = [_pub(k) for k in keys]
    genesis = Genesis(CHAIN_ID, 0, dict.fromkeys(pubs, _BALANCE))
    chain = DirectChain(data_dir, genesis)
    try:
        done = 0
        while done < actions:
            count = min(block_actions, actions - done)
            signed = [
                chain.sign(keys[i % accounts], "transfer", Transfer(pubs[(i + 1) % accounts], 1))
                for i in range(done, done + count)
            ]
            chain.ok(signed)
            done += count
    finally:
        chain.close()
    return genesis


def time_restart(node: NodeRunner, account: bytes) -> dict[str, float]:
    started = time.monotonic()
    proc = node.spawn()
    try:
        head = until_200(node.url + "/v1/blocks/latest", 120, proc)
        state = until_200(node.url + f"/v1/accounts/0x{account.hex()}", 120, proc)
    finally:
        node.stop()
    return {"head_s": round(head - started, 3), "state_read_s": round(state - started, 3)}


def time_imports() -> float:
    """A process that only imports what `fedrollup run` imports: the floor under any restart."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import node.ops.cli, node.server.app"], check=True)
    return round(time.monotonic() - started, 3)


def run_restart_bench(actions: int, repeats: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fedrollup-bench-restart-") as tmp:
        workdir = Path(tmp)
        started = time.monotonic()
        genesis = build_history(workdir / "data", actions, 1000, 5000)
        build_s = time.monotonic() - started
        node = NodeRunner(workdir, genesis)
        runs = [time_restart(node, _pub(bench_key(1))) for _ in range(repeats)]
        imports = [time_imports() for _ in range(repeats)]
        return {
            "median_imports_only_s": statistics.median(imports),
            "actions": actions,
            "data_dir_bytes": dir_bytes(workdir / "data"),
            "build_s": round(build_s, 1),
            "runs": runs,
            "median_head_s": statistics.median(r["head_s"] for r in runs),
            "median_state_read_s": statistics.median(r["state_read_s"] for r in runs),
        }


def format_restart(report: dict[str, Any]) -> str:
    return (
        f"restart: {report['actions']:,} actions of history"
        f" ({report['data_dir_bytes'] / 1e6:,.0f} MB data dir, built in {report['build_s']} s);"
        f" process start -> first 200 on the head: median {report['median_head_s']} s,"
        f" on a state read: {report['median_state_read_s']} s"
        f" (runs: {', '.join(str(r['state_read_s']) for r in report['runs'])});"
        f" a process that only imports the node's modules: {report['median_imports_only_s']} s"
    )


def main(args: argparse.Namespace) -> int:
    if args.which == "storage":
        participants, params, rounds = (8, 50_000, 2) if args.quick else (50, 1_000_000, 2)
        report = run_storage_bench(participants, params, rounds)
        print(format_storage(report))
    else:
        actions = 20_000 if args.quick else 1_000_000
        report = run_restart_bench(actions, 1 if args.quick else args.repeats)
        print(format_restart(report))
    print(json.dumps(report))
    return 0
