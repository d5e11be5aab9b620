"""Conservation across both layers (issue 9): a Hypothesis state machine that drives a real L2
chain (tests/fl_harness.py) and the real L1 contracts on py-evm together, training rounds
included.

Actors: four participant keys (harness keys 0..3) and a job owner (key 4), each with a dev
account as its L1 address (L1_OF[k]; the owner's is the challenger account, which this machine
never uses as a challenger), a stranger (an L1 account that is no key's address unless
`bind_again_or_not` binds an unbound key to it), and L1 funders (any of those addresses).
Every key starts with nothing on either layer. Rules:

* ``bind`` / ``bind_again_or_not`` / ``join``: a key binds its L1 address (once; a bound key's
  address never changes); ``join`` binds and stakes several participants in one step.
* ``l1_stake`` / ``l1_deposit``: the key's address or the stranger calls
  ``StakingRegistry.stake(key)`` / ``RollupInbox.deposit(key)`` on py-evm; the inbox's
  ``MessageSent`` is fed, exactly as emitted, to the L2 (``h.l1``): credited (bound sender) or a
  STAKE_RELEASE / REFUND record to the sender (anyone else).
* ``propose_job`` (also once at the start of every example): the owner opens a train job on
  the uploaded 2,000-parameter model, its L2 pool escrowed from its L2 balance (0 or part of
  it); ``fund_job``: a funder calls ``RewardManager.fundJob`` (protocol fee 2.5 %) for an open
  job, a finished one or an id that does not exist; the JOB_FUNDED message credits the job's L1
  pool or becomes a REFUND record.
* ``train_round``: a whole round in one step (participants stake up to the job's requirement
  first, then as ``commit_round`` and ``advance_round``).
* ``commit_round``: participants commit to the open round, each honest (the global plus a
  direction, a per-client skew and noise, as tests/test_stf_fl.py), a copier (the global itself:
  evidence) or a withholder (commits and never reveals: evidence); success is predicted (stake,
  deadline, slashed-in-job, duplicates). ``advance_round``: the owner closes commits (or expires a
  round with too few past its deadline), everyone but the withholders reveals, the round is
  aggregated (past the reveal deadline if someone withheld): evidence becomes SLASH records of
  exactly min(stake, full slash), kept clients get L2 credits and REWARD records, the last round
  returns the L2 pool to the owner and the L1 pool to its funders (REFUND records, pro rata).
  ``idle``: empty L2 blocks (deadlines pass).
* ``withdraw`` / ``unstake_staked``: L2 actions, success predicted (unstake is refused while the
  key has a submission in an open round).
* ``commit``: the records the L2 emitted since the last batch go into a SettlementTree committed
  by the proposer (consuming every L1 message sent). ``execute``: past the challenge window,
  some records of committed batches are executed (``executeSlash``, ``executeRelease``,
  ``claim``) by an account that is never a payee, now and then one twice (it must revert).
* ``escape``: the rollup stops committing; a keeper executes every slash of the committed
  batches once they are final, then (``escapeDelay`` after the last commit) a staker takes its
  stake back with ``escapeExit`` (shut before that: ``RollupLive``); the STAKE_WITHDRAWN message
  lowers the key's L2 stake. The release and slash records that the exit outran (uncommitted
  ones, or releases not yet executed) pay nothing when executed later.

After every step, with ``open`` = records emitted on L2, not executed on L1, and not outrun by an
escape exit:

* per key K: Σ_a registry.stakeOf(K, a) + L2 balance(K) + open claims(K) (withdrawals, refunds,
  rewards) == L1 deposits and stakes sent for K + L2 pool credits to K (rewards, less the
  owner's escrow, plus what came back) + reward records for K − everything L1 paid out for K
  (claims, releases, escape exits) − what L1 slashed from K.
* per key K and L1 address a: registry.stakeOf(K, a) == (L2 stake(K) if a is K's bound address
  else 0) + open STAKE_RELEASE and SLASH records of (K, payee a): every registry wei is the
  key's L2 stake or an open record that will take exactly it.
* per key K, the L2 side alone: balance + stake + every withdrawal/release/refund/slash record
  emitted + stake cut by escape messages == L1 in + L2 pool credits.
* per job: net L1 funding == L1 pool left + its reward and refund records; the RewardManager's
  (funded, paid) == (net L1 funding, executed reward and refund records of the job).
* globally: StakingRegistry ETH == Σ L2 stakes + open releases and slashes; RewardTreasury ETH
  == Σ L2 balances + Σ L2 and L1 job pools + open claims; SlashTreasury == what L1 slashed;
  the protocol address == the fees; the inbox holds nothing; L2 pools credits sum to the pools.

At the end of every example that passed its steps (teardown): every job is played out or
expired, every key unstakes and withdraws everything, all is committed, finalized and executed;
then the registry and the treasury are back to where they started, every record was executed
exactly once, each job's L1 funding was paid out in full (rewards + refunds), and every key got
back what it put in, plus its rewards, less its slashes: nothing is stranded.

Short run: 15 examples x 25 steps. Long run: ``FEDROLLUP_LONG=1`` (60 x 50).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from eth_hash.auto import keccak
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
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
from stf.actions import Propose, terms_to_tuple
from stf.aggregation import EVIDENCE_REASONS
from stf.identity import BindL1, get_bound_address
from stf.jobs import AggregateRound, Withdraw
from stf.l1 import DEPOSIT, JOB_FUNDED, STAKE, STAKE_WITHDRAWN
from stf.staking import Unstake, open_submission_job
from tests.fl_harness import (
    CHAIN_ID,
    PARAMS,
    Harness,
    f32,
    global_vector,
    pub,
    reveal,
    terms,
    upload,
)
from tests.fl_harness import (
    commit as commit_params,
)
from tests.test_contract_invariants import Attempt

LONG = os.environ.get("FEDROLLUP_LONG") == "1"
MAX_EXAMPLES = 60 if LONG else 15
STEPS = 50 if LONG else 25

ETH = 10**18
WINDOW = 3_600
UNBONDING = 4 * 3_600  # the escape hatch's delay (escapeDelay) after the last commit
MIN_STAKE = ETH
FEE_BPS = 250
GAS = 3_000_000
CAP = 8  # pending (not final) batches the inbox holds: a proposer ahead of it waits
GENESIS_ROOT = keccak(b"fedrollup cross-layer genesis")
ROUND_BLOCKS = 24  # commit window: rounds outlive a few steps, and expire within `idle` reach
REVEAL_BLOCKS = 3
MAX_JOBS = 4

SLASH, REWARD, WITHDRAWAL, STAKE_RELEASE, REFUND = 1, 2, 3, 4, 5
CLAIMS = (REWARD, WITHDRAWAL, REFUND)  # paid by the RewardManager out of the RewardTreasury
STAKE_RECORDS = (SLASH, STAKE_RELEASE)  # executed by the SlashingManager against the registry
DEPLOYER, PROPOSER, GUARDIAN, CHALLENGER, PROTOCOL = 0, 1, 2, 3, 4
PARTICIPANTS = [0, 1, 2, 3]
OWNER = 4
L1_OF = [5, 6, 7, 8, CHALLENGER]  # L1 account of key k
STRANGER = 9
KEYS = [pub(k) for k in range(len(L1_OF))]
HONEST, COPY, WITHHOLD, ABSENT = "honest", "copy", "withhold", "absent"


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
        protocol_fee_bps=FEE_BPS,
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


@dataclass
class Submission:
    role: str
    params: bytes
    samples: int


@dataclass
class Ledger:
    """What the machine knows was sent and paid, per key, job and address."""

    received: Counter[bytes] = field(default_factory=Counter)  # key -> L1 stakes and deposits
    l2_net: Counter[bytes] = field(default_factory=Counter)  # key -> L2 pool credits - escrow
    left: Counter[bytes] = field(default_factory=Counter)  # key -> paid out on L1
    slashed: Counter[bytes] = field(default_factory=Counter)  # key -> taken by executed slashes
    escape_cut: Counter[bytes] = field(default_factory=Counter)  # key -> L2 stake cut by exits
    funded: Counter[int] = field(default_factory=Counter)  # job id -> net L1 funding sent
    job_paid: Counter[int] = field(default_factory=Counter)  # job id -> executed rewards+refunds
    fees: int = 0


def address_bytes(address: str) -> bytes:
    return bytes.fromhex(address.removeprefix("0x"))


def checksum(raw: bytes) -> str:
    return str(Web3.to_checksum_address("0x" + raw.hex()))


def direction(job_id: int, rnd: int) -> np.ndarray:  # type: ignore[type-arg]
    """The round's common training direction (what honest clients roughly agree on)."""
    return np.random.default_rng(1000 * job_id + rnd).normal(0, 0.01, PARAMS)


class CrossLayerMachine(RuleBasedStateMachine):
    l1: L1
    examples = 0
    steps = 0
    drained = 0
    outcomes: ClassVar[Counter[str]] = Counter()

    def __init__(self) -> None:
        super().__init__()
        l1 = self.l1
        l1.tester.revert_to_snapshot(l1.snapshot)
        self.tmp = Path(tempfile.mkdtemp(prefix="fedrollup-xlayer-"))
        genesis = Genesis(CHAIN_ID, 0, {})
        self.h = Harness(L2Chain(ChainStore(self.tmp / "l2"), genesis))
        upload(self.h, OWNER)  # the owner's model: 2,000 parameters, no price
        self.acct = l1.accounts
        self.views: dict[Any, int] | None = None  # L1 reads, refreshed after L1 txs
        self.pairs: set[tuple[bytes, str]] = set()  # (key, L1 sender) that ever staked
        self.ledger = Ledger()
        self.emitted: list[SettlementRecord] = []  # every L2 record, in order
        self.uncommitted: list[SettlementRecord] = []
        self.batches: list[Batch] = []
        self.executed: set[bytes] = set()  # record ids executed on L1
        self.outrun: set[bytes] = set()  # release/slash record ids an escape exit paid out
        self.job_ids: list[int] = []  # jobs the owner opened
        self.subs: dict[tuple[int, int], dict[int, Submission]] = {}
        self.messages = 0  # L1 messages sent (and fed to L2)
        self.dirty = False  # a step ran and its invariants have not passed yet
        self.exits: list[tuple[bytes, str, int]] = []  # (key, address, wei) escape exits
        self.start = {
            name: self.balance_of(address)
            for name, address in [
                ("registry", l1.dep.registry.address),
                ("treasury", l1.dep.reward_treasury.address),
                ("slash", l1.dep.slash_treasury.address),
                ("protocol", self.acct[PROTOCOL]),
            ]
        }
        type(self).examples += 1

    # ----------------------------------------------------------------- helpers

    @property
    def state(self) -> Any:
        return self.h.state

    def count(self, outcome: str) -> None:
        type(self).outcomes[outcome] += 1

    def balance_of(self, address: str) -> int:
        return int(self.l1.w3.eth.get_balance(Web3.to_checksum_address(address)))

    def send(self, fn: Any, sender: int, value: int = 0) -> Any:
        type(self).steps += 1
        self.dirty = True
        self.views = None  # L1 state moved: re-read the registry
        tx = fn.transact({"from": self.acct[sender], "value": value, "gas": GAS})
        receipt = self.l1.w3.eth.wait_for_transaction_receipt(tx)
        self.count(f"{fn.fn_name}:{'ok' if receipt['status'] == 1 else 'reverted'}")
        return receipt

    def l2(self, who: int, kind: str, payload: Any) -> Any:
        return self.l2_block([(who, kind, payload)])[0]

    def l2_block(self, actions: list[tuple[int, str, Any]]) -> list[Any]:
        self.dirty = True
        receipts = self.h.block(actions)
        for (_, kind, _), receipt in zip(actions, receipts, strict=True):
            self.count(f"l2 {kind}:{receipt.error if not receipt.ok else 'ok'}")
            self.take(receipt)
        return receipts

    def idle_until(self, height: int) -> None:
        """Empty L2 blocks until the chain's head is at `height`."""
        while self.h.chain.head.height < height:
            self.l2_block([])

    def take(self, receipt: Any) -> None:
        """Collect a receipt's records and follow the L2 pool's credits in its events."""
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
        for name, data in receipt.events:
            if name == "JobCreated":
                self.ledger.l2_net[bytes(data["owner"])] -= int(data["pool"])
            elif name == "RoundAggregated":
                for client in data["kept"]:
                    self.ledger.l2_net[bytes(client)] += int(data["reward_each_l2"])
            elif name == "JobCompleted":
                self.ledger.l2_net[KEYS[OWNER]] += int(data["refunded_l2"])
                self.count("job completed")

    def forward(self, receipt: Any) -> Any:
        """Feed the inbox's MessageSent of an L1 transaction to the L2, exactly as emitted."""
        assert receipt["status"] == 1, receipt
        events = self.l1.dep.inbox.events.MessageSent().process_receipt(receipt, errors=DISCARD)
        assert len(events) == 1, events
        ev = events[0].args
        assert int(ev.nonce) == self.messages, (ev.nonce, self.messages)
        self.messages += 1
        kind, key, amount = int(ev.kind), bytes(ev.rollupKey), int(ev.amount)
        if kind in (DEPOSIT, STAKE):
            self.ledger.received[key] += amount
        elif kind == JOB_FUNDED:
            self.ledger.funded[int.from_bytes(bytes(ev.data)[:32], "big")] += amount
        else:
            assert kind == STAKE_WITHDRAWN, kind
        self.dirty = True
        r = self.h.l1(kind, key, amount, bytes(ev.data), sender=address_bytes(ev.sender))
        assert r.ok, (r.error, r.detail)
        self.count(f"l1 msg {kind}:{','.join(name for name, _ in r.events)}")
        self.take(r)
        return r

    def travel_to(self, ts: int) -> None:
        """The next L1 transaction runs at `ts` at the earliest (time never goes back)."""
        if int(self.l1.tester.get_block_by_number("pending")["timestamp"]) < ts:
            self.l1.tester.time_travel(ts)

    def now(self) -> int:
        return int(self.l1.tester.get_block_by_number("pending")["timestamp"])

    def open_records(self) -> list[SettlementRecord]:
        """Emitted, not executed, not outrun by an escape exit."""
        return [r for r in self.emitted if r.record_id not in self.executed | self.outrun]

    def account_of(self, address: bytes) -> int:
        return [address_bytes(a) for a in self.acct].index(address)

    def job(self, job_id: int) -> jobs.Job:
        job = jobs.get_job(self.state, job_id)
        assert job is not None
        return job

    def active_jobs(self) -> list[int]:
        return [j for j in self.job_ids if self.job(j).status == jobs.ACTIVE]

    def keys_where(self, test: Callable[[bytes], bool]) -> list[int]:
        return [k for k in range(len(KEYS)) if test(KEYS[k])]

    def unbound(self) -> list[int]:
        return self.keys_where(lambda key: get_bound_address(self.state, key) is None)

    def funded(self) -> list[int]:
        return self.keys_where(lambda key: get_account(self.state, key).balance > 0)

    def staked(self) -> list[int]:
        return self.keys_where(lambda key: jobs.get_stake(self.state, key) > 0)

    # ----------------------------------------------------------------- rules: keys and money

    @precondition(lambda self: self.unbound())
    @rule(pick=st.integers(0, 10**6))
    def bind(self, pick: int) -> None:
        free = self.unbound()
        k = free[pick % len(free)]
        r = self.l2(k, "bind_l1", BindL1(address_bytes(self.acct[L1_OF[k]])))
        assert r.ok, (r.error, r.detail)

    @rule(k=st.integers(0, len(KEYS) - 1))
    def bind_again_or_not(self, k: int) -> None:
        """Any key binds (again) to the stranger: only a first bind succeeds."""
        was = get_bound_address(self.state, KEYS[k])
        r = self.l2(k, "bind_l1", BindL1(address_bytes(self.acct[STRANGER])))
        assert r.ok == (was is None), (r.error, r.detail)

    def stake_from(self, k: int, sender: int, value: int) -> None:
        self.pairs.add((KEYS[k], self.acct[sender]))
        receipt = self.send(self.l1.dep.registry.functions.stake(KEYS[k]), sender, value)
        if receipt["status"] == 1:
            self.forward(receipt)
        else:  # only an address that took its stake out by the escape hatch is refused
            assert (KEYS[k], self.acct[sender]) in self.exited, (k, sender)

    @property
    def exited(self) -> set[tuple[bytes, str]]:
        return {(key, a) for key, a, _ in self.exits}

    @rule(
        k=st.integers(0, len(KEYS) - 1),
        stranger=st.sampled_from([False, False, True]),
        value=st.sampled_from([MIN_STAKE, 2 * ETH, 3 * ETH + 7]),
    )
    def l1_stake(self, k: int, stranger: bool, value: int) -> None:
        self.stake_from(k, STRANGER if stranger else L1_OF[k], value)

    @rule(
        keys=st.sets(st.sampled_from(PARTICIPANTS), min_size=1),
        value=st.sampled_from([MIN_STAKE, 2 * ETH]),
    )
    def join(self, keys: set[int], value: int) -> None:
        """Participants bind (if they have not) and stake from their bound address."""
        fresh = [k for k in sorted(keys) if get_bound_address(self.state, KEYS[k]) is None]
        if fresh:
            binds = [(k, "bind_l1", BindL1(address_bytes(self.acct[L1_OF[k]]))) for k in fresh]
            assert all(r.ok for r in self.l2_block(binds))
        for k in sorted(keys):
            bound = get_bound_address(self.state, KEYS[k])
            assert bound is not None
            self.stake_from(k, self.account_of(bound), value)

    @rule(
        k=st.integers(0, len(KEYS) - 1),
        stranger=st.sampled_from([False, False, False, True]),
        value=st.sampled_from([1, 10**15, ETH, 5 * ETH + 3]),
    )
    def l1_deposit(self, k: int, stranger: bool, value: int) -> None:
        sender = STRANGER if stranger else L1_OF[k]
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
        bal = get_account(self.state, KEYS[k]).balance
        amount = bal + 1 if fraction == 0 else max(bal // fraction, 1)
        recipient = address_bytes(self.acct[STRANGER]) if to_stranger else b""
        r = self.l2(k, "withdraw", Withdraw(amount, recipient))
        bound = get_bound_address(self.state, KEYS[k]) is not None
        assert r.ok == (amount <= bal and (bound or to_stranger)), (r.error, r.detail, bal)

    def unstake(self, k: int, part: int) -> None:
        staked = jobs.get_stake(self.state, KEYS[k])
        amount = 0 if part == 0 else staked // part
        in_round = open_submission_job(self.state, KEYS[k]) is not None
        r = self.l2(k, "unstake", Unstake(amount))
        expected = staked > 0 and (part == 0 or amount > 0) and not in_round
        assert r.ok == expected, (r.error, r.detail, in_round)

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

    # ----------------------------------------------------------------- rules: jobs and rounds

    @precondition(lambda self: len(self.job_ids) < MAX_JOBS and len(self.active_jobs()) < 2)
    @rule(
        rounds=st.sampled_from([1, 2]),
        pool_part=st.sampled_from([0, 0, 2, 1]),  # 0: no L2 pool; n: 1/n of the owner's balance
        slash_bps=st.sampled_from([5_000, 10_000]),
    )
    def propose_job(self, rounds: int, pool_part: int, slash_bps: int) -> None:
        balance = get_account(self.state, KEYS[OWNER]).balance
        pool = balance // pool_part if pool_part else 0
        job_terms = terms(
            rounds=rounds,
            min_participants=3,
            max_participants=len(PARTICIPANTS),
            f=0,
            stake_required=MIN_STAKE,
            round_blocks=ROUND_BLOCKS,
            slash_bps=slash_bps,
            reveal_blocks=REVEAL_BLOCKS,
        )
        propose = Propose("train", "digits", pool, 0, terms_to_tuple(job_terms))
        r = self.l2(OWNER, "propose", propose)
        assert r.ok, (r.error, r.detail)
        self.job_ids.append(int(dict(r.events)["JobCreated"]["job_id"]))

    @initialize(
        rounds=st.sampled_from([1, 2]),
        slash_bps=st.sampled_from([5_000, 10_000]),
        funding=st.sampled_from([0, ETH, 3 * ETH + 1]),
    )
    def first_job(self, rounds: int, slash_bps: int, funding: int) -> None:
        """Every example starts with an open job (no L2 pool: the owner has no balance yet),
        mostly funded on L1 by the stranger."""
        self.propose_job(rounds, 0, slash_bps)
        if funding:
            self.fund_job(pick=0, unknown=False, funder=STRANGER, value=funding)

    @rule(
        pick=st.integers(0, 10**6),
        unknown=st.sampled_from([False, False, False, True]),
        funder=st.sampled_from([*L1_OF, STRANGER]),
        value=st.sampled_from([1, 10**15 + 1, ETH, 3 * ETH]),
    )
    def fund_job(self, pick: int, unknown: bool, funder: int, value: int) -> None:
        """Fund an open or finished job, or one that does not exist, on L1."""
        count = int.from_bytes(self.state.get(b"count/proposals") or b"", "big")
        active = self.active_jobs()
        if unknown or not self.job_ids:
            job_id = count + 1 + pick % 3  # not opened yet (it may be, later)
        elif active and pick % 4:  # mostly an open job (a finished one now and then)
            job_id = active[pick % len(active)]
        else:
            job_id = self.job_ids[pick % len(self.job_ids)]
        job = jobs.get_job(self.state, job_id)
        pool_l1 = job.pool_l1 if job is not None else 0
        takes = job is not None and job.status == jobs.ACTIVE
        fee = value * FEE_BPS // 10_000
        receipt = self.send(self.l1.dep.rewards.functions.fundJob(job_id), funder, value)
        self.ledger.fees += fee
        r = self.forward(receipt)
        if takes:
            assert r.records == () and self.job(job_id).pool_l1 == pool_l1 + value - fee
        else:
            (record,) = r.records
            assert (record.kind, record.job, record.amount) == (REFUND, job_id, value - fee)
            assert record.payee == address_bytes(self.acct[funder])

    def eligible(self, job: jobs.Job, k: int) -> bool:
        key = KEYS[k]
        return (
            jobs.get_stake(self.state, key) >= job.terms.stake_required
            and not jobs.is_slashed_in_job(self.state, job.job_id, key)
            and jobs.get_submission(self.state, job.job_id, job.current_round, key) is None
        )

    def params_for(self, job: jobs.Job, k: int, role: str) -> bytes:
        g = global_vector(self.h, job.job_id, job.current_round - 1)
        if role == COPY:
            return f32(g)
        skew = np.random.default_rng(k).normal(0, 0.003, PARAMS)
        noise = np.random.default_rng(10_000 * job.current_round + k).normal(0, 0.002, PARAMS)
        return f32(g + direction(job.job_id, job.current_round) + skew + noise)

    @precondition(lambda self: self.active_jobs())
    @rule(
        pick=st.integers(0, 10**6),
        roles=st.lists(
            st.sampled_from([HONEST, HONEST, HONEST, COPY, WITHHOLD, ABSENT]),
            min_size=len(PARTICIPANTS),
            max_size=len(PARTICIPANTS),
        ),
    )
    def commit_round(self, pick: int, roles: list[str]) -> None:
        """Participants commit to the job's open round (honest, copier or withholder)."""
        active = self.active_jobs()
        job = self.job(active[pick % len(active)])
        rnd = jobs.get_round(self.state, job.job_id, job.current_round)
        assert rnd is not None
        height = self.h.chain.head.height + 1
        open_ = rnd.status == jobs.ROUND_OPEN and height <= rnd.deadline_height
        chosen = [(k, role) for k, role in zip(PARTICIPANTS, roles, strict=True) if role != ABSENT]
        if not chosen:
            return
        subs = {k: Submission(role, self.params_for(job, k, role), 100 + k) for k, role in chosen}
        expected = {k: open_ and self.eligible(job, k) for k, _ in chosen}
        actions = [
            (
                k,
                "commit",
                commit_params(self.h, k, job.job_id, job.current_round, s.params, s.samples),
            )
            for k, s in subs.items()
        ]
        receipts = self.l2_block(actions)
        mine = self.subs.setdefault((job.job_id, job.current_round), {})
        for (k, _, _), r in zip(actions, receipts, strict=True):
            assert r.ok == expected[k], (k, r.error, r.detail)
            if r.ok:
                mine[k] = subs[k]

    @precondition(lambda self: self.active_jobs())
    @rule(
        pick=st.integers(0, 10**6),
        roles=st.lists(
            st.sampled_from([HONEST, HONEST, COPY, WITHHOLD, ABSENT]),
            min_size=len(PARTICIPANTS),
            max_size=len(PARTICIPANTS),
        ),
    )
    def train_round(self, pick: int, roles: list[str]) -> None:
        """A whole round in one step: the chosen participants bind and stake up to the job's
        requirement if they must (an exited one cannot), commit, and the round is closed,
        revealed and aggregated (too few commits: it stays open)."""
        active = self.active_jobs()
        job = self.job(active[pick % len(active)])
        for k, role in zip(PARTICIPANTS, roles, strict=True):
            short = job.terms.stake_required - jobs.get_stake(self.state, KEYS[k])
            if role == ABSENT or short <= 0:
                continue
            if get_bound_address(self.state, KEYS[k]) is None:
                r = self.l2(k, "bind_l1", BindL1(address_bytes(self.acct[L1_OF[k]])))
                assert r.ok, (r.error, r.detail)
            bound = get_bound_address(self.state, KEYS[k])
            assert bound is not None
            self.stake_from(k, self.account_of(bound), max(short, MIN_STAKE))
        self.commit_round(pick, roles)
        self.advance(job.job_id, to_end=True)

    @precondition(lambda self: self.active_jobs())
    @rule(pick=st.integers(0, 10**6), to_end=st.booleans())
    def advance_round(self, pick: int, to_end: bool) -> None:
        """Close the open round's commits (or expire it), then reveal and aggregate it."""
        active = self.active_jobs()
        self.advance(active[pick % len(active)], to_end)

    def advance(self, job_id: int, to_end: bool) -> None:
        job = self.job(job_id)
        number = job.current_round
        rnd = jobs.get_round(self.state, job_id, number)
        assert rnd is not None
        if rnd.status == jobs.ROUND_OPEN:
            n = len(rnd.submitters)
            past = self.h.chain.head.height + 1 > rnd.deadline_height
            r = self.l2(OWNER, "aggregate", AggregateRound(job_id, number, 0))
            if n < job.terms.min_participants and not past:
                assert r.error == "too_few_submissions", (r.error, r.detail)
                return
            assert r.ok, (r.error, r.detail)
            after = jobs.get_round(self.state, job_id, number)
            assert after is not None
            if n < job.terms.min_participants:
                assert after.status == jobs.ROUND_EXPIRED
                # no pay, no slash; a last round returns the L1 pool to its funders
                ended = self.job(job_id).status == jobs.COMPLETED
                assert all(x.kind == REFUND and x.job == job_id for x in r.records)
                assert sum(x.amount for x in r.records) == (job.pool_l1 if ended else 0)
                self.count("round expired")
                return
            assert after.status == jobs.ROUND_REVEAL
            if not to_end:
                return
            rnd = after
        self.reveal_and_aggregate(job, rnd)

    def reveal_and_aggregate(self, job: jobs.Job, rnd: jobs.Round) -> None:
        """Everyone but the withholders reveals (if the reveal deadline has not passed: an
        honest client that missed it is a withholder too), then the owner aggregates."""
        subs = self.subs.get((job.job_id, rnd.number), {})
        assert {KEYS[k] for k in subs} == set(rnd.submitters)
        due = [
            (k, "reveal", reveal(job.job_id, rnd.number, s.params, s.samples))
            for k, s in subs.items()
            if s.role != WITHHOLD and not self.revealed(job.job_id, rnd.number, KEYS[k])
        ]
        in_time = self.h.chain.head.height + 1 <= rnd.reveal_deadline_height
        if due:
            for r in self.l2_block(due):
                assert r.ok if in_time else r.error == "reveal_deadline_passed", (r.error, r.detail)
        hidden = {k for k in subs if not self.revealed(job.job_id, rnd.number, KEYS[k])}
        if hidden:
            self.idle_until(rnd.reveal_deadline_height)  # the next block is past it
        stakes = {k: jobs.get_stake(self.state, KEYS[k]) for k in subs}
        pool_l1 = job.pool_l1
        r = self.l2(OWNER, "aggregate", AggregateRound(job.job_id, rnd.number, 0))
        assert r.ok, (r.error, r.detail)
        event = dict(r.events)["RoundAggregated"]
        reasons = {bytes(c): str(reason) for c, _, reason, _, _ in event["decisions"]}
        slashes = {x.rollup_key: x.amount for x in r.records if x.kind == SLASH}
        for k, s in subs.items():
            reason = reasons[KEYS[k]]
            cheat = s.role != HONEST or k in hidden
            assert (reason in EVIDENCE_REASONS) == cheat, (k, s.role, reason)
            if reason in EVIDENCE_REASONS:  # evidence costs exactly the full slash (or all)
                assert slashes[KEYS[k]] == min(stakes[k], job.terms.full_slash)
            self.count(f"round: {s.role} -> {reason}")
        kept = [bytes(c) for c in event["kept"]]
        rewards = {x.rollup_key: x.amount for x in r.records if x.kind == REWARD}
        each = pool_l1 // (job.terms.rounds - rnd.number + 1) // max(len(kept), 1)
        assert rewards == ({c: each for c in kept} if each else {}), (rewards, kept, each)
        if "JobCompleted" in dict(r.events):  # the rest of the L1 pool goes back to funders
            refunds = [x for x in r.records if x.kind == REFUND and x.job == job.job_id]
            assert sum(x.amount for x in refunds) == pool_l1 - each * len(kept)
            if refunds:
                self.count("job refunds to funders")
        self.count("round aggregated")

    def revealed(self, job_id: int, number: int, key: bytes) -> bool:
        info = jobs.get_submission(self.state, job_id, number, key)
        return info is not None and info.revealed

    @rule(blocks=st.sampled_from([1, 4, ROUND_BLOCKS]))
    def idle(self, blocks: int) -> None:
        """Empty L2 blocks: deadlines pass."""
        self.idle_until(self.h.chain.head.height + blocks)

    # ----------------------------------------------------------------- rules: settlement

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

    def committed_open(self, kinds: tuple[int, ...] = (1, 2, 3, 4, 5)) -> list[tuple[Batch, int]]:
        return [
            (b, i)
            for b in self.batches
            for i, r in enumerate(b.records)
            if r.record_id not in self.executed and r.kind in kinds
        ]

    def finalize_all(self) -> None:
        if self.batches:
            self.travel_to(self.batches[-1].committed_at + WINDOW + 1)

    @precondition(lambda self: self.batches)
    @rule(
        picks=st.lists(st.integers(0, 10**6), min_size=1, max_size=6),
        replay=st.sampled_from([False, False, True]),
    )
    def execute(self, picks: list[int], replay: bool) -> None:
        """Past every window; execute some open records of committed batches (by the deployer,
        never a payee), each paying its leaf's payee in full (nothing if an exit outran it);
        now and then one executed record again, which must revert and move nothing."""
        self.finalize_all()
        open_ = self.committed_open()
        for pick in picks:
            if not open_:
                break
            batch, i = open_.pop(pick % len(open_))
            self.execute_one(batch, i)
        done = [
            (b, i)
            for b in self.batches
            for i, r in enumerate(b.records)
            if r.record_id in self.executed
        ]
        if replay and done:
            self.replay_one(*done[picks[0] % len(done)])

    def execution(self, batch: Batch, i: int) -> Any:
        dep = self.l1.dep
        r = batch.records[i]
        args = Attempt(
            batch.index,
            batch.state_root,
            batch.tree.root,
            batch.last_block_hash,
            r,
            batch.tree.proof(i),
        ).args()
        if r.kind == SLASH:
            return dep.slashing.functions.executeSlash(*args)
        if r.kind == STAKE_RELEASE:
            return dep.slashing.functions.executeRelease(*args)
        assert r.kind in CLAIMS, r
        return dep.rewards.functions.claim(*args)

    def execute_one(self, batch: Batch, i: int) -> None:
        r = batch.records[i]
        payee = self.l1.dep.slash_treasury.address if r.kind == SLASH else checksum(r.payee)
        assert payee != self.acct[DEPLOYER]
        before = self.balance_of(payee)
        receipt = self.send(self.execution(batch, i), DEPLOYER)
        assert receipt["status"] == 1, (r, receipt)
        paid = self.balance_of(payee) - before
        expected = 0 if r.record_id in self.outrun else r.amount
        assert paid == expected, f"record {r} paid {paid}, expected {expected}"
        self.executed.add(r.record_id)
        if r.kind == SLASH:
            self.ledger.slashed[r.rollup_key] += paid
        else:
            if r.job_id and r.kind in (REWARD, REFUND):
                self.ledger.job_paid[r.job_id] += paid
            if r.rollup_key != bytes(32):  # job refunds are the funders', not a key's
                self.ledger.left[r.rollup_key] += paid
        self.count(f"executed {r.kind}{' (outrun)' if r.record_id in self.outrun else ''}")

    def replay_one(self, batch: Batch, i: int) -> None:
        tracked = [
            self.l1.dep.registry.address,
            self.l1.dep.reward_treasury.address,
            self.l1.dep.slash_treasury.address,
            checksum(batch.records[i].payee),
        ]
        before = [self.balance_of(a) for a in tracked]
        receipt = self.send(self.execution(batch, i), DEPLOYER)
        assert receipt["status"] == 0, batch.records[i]
        assert [self.balance_of(a) for a in tracked] == before

    # ----------------------------------------------------------------- rules: escape hatch

    @precondition(lambda self: self.pairs)
    @rule(
        pick=st.integers(0, 10**6),
        commit_first=st.booleans(),
        early=st.sampled_from([False, False, True]),
    )
    def escape(self, pick: int, commit_first: bool, early: bool) -> None:
        """The rollup stops: a keeper executes every final slash, then a staker exits on L1."""
        dep = self.l1.dep
        pairs = sorted(self.pairs)
        key, address = pairs[pick % len(pairs)]
        sender = self.acct.index(address)
        if early and self.now() < int(dep.registry.functions.escapeOpensAt().call()):
            receipt = self.send(dep.registry.functions.escapeExit(key), sender)
            assert receipt["status"] == 0  # RollupLive: shut while the rollup commits
        if commit_first and self.uncommitted:
            self.commit()
        self.finalize_all()
        for batch, i in self.committed_open((SLASH,)):  # the keeper
            self.execute_one(batch, i)
        self.travel_to(int(dep.registry.functions.escapeOpensAt().call()))
        held = int(dep.registry.functions.stakeOf(key, address).call())
        stake_before = jobs.get_stake(self.state, key)
        bound = get_bound_address(self.state, key) == address_bytes(address)
        outrun = [
            r
            for r in self.open_records()
            if r.kind in STAKE_RECORDS and r.rollup_key == key and r.payee == address_bytes(address)
        ]
        # what the exit takes: the key's L2 stake (bound address) and the open records' ETH
        assert held == (stake_before if bound else 0) + sum(r.amount for r in outrun)
        receipt = self.send(dep.registry.functions.escapeExit(key), sender)
        if held == 0:
            assert receipt["status"] == 0  # NothingToExit
            return
        assert receipt["status"] == 1, receipt
        self.count(f"escape exit ({'bound' if bound else 'other'}, {len(outrun)} outrun)")
        self.outrun.update(r.record_id for r in outrun)
        self.ledger.left[key] += held
        self.exits.append((key, address, held))
        self.forward(receipt)
        stake_after = jobs.get_stake(self.state, key)
        assert stake_after == (stake_before - min(stake_before, held) if bound else stake_before)
        self.ledger.escape_cut[key] += stake_before - stake_after

    # ----------------------------------------------------------------- invariants

    def read_views(self) -> dict[Any, int]:
        """L1 reads: (key, address) -> stakeOf for every pair that ever staked (the registry's
        ETH check below, == the sum over these pairs, shows no other pair holds a wei), and
        job id -> (funded, paid) of the RewardManager. Re-read after L1 transactions only."""
        if self.views is None:
            dep = self.l1.dep
            views: dict[Any, int] = {
                (key, a): int(dep.registry.functions.stakeOf(key, a).call())
                for key, a in self.pairs
            }
            for job_id in self.ledger.funded:
                funded, paid = dep.rewards.functions.jobPool(job_id).call()
                views[("funded", job_id)] = int(funded)
                views[("paid", job_id)] = int(paid)
            self.views = views
        return self.views

    @invariant()
    def conserved_across_layers(self) -> None:
        state, ledger = self.state, self.ledger
        views = self.read_views()
        open_ = self.open_records()
        total_stake = total_balance = held_total = 0
        for key in KEYS:
            l1_stake = {a: views[(key, a)] for (k2, a) in self.pairs if k2 == key}
            l2_balance = get_account(state, key).balance
            l2_stake = jobs.get_stake(state, key)
            total_stake += l2_stake
            total_balance += l2_balance
            held_total += sum(l1_stake.values())
            mine = [r for r in open_ if r.rollup_key == key]
            claims = sum(r.amount for r in mine if r.kind in CLAIMS)
            rewards = sum(
                r.amount for r in self.emitted if r.rollup_key == key and r.kind == REWARD
            )
            # ETH on L1 for the key + what the L2 owes it == in + rewards - out - slashed.
            assert sum(l1_stake.values()) + l2_balance + claims == (
                ledger.received[key]
                + ledger.l2_net[key]
                + rewards
                - ledger.left[key]
                - ledger.slashed[key]
            ), (key.hex()[:8], l1_stake, l2_balance, l2_stake, claims, rewards)
            # Every registry wei for the key is its L2 stake (bound address) or an open record
            # (release or slash) that takes exactly it.
            bound = get_bound_address(state, key)
            for a, held in l1_stake.items():
                owed = l2_stake if bound == address_bytes(a) else 0
                owed += sum(
                    r.amount
                    for r in mine
                    if r.kind in STAKE_RECORDS and r.payee == address_bytes(a)
                )
                assert held == owed, (key.hex()[:8], a, held, l2_stake, owed)
            # The L2 side alone: balance + stake + every record it took from them == what came in.
            out = sum(
                r.amount
                for r in self.emitted
                if r.rollup_key == key and r.kind in (WITHDRAWAL, REFUND, STAKE_RELEASE, SLASH)
            )
            assert l2_balance + l2_stake + out + ledger.escape_cut[key] == (
                ledger.received[key] + ledger.l2_net[key]
            )
        # Per job: L1 funding is the L1 pool left, or reward and refund records.
        pools = pools_l1 = 0
        for job_id, funded in ledger.funded.items():
            job = jobs.get_job(state, job_id)
            left = job.pool_l1 if job is not None else 0
            out = sum(
                r.amount for r in self.emitted if r.job_id == job_id and r.kind in (REWARD, REFUND)
            )
            assert funded == left + out, (job_id, funded, left, out)
            assert views[("funded", job_id)] == funded
            assert views[("paid", job_id)] == ledger.job_paid[job_id]
        for job_id in self.job_ids:
            job = self.job(job_id)
            pools += job.pool
            pools_l1 += job.pool_l1
        assert sum(ledger.l2_net.values()) + pools == 0  # L2 pool credits come from the pools
        # Globally: the contracts hold exactly what the L2 owes.
        stake_records = sum(r.amount for r in open_ if r.kind in STAKE_RECORDS)
        claims = sum(r.amount for r in open_ if r.kind in CLAIMS)
        registry = self.balance_of(self.l1.dep.registry.address) - self.start["registry"]
        assert registry == held_total == total_stake + stake_records, (registry, held_total)
        treasury = self.balance_of(self.l1.dep.reward_treasury.address) - self.start["treasury"]
        assert treasury == total_balance + pools + pools_l1 + claims
        slashed = self.balance_of(self.l1.dep.slash_treasury.address) - self.start["slash"]
        assert slashed == sum(ledger.slashed.values())
        assert self.balance_of(self.acct[PROTOCOL]) - self.start["protocol"] == ledger.fees
        assert self.balance_of(self.l1.dep.inbox.address) == 0
        self.dirty = False

    # ----------------------------------------------------------------- the end: nothing stranded

    def drain(self) -> None:
        """Play out or expire every job, unstake and withdraw everything, commit, finalize and
        execute every record; then nothing is left anywhere."""
        for job_id in self.job_ids:
            for _ in range(3 * self.job(job_id).terms.rounds + 2):
                if self.job(job_id).status != jobs.ACTIVE:
                    break
                job = self.job(job_id)
                rnd = jobs.get_round(self.state, job_id, job.current_round)
                assert rnd is not None
                if (
                    rnd.status == jobs.ROUND_OPEN
                    and len(rnd.submitters) < job.terms.min_participants
                ):
                    self.idle_until(rnd.deadline_height)  # too few: let it expire
                self.advance(job_id, to_end=True)
            assert self.job(job_id).status == jobs.COMPLETED, job_id
        for k in range(len(KEYS)):
            key = KEYS[k]
            if jobs.get_stake(self.state, key):
                r = self.l2(k, "unstake", Unstake(0))
                assert r.ok, (r.error, r.detail)
            balance = get_account(self.state, key).balance
            if balance:
                r = self.l2(k, "withdraw", Withdraw(balance, b""))
                assert r.ok, (r.error, r.detail)  # only bound keys were ever credited
        if self.uncommitted:
            self.commit()
        self.finalize_all()
        for batch, i in self.committed_open():
            self.execute_one(batch, i)
        self.conserved_across_layers()
        assert set(self.executed) == {r.record_id for r in self.emitted}
        assert self.balance_of(self.l1.dep.registry.address) == self.start["registry"]
        assert self.balance_of(self.l1.dep.reward_treasury.address) == self.start["treasury"]
        for job_id, funded in self.ledger.funded.items():
            assert self.ledger.job_paid[job_id] == funded, job_id  # rewards + refunds
        for key in KEYS:
            rewards = sum(
                r.amount for r in self.emitted if r.rollup_key == key and r.kind == REWARD
            )
            assert self.ledger.received[key] + self.ledger.l2_net[key] + rewards == (
                self.ledger.left[key] + self.ledger.slashed[key]
            )
        type(self).drained += 1

    def teardown(self) -> None:
        try:
            if not self.dirty:  # the steps passed: settle everything and check the end
                self.drain()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


@pytest.mark.timeout(7200 if LONG else 600)
def test_conservation_across_the_layers(l1: L1) -> None:
    CrossLayerMachine.l1 = l1
    CrossLayerMachine.examples = CrossLayerMachine.steps = CrossLayerMachine.drained = 0
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
    outcomes = CrossLayerMachine.outcomes
    print(
        f"\ncross-layer conservation: {CrossLayerMachine.examples} examples "
        f"({CrossLayerMachine.drained} drained to zero), {CrossLayerMachine.steps} L1 "
        f"transactions, {outcomes['round aggregated']} rounds aggregated, "
        f"{outcomes['executed 1']} slashes and {outcomes['executed 2']} rewards executed, "
        f"{sum(v for k, v in outcomes.items() if k.startswith('escape exit'))} escape exits, "
        f"{time.monotonic() - started:.1f} s (max {MAX_EXAMPLES} x {STEPS} steps)"
    )
    if os.environ.get("FEDROLLUP_STATS") == "1":
        for name, count in sorted(outcomes.items()):
            print(f"  {name:60} {count}")
