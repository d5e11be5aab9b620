"""Crash soak with a real L1 (anvil).

A steady load of mixed actions streams in (single and batched L2 transfers, withdrawals that
create settlement records, and L1 deposits from a separate thread) while the node is SIGKILLed
at seeded random moments and restarted on the same data dir. The kills aim at different
phases: at a random moment, right after a block commit, right after a batch index is seen to
increase on L1 (batch posting), and right after several deposits (watcher catch-up).

After the last restart and quiescence:
* every acknowledged action executed exactly once (every block scanned via /v1/blocks/{h});
* a clean replay from genesis in another process reaches the same state root;
* BatchCommitted events on L1 are 0..k-1, once each, and match the node's /v1/batches;
* no deposit was credited twice: the deposit key's L2 balance == the sum deposited on L1;
* each acknowledged withdrawal has its one settlement record in a committed batch.

Short (default): 4 kills. FEDROLLUP_LONG=1: 24 kills.
"""

import json
import os
import random
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from nacl.signing import SigningKey

from l1_bridge.contracts import Deployment
from node.sdk.client import SUCCESS_STATUSES, ApiError, Client
from rollup.codec import encode_action
from stf.accounts import Transfer
from stf.jobs import Withdraw
from tests.conftest import ROOT, NodeProcess, free_port
from tests.fl_harness import key, pub
from tests.l1_helpers import (
    ANVIL,
    ETH,
    batches,
    bind_l1,
    committed_batches,
    deploy_with_cli,
    l2_balance,
    mine,
    run_anvil,
    transact,
    wait_until,
    web3_at,
    write_genesis,
)

LONG = os.environ.get("FEDROLLUP_LONG") == "1"
SENDERS = [key(i) for i in range(1, 7)]
DEPOSIT_KEY = pub(15)  # not in genesis: its balance is exactly what was deposited
DEPOSITOR = 5  # anvil dev account
WITHDRAW_TO = bytes.fromhex("00000000000000000000000000000000000fed01")
GENESIS_BALANCE = 10**21
PHASES = ("random", "after_block", "batch_posting", "watcher_catchup")


class Depositor(threading.Thread):
    """L1 deposits to DEPOSIT_KEY (each mined, plus one more block) until stopped; a deposit
    counts once its receipt is in. `burst(n)` makes n deposits back to back, now."""

    def __init__(self, url: str, dep: Deployment, rng: random.Random) -> None:
        super().__init__(daemon=True)
        self.w3 = web3_at(url)
        self.inbox = self.w3.eth.contract(address=dep.inbox.address, abi=dep.inbox.abi)
        self.rng = rng
        self.deposits: list[int] = []
        self.errors: list[BaseException] = []
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def deposit(self) -> None:
        with self.lock:
            amount = (len(self.deposits) % 97 + 1) * 10**15
            fn = self.inbox.functions.deposit(DEPOSIT_KEY)
            transact(self.w3, fn, self.w3.eth.accounts[DEPOSITOR], amount)
            self.deposits.append(amount)
            mine(self.w3)

    def burst(self, n: int) -> None:
        for _ in range(n):
            self.deposit()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                self.deposit()
                self.stop.wait(self.rng.uniform(0.1, 0.4))
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)


class Submitter(threading.Thread):
    """Mixed L2 load until the node dies: single transfers, batches of transfers, withdrawals.
    Records what was acknowledged."""

    def __init__(self, url: str, chain_id: int, nonces: dict[bytes, int], seed: int) -> None:
        super().__init__(daemon=True)
        self.client = Client(url, timeout=5)
        self.chain_id = chain_id
        self.nonces = dict(nonces)
        self.rng = random.Random(seed)
        self.acked: list[str] = []
        self.withdrawals: list[str] = []
        self.stop = threading.Event()

    def _wire(self, k: SigningKey, kind: str, payload: Any) -> bytes:
        p = bytes(k.verify_key)
        nonce = self.nonces[p]
        self.nonces[p] = nonce + 1
        return encode_action(k, self.chain_id, kind, nonce, payload)

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            i += 1
            k, to = SENDERS[i % len(SENDERS)], SENDERS[(i + 1) % len(SENDERS)]
            roll = self.rng.random()
            try:
                if roll < 0.15:
                    wire = self._wire(k, "withdraw", Withdraw(10**12 + i, WITHDRAW_TO))
                    h = self.client.submit(wire)
                    self.acked.append(h)
                    self.withdrawals.append(h)
                elif roll < 0.3:
                    wires = [self._wire(k, "transfer", Transfer(bytes(to.verify_key), 1))]
                    wires += [
                        self._wire(k, "transfer", Transfer(bytes(to.verify_key), 1))
                        for _ in range(self.rng.randint(5, 30))
                    ]
                    result = self.client.submit_batch(wires)
                    self.acked += [
                        r["hash"] for r in result["results"] if r.get("status") == "accepted"
                    ]
                else:
                    wire = self._wire(k, "transfer", Transfer(bytes(to.verify_key), 1))
                    self.acked.append(self.client.submit(wire))
            except (OSError, ApiError):
                return  # the node is gone; anything unacked may or may not have landed
            time.sleep(self.rng.uniform(0, 0.02))


def next_nonces(client: Client) -> dict[bytes, int]:
    return {
        bytes(k.verify_key): int(client.account(bytes(k.verify_key))["next_nonce"]) for k in SENDERS
    }


def wait_for_kill_moment(
    phase: str, rng: random.Random, client: Client, dep: Deployment, depositor: Depositor
) -> None:
    """Block until the moment to kill in `phase` (every wait bounded)."""
    if phase == "random":
        time.sleep(rng.uniform(0.8, 2.5))
    elif phase == "after_block":
        time.sleep(rng.uniform(0.5, 1.2))
        height = int(client.health()["head"]["height"])
        deadline = time.monotonic() + 10
        while int(client.health()["head"]["height"]) == height and time.monotonic() < deadline:
            time.sleep(0.005)
    elif phase == "batch_posting":
        time.sleep(rng.uniform(0.3, 0.8))
        index = dep.next_batch_index()
        deadline = time.monotonic() + 15
        while dep.next_batch_index() == index and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.15))  # while the node updates its book / defines the next
    elif phase == "watcher_catchup":
        time.sleep(rng.uniform(0.5, 1.0))
        depositor.burst(rng.randint(3, 6))
        time.sleep(rng.uniform(0, 0.3))
    else:
        raise AssertionError(phase)


def replay_matches(url: str, genesis: Path, head: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "node.ops.cli", "replay", "--node", url, "--genesis", str(genesis)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["match"] is True, report
    assert report["height"] == int(head["height"]), report
    assert report["state_root"] == head["state_root"], report
    return report


def assert_batches_match_l1(client: Client, dep: Deployment) -> list[dict[str, Any]]:
    """Wait for the poster to catch up, then: BatchCommitted 0..k-1 once each == the book."""

    def caught_up() -> list[dict[str, Any]] | None:
        book = batches(client)
        head = int(client.health()["head"]["height"])
        done = (
            book
            and book[-1]["last_height"] == head
            and all(b["status"] in ("committed", "finalized") for b in book)
            and dep.next_batch_index() == len(book)
        )
        return book if done else None

    book = wait_until(caught_up, "the poster to catch up", timeout=60, poll=0.2)
    on_l1 = committed_batches(dep)
    indices = [i for i, _, _ in on_l1]
    assert indices == list(range(len(on_l1))), f"gap or duplicate on L1: {indices}"
    assert indices == [b["index"] for b in book]
    assert [r.hex() for _, r, _ in on_l1] == [b["output_root"][2:] for b in book]
    assert [p.hex() for _, _, p in on_l1] == [b["prev_output_root"][2:] for b in book]
    assert [b["first_height"] for b in book] == [1] + [b["last_height"] + 1 for b in book[:-1]]
    return book


def test_crash_soak_with_anvil(tmp_path: Path) -> None:
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL}")
    kills = 24 if LONG else 4
    rng = random.Random(20240607)
    started = time.monotonic()
    genesis = write_genesis(
        tmp_path / "genesis.json", 4345, [bytes(k.verify_key) for k in SENDERS], GENESIS_BALANCE
    )
    with run_anvil(tmp_path / "anvil.log") as anvil:
        deployment = deploy_with_cli(anvil.url, tmp_path / "dep.json", genesis, 5, 60)
        dep = Deployment.from_json(anvil.w3, deployment.read_text())
        args = [
            *("--l1-rpc", anvil.url, "--deployment", str(deployment)),
            *("--l1-confirmations", "2", "--genesis", str(genesis)),
            *("--block-time-ms", "100", "--batch-interval-ms", "300"),
        ]
        node = NodeProcess(tmp_path / "data", free_port(), args)
        depositor = Depositor(anvil.url, dep, random.Random(rng.random()))
        acked: list[str] = []
        withdrawals: list[str] = []
        phase_counts: Counter[str] = Counter()
        try:
            for n in range(kills):
                node.start(timeout=60)
                client = Client(node.url, timeout=10)
                if n == 0:  # the deposit key names the depositor's address before any deposit
                    bind_l1(client, key(15), anvil.w3.eth.accounts[DEPOSITOR])
                    depositor.start()
                submitter = Submitter(
                    node.url, client.chain_id, next_nonces(client), rng.randrange(1 << 30)
                )
                submitter.start()
                phase = PHASES[n % len(PHASES)]
                wait_for_kill_moment(phase, rng, client, dep, depositor)
                node.kill()
                phase_counts[phase] += 1
                submitter.join(timeout=30)
                assert not submitter.is_alive()
                acked += submitter.acked
                withdrawals += submitter.withdrawals
                assert not depositor.errors, depositor.errors
            node.start(timeout=60)
            client = Client(node.url, timeout=30)
            time.sleep(0.5)  # deposits go on while it catches up
            depositor.stop.set()
            depositor.join(timeout=30)
            assert not depositor.errors, depositor.errors
            mine(anvil.w3, 3)  # confirm the last deposits

            total = sum(depositor.deposits)
            wait_until(
                lambda: l2_balance(client, DEPOSIT_KEY) == total,
                f"every deposit credited ({total})",
                timeout=60,
                poll=0.2,
            )
            wait_until(
                lambda: all(client.action(h)["status"] in SUCCESS_STATUSES for h in acked),
                "every acknowledged action executed",
                timeout=60,
                poll=0.5,
            )
            wait_until(lambda: not client.health()["pending_actions"], "an empty mempool")
            book = assert_batches_match_l1(client, dep)

            head = client.health()["head"]
            included: Counter[str] = Counter()
            for height in range(1, int(head["height"]) + 1):
                included.update(client.block(height)["action_hashes"])
            assert [h for h, c in included.items() if c > 1] == []
            assert [h for h in acked if h not in included] == []

            for h in withdrawals:
                (record,) = client.action(h)["receipt"]["records"]
                assert record["kind"] == "withdrawal"
                proof = client._get(f"/v1/settlements/{record['record_id']}/proof")
                assert proof["batch_status"] in ("committed", "finalized")
                assert book[proof["batch_index"]]["records"] > 0

            mine(anvil.w3, 3)
            time.sleep(1.2)  # more watcher polls: nothing credited again
            assert l2_balance(client, DEPOSIT_KEY) == total
            head = client.health()["head"]
            report = replay_matches(node.url, genesis, head)
            assert client.health()["head"] == head  # quiescent throughout the replay

            elapsed = time.monotonic() - started
            print(
                f"\nsoak: kills={kills} phases={dict(phase_counts)} acked={len(acked)} "
                f"withdrawals={len(withdrawals)} deposits={len(depositor.deposits)} "
                f"deposited={total / ETH:.3f} ETH batches={len(book)} "
                f"height={report['height']} elapsed={elapsed:.1f}s"
            )
            assert len(acked) > 50 * kills // 4, f"load too light ({len(acked)} acked)"
            assert len(withdrawals) > 0 and len(depositor.deposits) > kills
        finally:
            depositor.stop.set()
            node.kill()
