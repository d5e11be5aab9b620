"""Issue 9, the L2 side: money goes only where the chain authenticated it, stake leaves only
when the STF says so, and nothing the L2 cannot take is stranded (spec-style, real Chain)."""

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from rollup.chain import Chain
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf import jobs
from stf.identity import BindL1, get_bound_address
from stf.jobs import Amount, Withdraw
from stf.l1 import DEPOSIT, JOB_FUNDED, STAKE
from stf.settlement import REFUND, REWARD, SLASH, STAKE_RELEASE
from stf.staking import MAX_FUNDERS, Unstake
from tests.fl_harness import (
    CHAIN_ID,
    PARAMS,
    Harness,
    bind,
    commit,
    f32,
    l1_address,
    open_job,
    pub,
    reveal,
    stake,
    upload,
)
from tests.test_stf_fl import CLIENTS, OWNER, _play_round

VICTIM, STRANGER = 20, 21
STRANGER_L1 = b"\x5e" * 20


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness.create(tmp_path)


def test_bind_is_signed_once_and_only_by_the_key(h: Harness) -> None:
    h.fails(VICTIM, "bind_l1", BindL1(bytes(20)), "bad_address")
    r = h.ok(VICTIM, "bind_l1", BindL1(l1_address(VICTIM)))
    assert dict(r.events)["L1AddressBound"]["address"] == l1_address(VICTIM)
    # the key's own later attempt cannot move it; nobody else can sign for the key at all
    h.fails(VICTIM, "bind_l1", BindL1(STRANGER_L1), "already_bound")
    h.ok(STRANGER, "bind_l1", BindL1(STRANGER_L1))  # binds the stranger's own key only
    assert get_bound_address(h.state, pub(VICTIM)) == l1_address(VICTIM)


def test_key_squatting_stake_from_a_stranger_goes_back_to_the_stranger(h: Harness) -> None:
    """Sequence 1/2: a stranger stakes for the victim's key (before or after the victim
    binds, e.g. front-running the victim's stake): the L2 credits nothing to the key and
    releases the ETH back to the stranger; the victim's own stake still counts."""
    r = h.l1(STAKE, pub(VICTIM), 10**18, sender=STRANGER_L1)  # before any binding
    assert r.ok and jobs.get_stake(h.state, pub(VICTIM)) == 0
    (record,) = r.records
    assert (record.kind, record.payee, record.amount) == (STAKE_RELEASE, STRANGER_L1, 10**18)
    bind(h, [VICTIM])
    r = h.l1(STAKE, pub(VICTIM), 10**18, sender=STRANGER_L1)  # after: still the stranger's
    assert jobs.get_stake(h.state, pub(VICTIM)) == 0 and r.records[0].payee == STRANGER_L1
    r = h.l1(STAKE, pub(VICTIM), 2 * 10**18, sender=l1_address(VICTIM))
    assert r.ok and r.records == () and jobs.get_stake(h.state, pub(VICTIM)) == 2 * 10**18


def test_deposit_from_another_address_is_refunded(h: Harness) -> None:
    bind(h, [VICTIM])
    before = h.balance(VICTIM)
    r = h.l1(DEPOSIT, pub(VICTIM), 500, sender=STRANGER_L1)
    assert h.balance(VICTIM) == before
    (record,) = r.records
    assert (record.kind, record.job, record.payee, record.amount) == (REFUND, 0, STRANGER_L1, 500)
    assert h.l1(DEPOSIT, pub(VICTIM), 500, sender=l1_address(VICTIM)).records == ()
    assert h.balance(VICTIM) == before + 500


def test_l2_stake_is_gone(h: Harness) -> None:
    """Sequence 5: stake added on L2 had no ETH behind it on L1 and no exit."""
    h.fails(VICTIM, "stake", Amount(10**18), "stake_on_l1")


def test_rewards_and_slashes_name_the_bound_addresses(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, pool=0)
    h.l1(JOB_FUNDED, bytes(32), 6 * 10**18, job_id.to_bytes(32, "big") + bytes(32))
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    head = h.chain.store.live.block(h.chain.head.height)
    assert head is not None
    by_key = {pub(i): l1_address(i) for i in CLIENTS}
    records = head.receipts[0].records
    assert [r for r in records if r.kind == REWARD] and [r for r in records if r.kind == SLASH]
    for r in records:
        if r.kind in (REWARD, SLASH):
            assert r.payee == by_key[r.rollup_key]


def test_unstake_waits_for_the_open_round_then_releases_to_the_bound_address(
    h: Harness,
) -> None:
    """Sequence 3/4: no stake leaves while a slash can still fall on it."""
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    stake(h, CLIENTS)
    flipper = CLIENTS[8]
    flipped = f32(np.full(PARAMS, -3.0))
    h.ok(flipper, "commit", commit(h, flipper, job_id, 1, flipped, 10))
    h.fails(flipper, "unstake", Unstake(0), "open_submission")
    h.fails(flipper, "unstake", Unstake(10**30), "insufficient_stake")
    others = {i: f32(np.full(PARAMS, 0.01 * i)) for i in [c for c in CLIENTS if c != flipper][:8]}
    rest = h.block([(i, "commit", commit(h, i, job_id, 1, p, 10)) for i, p in others.items()])
    assert all(r.ok for r in rest)
    h.ok(OWNER, "aggregate", jobs.AggregateRound(job_id, 1, 0))  # commits close
    h.fails(flipper, "unstake", Unstake(0), "open_submission")  # still: the reveal is due
    reveals = [(i, "reveal", reveal(job_id, 1, p, 10)) for i, p in others.items()]
    assert all(
        r.ok for r in h.block([*reveals, (flipper, "reveal", reveal(job_id, 1, flipped, 10))])
    )
    h.ok(OWNER, "aggregate", jobs.AggregateRound(job_id, 1, 0))
    left = jobs.get_stake(h.state, pub(flipper))
    r = h.ok(flipper, "unstake", Unstake(0))
    (record,) = r.records
    assert (record.kind, record.payee, record.amount) == (STAKE_RELEASE, l1_address(flipper), left)
    assert jobs.get_stake(h.state, pub(flipper)) == 0
    h.fails(flipper, "unstake", Unstake(0), "nothing_staked")
    # a key that never staked elsewhere, with no open submission, unstakes at once
    r = h.ok(CLIENTS[11], "unstake", Unstake(10**18))
    assert r.records[0].amount == 10**18


def test_funding_a_job_that_cannot_take_it_is_refunded(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, pool=0)
    data = job_id.to_bytes(32, "big") + bytes(32)
    for i in range(MAX_FUNDERS):
        assert h.l1(JOB_FUNDED, bytes(32), 10, data, sender=i.to_bytes(20, "big")).records == ()
    late = b"\xee" * 20
    r = h.l1(JOB_FUNDED, bytes(32), 10, data, sender=late)  # one funder too many
    assert [(x.kind, x.payee, x.job) for x in r.records] == [(REFUND, late, job_id)]


def test_withdrawals_below_the_genesis_minimum_are_refused(tmp_path: Path) -> None:
    genesis = Genesis(CHAIN_ID, 0, {pub(i): 10**21 for i in range(5)}, min_withdrawal_wei=10**15)
    h = Harness(Chain(ChainStore(tmp_path), genesis))
    bind(h, [1])
    h.fails(1, "withdraw", Withdraw(10**15 - 1, b""), "below_min_withdrawal")
    assert h.ok(1, "withdraw", Withdraw(10**15, b"")).records[0].payee == l1_address(1)
    assert Genesis.from_json(genesis.to_json()) == genesis


def test_money_is_conserved_across_the_layers(h: Harness) -> None:
    """Every wei the L2 holds came in from the genesis or an L1 message, and every wei that left
    it is a record L1 pays or slashes: balances + stakes + job pools + records out == genesis +
    L1 in, after each step of a run with squatting, refunds, a round, unstaking and withdrawals."""
    keys = [pub(i) for i in range(30)] + [pub(VICTIM), pub(STRANGER)]
    genesis = sum(h.balance(i) for i in range(30))
    inflow = 0
    out: list[int] = []
    jobs_seen: list[int] = []

    def held() -> int:
        total = sum(get_account_balance(h, k) + jobs.get_stake(h.state, k) for k in set(keys))
        for job_id in jobs_seen:
            job = jobs.get_job(h.state, job_id)
            assert job is not None
            total += job.pool + job.pool_l1
        return total

    def note(receipts: list[Any]) -> None:
        for r in receipts:
            out.extend(rec.amount for rec in r.records)
        assert held() + sum(out) == genesis + inflow

    def l1(kind: int, key: bytes, amount: int, data: bytes = b"", sender: bytes = b"") -> None:
        nonlocal inflow
        inflow += amount
        note([h.l1(kind, key, amount, data, sender=sender or STRANGER_L1)])

    upload(h, OWNER)
    job_id = open_job(h, OWNER, pool=10**18, rounds=1)
    jobs_seen.append(job_id)
    note([])
    l1(JOB_FUNDED, bytes(32), 3 * 10**18, job_id.to_bytes(32, "big") + bytes(32))
    l1(JOB_FUNDED, bytes(32), 10**18, (999).to_bytes(32, "big") + bytes(32))  # refunded
    l1(STAKE, pub(VICTIM), 10**18)  # a squatter: released back
    l1(DEPOSIT, pub(VICTIM), 7)  # from another address: refunded
    note(h.block([(i, "bind_l1", BindL1(l1_address(i))) for i in CLIENTS]))
    for i in CLIENTS:
        l1(STAKE, pub(i), 2 * 10**18, sender=l1_address(i))
    l1(DEPOSIT, pub(CLIENTS[0]), 5 * 10**17, sender=l1_address(CLIENTS[0]))
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    head = h.chain.store.live.block(h.chain.head.height)
    assert head is not None
    note(list(head.receipts))
    note([h.ok(i, "unstake", Unstake(0)) for i in CLIENTS[:4]])
    note([h.ok(CLIENTS[0], "withdraw", Withdraw(10**17, b""))])
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.status == "completed" and job.pool == job.pool_l1 == 0


def get_account_balance(h: Harness, key: bytes) -> int:
    from stf.accounts import get_account

    return get_account(h.state, key).balance
