"""Conservation across both layers (issue 9): a Hypothesis state machine that drives a real L2
chain (tests/fl_harness.py) and the real L1 contracts on py-evm together.

Actors: four rollup keys (harness keys 0..3, genesis balance 0 on L2), each with a dev account as
its L1 address (STAKERS[k]), and a stranger (an L1 account that is no key's address unless
`bind_again_or_not` binds an unbound key to it). Rules:

* ``bind``: an unbound key k signs ``bind_l1`` naming STAKERS[k]; ``bind_again_or_not``: any key
  tries to bind the stranger's address (it succeeds only for an unbound key: a bound key's
  address never changes, so its stake can never become payable to someone else).
* ``l1_stake`` / ``l1_deposit``: STAKERS[k] or the stranger calls ``StakingRegistry.stake(key)`` /
  ``RollupInbox.deposit(key)`` on py-evm; the inbox's ``MessageSent`` event is fed, exactly as
  emitted (nonce, kind, key, sender, amount, data), to the L2 harness with ``h.l1``. On L2 it is
  credited (bound sender) or becomes a STAKE_RELEASE / REFUND record to the sender (anyone else).
* ``withdraw`` (part, all or one wei too much of a funded key's balance; to the bound address or
  to the stranger) and ``unstake`` (all or part of a staked key's stake, now and then of any
  key): L2 actions, whose success is predicted.
* ``commit``: the settlement records the L2 emitted since the last batch go into a SettlementTree
  (records v2, payee in the leaf) committed by the proposer (consuming every L1 message sent).
* ``execute``: time moves past the challenge window and some of the final batches' records are
  executed (``executeRelease`` for stake releases, ``claim`` for withdrawals and refunds) by an
  account that is never a payee; each must pay its leaf's payee its full amount.

After every step, with ``pending`` = records emitted on L2 and not yet executed on L1:

* per key K: Σ_a registry.stakeOf(K, a) + L2 balance(K) + pending withdrawal/refund amounts(K)
  == Σ L1 deposits and stakes sent for K − Σ executed withdrawals, releases and refunds for K
  (no slashes or rewards are driven here: no training round). The L2 stake is the registry's ETH,
  so it is not counted a second time; it is tied to it by the next check.
* per key K and L1 address a: registry.stakeOf(K, a) == (L2 stake(K) if a is K's bound address
  else 0) + pending STAKE_RELEASE amounts(K, payee a): every L1 stake wei is either the key's L2
  stake or an open release to the one who put it there.
* per key K: L2 balance + L2 stake + all emitted withdrawal/release/refund records == in (the
  documented L2-side amounts; executed or not).
* globally: StakingRegistry ETH == Σ L2 stakes + pending releases; RewardTreasury ETH (above its
  starting balance) == Σ L2 balances + pending withdrawals and refunds; the inbox holds nothing.

Short run: 30 examples x 25 steps. Long run: ``FEDROLLUP_LONG=1`` (300 x 50).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pytest
from eth_hash.auto import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from web3 import EthereumTesterProvider, Web3
from web3.logs import DISCARD

from l1_bridge.contracts import Deployment, deploy_all
from l1_bridge.settlement import SettlementRecord, SettlementTree, output_root
from rollup.chain import Chain as L2Chain
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf import jobs
from stf.accounts import get_account
from stf.identity import BindL1, get_bound_address
from stf.jobs import Withdraw
from stf.staking import Unstake
from tests.fl_harness import CHAIN_ID, Harness, pub
from tests.test_contract_invariants import Attempt

LONG = os.environ.get("FEDROLLUP_LONG") == "1"
MAX_EXAMPLES = 300 if LONG else 30
STEPS = 50 if LONG else 25

ETH = 10**18
WINDOW = 3_600
UNBONDING = 4 * 3_600  # the escape hatch never opens: `execute` moves time on by WINDOW + 1 only
MIN_STAKE = ETH
GAS = 3_000_000
CAP = 8  # pending (not final) batches the inbox holds: a proposer ahead of it waits
GENESIS_ROOT = keccak(b"fedrollup cross-layer genesis")

STAKE_RELEASE, WITHDRAWAL, REFUND = 4, 3, 5
DEPLOYER, PROPOSER, GUARDIAN, CHALLENGER, PROTOCOL = 0, 1, 2, 3, 4
STAKERS = [5, 6, 7, 8]  # L1 address of key k is STAKERS[k]
STRANGER = 9
KEYS = [pub(k) for k in range(len(STAKERS))]


@dataclass
class L1:
    w3: Web3
    tester: Any
    dep: Deployment
    accounts: list[str]
    snapshot: Any


@pytest.fixture(scope="module")
def l1() -> Iterator[L1]:
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    acct = [str(a) for a in w3.eth.accounts]
    dep = deploy_all(
        w3,
        deployer=acct[DEPLOYER],
        proposer=acct[PROPOSER],
        guardian=acct[GUARDIAN],
        challenger=acct[CHALLENGER],
        challenge_window_s=WINDOW,
        unbonding_s=UNBONDING,
        min_stake_wei=MIN_STAKE,
        protocol_fee_bps=250,
        protocol_addr=acct[PROTOCOL],
        genesis_output_root=GENESIS_ROOT,
        max_pending_batches=CAP,
        inclusion_window_s=2 * 3_600,
    )
    tester: Any = getattr(provider, "ethereum_tester")  # noqa: B009 (untyped attribute)
    snapshot = tester.take_snapshot()
    yield L1(w3, tester, dep, acct, snapshot)
    tester.revert_to_snapshot(snapshot)


@dataclass
class Batch:
    index: int
    tree: SettlementTree
    records: list[SettlementRecord]
    state_root: bytes
    last_block_hash: bytes
    committed_at: int


def address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


class CrossLayerMachine(RuleBasedStateMachine):
    l1: L1
    examples = 0
    steps = 0
    outcomes: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        l1 = self.l1
        l1.tester.revert_to_snapshot(l1.snapshot)
        self.tmp = Path(tempfile.mkdtemp(prefix="fedrollup-xlayer-"))
        genesis = Genesis(CHAIN_ID, 0, {})
        self.h = Harness(L2Chain(ChainStore(self.tmp / "l2"), genesis))
        self.acct = l1.accounts
        self.views: dict[tuple[bytes, str], int] | None = None  # stakeOf, read after L1 txs
        self.pairs: set[tuple[bytes, str]] = set()  # (key, L1 sender) that ever staked
        self.received: Counter[bytes] = Counter()  # key -> wei sent on L1 for it
        self.left: Counter[bytes] = Counter()  # key -> wei paid out by executed records
        self.emitted: list[SettlementRecord] = []  # every L2 record, in order
        self.uncommitted: list[SettlementRecord] = []
        self.batches: list[Batch] = []
        self.executed: set[bytes] = set()  # record ids
        self.messages = 0  # L1 messages sent (and fed to L2)
        self.treasury0 = self.balance_of(l1.dep.reward_treasury.address)
        self.registry0 = self.balance_of(l1.dep.registry.address)
        type(self).examples += 1

    def teardown(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ----------------------------------------------------------------- helpers

    def balance_of(self, address: str) -> int:
        return int(self.l1.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def send(self, fn: Any, sender: int, value: int = 0) -> Any:
        type(self).steps += 1
        self.views = None  # L1 state moved: re-read the registry
        tx = fn.transact({"from": self.acct[sender], "value": value, "gas": GAS})
        receipt = self.l1.w3.eth.wait_for_transaction_receipt(tx)
        type(self).outcomes[f"{fn.fn_name}:{'ok' if receipt['status'] == 1 else 'reverted'}"] += 1
        return receipt

    def l2(self, who: int, kind: str, payload: Any) -> Any:
        receipt = self.h.do(who, kind, payload)
        type(self).outcomes[f"l2 {kind}:{receipt.error if not receipt.ok else 'ok'}"] += 1
        self.take(receipt)
        return receipt

    def take(self, receipt: Any) -> None:
        for r in receipt.records:
            record = SettlementRecord(
                kind=r.kind,
                job_id=r.job,
                round=r.round,
                rollup_key=r.rollup_key,
                payee=r.payee,
                amount=r.amount,
                record_id=r.record_id,
                version=r.version,
            )
            self.emitted.append(record)
            self.uncommitted.append(record)

    def forward(self, receipt: Any) -> None:
        """Feed the inbox's MessageSent of an L1 transaction to the L2, exactly as emitted."""
        assert receipt["status"] == 1, receipt
        events = self.l1.dep.inbox.events.MessageSent().process_receipt(receipt, errors=DISCARD)
        assert len(events) == 1, events
        ev = events[0].args
        assert int(ev.nonce) == self.messages, (ev.nonce, self.messages)
        self.messages += 1
        key = bytes(ev.rollupKey)
        self.received[key] += int(ev.amount)
        r = self.h.l1(
            int(ev.kind), key, int(ev.amount), bytes(ev.data), sender=address_bytes(ev.sender)
        )
        assert r.ok, (r.error, r.detail)
        type(self).outcomes[f"l1 msg {int(ev.kind)}:{dict(r.events)}"[:60]] += 1
        self.take(r)

    def travel_to(self, ts: int) -> None:
        """The next L1 transaction runs at `ts` at the earliest (time never goes back)."""
        if int(self.l1.tester.get_block_by_number("pending")["timestamp"]) < ts:
            self.l1.tester.time_travel(ts)

    def pending(self) -> list[SettlementRecord]:
        return [r for r in self.emitted if r.record_id not in self.executed]

    # ----------------------------------------------------------------- rules

    def keys_where(self, test: Any) -> list[int]:
        return [k for k in range(len(KEYS)) if test(KEYS[k])]

    def unbound(self) -> list[int]:
        return self.keys_where(lambda key: get_bound_address(self.h.state, key) is None)

    def funded(self) -> list[int]:
        return self.keys_where(lambda key: get_account(self.h.state, key).balance > 0)

    def staked(self) -> list[int]:
        return self.keys_where(lambda key: jobs.get_stake(self.h.state, key) > 0)

    @precondition(lambda self: self.unbound())
    @rule(pick=st.integers(0, 10**6))
    def bind(self, pick: int) -> None:
        free = self.unbound()
        k = free[pick % len(free)]
        r = self.l2(k, "bind_l1", BindL1(address_bytes(self.acct[STAKERS[k]])))
        assert r.ok, (r.error, r.detail)

    @rule(k=st.integers(0, len(KEYS) - 1))
    def bind_again_or_not(self, k: int) -> None:
        """Any key binds (again): only a first bind succeeds."""
        was = get_bound_address(self.h.state, KEYS[k])
        r = self.l2(k, "bind_l1", BindL1(address_bytes(self.acct[STRANGER])))
        assert r.ok == (was is None), (r.error, r.detail)

    @rule(
        k=st.integers(0, len(KEYS) - 1),
        stranger=st.sampled_from([False, False, True]),
        value=st.sampled_from([MIN_STAKE, 2 * ETH, 3 * ETH + 7]),
    )
    def l1_stake(self, k: int, stranger: bool, value: int) -> None:
        sender = STRANGER if stranger else STAKERS[k]
        self.pairs.add((KEYS[k], self.acct[sender]))
        self.forward(self.send(self.l1.dep.registry.functions.stake(KEYS[k]), sender, value))

    @rule(
        k=st.integers(0, len(KEYS) - 1),
        stranger=st.sampled_from([False, False, False, True]),
        value=st.sampled_from([1, 10**15, ETH, 5 * ETH + 3]),
    )
    def l1_deposit(self, k: int, stranger: bool, value: int) -> None:
        sender = STRANGER if stranger else STAKERS[k]
        self.forward(self.send(self.l1.dep.inbox.functions.deposit(KEYS[k]), sender, value))

    @precondition(lambda self: self.funded())
    @rule(
        pick=st.integers(0, 10**6),
        fraction=st.sampled_from([1, 2, 3, 10, 0]),  # 0: one wei more than the balance
        to_stranger=st.sampled_from([False, False, True]),
    )
    def withdraw(self, pick: int, fraction: int, to_stranger: bool) -> None:
        funded = self.funded()
        k = funded[pick % len(funded)]
        bal = get_account(self.h.state, KEYS[k]).balance
        amount = bal + 1 if fraction == 0 else max(bal // fraction, 1)
        recipient = address_bytes(self.acct[STRANGER]) if to_stranger else b""
        r = self.l2(k, "withdraw", Withdraw(amount, recipient))
        bound = get_bound_address(self.h.state, KEYS[k]) is not None
        assert r.ok == (amount <= bal and (bound or to_stranger)), (r.error, r.detail, bal)

    def unstake(self, k: int, part: int) -> None:
        staked = jobs.get_stake(self.h.state, KEYS[k])
        amount = 0 if part == 0 else staked // part
        r = self.l2(k, "unstake", Unstake(amount))
        assert r.ok == (staked > 0 and (part == 0 or amount > 0)), (r.error, r.detail)

    @precondition(lambda self: self.staked())
    @rule(
        pick=st.integers(0, 10**6),
        part=st.sampled_from([0, 0, 2, 3]),
        anyone=st.sampled_from([False] * 5 + [True]),
    )
    def unstake_staked(self, pick: int, part: int, anyone: bool) -> None:
        """A staked key unstakes all or part (or, now and then, any key: maybe nothing staked)."""
        staked = self.staked()
        self.unstake(pick % len(KEYS) if anyone else staked[pick % len(staked)], part)

    @precondition(lambda self: self.uncommitted)
    @rule()
    def commit(self) -> None:
        records = list(self.uncommitted)
        tree = SettlementTree(records)
        head = self.h.chain.head
        state_root = bytes(head.state_root)
        last_block_hash = keccak(b"l2 block %d" % len(self.batches) + state_root)
        dep = self.l1.dep
        root = output_root(state_root, tree.root, last_block_hash, dep.chain_id, dep.inbox.address)
        prev = self.batches[-1] if self.batches else None
        prev_root = (
            output_root(
                prev.state_root,
                prev.tree.root,
                prev.last_block_hash,
                dep.chain_id,
                dep.inbox.address,
            )
            if prev
            else GENESIS_ROOT
        )
        index = len(self.batches)
        if index >= CAP:  # the ring is full until batch index - CAP is final: wait for it
            self.travel_to(self.batches[index - CAP].committed_at + WINDOW)
        fn = dep.inbox.functions.commitBatch(
            index, prev_root, root, keccak(b"data %d" % index), self.messages
        )
        receipt = self.send(fn, PROPOSER)
        assert receipt["status"] == 1, receipt
        ts = int(self.l1.w3.eth.get_block(receipt["blockNumber"])["timestamp"])
        self.batches.append(Batch(index, tree, records, state_root, last_block_hash, ts))
        self.uncommitted.clear()

    @precondition(lambda self: self.batches)
    @rule(picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=6))
    def execute(self, picks: list[int]) -> None:
        """Past every window; execute some open records of committed batches (by the deployer,
        never a payee), each paying its leaf's payee in full."""
        last = self.batches[-1].committed_at
        self.travel_to(last + WINDOW + 1)
        open_ = [
            (b, i)
            for b in self.batches
            for i, r in enumerate(b.records)
            if r.record_id not in self.executed
        ]
        for pick in picks:
            if not open_:
                break
            batch, i = open_.pop(pick % len(open_))
            self.execute_one(batch, i)

    def execute_one(self, batch: Batch, i: int) -> None:
        dep = self.l1.dep
        r = batch.records[i]
        attempt = Attempt(
            batch.index,
            batch.state_root,
            batch.tree.root,
            batch.last_block_hash,
            r,
            batch.tree.proof(i),
        )
        payee = Web3.to_checksum_address("0x" + r.payee.hex())
        assert payee != self.acct[DEPLOYER]
        before = self.balance_of(payee)
        if r.kind == STAKE_RELEASE:
            fn = dep.slashing.functions.executeRelease(*attempt.args())
        else:
            assert r.kind in (WITHDRAWAL, REFUND), r
            fn = dep.rewards.functions.claim(*attempt.args())
        receipt = self.send(fn, DEPLOYER)
        assert receipt["status"] == 1, (r, receipt)
        paid = self.balance_of(payee) - before
        assert paid == r.amount, f"record {r} paid {paid}"
        self.executed.add(r.record_id)
        self.left[r.rollup_key] += paid

    # ----------------------------------------------------------------- invariants

    @invariant()
    def conserved_across_layers(self) -> None:
        dep, state = self.l1.dep, self.h.state
        pending = self.pending()
        addresses = [self.acct[a] for a in [*STAKERS, STRANGER]]
        if self.views is None:
            # Only pairs that ever staked can hold anything; the registry's balance check below
            # (== the sum over these pairs) shows that no other pair holds a wei. A step that
            # sent no L1 transaction cannot change these, so they are re-read after L1 ones only.
            self.views = {
                (key, a): int(dep.registry.functions.stakeOf(key, a).call())
                for key, a in self.pairs
            }
        views = self.views
        total_stake = total_balance = held_total = 0
        for key in KEYS:
            # Only pairs that ever staked can hold anything; the registry's balance check below
            # (== the sum over these pairs) shows that no other pair holds a wei.
            l1_stake = {a: views[(key, a)] for a in addresses if (key, a) in views}
            l2_balance = get_account(state, key).balance
            l2_stake = jobs.get_stake(state, key)
            total_stake += l2_stake
            total_balance += l2_balance
            held_total += sum(l1_stake.values())
            mine = [r for r in pending if r.rollup_key == key]
            claims = sum(r.amount for r in mine if r.kind in (WITHDRAWAL, REFUND))
            # ETH on L1 for the key + what the L2 owes it in balance and open claims == in - out.
            assert sum(l1_stake.values()) + l2_balance + claims == (
                self.received[key] - self.left[key]
            ), (key.hex()[:8], l1_stake, l2_balance, l2_stake, claims)
            # Every registry wei for the key is its L2 stake (bound address) or an open release.
            bound = get_bound_address(state, key)
            for a, held in l1_stake.items():
                owed = l2_stake if bound == address_bytes(a) else 0
                owed += sum(
                    r.amount
                    for r in mine
                    if r.kind == STAKE_RELEASE and r.payee == address_bytes(a)
                )
                assert held == owed, (key.hex()[:8], a, held, l2_stake, owed)
            # The L2 side alone: balance + stake + every record it emitted == what came in.
            out = sum(
                r.amount
                for r in self.emitted
                if r.rollup_key == key and r.kind in (WITHDRAWAL, REFUND, STAKE_RELEASE)
            )
            assert l2_balance + l2_stake + out == self.received[key]
        # Globally: the contracts hold exactly what the L2 owes.
        releases = sum(r.amount for r in pending if r.kind == STAKE_RELEASE)
        claims = sum(r.amount for r in pending if r.kind in (WITHDRAWAL, REFUND))
        registry = self.balance_of(dep.registry.address) - self.registry0
        assert registry == held_total == total_stake + releases, (registry, held_total)
        assert (
            self.balance_of(dep.reward_treasury.address) - self.treasury0 == total_balance + claims
        )
        assert self.balance_of(dep.inbox.address) == 0


@pytest.mark.timeout(7200 if LONG else 600)
def test_conservation_across_the_layers(l1: L1) -> None:
    CrossLayerMachine.l1 = l1
    CrossLayerMachine.examples = CrossLayerMachine.steps = 0
    CrossLayerMachine.outcomes = Counter()
    started = time.monotonic()
    run_state_machine_as_test(
        CrossLayerMachine,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    print(
        f"\ncross-layer conservation: {CrossLayerMachine.examples} examples, "
        f"{CrossLayerMachine.steps} L1 transactions, {time.monotonic() - started:.1f} s "
        f"(max {MAX_EXAMPLES} x {STEPS} steps)"
    )
    if os.environ.get("FEDROLLUP_STATS") == "1":
        for name, count in sorted(CrossLayerMachine.outcomes.items()):
            print(f"  {name:60} {count}")
