"""Stateful invariants of the L1 contracts: a Hypothesis state machine against the real contracts on
py-evm (eth-tester), with a Python model of what every call should do.

Actors are the ten dev accounts: deployer/funder, proposer, guardian (also the admin), challenger,
protocol-fee address, four stakers (each with its own rollup key; any of them, and the stranger, may
also stake for the others' keys) and a stranger. Rules: stake (valid and invalid, for any key),
escapeExit, fundJob, deposit, commitBatch (proposer, with a settlement tree of random slash/reward/
withdrawal/stake-release/refund records v2 with random payees, right or wrong prevOutputRoot/index;
or anyone else), time travel (inside the window, to its exact edges, past it, to the escape
hatch's edge), challenge and resolveChallenge (right and wrong roles), executeSlash /
executeRelease / claim of random records of random batches (live or discarded, final or not,
frozen or not, executed or not, valid or tampered proofs and payees), direct registry.slash /
registry.release / treasury.pay / inbox.sendMessage by non-contracts, SlashTreasury.sweep.

Every call's outcome (success, or the exact custom error) is predicted by the model and checked.
After every step: the ETH held by the six contracts equals what entered minus what left, split as
registry == sum of stakes, treasuries as modelled, inbox and managers hold nothing; the inbox's
head (next index, frozenFrom) matches; every job's paid rewards and funding refunds stay within
its funding; every (key, staker) stake matches, and it changes only by stake (+), slash, release
and escape (-). Inside the rules: nothing executes from a batch that is not final (uncommitted,
discarded, inside its window or frozen by a challenge), no record executes twice, a record pays
exactly the payee in its leaf, only the proposer commits, only the SlashingManager slashes and
releases, and no stake leaves the registry directly while the rollup commits.

Transactions go straight to eth-tester with a fixed gas limit (no estimation), so each one runs at
the pending block's timestamp, which the model uses; a failed transaction is replayed as a call on
the block it was mined in (same timestamp and state) to read its revert data. One deployment per
module; each example starts from a snapshot, moved 10**7 s into the future so that block times are
deterministic (every block is its parent + 1 s unless we travel).

Short run (``make test``): 25 examples x up to 30 steps. Long run:
``FEDROLLUP_LONG=1 .venv/bin/pytest -q -s tests/test_contract_invariants.py`` (500 x 60).
"""

from __future__ import annotations

import ast
import os
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pytest
from eth_abi.abi import decode as abi_decode
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
from web3.contract import Contract

from l1_bridge.contracts import Deployment, decode_error, deploy_all
from l1_bridge.settlement import (
    SettlementRecord,
    SettlementTree,
    execution_key,
    leaf_hash,
    make_record_id,
    output_root,
    process_proof,
)

LONG = os.environ.get("FEDROLLUP_LONG") == "1"
MAX_EXAMPLES = 500 if LONG else 25
STEPS = 60 if LONG else 30

ETH = 10**18
WINDOW = 3_600
UNBONDING = 4 * 3_600
MIN_STAKE = 1 * ETH
FEE_BPS = 250
INCLUSION = 2 * 3_600  # forced-inclusion window
CAP = 4  # max pending batches: small, so the ring fills up and lanes get reused
GENESIS = keccak(b"fedrollup invariants genesis")
NOT_FROZEN = 2**64 - 1
GAS = 3_000_000
FUTURE = 10**7  # each example starts this far past the snapshot: block times never see the clock

SLASH, REWARD, WITHDRAWAL, STAKE_RELEASE, REFUND = 1, 2, 3, 4, 5
DOMAIN: list[Any] = [0, b"\x00" * 20]  # the deployment's (chain id, inbox): set by `chain`
KEYS = [keccak(b"fedrollup invariants key %d" % i) for i in range(5)]  # 0..3 stakers', 4 spare
ZERO_KEY = b"\x00" * 32
ZERO_ADDRESS = "0x" + "0" * 40
JOBS = [1, 2, 3]
AMOUNTS = [0, 1, 10**15, ETH // 2, ETH, 3 * ETH, 40 * ETH]
STAKE_VALUES = [0, 1, MIN_STAKE - 1, MIN_STAKE, 2 * ETH, 5 * ETH]
FUND_VALUES = [0, 1, 39, 40, 10**15, ETH, 4 * ETH]
JUNK = keccak(b"junk")

# Actor indices into the dev accounts.
DEPLOYER, PROPOSER, GUARDIAN, CHALLENGER, PROTOCOL = 0, 1, 2, 3, 4
STAKERS = [5, 6, 7, 8]
STRANGER = 9
ACTORS = list(range(10))
FUNDERS = [DEPLOYER, STRANGER, *STAKERS]

# Contract names as used in the balance model.
CONTRACTS = (
    "RollupInbox",
    "StakingRegistry",
    "SlashingManager",
    "RewardManager",
    "SlashTreasury",
    "RewardTreasury",
)


# --------------------------------------------------------------------------- chain access


@dataclass
class Chain:
    w3: Web3
    tester: Any
    dep: Deployment
    accounts: list[str]
    snapshot: Any
    start: int  # pending timestamp each example starts at

    def contract(self, name: str) -> Contract:
        return {
            "RollupInbox": self.dep.inbox,
            "StakingRegistry": self.dep.registry,
            "SlashingManager": self.dep.slashing,
            "RewardManager": self.dep.rewards,
            "SlashTreasury": self.dep.slash_treasury,
            "RewardTreasury": self.dep.reward_treasury,
        }[name]

    def address(self, name: str) -> str:
        return str(self.dep.addresses[name])

    def pending_time(self) -> int:
        return int(self.tester.get_block_by_number("pending")["timestamp"])

    def balance(self, address: str) -> int:
        return int(self.tester.get_balance(address))

    def view(self, contract: Contract, name: str, *args: Any) -> Any:
        """A view call at the latest block, decoded (a single output is unwrapped)."""
        data = contract.encode_abi(name, args=list(args))
        raw = self.tester.call({"from": self.accounts[0], "to": contract.address, "data": data})
        fn_abi = contract.get_function_by_name(name).abi
        types = [o["type"] for o in fn_abi["outputs"]]
        out = abi_decode(types, bytes.fromhex(str(raw).removeprefix("0x")))
        return out[0] if len(out) == 1 else out


@dataclass(frozen=True)
class Outcome:
    ok: bool
    error: str | None  # custom error name of a failed transaction
    ts: int  # timestamp of the block the transaction ran in
    fee: int  # wei the sender paid for gas


def _call_error(exc: BaseException) -> str:
    for arg in exc.args:
        raw: Any = arg
        if isinstance(arg, str) and arg[:2] in ("b'", 'b"'):
            raw = ast.literal_eval(arg)
        if isinstance(raw, bytes):
            decoded = decode_error(raw)
            return decoded.name if decoded else f"<unknown {raw[:4].hex()}>"
    return f"<no revert data: {exc!r}>"


def transact(
    chain: Chain, contract: Contract, fn: str, args: list[Any], sender: str, value: int = 0
) -> Outcome:
    """Send `fn(*args)` from `sender` with a fixed gas limit; on failure, decode its revert data by
    replaying it as a call on the block it was mined in (same timestamp, same contract state)."""
    tx = {
        "from": sender,
        "to": contract.address,
        "gas": GAS,
        "value": value,
        "data": contract.encode_abi(fn, args=args),
    }
    ts = chain.pending_time()
    receipt = chain.tester.get_transaction_receipt(chain.tester.send_transaction(tx))
    mined_ts = int(chain.tester.get_block_by_number(receipt["block_number"])["timestamp"])
    assert mined_ts == ts, f"transaction ran at {mined_ts}, expected {ts}"
    fee = int(receipt["gas_used"]) * int(receipt["effective_gas_price"])
    if receipt["status"] == 1:
        return Outcome(True, None, ts, fee)
    try:
        chain.tester.call(tx)
    except Exception as exc:
        return Outcome(False, _call_error(exc), ts, fee)
    return Outcome(False, "<replay succeeded: out of gas?>", ts, fee)


@pytest.fixture(scope="module")
def chain() -> Iterator[Chain]:
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
        genesis_output_root=GENESIS,
        max_pending_batches=CAP,
        inclusion_window_s=INCLUSION,
    )
    DOMAIN[:] = [dep.chain_id, dep.inbox.address]
    tester = provider.ethereum_tester  # type: ignore[attr-defined]
    snapshot = tester.take_snapshot()
    start = int(tester.get_block_by_number("latest")["timestamp"]) + FUTURE
    yield Chain(w3, tester, dep, acct, snapshot, start)
    tester.revert_to_snapshot(snapshot)


# --------------------------------------------------------------------------- model


@dataclass
class Batch:
    """A batch the proposer committed (it may since have been discarded)."""

    index: int
    records: tuple[SettlementRecord, ...]
    tree: SettlementTree
    state_root: bytes
    last_block_hash: bytes
    committed_at: int
    live: bool = True

    @property
    def output_root(self) -> bytes:
        return output_root(self.state_root, self.tree.root, self.last_block_hash, *DOMAIN)


@dataclass
class Model:
    stake: dict[tuple[bytes, str], int] = field(default_factory=dict)  # (key, address) -> wei
    exited: set[tuple[bytes, str]] = field(default_factory=set)  # left by the escape hatch
    last_resolved: int = 0  # time of the last challenge resolution
    slash_done: set[int] = field(default_factory=set)  # execution keys
    claim_done: set[int] = field(default_factory=set)
    jobs: dict[int, list[int]] = field(default_factory=dict)  # job -> [funded, paid]
    live: list[Batch] = field(default_factory=list)  # live[i] is batch i
    batches: list[Batch] = field(default_factory=list)  # every batch ever committed
    pending: list[int] = field(default_factory=list)  # challenged batch indices
    next_key: int = 1  # next fresh execution key
    counter: int = 0
    balances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(CONTRACTS, 0))
    eth_in: int = 0
    eth_out: int = 0
    message_times: list[int] = field(default_factory=list)  # when each L1 message was sent

    def frozen(self, index: int) -> bool:
        return any(p <= index for p in self.pending)

    def committed(self, index: int) -> bool:
        return 0 <= index < len(self.live)

    def final(self, index: int, now: int) -> bool:
        return (
            self.committed(index)
            and not self.frozen(index)
            and self.live[index].committed_at + WINDOW <= now
        )

    def fresh(self, tag: bytes) -> bytes:
        self.counter += 1
        return keccak(tag + self.counter.to_bytes(8, "big"))

    def records(self) -> list[SettlementRecord]:
        return [r for b in self.batches for r in b.records]

    def escape_opens(self, deployed_at: int) -> int:
        last = max(deployed_at, self.last_resolved)
        if self.live:
            last = max(last, self.live[-1].committed_at)
        return last + UNBONDING


def check_record(
    expected_root: bytes,
    state_root: bytes,
    settlement_root: bytes,
    last_block_hash: bytes,
    record: SettlementRecord,
    proof: list[bytes],
) -> str | None:
    """What SettlementVerifier._checkRecord says."""
    if record.version != 2:
        return "UnsupportedRecordVersion"
    if output_root(state_root, settlement_root, last_block_hash, *DOMAIN) != expected_root:
        return "OutputRootMismatch"
    if process_proof(leaf_hash(record), proof) != settlement_root:
        return "InvalidProof"
    return None


@dataclass(frozen=True)
class Attempt:
    """Arguments of executeSlash / executeRelease / claim."""

    batch_index: int
    state_root: bytes
    settlement_root: bytes
    last_block_hash: bytes
    record: SettlementRecord
    proof: list[bytes]

    def args(self) -> list[Any]:
        return [
            self.batch_index,
            self.state_root,
            self.settlement_root,
            self.last_block_hash,
            self.record.as_abi_tuple(),
            self.proof,
        ]


TAMPERS = [
    "none",
    "none",
    "none",
    "none",
    "amount",
    "other_proof",
    "short_proof",
    "state_root",
    "index",
    "version",
    "foreign",
    "payee",
]

record_spec = st.tuples(
    st.sampled_from([SLASH, REWARD, WITHDRAWAL, STAKE_RELEASE, REFUND]),
    st.integers(0, len(KEYS) - 1),
    st.sampled_from([0, *JOBS]),
    st.sampled_from(AMOUNTS),
    st.integers(0, 13),  # payee: < 10 an actor, 10..12 a contract, 13 none (zero)
    st.one_of(st.none(), st.integers(0, 10**6)),  # replay an earlier record
)
WITHDRAWAL_CONTRACT_RECIPIENTS = ["SlashTreasury", "RewardTreasury", "RollupInbox"]


# --------------------------------------------------------------------------- the machine


class ContractMachine(RuleBasedStateMachine):
    chain: Chain
    examples = 0
    steps = 0  # transactions sent
    checks = 0  # invariant rounds (after the start and after every step)
    outcomes: ClassVar[Counter[str]] = Counter()  # "function:error" (or ":ok") -> count

    def __init__(self) -> None:
        super().__init__()
        chain = self.chain
        chain.tester.revert_to_snapshot(chain.snapshot)
        chain.tester.time_travel(chain.start)
        self.m = Model()
        self.acct = chain.accounts
        self.deployed_at = int(chain.view(chain.dep.inbox, "deployedAt"))
        self.changed = True
        type(self).examples += 1

    # ----------------------------------------------------------------- helpers

    def send(self, contract: str, fn: str, args: list[Any], actor: int, value: int = 0) -> Outcome:
        type(self).steps += 1
        out = transact(self.chain, self.chain.contract(contract), fn, args, self.acct[actor], value)
        self.changed |= out.ok
        type(self).outcomes[f"{fn}:{out.error or 'ok'}"] += 1
        return out

    @staticmethod
    def expect(out: Outcome, error: str | None, what: str) -> None:
        if error is None:
            assert out.ok, f"{what}: expected success, reverted with {out.error}"
        else:
            assert not out.ok, f"{what}: expected revert {error}, but it succeeded"
            assert out.error == error, f"{what}: expected revert {error}, got {out.error}"

    def move(self, src: str | None, dst: str | None, amount: int) -> None:
        """Account `amount` wei moving from `src` to `dst` (contract names; None = outside)."""
        if src is None:
            self.m.eth_in += amount
        else:
            self.m.balances[src] -= amount
        if dst is None:
            self.m.eth_out += amount
        else:
            self.m.balances[dst] += amount

    def contract_named(self, address: str) -> str | None:
        for name in CONTRACTS:
            if self.chain.address(name) == address:
                return name
        return None

    @initialize(
        stakes=st.lists(st.sampled_from([0, MIN_STAKE, 2 * ETH, 5 * ETH]), min_size=4, max_size=4),
        funding=st.lists(st.sampled_from([0, ETH, 4 * ETH]), min_size=2, max_size=2),
        deposit=st.sampled_from([0, ETH, 10 * ETH]),
        first=st.lists(record_spec, min_size=2, max_size=8),
        second=st.lists(record_spec, max_size=4),
    )
    def setup(
        self,
        stakes: list[int],
        funding: list[int],
        deposit: int,
        first: list[tuple[Any, ...]],
        second: list[tuple[Any, ...]],
    ) -> None:
        """A populated start, so that short runs reach settlement quickly (the rules below also
        do all of this from scratch): some stakers staked, jobs funded, a deposit, batch 0 with
        random records past its challenge window, batch 1 (maybe empty) inside its window."""
        for staker, value in zip(STAKERS, stakes, strict=True):
            if value:
                self.stake(staker, "own", 0, value)
        for job, value in zip(JOBS, funding, strict=False):
            if value:
                self.fund_job(DEPLOYER, job, value)
        if deposit:
            self.deposit(STRANGER, 0, deposit)
        self.commit_batch(first, False, "next", "ok")
        self.travel("past_window", 0, 0, 1)
        self.commit_batch(second, not second, "next", "ok")

    # ----------------------------------------------------------------- staking

    @rule(
        staker=st.sampled_from([*STAKERS, STRANGER]),
        key_choice=st.sampled_from(["own", "own", "own", "other", "zero"]),
        other=st.integers(0, len(KEYS) - 1),
        value=st.sampled_from(STAKE_VALUES),
    )
    def stake(self, staker: int, key_choice: str, other: int, value: int) -> None:
        """Anyone stakes for any key (L1 binds nothing): the stake is the staker's, per key."""
        m = self.m
        if key_choice == "own":
            key = KEYS[STAKERS.index(staker)] if staker in STAKERS else KEYS[4]
        elif key_choice == "other":
            key = KEYS[other]
        else:
            key = ZERO_KEY
        now = self.chain.pending_time()
        who = self.acct[staker]
        current = m.stake.get((key, who), 0)
        error: str | None = None
        if key == ZERO_KEY:
            error = "ZeroRollupKey"
        elif (key, who) in m.exited:
            error = "ExitedStaker"  # an escape exit is final for its (key, staker)
        elif value < MIN_STAKE:
            error = "StakeBelowMinimum"
        out = self.send("StakingRegistry", "stake", [key], staker, value)
        assert out.ts == now
        self.expect(out, error, f"stake({key.hex()[:8]}) by {staker} value {value}")
        if out.ok:
            m.stake[(key, who)] = current + value
            self.move(None, "StakingRegistry", value)
            m.message_times.append(out.ts)

    @rule(staker=st.sampled_from([*STAKERS, STRANGER]), key=st.integers(0, len(KEYS) - 1))
    def escape_exit(self, staker: int, key: int) -> None:
        """The escape hatch: shut while the rollup commits (or resolves challenges)."""
        m = self.m
        now = self.chain.pending_time()
        who = self.acct[staker]
        amount = m.stake.get((KEYS[key], who), 0)
        error: str | None = None
        if now < m.escape_opens(self.deployed_at):
            error = "RollupLive"
        elif amount == 0:
            error = "NothingToExit"
        before = self.chain.balance(who)
        out = self.send("StakingRegistry", "escapeExit", [KEYS[key]], staker)
        self.expect(out, error, f"escapeExit({key}) by {staker}")
        if out.ok:
            assert self.chain.balance(who) == before - out.fee + amount
            m.stake[(KEYS[key], who)] = 0
            m.exited.add((KEYS[key], who))
            m.message_times.append(out.ts)
            self.move("StakingRegistry", None, amount)

    @rule(
        funder=st.sampled_from(FUNDERS),
        job=st.sampled_from(JOBS),
        value=st.sampled_from(FUND_VALUES),
    )
    def fund_job(self, funder: int, job: int, value: int) -> None:
        out = self.send("RewardManager", "fundJob", [job], funder, value)
        self.expect(out, "ZeroAmount" if value == 0 else None, f"fundJob({job}) value {value}")
        if out.ok:
            fee = value * FEE_BPS // 10_000
            pool = self.m.jobs.setdefault(job, [0, 0])
            pool[0] += value - fee
            self.move(None, "RewardTreasury", value - fee)
            self.m.message_times.append(out.ts)
            self.m.eth_in += fee
            self.m.eth_out += fee  # straight on to the protocol address

    @rule(
        actor=st.sampled_from(ACTORS),
        key=st.integers(0, len(KEYS)),  # len(KEYS): the zero key
        value=st.sampled_from([0, 1, 10**15, ETH, 10 * ETH]),
    )
    def deposit(self, actor: int, key: int, value: int) -> None:
        rollup_key = KEYS[key] if key < len(KEYS) else ZERO_KEY
        error = "ZeroAmount" if value == 0 else "ZeroRollupKey" if key == len(KEYS) else None
        out = self.send("RollupInbox", "deposit", [rollup_key], actor, value)
        self.expect(out, error, f"deposit value {value}")
        if out.ok:
            self.move(None, "RewardTreasury", value)
            self.m.message_times.append(out.ts)

    @rule(
        what=st.sampled_from(["slash", "release", "pay", "message", "commit", "sweep"]),
        actor=st.sampled_from(ACTORS),
        key=st.integers(0, len(KEYS) - 1),
        amount=st.sampled_from([0, 1, ETH, 100 * ETH]),
    )
    def privileged_calls(self, what: str, actor: int, key: int, amount: int) -> None:
        """Only the SlashingManager slashes, only the RewardManager pays out of the treasury, only
        the registry/RewardManager append messages, only the proposer commits, only the admin
        (the guardian) sweeps the SlashTreasury."""
        m, chain = self.m, self.chain
        if what in ("slash", "release"):
            staker = self.acct[STAKERS[key % len(STAKERS)]]
            before = m.stake.get((KEYS[key], staker), 0)
            out = self.send("StakingRegistry", what, [KEYS[key], staker, amount], actor)
            self.expect(out, "NotSlashingManager", f"registry.{what} by {actor}")
            assert chain.view(chain.dep.registry, "stakeOf", KEYS[key], staker) == before
        elif what == "pay":
            out = self.send("RewardTreasury", "pay", [self.acct[actor], amount], actor)
            self.expect(out, "NotManager", "RewardTreasury.pay")
        elif what == "message":
            args = [1 + key, KEYS[key], self.acct[actor], amount, b""]
            out = self.send("RollupInbox", "sendMessage", args, actor)
            self.expect(out, "UnauthorizedMessageSender", "RollupInbox.sendMessage")
        elif what == "commit":
            # Even with otherwise perfect arguments.
            actor = actor if actor != PROPOSER else STRANGER
            prev = m.live[-1].output_root if m.live else GENESIS
            args = [len(m.live), prev, m.fresh(b"root"), m.fresh(b"data"), 0]
            out = self.send("RollupInbox", "commitBatch", args, actor)
            self.expect(out, "NotProposer", f"commitBatch by {actor}")
            assert chain.view(chain.dep.inbox, "nextBatchIndex") == len(m.live)
        else:
            balance = m.balances["SlashTreasury"]
            if actor != GUARDIAN:
                error: str | None = "NotAdmin"
            elif amount > balance:
                error = "InsufficientBalance"
            else:
                error = None
            out = self.send("SlashTreasury", "sweep", [self.acct[STRANGER], amount], actor)
            self.expect(out, error, f"sweep {amount} by {actor}")
            if out.ok:
                self.move("SlashTreasury", None, amount)

    def build_records(self, specs: list[tuple[Any, ...]]) -> list[SettlementRecord]:
        m = self.m
        known = m.records()
        records: list[SettlementRecord] = []
        for kind, key, job, amount, recipient, replay in specs:
            if replay is not None and known:
                record = known[replay % len(known)]
            else:
                address = ZERO_ADDRESS
                if recipient < 10:
                    address = self.acct[recipient]
                elif recipient < 13:
                    address = self.chain.address(WITHDRAWAL_CONTRACT_RECIPIENTS[recipient - 10])
                record = SettlementRecord(
                    kind=kind,
                    job_id=job,
                    round=m.next_key % 7,
                    rollup_key=KEYS[key],
                    payee=bytes.fromhex(address[2:]),
                    amount=amount,
                    record_id=make_record_id(m.next_key),
                )
                m.next_key += 1
            if record not in records:
                records.append(record)
        return records

    @rule(
        specs=st.lists(record_spec, min_size=1, max_size=6),
        empty=st.sampled_from([False] * 7 + [True]),
        index_mode=st.sampled_from(["next"] * 8 + ["ahead", "behind"]),
        prev_mode=st.sampled_from(["ok"] * 6 + ["junk", "genesis", "stale", "zero_root"]),
        consumed_mode=st.sampled_from(["all"] * 6 + ["one_less", "none", "too_many"]),
    )
    def commit_batch(
        self,
        specs: list[tuple[Any, ...]],
        empty: bool,
        index_mode: str,
        prev_mode: str,
        consumed_mode: str = "all",
    ) -> None:
        m = self.m
        nxt = len(m.live)
        index = {"next": nxt, "ahead": nxt + 1, "behind": max(nxt - 1, 0)}[index_mode]
        right_prev = m.live[-1].output_root if m.live else GENESIS
        if prev_mode == "junk":
            prev = m.fresh(b"prev")
        elif prev_mode == "genesis":
            prev = GENESIS
        elif prev_mode == "stale":
            prev = m.batches[-1].output_root if m.batches else JUNK
        else:
            prev = right_prev
        records = [] if empty else self.build_records(specs)
        batch = Batch(
            index=index,
            records=tuple(records),
            tree=SettlementTree(records),
            state_root=m.fresh(b"state"),
            last_block_hash=m.fresh(b"block"),
            committed_at=0,
        )
        root = b"\x00" * 32 if prev_mode == "zero_root" else batch.output_root
        now = self.chain.pending_time()
        sent = len(m.message_times)
        consumed = {
            "all": sent,
            "one_less": max(sent - 1, 0),
            "none": 0,
            "too_many": sent + 1,
        }[consumed_mode]
        error: str | None = None
        if consumed > sent:
            error = "MessagesNotSent"
        elif consumed < sent and m.message_times[consumed] + INCLUSION < now:
            error = "MessageNotIncluded"
        elif index != nxt:
            error = "UnexpectedBatchIndex"
        elif prev != right_prev:
            error = "PrevOutputRootMismatch"
        elif prev_mode == "zero_root":
            error = "ZeroOutputRoot"
        elif index >= CAP and not m.final(index - CAP, now):
            error = "TooManyPendingBatches"
        out = self.send(
            "RollupInbox", "commitBatch", [index, prev, root, m.fresh(b"data"), consumed], PROPOSER
        )
        self.expect(out, error, f"commitBatch({index}, prev={prev_mode})")
        if out.ok:
            batch.committed_at = out.ts
            m.live.append(batch)
            m.batches.append(batch)
        assert self.chain.view(self.chain.dep.inbox, "nextBatchIndex") == len(m.live)

    @rule(
        mode=st.sampled_from(["small", "edge", "edge", "past_window", "escape", "past_unbonding"]),
        pick=st.integers(0, 10**6),
        delta=st.integers(-1, 1),
        small=st.integers(1, WINDOW // 2),
    )
    def travel(self, mode: str, pick: int, delta: int, small: int) -> None:
        """Move time so that the next transaction runs at the chosen timestamp."""
        m = self.m
        now = self.chain.pending_time()
        target = now + small
        if mode == "edge" and m.live:
            target = m.live[pick % len(m.live)].committed_at + WINDOW + delta
        elif mode == "past_window":
            target = now + WINDOW + 1
        elif mode == "escape":
            target = m.escape_opens(self.deployed_at) + delta
        elif mode == "past_unbonding":
            target = now + UNBONDING + 1
        if target > now:
            self.changed = True
            self.chain.tester.time_travel(target)
            assert self.chain.pending_time() == target

    @rule(
        actor=st.sampled_from([CHALLENGER] * 4 + [GUARDIAN, PROPOSER, STRANGER]),
        pick=st.integers(0, 10**6),
    )
    def challenge(self, actor: int, pick: int) -> None:
        m = self.m
        index = pick % (len(m.live) + 1)
        now = self.chain.pending_time()
        error: str | None = None
        if actor != CHALLENGER:
            error = "AccessControlUnauthorizedAccount"
        elif not m.committed(index):
            error = "BatchNotCommitted"
        elif m.live[index].committed_at + WINDOW <= now:
            error = "ChallengeWindowClosed"
        elif index in m.pending:
            error = "AlreadyChallenged"
        out = self.send("RollupInbox", "challenge", [index], actor)
        self.expect(out, error, f"challenge({index}) by {actor}")
        if out.ok:
            m.pending.append(index)

    @rule(
        actor=st.sampled_from([GUARDIAN] * 4 + [CHALLENGER, STRANGER]),
        pick=st.integers(0, 10**6),
        valid=st.booleans(),
        any_index=st.booleans(),
    )
    def resolve_challenge(self, actor: int, pick: int, valid: bool, any_index: bool) -> None:
        m = self.m
        if m.pending and not any_index:
            index = m.pending[pick % len(m.pending)]
        else:
            index = pick % (len(m.live) + 1)
        error: str | None = None
        if actor != GUARDIAN:
            error = "AccessControlUnauthorizedAccount"
        elif index not in m.pending:
            error = "NotChallenged"
        out = self.send("RollupInbox", "resolveChallenge", [index, valid], actor)
        self.expect(out, error, f"resolveChallenge({index}, {valid}) by {actor}")
        if out.ok:
            m.pending.remove(index)
            m.last_resolved = out.ts
            if not valid:
                for batch in m.live[index:]:
                    batch.live = False
                del m.live[index:]
                m.pending = [p for p in m.pending if p < index]

    # ----------------------------------------------------------------- settlement records

    def attempt(self, batch: Batch, record_pick: int, tamper: str) -> Attempt:
        """A (possibly tampered) executeSlash/claim/flag argument set for a record of `batch`."""
        records = batch.records
        if records:
            i = record_pick % len(records)
            record = records[i]
            proof = batch.tree.proof(i)
        else:
            record = SettlementRecord(REWARD, 1, 0, KEYS[0], bytes(20), 1, make_record_id(10**9))
            proof = []
        state_root, index = batch.state_root, batch.index
        if tamper == "amount":
            record = replace(record, amount=record.amount + 1)
        elif tamper == "other_proof":
            proof = batch.tree.proof((i + 1) % len(records)) if len(records) > 1 else [JUNK]
        elif tamper == "short_proof":
            proof = proof[:-1] if proof else [JUNK]
        elif tamper == "state_root":
            state_root = JUNK
        elif tamper == "index":
            index = batch.index + 1
        elif tamper == "version":
            record = replace(record, version=1)
        elif tamper == "payee":  # a stranger names himself the payee: a leaf no tree holds
            record = replace(record, payee=bytes.fromhex(self.acct[STRANGER][2:]))
        elif tamper == "foreign":
            record = replace(record, record_id=make_record_id(10**9 + record_pick % 1000))
        return Attempt(index, state_root, batch.tree.root, batch.last_block_hash, record, proof)

    def expected_root_error(self, a: Attempt, need_final: bool, now: int) -> str | None:
        m = self.m
        if need_final:
            if not m.final(a.batch_index, now):
                return "BatchNotFinalized"
        elif not m.committed(a.batch_index):
            return "BatchNotCommitted"
        expected = m.live[a.batch_index].output_root
        return check_record(
            expected, a.state_root, a.settlement_root, a.last_block_hash, a.record, a.proof
        )

    @precondition(lambda self: self.m.batches)
    @rule(
        actor=st.sampled_from(ACTORS),
        pick=st.integers(0, 10**6),
        record_pick=st.integers(0, 10**6),
        tamper=st.sampled_from(TAMPERS),
        wrong_entry=st.sampled_from([False] * 5 + [True]),
    )
    def settle(
        self, actor: int, pick: int, record_pick: int, tamper: str, wrong_entry: bool
    ) -> None:
        """executeSlash or claim (by the record's kind, or the wrong one) of a record of any batch:
        live or discarded, final or not, frozen or not, executed or not."""
        a = self.attempt(self.m.batches[pick % len(self.m.batches)], record_pick, tamper)
        self.dispatch(actor, a, tamper, wrong_entry)

    @precondition(lambda self: self.m.live)
    @rule(
        actor=st.sampled_from(ACTORS),
        pick=st.integers(0, 10**6),
        record_pick=st.integers(0, 10**6),
        tamper=st.sampled_from(TAMPERS),
    )
    def settle_live(self, actor: int, pick: int, record_pick: int, tamper: str) -> None:
        """Like `settle`, for a batch that is live now (final ones preferred)."""
        now = self.chain.pending_time()
        final = [b for b in self.m.live if self.m.final(b.index, now)] or self.m.live
        a = self.attempt(final[pick % len(final)], record_pick, tamper)
        self.dispatch(actor, a, tamper, False)

    # Settling needs committed, finalized batches: give those rules more weight than the rest
    # (Hypothesis picks uniformly among the enabled rules).
    @precondition(lambda self: self.m.live)
    @rule(
        actor=st.sampled_from(ACTORS),
        pick=st.integers(0, 10**6),
        record_pick=st.integers(0, 10**6),
        tamper=st.sampled_from(["none"] * 6 + TAMPERS),
    )
    def settle_live_again(self, actor: int, pick: int, record_pick: int, tamper: str) -> None:
        self.settle_live(actor, pick, record_pick, tamper)

    @rule(
        mode=st.sampled_from(["edge", "past_window", "past_window"]),
        pick=st.integers(0, 10**6),
        delta=st.integers(-1, 1),
    )
    def travel_on(self, mode: str, pick: int, delta: int) -> None:
        self.travel(mode, pick, delta, 1)

    def dispatch(self, actor: int, a: Attempt, tamper: str, wrong_entry: bool) -> None:
        """The entry point of the record's kind (or, if `wrong_entry`, a wrong one)."""
        entries = {SLASH: 0, STAKE_RELEASE: 1}
        entry = entries.get(a.record.kind, 2)
        if wrong_entry:
            entry = (entry + 1 + a.record.amount % 2) % 3
        (self.execute_slash, self.execute_release, self.claim)[entry](actor, a, tamper)

    def payee_address(self, r: SettlementRecord) -> str:
        return Web3.to_checksum_address("0x" + r.payee.hex())

    def execute_release(self, actor: int, a: Attempt, tamper: str) -> None:
        m = self.m
        r = a.record
        key = execution_key(r.record_id)
        now = self.chain.pending_time()
        payee = self.payee_address(r)
        error: str | None
        if r.kind != STAKE_RELEASE:
            error = "WrongRecordKind"
        elif payee == ZERO_ADDRESS:
            error = "ZeroPayee"
        else:
            error = self.expected_root_error(a, need_final=True, now=now)
            if error is None and key in m.slash_done:
                error = "RecordAlreadyExecuted"
        held = m.stake.get((r.rollup_key, payee), 0)
        paid = min(r.amount, held)
        if (
            error is None
            and paid
            and self.contract_named(payee)
            not in (
                None,
                "SlashTreasury",
                "RewardTreasury",
            )
        ):
            error = "FailedCall"
        before = self.chain.balance(payee)
        out = self.send("SlashingManager", "executeRelease", a.args(), actor)
        if out.ok:
            assert m.final(a.batch_index, out.ts), f"release from non-final batch {a.batch_index}"
            assert key not in m.slash_done, f"release record {key} executed twice"
        self.expect(out, error, f"executeRelease(batch {a.batch_index}, tamper={tamper})")
        if out.ok:
            m.slash_done.add(key)
            m.stake[(r.rollup_key, payee)] = held - paid
            target = self.contract_named(payee)
            self.move("StakingRegistry", target, paid)
            fee = out.fee if payee == self.acct[actor] else 0
            assert self.chain.balance(payee) == before + paid - fee

    def execute_slash(self, actor: int, a: Attempt, tamper: str) -> None:
        m = self.m
        r = a.record
        key = execution_key(r.record_id)
        now = self.chain.pending_time()
        error: str | None
        if r.kind != SLASH:
            error = "WrongRecordKind"
        else:
            error = self.expected_root_error(a, need_final=True, now=now)
            if error is None and key in m.slash_done:
                error = "RecordAlreadyExecuted"
        out = self.send("SlashingManager", "executeSlash", a.args(), actor)
        if out.ok:
            # The headline invariants, spelled out before the generic comparison.
            assert m.final(a.batch_index, out.ts), (
                f"slash executed from non-final batch {a.batch_index}"
            )
            assert key not in m.slash_done, f"slash record {key} executed twice"
        self.expect(out, error, f"executeSlash(batch {a.batch_index}, tamper={tamper})")
        if out.ok:
            m.slash_done.add(key)
            staker = self.payee_address(r)  # a slash names the slashed party
            slashed = min(r.amount, m.stake.get((r.rollup_key, staker), 0))
            if slashed:
                m.stake[(r.rollup_key, staker)] -= slashed
            self.move("StakingRegistry", "SlashTreasury", slashed)
        if r.kind == SLASH:
            executed = self.chain.view(self.chain.dep.slashing, "isExecuted", r.record_id)
            assert executed == (key in m.slash_done)

    def claim(self, actor: int, a: Attempt, tamper: str) -> None:
        m = self.m
        r = a.record
        key = execution_key(r.record_id)
        now = self.chain.pending_time()
        recipient: str | None = None
        error: str | None
        from_pool = r.kind == REWARD or (r.kind == REFUND and r.job_id != 0)
        if r.kind not in (REWARD, WITHDRAWAL, REFUND):
            error = "WrongRecordKind"
        else:
            error = self.expected_root_error(a, need_final=True, now=now)
            if error is None and key in m.claim_done:
                error = "RecordAlreadyExecuted"
            if error is None:
                recipient = self.payee_address(r)  # exactly the payee in the leaf
                if recipient == ZERO_ADDRESS:
                    error = "ZeroPayee"
            if error is None and from_pool:
                funded, paid = m.jobs.get(r.job_id, [0, 0])
                if funded == 0:
                    error = "UnknownJob"
                elif r.amount > funded - paid:
                    error = "RewardExceedsJobPool"
            if error is None:
                assert recipient is not None
                target = self.contract_named(recipient)
                if m.balances["RewardTreasury"] < r.amount:
                    error = "InsufficientBalance"
                elif target not in (None, "SlashTreasury", "RewardTreasury"):
                    error = "FailedCall"  # no receive(): the payment bounces
        before = self.chain.balance(recipient) if recipient else 0
        out = self.send("RewardManager", "claim", a.args(), actor)
        if out.ok:
            assert m.final(a.batch_index, out.ts), f"claim from non-final batch {a.batch_index}"
            assert key not in m.claim_done, f"reward/withdrawal record {key} paid twice"
        self.expect(out, error, f"claim(batch {a.batch_index}, kind {r.kind}, tamper={tamper})")
        if out.ok:
            assert recipient is not None
            m.claim_done.add(key)
            if from_pool:
                m.jobs[r.job_id][1] += r.amount
            target = self.contract_named(recipient)
            if target != "RewardTreasury":
                self.move("RewardTreasury", target, r.amount)
                fee = out.fee if recipient == self.acct[actor] else 0
                assert self.chain.balance(recipient) == before + r.amount - fee
        if r.kind in (REWARD, WITHDRAWAL, REFUND):
            claimed = self.chain.view(self.chain.dep.rewards, "isClaimed", r.record_id)
            assert claimed == (key in m.claim_done)

    # ----------------------------------------------------------------- invariants

    @invariant()
    def eth_is_conserved(self) -> None:
        type(self).checks += 1
        m, chain = self.m, self.chain
        held = {name: chain.balance(chain.address(name)) for name in CONTRACTS}
        assert sum(held.values()) == m.eth_in - m.eth_out, (held, m.eth_in, m.eth_out)
        assert held == m.balances
        assert held["RollupInbox"] == held["SlashingManager"] == held["RewardManager"] == 0
        assert held["StakingRegistry"] == sum(m.stake.values())

    @invariant()
    def views_match_model(self) -> None:
        """Stakes, pending slashes, job pools and the inbox head agree with the model. Only a
        successful transaction (or, for finality, time travel) can change them, so the views are
        re-read after such steps only (a reverted transaction leaves no trace in the EVM)."""
        if not self.changed:
            return
        self.changed = False
        m, chain = self.m, self.chain
        on_chain = 0
        for key in KEYS:
            for staker in [*STAKERS, STRANGER]:
                who = self.acct[staker]
                amount = chain.view(chain.dep.registry, "stakeOf", key, who)
                assert amount == m.stake.get((key, who), 0), (key.hex(), staker)
                on_chain += amount
        assert chain.balance(chain.address("StakingRegistry")) == on_chain
        assert chain.view(chain.dep.registry, "escapeOpensAt") == m.escape_opens(self.deployed_at)
        # Rewards of a job never exceed its (net) funding.
        for job in JOBS:
            funded, paid = chain.view(chain.dep.rewards, "jobPool", job)
            assert paid <= funded, f"job {job}: paid {paid} > funded {funded}"
            assert [funded, paid] == m.jobs.get(job, [0, 0])
        assert chain.view(chain.dep.inbox, "nextBatchIndex") == len(m.live)
        expected = min(m.pending) if m.pending else NOT_FROZEN
        assert chain.view(chain.dep.inbox, "frozenFrom") == expected
        # Views run at the latest block, one second before the next transaction.
        latest = chain.pending_time() - 1
        for i in range(max(0, len(m.live) - CAP - 1), len(m.live)):
            assert chain.view(chain.dep.inbox, "isFinalized", i) == m.final(i, latest), i

    def teardown(self) -> None:
        # Every record's executed/claimed bit agrees with the model.
        m, chain = self.m, self.chain
        for r in {r.record_id: r for r in m.records()}.values():
            key = execution_key(r.record_id)
            if r.kind in (SLASH, STAKE_RELEASE):
                assert chain.view(chain.dep.slashing, "isExecuted", r.record_id) == (
                    key in m.slash_done
                )
            else:
                assert chain.view(chain.dep.rewards, "isClaimed", r.record_id) == (
                    key in m.claim_done
                )


@pytest.mark.timeout(7200 if LONG else 600)
def test_contract_invariants(chain: Chain) -> None:
    ContractMachine.chain = chain
    ContractMachine.examples = ContractMachine.steps = ContractMachine.checks = 0
    ContractMachine.outcomes = Counter()
    started = time.monotonic()
    run_state_machine_as_test(
        ContractMachine,
        settings=settings(
            max_examples=MAX_EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
        ),
    )
    elapsed = time.monotonic() - started
    print(
        f"\ncontract invariants: {ContractMachine.examples} examples, "
        f"{ContractMachine.checks - ContractMachine.examples} steps, "
        f"{ContractMachine.steps} transactions, {elapsed:.1f} s "
        f"(max {MAX_EXAMPLES} x {STEPS} steps)"
    )
    if os.environ.get("FEDROLLUP_STATS") == "1":
        for name, count in sorted(ContractMachine.outcomes.items()):
            print(f"  {name:45} {count}")
