"""L1 faults against a real anvil node.

(a) Outage: anvil stops (SIGTERM, it dumps its chain with --state) and comes back on the same
    port from that state; the node's poster and watcher resume: deposits made before the
    outage are credited once, batches continue on L1 with no gap and no duplicate.
(b) Reorg of depth 3 (anvil_reorg) around deposits and batch commits, with
    --l1-confirmations 4: the orphaned deposit is never credited, the canonical one once; the
    poster, whose book says "committed" for a batch whose commit was reorged away (L1's
    nextBatchIndex rolled back), commits it again: no skip, no duplicate.
(c) A commit that stays pending or vanishes: with automine off the poster's commit sits in
    anvil's mempool; it is either dropped (anvil_dropTransaction) or left underpriced
    (anvil_setNextBlockBaseFeePerGas far above its fee cap); the batch must end up committed
    exactly once, and soon.

Short versions run in `make test`; FEDROLLUP_LONG=1 runs a 60 s outage, more reorg rounds and
waits long enough to see what the poster does about a dropped commit eventually.
"""

import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from l1_bridge.contracts import Deployment
from node.sdk.client import SUCCESS_STATUSES, Client
from stf.accounts import Transfer
from tests.conftest import NodeProcess, free_port
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
    rpc,
    transact,
    wait_until,
    web3_at,
    write_genesis,
)

LONG = os.environ.get("FEDROLLUP_LONG") == "1"
DEPOSIT_KEY = pub(15)  # not in genesis: its L2 balance is exactly what was deposited
DEPOSITOR = 5
SENDER, RECIPIENT = 1, 2

pytestmark = pytest.mark.skipif(not ANVIL.exists(), reason=f"anvil is not installed at {ANVIL}")


class AnvilProc:
    """anvil on a fixed port whose chain survives a stop/start (--state: load on start, dump
    on exit)."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.state = tmp / "anvil-state.json"
        self.log = tmp / "anvil.log"
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Web3:
        cmd = [str(ANVIL), "--port", str(self.port), "--silent", "--state", str(self.state)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        w3 = web3_at(self.url)
        wait_until(lambda: self.proc.poll() is not None or _answers(w3), "anvil", 30, 0.05)  # type: ignore[union-attr]
        assert self.proc.poll() is None, self.log.read_text()
        return w3

    def stop(self) -> None:
        """A clean shutdown (SIGTERM): anvil dumps its state to --state on the way out."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def _answers(w3: Web3) -> bool:
    try:
        return w3.eth.block_number >= 0
    except OSError:
        return False


@dataclass
class Setup:
    anvil: AnvilProc
    w3: Web3
    dep: Deployment
    node: NodeProcess
    client: Client

    def deposit(self, amount: int) -> int:
        fn = self.dep.inbox.functions.deposit(DEPOSIT_KEY)
        return int(transact(self.w3, fn, self.w3.eth.accounts[DEPOSITOR], amount)["blockNumber"])

    def transfer(self) -> str:
        return self.client.send(key(SENDER), "transfer", Transfer(pub(RECIPIENT), 1))


@pytest.fixture
def make_setup(tmp_path: Path) -> Iterator[Any]:
    made: list[Setup] = []

    def make(confirmations: int) -> Setup:
        genesis = write_genesis(tmp_path / "genesis.json", 4346, [pub(SENDER)], 10**21)
        anvil = AnvilProc(tmp_path)
        w3 = anvil.start()
        out = deploy_with_cli(anvil.url, tmp_path / "dep.json", genesis, 5, 60)
        dep = Deployment.from_json(w3, out.read_text())
        args = [
            *("--l1-rpc", anvil.url, "--deployment", str(out)),
            *("--l1-confirmations", str(confirmations), "--genesis", str(genesis)),
            *("--block-time-ms", "50", "--batch-interval-ms", "300"),
        ]
        node = NodeProcess(tmp_path / "data", free_port(), args)
        s = Setup(anvil, w3, dep, node, Client(node.url, timeout=30))
        made.append(s)
        node.start(timeout=60)
        bind_l1(s.client, key(15), w3.eth.accounts[DEPOSITOR])  # before any deposit to its key
        return s

    yield make
    for s in made:
        s.node.kill()
        s.anvil.kill()


def caught_up_book(s: Setup) -> list[dict[str, Any]] | None:
    book = batches(s.client)
    head = int(s.client.health()["head"]["height"])
    done = (
        book
        and book[-1]["last_height"] == head
        and all(b["status"] in ("committed", "finalized") for b in book)
        and s.dep.next_batch_index() == len(book)
    )
    return book if done else None


def assert_l1_batches_match(s: Setup, timeout: float = 60) -> list[dict[str, Any]]:
    """BatchCommitted events on the canonical chain: 0..k-1 once each, equal to the book."""
    if not batches(s.client):
        wait_included(s.client, [s.transfer()])  # a first L2 block, so a first batch
    book = wait_until(lambda: caught_up_book(s), "the poster to catch up", timeout, 0.2)
    on_l1 = committed_batches(s.dep)
    indices = [i for i, _, _ in on_l1]
    assert indices == list(range(len(on_l1))), f"gap or duplicate on L1: {indices}"
    assert indices == [b["index"] for b in book]
    assert [r.hex() for _, r, _ in on_l1] == [b["output_root"][2:] for b in book]
    assert [p.hex() for _, _, p in on_l1] == [b["prev_output_root"][2:] for b in book]
    return book


def gauge(node: NodeProcess, name: str) -> float:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    (value,) = [line.split()[1] for line in lines if line.startswith(name + " ")]
    return float(value)


def wait_included(client: Client, hashes: list[str], timeout: float = 30) -> None:
    wait_until(
        lambda: all(client.action(h)["status"] in SUCCESS_STATUSES for h in hashes),
        "the actions executed",
        timeout,
        0.1,
    )


# =========================================================================== (a) outage


def test_l1_outage_poster_and_watcher_resume(make_setup: Any) -> None:
    outage_s = 60.0 if LONG else 6.0
    s: Setup = make_setup(2)
    started = time.monotonic()
    deposits: list[int] = []
    hashes = [s.transfer() for _ in range(3)]
    for amount in (ETH, 2 * ETH):
        s.deposit(amount)
        deposits.append(amount)
    mine(s.w3, 2)
    wait_until(lambda: l2_balance(s.client, DEPOSIT_KEY) == sum(deposits), "early deposits")
    wait_included(s.client, hashes)
    before = len(assert_l1_batches_match(s))

    # Deposits just before the outage, not yet confirmed when L1 goes away.
    for amount in (3 * ETH, 4 * ETH):
        s.deposit(amount)
        deposits.append(amount)
    l1_height = s.w3.eth.block_number
    s.anvil.stop()
    down_at = time.monotonic()
    # L2 goes on while L1 is down: blocks are cut, batches are defined but cannot be committed.
    while time.monotonic() - down_at < outage_s:
        hashes.append(s.transfer())
        time.sleep(0.25)
    wait_included(s.client, hashes)
    errors = gauge(s.node, "fedrollup_l1_errors_total")
    assert errors > 0, "the node never noticed the outage"
    s.w3 = s.anvil.start()
    outage = time.monotonic() - down_at
    assert s.w3.eth.block_number == l1_height, "anvil did not come back with its chain"
    back_at = time.monotonic()

    mine(s.w3, 2)  # confirm the pre-outage deposits
    for amount in (5 * ETH,):
        s.deposit(amount)
        deposits.append(amount)
    mine(s.w3, 2)
    hashes.append(s.transfer())
    wait_until(
        lambda: l2_balance(s.client, DEPOSIT_KEY) == sum(deposits),
        "every deposit credited after the outage",
        timeout=90,
        poll=0.2,
    )
    credited_after = time.monotonic() - back_at
    wait_included(s.client, hashes)
    book = assert_l1_batches_match(s, timeout=90)
    resumed_after = time.monotonic() - back_at
    assert len(book) > before
    mine(s.w3, 3)
    time.sleep(1.2)
    assert l2_balance(s.client, DEPOSIT_KEY) == sum(deposits)
    print(
        f"\noutage: {outage:.1f}s down, l1 errors seen={errors:.0f}, deposits={len(deposits)} "
        f"({sum(deposits) // ETH} ETH) credited once, batches {before} -> {len(book)} "
        f"(0..{len(book) - 1}, no gap/dup), deposits credited {credited_after:.1f}s and poster "
        f"caught up {resumed_after:.1f}s after L1 returned, total {time.monotonic() - started:.1f}s"
    )


# =========================================================================== (b) reorg


def _reorg_round(s: Setup, n: int) -> tuple[int, int]:
    """One round: a batch commit and a deposit land in the last 3 L1 blocks, which are then
    reorged away (replaced by 3 empty blocks). Returns (orphaned commits, orphaned deposits)."""
    w3, dep = s.w3, s.dep
    assert_l1_batches_match(s)
    committed_before = dep.next_batch_index()
    messages_before = int(dep.inbox.functions.messageCount().call())
    start_block = w3.eth.block_number

    wait_included(s.client, [s.transfer()])  # a new L2 block: the poster commits a batch
    wait_until(lambda: dep.next_batch_index() > committed_before, "a commit", 10, 0.01)
    orphan_amount = (7 + n) * ETH
    s.deposit(orphan_amount)  # orphaned below
    commits_now = dep.next_batch_index()
    assert w3.eth.block_number - start_block <= 3, "too many L1 blocks for a depth-3 reorg"
    while w3.eth.block_number - start_block < 3:
        mine(w3)
    assert w3.eth.block_number == start_block + 3
    book_says = {b["index"]: b["status"] for b in batches(s.client)}
    rpc(w3, "anvil_reorg", [3, []])
    assert w3.eth.block_number == start_block + 3
    assert dep.next_batch_index() == committed_before, "the reorg did not roll the commit back"
    assert int(dep.inbox.functions.messageCount().call()) == messages_before
    assert book_says.get(committed_before) in ("committed", "pending"), book_says
    return commits_now - committed_before, 1


def test_l1_reorg_depth_3_recommits_and_credits_once(make_setup: Any) -> None:
    s: Setup = make_setup(4)
    w3, dep = s.w3, s.dep
    started = time.monotonic()
    rounds = 8 if LONG else 2
    mine(w3, 5)
    time.sleep(0.6)
    canonical = 0
    orphaned_commits = orphaned_deposits = 0
    for n in range(rounds):
        c, d = _reorg_round(s, n)
        orphaned_commits += c
        orphaned_deposits += d
        # the poster must commit the rolled-back batch(es) again, on the canonical chain
        wait_until(lambda: dep.next_batch_index() >= 1, "a re-commit", 30, 0.05)
        amount = (n + 1) * ETH // 10  # the canonical deposit: another amount, same nonce
        s.deposit(amount)
        canonical += amount
        mine(w3, 4)
        t0 = time.monotonic()
        while l2_balance(s.client, DEPOSIT_KEY) != canonical and time.monotonic() - t0 < 30:
            time.sleep(0.1)
        got = l2_balance(s.client, DEPOSIT_KEY)
        assert got == canonical, (
            f"round {n}: L2 balance {got} != canonical deposits {canonical} "
            f"(orphaned amount {(7 + n) * ETH}; deep reorgs "
            f"{gauge(s.node, 'fedrollup_l1_deep_reorgs_total')})"
        )
    book = assert_l1_batches_match(s)
    mine(w3, 5)
    time.sleep(1.2)
    assert l2_balance(s.client, DEPOSIT_KEY) == canonical
    assert gauge(s.node, "fedrollup_l1_deep_reorgs_total") == 0  # depth 3 < 4 confirmations
    print(
        f"\nreorg: rounds={rounds} depth=3 confirmations=4 orphaned commits={orphaned_commits} "
        f"orphaned deposits={orphaned_deposits} (never credited) canonical deposits={rounds} "
        f"credited once, batches={len(book)} (0..{len(book) - 1} once each), "
        f"{time.monotonic() - started:.1f}s"
    )


# =========================================================================== (c) stuck commit


def _pending_commit(w3: Web3, dep: Deployment) -> dict[str, Any] | None:
    pool = rpc(w3, "txpool_content", [])
    for by_nonce in pool.get("pending", {}).values():
        for tx in by_nonce.values():
            if str(tx.get("to", "")).lower() == dep.inbox.address.lower():
                return dict(tx)
    return None


COMMIT_SELECTOR = bytes(Web3.keccak(text="commitBatch(uint64,bytes32,bytes32,bytes32,uint64)")[:4])


def commit_attempts(w3: Web3, dep: Deployment, from_block: int, index: int) -> list[int]:
    """The receipt status of every commitBatch(index, ...) transaction mined since
    `from_block`."""
    found = []
    for number in range(from_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            to = tx["to"] or ""
            data = bytes(tx["input"])
            if to.lower() != dep.inbox.address.lower() or data[:4] != COMMIT_SELECTOR:
                continue
            _, args = dep.inbox.decode_function_input(data)
            if int(args["index"]) == index:
                found.append(int(w3.eth.get_transaction_receipt(tx["hash"])["status"]))
    return found


class Miner(threading.Thread):
    """Mines an L1 block every `every` s (anvil makes none on its own with automine off),
    optionally holding the next base fee at `base_fee` before each block."""

    def __init__(self, url: str, every: float) -> None:
        super().__init__(daemon=True)
        self.w3 = web3_at(url)
        self.every = every
        self.base_fee: int | None = None
        self.stop = threading.Event()
        self.errors: list[BaseException] = []

    def run(self) -> None:
        try:
            while not self.stop.wait(self.every):
                if self.base_fee is not None:
                    rpc(self.w3, "anvil_setNextBlockBaseFeePerGas", [hex(self.base_fee)])
                mine(self.w3)
        except BaseException as exc:
            self.errors.append(exc)


def _stuck_commit(s: Setup) -> tuple[int, dict[str, Any], int]:
    """Turn automine off, make an L2 block, and wait for the poster's commit in the mempool.
    Returns (the batch index it commits, the pending tx, the first L1 block to scan)."""
    book = assert_l1_batches_match(s)
    index = len(book)
    first_block = s.w3.eth.block_number + 1
    rpc(s.w3, "evm_setAutomine", [False])
    s.transfer()
    tx = wait_until(lambda: _pending_commit(s.w3, s.dep), "the commit in the mempool", 20, 0.05)
    return index, tx, first_block


def _deposit_async(s: Setup, amount: int) -> threading.Thread:
    """A deposit sent from another thread (with automine off it waits for the Miner)."""
    w3 = web3_at(s.anvil.url)
    inbox = w3.eth.contract(address=s.dep.inbox.address, abi=s.dep.inbox.abi)
    fn = inbox.functions.deposit(DEPOSIT_KEY)
    t = threading.Thread(
        target=transact, args=(w3, fn, w3.eth.accounts[DEPOSITOR], amount), daemon=True
    )
    t.start()
    return t


def _credited_within(s: Setup, total: int, seconds: float) -> float | None:
    """How long until the deposit key's L2 balance reaches `total`, if within `seconds`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        if l2_balance(s.client, DEPOSIT_KEY) == total:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


@dataclass
class StuckOutcome:
    index: int
    commit_after_s: float | None  # from the fault to batch `index` on L1 (None: not in time)
    deposit_after_s: float | None  # a deposit made during the fault: credited after
    succeeded: int  # successful commitBatch transactions mined since the fault
    reverted: int  # reverted commitBatch transactions mined since the fault


def _drop_scenario(s: Setup, wait_s: float) -> StuckOutcome:
    index, tx, first_block = _stuck_commit(s)
    dropped_at = time.monotonic()
    rpc(s.w3, "anvil_dropTransaction", [tx["hash"]])
    assert _pending_commit(s.w3, s.dep) is None
    rpc(s.w3, "evm_setAutomine", [True])
    miner = Miner(s.anvil.url, 0.3)  # L1 keeps making blocks for confirmations
    miner.start()
    try:
        depositor = _deposit_async(s, ETH)
        deposit_after = _credited_within(s, ETH, 10.0)
        commit_after = None
        while time.monotonic() - dropped_at < wait_s:
            if s.dep.next_batch_index() > index:
                commit_after = time.monotonic() - dropped_at
                break
            time.sleep(0.1)
        depositor.join(timeout=30)
    finally:
        miner.stop.set()
        miner.join(timeout=30)
    attempts = commit_attempts(s.w3, s.dep, first_block, index)
    return StuckOutcome(index, commit_after, deposit_after, attempts.count(1), attempts.count(0))


# Regression: a dropped commit once stalled the poster (and the watcher) for 120 s.
def test_dropped_commit_is_recommitted_promptly(make_setup: Any) -> None:
    s: Setup = make_setup(1)
    out = _drop_scenario(s, wait_s=30.0)
    print(f"\ndropped commit: {out}")
    assert out.deposit_after_s is not None, "a deposit made after the drop was not credited in 10 s"
    assert out.commit_after_s is not None, f"batch {out.index} not committed 30 s after the drop"
    assert (out.succeeded, out.reverted) == (1, 0)
    assert_l1_batches_match(s)


@pytest.mark.skipif(not LONG, reason="a long outage of the commit (FEDROLLUP_LONG=1)")
def test_dropped_commit_is_eventually_committed_exactly_once(make_setup: Any) -> None:
    s: Setup = make_setup(1)
    out = _drop_scenario(s, wait_s=200.0)
    print(f"\ndropped commit (long): {out}")
    assert out.commit_after_s is not None, f"batch {out.index} never committed after the drop"
    assert (out.succeeded, out.reverted) == (1, 0)
    book = assert_l1_batches_match(s)
    wait_until(lambda: l2_balance(s.client, DEPOSIT_KEY) == ETH, "the deposit", 60)
    print(f"batches={len(book)} committed once each")


# Regression: an underpriced commit was once neither re-priced nor resent in time.
def test_underpriced_commit_is_committed_exactly_once(make_setup: Any) -> None:
    """For `hold` seconds every L1 block's base fee is 1000x the pending commit's fee cap (it
    cannot be included), then the base fee drops back: the batch must be on L1 within 30 s
    of that, by one successful commit and no reverted duplicate."""
    hold = 140.0 if LONG else 6.0
    s: Setup = make_setup(1)
    index, tx, first_block = _stuck_commit(s)
    fee_cap = int(str(tx.get("maxFeePerGas") or tx["gasPrice"]), 0)
    miner = Miner(s.anvil.url, 0.3)
    miner.base_fee = 1000 * fee_cap
    stuck_at = time.monotonic()
    rpc(s.w3, "anvil_setNextBlockBaseFeePerGas", [hex(miner.base_fee)])
    miner.start()
    committed_at: float | None = None
    try:
        depositor = _deposit_async(s, ETH)
        deposit_after = _credited_within(s, ETH, min(10.0, hold))
        while time.monotonic() - stuck_at < hold:
            if committed_at is None and s.dep.next_batch_index() > index:
                committed_at = time.monotonic() - stuck_at
            time.sleep(0.2)
        evicted = _pending_commit(s.w3, s.dep) is None
        miner.base_fee = None
        rpc(s.w3, "anvil_setNextBlockBaseFeePerGas", [hex(max(1, fee_cap // 10))])
        released_at = time.monotonic()
        while committed_at is None and time.monotonic() - released_at < 30:
            if s.dep.next_batch_index() > index:
                committed_at = time.monotonic() - stuck_at
            time.sleep(0.1)
        depositor.join(timeout=60)
        time.sleep(2.0)  # let any queued second attempt be mined before counting
    finally:
        miner.stop.set()
        miner.join(timeout=30)
    assert not miner.errors, miner.errors
    attempts = commit_attempts(s.w3, s.dep, first_block, index)
    print(
        f"\nunderpriced commit: held {hold:.0f}s, commit evicted from the pool: {evicted}, "
        f"batch {index} on L1 after {committed_at}s, deposit made during the hold credited after "
        f"{deposit_after}s, commit txs mined: {attempts.count(1)} ok / {attempts.count(0)} reverted"
    )
    assert committed_at is not None, f"batch {index} not on L1 30 s after the fee dropped"
    assert attempts.count(1) == 1
    assert attempts.count(0) == 0, "a duplicate commit was sent and reverted"
    book = assert_l1_batches_match(s)
    print(f"batches={len(book)} (0..{len(book) - 1} once each)")
