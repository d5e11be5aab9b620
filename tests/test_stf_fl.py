"""Spec-style tests of the federated-learning STF: each action's pre-state, action and
post-state, and `test_invalid_*` for every rejection."""

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stf import jobs, models
from stf.accounts import Transfer
from stf.actions import Propose, terms_to_tuple
from stf.aggregation import Rules
from stf.jobs import AggregateRound, RevealParams, Withdraw
from stf.l1 import DEPOSIT, JOB_FUNDED, STAKE, STAKE_WITHDRAWN, UNSTAKE_REQUEST, L1Message
from stf.models import Approve, PostMessage, ProposalRef, SetPrice, Upload
from stf.settlement import REFUND, REWARD, SLASH, WITHDRAWAL
from tests.fl_harness import (
    ARCH,
    PARAMS,
    Harness,
    bind,
    commit,
    f32,
    global_vector,
    l1_address,
    open_job,
    pub,
    reveal,
    stake,
    submit_round,
    terms,
    upload,
)

OWNER, BUYER, STRANGER = 0, 1, 2
CLIENTS = list(range(3, 15))  # 12 participants


@pytest.fixture
def h(tmp_path: Path) -> Harness:
    return Harness.create(tmp_path / "db")


# -- upload -------------------------------------------------------------------------------------


def test_upload_registers_model_then_owner_updates_it(h: Harness) -> None:
    upload(h, OWNER, price=5)
    model = models.get_model(h.state, "digits")
    assert (
        model is not None and model.owner == pub(OWNER) and model.version == 1 and model.price == 5
    )
    assert models.get_model_count(h.state) == 1
    assert model.artifact_hash == models.blob_hash(b"sealed-artifact")
    r = h.ok(OWNER, "upload", Upload("digits", ARCH, f32(np.zeros(PARAMS)), 16, 7, b""))
    assert r.events[0][0] == "ModelUpdated"
    model = models.get_model(h.state, "digits")
    assert model is not None and model.version == 2 and model.price == 7
    assert models.get_model_count(h.state) == 1


def test_upload_quantizes_half_even_and_clamps(h: Harness) -> None:
    values = np.zeros(PARAMS, dtype=np.float32)
    values[:4] = [0.5 / 2**16, 1.5 / 2**16, -0.5 / 2**16, 1000.0]
    upload(h, OWNER, params=f32(values))
    raw = models.get_model_params(h.state, "digits")
    assert raw is not None
    assert list(np.frombuffer(raw, dtype="<i4")[:4]) == [0, 2, 0, 2**20 - 1]


def test_invalid_upload_by_non_owner(h: Harness) -> None:
    upload(h, OWNER)
    h.fails(
        STRANGER, "upload", Upload("digits", ARCH, f32(np.zeros(PARAMS)), 16, 0, b""), "not_owner"
    )


@pytest.mark.parametrize(
    ("arch", "n", "code"),
    [
        ((("w", (40, 50)),), PARAMS - 1, "wrong_shape"),
        ((), 0, "bad_arch"),
        ((("w", (0, 5)),), 0, "bad_arch"),
        ((("w", (2,)), ("w", (2,))), 4, "bad_arch"),
        ((("w", (5_000_000,)),), 1, "too_large"),
    ],
)
def test_invalid_upload_shapes(h: Harness, arch: tuple, n: int, code: str) -> None:  # type: ignore[type-arg]
    h.fails(OWNER, "upload", Upload("m", arch, f32(np.zeros(n)), 16, 0, b""), code)


def test_invalid_upload_scale_and_id(h: Harness) -> None:
    h.fails(OWNER, "upload", Upload("m", ARCH, f32(np.zeros(PARAMS)), 30, 0, b""), "bad_scale")
    h.fails(
        OWNER, "upload", Upload("bad id!", ARCH, f32(np.zeros(PARAMS)), 16, 0, b""), "bad_model_id"
    )


def test_set_price_owner_only(h: Harness) -> None:
    upload(h, OWNER, price=5)
    h.ok(OWNER, "set_price", SetPrice("digits", 9))
    h.fails(STRANGER, "set_price", SetPrice("digits", 1), "not_owner")
    h.fails(OWNER, "set_price", SetPrice("nope", 1), "unknown_model")
    model = models.get_model(h.state, "digits")
    assert model is not None and model.price == 9


# -- access proposals ---------------------------------------------------------------------------


def _access(h: Harness, price: int = 100) -> int:
    upload(h, OWNER, price=price)
    r = h.ok(BUYER, "propose", Propose("access", "digits", price, 5, None))
    return int(dict(r.events)["ProposalCreated"]["proposal_id"])


def test_access_proposal_escrows_and_approval_pays_owner(h: Harness) -> None:
    owner0, buyer0 = h.balance(OWNER), h.balance(BUYER)
    pid = _access(h)
    assert h.balance(BUYER) == buyer0 - 100
    r = h.ok(OWNER, "approve", Approve(pid, b"key sealed to buyer"))
    assert r.events[0][0] == "PaymentApproved"
    assert h.balance(OWNER) == owner0 + 100
    assert models.get_access(h.state, "digits", pub(BUYER)) == b"key sealed to buyer"
    proposal = models.get_proposal(h.state, pid)
    assert proposal is not None and proposal.status == "approved"


def test_invalid_double_approval_and_non_owner_approval(h: Harness) -> None:
    pid = _access(h)
    h.fails(STRANGER, "approve", Approve(pid, b"k"), "not_owner")
    h.ok(OWNER, "approve", Approve(pid, b"k"))
    h.fails(OWNER, "approve", Approve(pid, b"k"), "proposal_closed")
    h.fails(OWNER, "approve", Approve(999, b"k"), "unknown_proposal")


def test_reject_refunds_and_cancel_needs_expiry(h: Harness) -> None:
    buyer0 = h.balance(BUYER)
    pid = _access(h)
    h.fails(BUYER, "cancel", ProposalRef(pid), "not_expired")
    h.ok(OWNER, "reject", ProposalRef(pid))
    assert h.balance(BUYER) == buyer0
    pid2 = int(
        dict(h.ok(BUYER, "propose", Propose("access", "digits", 100, 1, None)).events)[
            "ProposalCreated"
        ]["proposal_id"]
    )
    h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))  # a block passes: the proposal expires
    h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))
    h.fails(OWNER, "approve", Approve(pid2, b"k"), "proposal_expired")
    h.ok(BUYER, "cancel", ProposalRef(pid2))
    assert h.balance(BUYER) == buyer0


def test_invalid_access_proposals(h: Harness) -> None:
    upload(h, OWNER, price=100)
    h.fails(BUYER, "propose", Propose("access", "digits", 99, 5, None), "price_mismatch")
    h.fails(BUYER, "propose", Propose("access", "nope", 100, 5, None), "unknown_model")
    h.fails(OWNER, "propose", Propose("access", "digits", 100, 5, None), "own_model")
    h.fails(BUYER, "propose", Propose("access", "digits", 100, 0, None), "bad_expiry")
    h.fails(BUYER, "propose", Propose("lease", "digits", 100, 5, None), "bad_kind")
    h.fails(BUYER, "propose", Propose("access", "digits", 100, 5, jobs_terms()), "bad_terms")


def jobs_terms() -> tuple:  # type: ignore[type-arg]
    from stf.actions import terms_to_tuple

    return terms_to_tuple(terms())


def test_messages_by_parties_only(h: Harness) -> None:
    pid = _access(h)
    h.ok(BUYER, "message", PostMessage(pid, "is the key RSA or X25519?"))
    h.ok(OWNER, "message", PostMessage(pid, "X25519, sealed box"))
    h.fails(STRANGER, "message", PostMessage(pid, "spam"), "not_a_party")
    h.fails(BUYER, "message", PostMessage(pid, ""), "empty_message")
    msgs = models.get_messages(h.state, pid)
    assert [(m.author, m.text) for m in msgs] == [
        (pub(BUYER), "is the key RSA or X25519?"),
        (pub(OWNER), "X25519, sealed box"),
    ]
    assert msgs[0].height < msgs[1].height


# -- jobs ---------------------------------------------------------------------------------------


def test_train_proposal_escrows_pool_and_opens_round_one(h: Harness) -> None:
    upload(h, OWNER)
    before = h.balance(OWNER)
    job_id = open_job(h, OWNER)
    job = jobs.get_job(h.state, job_id)
    assert (
        job is not None
        and job.pool == 3 * 10**18
        and job.current_round == 1
        and job.status == "active"
    )
    assert h.balance(OWNER) == before - 3 * 10**18
    rnd = jobs.get_round(h.state, job_id, 1)
    assert rnd is not None and rnd.status == "open"
    assert jobs.get_global(h.state, job_id, 0) == models.get_model_params(h.state, "digits")


def test_invalid_train_proposals(h: Harness) -> None:
    from stf.actions import terms_to_tuple

    upload(h, OWNER)
    bad = [
        terms(min_participants=6),
        terms(max_participants=5),
        terms(stake_required=0),
        terms(rounds=0),
        terms(slash_bps=10_001),
        terms(aggregator=b"x"),
    ]
    for t in bad:
        h.fails(OWNER, "propose", Propose("train", "digits", 10, 0, terms_to_tuple(t)), "bad_terms")
    h.fails(
        STRANGER, "propose", Propose("train", "digits", 10, 0, terms_to_tuple(terms())), "no_access"
    )
    h.fails(
        OWNER,
        "propose",
        Propose("train", "digits", 10**30, 0, terms_to_tuple(terms())),
        "insufficient_balance",
    )


def _honest_params(h: Harness, job_id: int, rnd: int, i: int, direction: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    rng = np.random.default_rng(1000 * rnd + i)
    g = global_vector(h, job_id, rnd - 1)
    bias = np.random.default_rng(i).normal(0, 0.003, PARAMS)  # each client's data skew
    return g + direction + bias + rng.normal(0, 0.002, PARAMS)


def _direction(rnd: int) -> np.ndarray:  # type: ignore[type-arg]
    return np.random.default_rng(rnd).normal(0, 0.01, PARAMS)


def test_invalid_commits_and_reveals(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    good = f32(_honest_params(h, job_id, 1, 3, _direction(1)))
    h.fails(3, "commit", commit(h, 3, job_id, 1, good, 10), "not_staked")
    stake(h, CLIENTS)
    h.fails(3, "commit", commit(h, 3, job_id, 2, good, 10), "wrong_round")
    h.fails(3, "commit", commit(h, 3, 77, 1, good, 10), "unknown_job")
    h.fails(3, "reveal", reveal(job_id, 1, good, 10), "not_revealing")
    h.ok(3, "commit", commit(h, 3, job_id, 1, good, 10))
    h.fails(3, "commit", commit(h, 3, job_id, 1, good, 10), "duplicate_submission")
    h.fails(STRANGER, "aggregate", AggregateRound(job_id, 1, 0), "not_aggregator")
    h.fails(OWNER, "aggregate", AggregateRound(job_id, 1, 0), "too_few_submissions")
    others = {i: f32(_honest_params(h, job_id, 1, i, _direction(1))) for i in CLIENTS[1:8]}
    h.block([(i, "commit", commit(h, i, job_id, 1, p, 10)) for i, p in others.items()])
    h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0))  # commits close
    h.fails(4, "commit", commit(h, 4, job_id, 1, good, 10), "commits_closed")
    h.fails(STRANGER, "reveal", reveal(job_id, 1, good, 10), "not_committed")
    h.fails(3, "reveal", reveal(job_id, 1, good[:-4], 10), "commitment_mismatch")
    h.fails(3, "reveal", reveal(job_id, 1, good, 11), "commitment_mismatch")
    h.fails(3, "reveal", reveal(job_id, 1, good, 0), "bad_samples")
    h.fails(3, "reveal", RevealParams(job_id, 1, good, 10, b"\x00" * 32), "commitment_mismatch")
    h.ok(3, "reveal", reveal(job_id, 1, good, 10))
    h.fails(3, "reveal", reveal(job_id, 1, good, 10), "already_revealed")
    h.fails(OWNER, "aggregate", AggregateRound(job_id, 1, 0), "reveals_pending")


def test_nobody_can_commit_to_another_clients_parameters(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    stake(h, CLIENTS)
    good = f32(_honest_params(h, job_id, 1, 3, _direction(1)))
    # a copier (the sequencer included) sees only client 3's commitment: committing the same
    # digest binds the copier to client 3's key, which its reveal cannot open
    stolen = commit(h, 3, job_id, 1, good, 10)
    h.ok(3, "commit", stolen)
    h.ok(4, "commit", stolen)
    rest = {i: f32(_honest_params(h, job_id, 1, i, _direction(1))) for i in CLIENTS[2:8]}
    h.block([(i, "commit", commit(h, i, job_id, 1, p, 10)) for i, p in rest.items()])
    h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0))
    h.ok(3, "reveal", reveal(job_id, 1, good, 10))  # public now, but commits are closed
    h.fails(4, "reveal", reveal(job_id, 1, good, 10), "commitment_mismatch")
    h.block([(i, "reveal", reveal(job_id, 1, p, 10)) for i, p in rest.items()])
    h.fails(OWNER, "aggregate", AggregateRound(job_id, 1, 0), "reveals_pending")
    rnd = jobs.get_round(h.state, job_id, 1)
    assert rnd is not None
    while h.chain.head.height <= rnd.reveal_deadline_height:
        h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))
    event = dict(h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0)).events)["RoundAggregated"]
    decisions = _reasons(event)
    assert decisions[pub(4)] == "unrevealed"  # evidence: the full slash
    assert decisions[pub(3)] in ("kept", "krum_excluded")
    assert jobs.get_stake(h.state, pub(4)) == 2 * 10**18 - 10**18 // 2
    assert jobs.get_stake(h.state, pub(3)) == 2 * 10**18


def test_blocks_carry_commitments_and_reveals_in_the_clear(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    stake(h, [3])
    good = f32(_honest_params(h, job_id, 1, 3, _direction(1)))
    r = h.ok(3, "commit", commit(h, 3, job_id, 1, good, 10))
    info = jobs.get_submission(h.state, job_id, 1, pub(3))
    assert info is not None and not info.revealed
    assert dict(r.events)["ParamsCommitted"]["commitment"] == info.commitment
    assert h.state.get(jobs.params_key(job_id, 1, pub(3))) is None  # nothing hidden in state


def _play_round(
    h: Harness,
    job_id: int,
    rnd: int,
    honest: list[int],
    flippers: list[int],
    copier: int,
    noisy: int,
    order_seed: int = 0,
) -> dict[bytes, str]:
    direction = _direction(rnd)
    g = global_vector(h, job_id, rnd - 1)

    def banned(i: int) -> bool:
        return jobs.is_slashed_in_job(h.state, job_id, pub(i))

    subs: list[tuple[int, bytes]] = [
        (i, f32(_honest_params(h, job_id, rnd, i, direction))) for i in honest
    ]
    subs += [
        (i, f32(g - 3 * direction + np.random.default_rng(i).normal(0, 0.02, PARAMS)))
        for i in flippers
    ]
    subs.append((copier, f32(g)))
    subs.append((noisy, f32(g + np.random.default_rng(50 + rnd).normal(0, 0.012, PARAMS))))
    subs = [(i, params) for i, params in subs if not banned(i)]  # the slashed are out
    random.Random(order_seed).shuffle(subs)
    submit_round(h, job_id, rnd, [(i, params, 100 + i) for i, params in subs])
    r = h.ok(OWNER, "aggregate", AggregateRound(job_id, rnd, 9000))
    event = dict(r.events)["RoundAggregated"]
    return _reasons(event)


def _reasons(event: dict[str, Any]) -> dict[bytes, str]:
    """client -> reason from a RoundAggregated event (client, outcome, reason, score, strike)."""
    return {bytes(c): str(reason) for c, _, reason, _, _ in event["decisions"]}


def test_one_round_slashes_evidence_and_excludes_suspicion(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    honest, flippers, copier, noisy = CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11]
    stake(h, CLIENTS)
    decisions = _play_round(h, job_id, 1, honest, flippers, copier, noisy)
    assert {decisions[pub(i)] for i in flippers} == {"opposed"}
    assert decisions[pub(copier)] == "copy"
    assert decisions[pub(noisy)] == "unrelated"
    assert all(decisions[pub(i)] in ("kept", "krum_excluded") for i in honest)
    rnd = jobs.get_round(h.state, job_id, 1)
    assert rnd is not None and rnd.status == "aggregated" and rnd.accuracy_bp == 9000
    # evidence (the copy) costs slash_bps of the job's stake_required, not of the whole
    # stake; one round's suspicion (opposed, unrelated) only withholds the reward
    assert jobs.get_stake(h.state, pub(copier)) == 2 * 10**18 - 10**18 // 2
    for i in [*honest, *flippers, noisy]:
        assert jobs.get_stake(h.state, pub(i)) == 2 * 10**18
    # sealed parameters are gone from state; the new global moved toward the honest direction
    assert h.state.get(jobs.params_key(job_id, 1, pub(honest[0]))) is None
    moved = global_vector(h, job_id, 1) - global_vector(h, job_id, 0)
    assert float(np.dot(moved, _direction(1))) / float(np.dot(_direction(1), _direction(1))) > 0.8
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.current_round == 2


def test_slashes_are_records_and_l2_pool_rewards_are_l2_credits(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    honest, flippers = CLIENTS[:8], CLIENTS[8:10]
    stake(h, CLIENTS)
    before = {i: h.balance(i) for i in honest}
    _play_round(h, job_id, 1, honest, flippers, CLIENTS[10], CLIENTS[11])
    head = h.chain.store.live.block(h.chain.head.height)
    assert head is not None
    records = head.receipts[0].records
    slashes = {r.rollup_key: r.amount for r in records if r.kind == SLASH}
    assert slashes == {pub(CLIENTS[10]): 10**18 // 2}  # only the copy is evidence
    assert [r for r in records if r.kind == REWARD] == []  # nothing was funded on L1
    gains = {i: h.balance(i) - before[i] for i in honest}
    kept = [i for i, g in gains.items() if g]
    assert kept and len(set(gains[i] for i in kept)) == 1
    assert gains[kept[0]] == 3 * 10**18 // 3 // len(kept)
    assert len({r.record_id for r in records}) == len(records)
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.pool == 3 * 10**18 - sum(gains.values())


def test_l1_funding_pays_reward_records_and_refunds_by_withdrawal(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, pool=0, rounds=2)
    r = h.l1(
        JOB_FUNDED, bytes(32), 6 * 10**18, job_id.to_bytes(32, "big") + (10**16).to_bytes(32, "big")
    )
    assert r.ok and r.events[0][0] == "JobFunded"
    job = jobs.get_job(h.state, job_id)
    assert job is not None and (job.pool, job.pool_l1) == (0, 6 * 10**18)
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    head = h.chain.store.live.block(h.chain.head.height)
    assert head is not None
    rewards = [rec for rec in head.receipts[0].records if rec.kind == REWARD]
    assert rewards and {rec.amount for rec in rewards} == {3 * 10**18 // len(rewards)}
    assert {rec.rollup_key for rec in rewards} <= {pub(i) for i in CLIENTS[:8]}
    _play_round(h, job_id, 2, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    head = h.chain.store.live.block(h.chain.head.height)
    assert head is not None
    assert not [rec for rec in head.receipts[0].records if rec.kind == WITHDRAWAL]
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.status == "completed" and job.pool_l1 == 0


def test_l1_messages_apply_once_in_order(h: Harness) -> None:
    key = pub(40)  # not in the genesis
    bind(h, [40])
    assert h.l1(DEPOSIT, key, 500, sender=l1_address(40)).ok
    assert h.balance(40) == 500
    r = h.l1(STAKE, key, 10**18, sender=l1_address(40))
    assert r.ok and jobs.get_stake(h.state, key) == 10**18
    # the same nonce again, or a gap, is refused and changes nothing
    msg = L1Message(0, DEPOSIT, key, l1_address(40), 500, b"", 1)
    executed = h.chain.execute([], h.time_ms + 1, [msg], (9, b"\x00" * 32))
    assert not executed.record.receipts[0].ok and executed.record.receipts[0].error == "l1_nonce"
    assert executed.state_changes == {}
    # v1's UNSTAKE_REQUEST is no longer sent; it changes nothing
    assert h.l1(UNSTAKE_REQUEST, key, 0).ok and not jobs.is_unbonding(h.state, key)
    # the escape hatch paid the bound address: the stake is gone on L2 too
    r = h.l1(STAKE_WITHDRAWN, key, 10**18, sender=l1_address(40))
    assert r.ok and jobs.get_stake(h.state, key) == 0


def test_unknown_job_funding_is_refunded_to_the_funder(h: Harness) -> None:
    funder = b"\x77" * 20
    r = h.l1(JOB_FUNDED, bytes(32), 10**18, (77).to_bytes(32, "big") + bytes(32), sender=funder)
    assert r.ok and r.events[0][0] == "FundingRefunded"
    (record,) = r.records
    assert (record.kind, record.job, record.payee, record.amount) == (REFUND, 77, funder, 10**18)


def test_submission_order_does_not_change_the_outcome(tmp_path: Path) -> None:
    roots = []
    for seed in (1, 2):
        h = Harness.create(tmp_path / f"db{seed}")
        upload(h, OWNER)
        job_id = open_job(h, OWNER)
        stake(h, CLIENTS)
        _play_round(
            h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11], order_seed=seed
        )
        roots.append((jobs.get_global(h.state, job_id, 1), jobs.get_round(h.state, job_id, 1)))
    (g1, r1), (g2, r2) = roots
    assert g1 == g2
    assert r1 is not None and r2 is not None and sorted(r1.decisions) == sorted(r2.decisions)


def test_job_completes_and_refunds_the_rest(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, rounds=2)
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    before = h.balance(OWNER)
    job = jobs.get_job(h.state, job_id)
    assert job is not None
    _play_round(h, job_id, 2, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    done = jobs.get_job(h.state, job_id)
    assert done is not None and done.status == "completed" and done.pool == 0
    assert h.balance(OWNER) >= before  # what no kept client earned goes back to the owner
    h.fails(3, "commit", commit(h, 3, job_id, 3, f32(np.zeros(PARAMS)), 1), "job_closed")


def test_target_accuracy_ends_the_job_early(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, rounds=5, target_accuracy_bp=8500)
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.status == "completed"


def test_round_expires_at_deadline_with_too_few_submissions(h: Harness) -> None:
    upload(h, OWNER)
    stake(h, [3])  # heights 3 (bind) and 4 (the L1 stake)
    job_id = open_job(h, OWNER, round_blocks=3)  # opened at height 5: commits until height 8
    honest = f32(_honest_params(h, job_id, 1, 3, _direction(1)))
    h.ok(3, "commit", commit(h, 3, job_id, 1, honest, 10))
    h.fails(OWNER, "aggregate", AggregateRound(job_id, 1, 0), "too_few_submissions")
    h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))  # blocks pass the deadline
    h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))
    zeros = f32(np.zeros(PARAMS))
    h.fails(4, "commit", commit(h, 4, job_id, 1, zeros, 10), "round_deadline_passed")
    r = h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0))
    assert r.events[0][0] == "RoundExpired"
    assert jobs.get_global(h.state, job_id, 1) == jobs.get_global(h.state, job_id, 0)
    assert h.state.get(jobs.params_key(job_id, 1, pub(3))) is None


def test_colluding_near_copies_are_excluded(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    stake(h, CLIENTS)
    g, direction = global_vector(h, job_id, 0), _direction(1)
    subs = [(i, f32(_honest_params(h, job_id, 1, i, direction))) for i in CLIENTS[:8]]
    base = g - 3 * direction
    subs += [
        (i, f32(base + np.random.default_rng(i).normal(0, 1e-4, PARAMS))) for i in CLIENTS[8:10]
    ]
    submit_round(h, job_id, 1, [(i, p, 50) for i, p in subs])
    event = dict(h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0)).events)["RoundAggregated"]
    decisions = _reasons(event)
    assert {decisions[pub(i)] for i in CLIENTS[8:10]} == {"near_duplicate"}
    assert {decisions[pub(i)] for i in CLIENTS[:8]} <= {"kept", "krum_excluded"}


def test_delta_replay_and_duplicates_are_free_riders(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER)
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    g1, g0 = global_vector(h, job_id, 1), global_vector(h, job_id, 0)
    direction = _direction(2)
    subs = [(i, f32(_honest_params(h, job_id, 2, i, direction))) for i in CLIENTS[:8]]
    subs.append((CLIENTS[8], f32(g1 + (g1 - g0))))  # repeats the previous global update
    twin = f32(_honest_params(h, job_id, 2, 99, direction))
    subs += [(CLIENTS[9], twin), (CLIENTS[11], twin)]  # two clients, one submission
    submit_round(h, job_id, 2, [(i, p, 50) for i, p in subs])
    event = dict(h.ok(OWNER, "aggregate", AggregateRound(job_id, 2, 0)).events)["RoundAggregated"]
    decisions = _reasons(event)
    assert decisions[pub(CLIENTS[8])] == "delta_replay"
    assert decisions[pub(CLIENTS[9])] == decisions[pub(CLIENTS[11])] == "duplicate"


def test_withdraw_makes_a_record_and_debits(h: Harness) -> None:
    before = h.balance(BUYER)
    h.fails(BUYER, "withdraw", Withdraw(123, b""), "not_bound")  # no payee: refused
    bind(h, [BUYER])
    r = h.ok(BUYER, "withdraw", Withdraw(123, b""))
    assert h.balance(BUYER) == before - 123
    assert [(rec.kind, rec.amount, rec.rollup_key, rec.payee) for rec in r.records] == [
        (3, 123, pub(BUYER), l1_address(BUYER))
    ]
    h.fails(BUYER, "withdraw", Withdraw(10**30, b""), "insufficient_balance")


def test_withdraw_to_an_l1_recipient_pays_it_in_the_leaf(h: Harness) -> None:
    recipient = bytes.fromhex("ab" * 20)
    r = h.ok(BUYER, "withdraw", Withdraw(5, recipient))
    (record,) = r.records
    assert record.payee == recipient and int.from_bytes(record.record_id, "big") >= 1
    h.fails(BUYER, "withdraw", Withdraw(5, b"\x01" * 19), "bad_recipient")


def test_unspent_l1_funding_returns_to_the_funders_on_l1(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, pool=0, rounds=1)
    a, b = b"\xf1" * 20, b"\xf2" * 20
    data = job_id.to_bytes(32, "big") + bytes(32)
    h.l1(JOB_FUNDED, bytes(32), 10**18, data, sender=a)
    h.l1(JOB_FUNDED, bytes(32), 3 * 10**18, data, sender=b)
    before = h.balance(OWNER)
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    head = h.chain.store.live.block(h.chain.head.height)
    assert head is not None
    records = head.receipts[0].records
    paid = sum(rec.amount for rec in records if rec.kind == REWARD)
    refunds = {rec.payee: rec.amount for rec in records if rec.kind == REFUND}
    assert h.balance(OWNER) == before  # not the owner's: the funders'
    left = 4 * 10**18 - paid
    assert sum(refunds.values()) == left and set(refunds) <= {a, b}
    assert refunds.get(a, 0) == left // 4 and all(rec.job == job_id for rec in records)


def test_repeated_suspicion_slashes_a_smaller_amount_and_evidence_bans(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, rounds=4)
    honest, flippers, copier, noisy = CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11]
    stake(h, CLIENTS)
    seen = [_play_round(h, job_id, r, honest, flippers, copier, noisy) for r in (1, 2, 3)]
    # flipped updates strike every round; the third strike in five rounds is a slash
    assert [seen[r][pub(flippers[0])] for r in range(3)] == [
        "opposed",
        "opposed",
        "repeated_opposed",
    ]
    for i in flippers:
        assert jobs.get_stake(h.state, pub(i)) == 2 * 10**18 - 10**18 // 4  # half the slash
        assert jobs.is_slashed_in_job(h.state, job_id, pub(i))
    # the copier was slashed in round 1 and is out of the job from then on
    assert pub(copier) not in seen[1]
    zeros = f32(np.zeros(PARAMS))
    h.fails(copier, "commit", commit(h, copier, job_id, 4, zeros, 1), "slashed_in_job")
    assert all(seen[r][pub(i)] in ("kept", "krum_excluded") for r in range(3) for i in honest)
    for i in honest:
        assert jobs.get_stake(h.state, pub(i)) == 2 * 10**18


@pytest.mark.parametrize(
    "changes",
    [
        {"rules": Rules(isolation_ratio=(1, 1))},
        {"rules": Rules(near_copy_norm=(2, 1))},
        {"rules": Rules(near_duplicate=(0, 1))},
        {"rules": Rules(krum_outlier=(0, 1))},
        {"rules": Rules(opposed_max=(0, 1))},
        {"rules": Rules(replay_tolerance=(1, 2))},
        {"rules": Rules(affine_residual=(1, 0))},
        {"slash_bps": 10_001},
        {"f": 3, "min_participants": 8},
        {"max_samples": 10**9},
        {"sample_weighting": 2},
    ],
)
def test_invalid_propose_terms_outside_the_safe_envelope(
    h: Harness, changes: dict[str, Any]
) -> None:
    upload(h, OWNER)
    h.fails(
        OWNER,
        "propose",
        Propose("train", "digits", 10**18, 0, terms_to_tuple(terms(**changes))),
        "bad_terms",
    )


def test_invalid_submit_by_the_owner_or_the_aggregator(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, aggregator=pub(CLIENTS[0]))
    stake(h, [OWNER, CLIENTS[0]])
    g = global_vector(h, job_id, 0)
    for who in (OWNER, CLIENTS[0]):
        h.fails(who, "commit", commit(h, who, job_id, 1, f32(g + 0.01), 1), "not_participant")


def test_any_key_closes_a_round_after_its_deadline_without_its_accuracy(h: Harness) -> None:
    upload(h, OWNER)
    stake(h, CLIENTS)
    job_id = open_job(h, OWNER, round_blocks=3, reveal_blocks=3, target_accuracy_bp=5000)
    opened = h.chain.head.height
    direction = _direction(1)
    subs = {i: f32(_honest_params(h, job_id, 1, i, direction)) for i in CLIENTS[:8]}
    h.block([(i, "commit", commit(h, i, job_id, 1, p, 50)) for i, p in subs.items()])
    h.fails(STRANGER, "aggregate", AggregateRound(job_id, 1, 9000), "not_aggregator")
    while h.chain.head.height <= opened + 3:  # past the commit deadline
        h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))
    r = h.ok(STRANGER, "aggregate", AggregateRound(job_id, 1, 9000))
    assert r.events[0][0] == "CommitsClosed"
    h.block([(i, "reveal", reveal(job_id, 1, p, 50)) for i, p in subs.items()])
    h.fails(STRANGER, "aggregate", AggregateRound(job_id, 1, 9000), "not_aggregator")
    rnd = jobs.get_round(h.state, job_id, 1)
    assert rnd is not None
    while h.chain.head.height <= rnd.reveal_deadline_height:
        h.ok(STRANGER, "transfer", Transfer(pub(STRANGER), 1))
    r = h.ok(STRANGER, "aggregate", AggregateRound(job_id, 1, 9000))
    assert dict(r.events)["RoundAggregated"]["accuracy_bp"] == 0  # only the aggregator's counts
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.status == "active" and job.current_round == 2


def test_job_ended_early_pays_the_rest_to_the_last_kept(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, rounds=5, target_accuracy_bp=8500)
    stake(h, CLIENTS)
    owner_before = h.balance(OWNER)
    before = {i: h.balance(i) for i in CLIENTS[:8]}
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    job = jobs.get_job(h.state, job_id)
    assert job is not None and job.status == "completed" and job.pool == 0
    paid = sum(h.balance(i) - before[i] for i in CLIENTS[:8])
    assert 3 * 10**18 - paid == h.balance(OWNER) - owner_before  # only rounding dust back
    assert 3 * 10**18 - paid < 100


def test_byzantine_budget_is_per_round(h: Harness) -> None:
    upload(h, OWNER)
    job_id = open_job(h, OWNER, rounds=3)
    stake(h, CLIENTS)
    _play_round(h, job_id, 1, CLIENTS[:8], CLIENTS[8:10], CLIENTS[10], CLIENTS[11])
    direction = _direction(2)
    subs = [(i, f32(_honest_params(h, job_id, 2, i, direction))) for i in CLIENTS[:9]]
    submit_round(h, job_id, 2, [(i, p, 50) for i, p in subs])
    event = dict(h.ok(OWNER, "aggregate", AggregateRound(job_id, 2, 0)).events)["RoundAggregated"]
    assert event["krum_f"] == 2  # the copier slashed in round 1 did not spend f
