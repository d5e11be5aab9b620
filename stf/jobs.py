"""Training jobs: funded proposals against a model, rounds of sealed submissions, and the
aggregation that slashes cheaters, pays the kept clients and moves the global model on."""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from stf import accounts, models
from stf.aggregation import (
    UNREVEALED,
    ClientHistory,
    Decision,
    RoundRows,
    Rules,
    decide_round_rows,
    rules_outside_envelope,
    sketch_dim,
)
from stf.context import Action, BlockInfo, Effects
from stf.encoding import from_u256, pack, u64_key, u256, unpack
from stf.errors import InvalidAction, StateCorrupted
from stf.fixedpoint import pack_int32, unpack_int32
from stf.settlement import REWARD, SLASH, WITHDRAWAL, new_record
from stf.state import KV

MAX_ROUNDS = 10_000
MAX_PARTICIPANTS = 1_000
MAX_ROUND_BLOCKS = 10_000_000
MAX_SAMPLES = 2**32
MAX_SAMPLE_WEIGHT = 10_000  # a self-reported sample count never weighs more than this
BPS = 10_000
MAX_SLASH_BPS = BPS  # a slash never exceeds the job's stake_required

ACTIVE, COMPLETED = "active", "completed"
# A round takes commitments ("open"), then reveals ("reveal"), then is aggregated or expires.
ROUND_OPEN, ROUND_REVEAL = "open", "reveal"
ROUND_AGGREGATED, ROUND_EXPIRED = "aggregated", "expired"
COMMIT_DOMAIN = b"fedrollup/commit/v1"


@dataclass(frozen=True)
class JobTerms:
    rounds: int
    min_participants: int
    max_participants: int
    f: int
    stake_required: int
    round_blocks: int
    target_accuracy_bp: int  # 0 = no target
    aggregator: bytes  # empty = the job owner
    local_epochs: int
    slash_bps: int
    max_samples: int
    krum_m: int  # 0 = n - f
    rules: Rules
    sample_weighting: int = 0  # 0: equal weights; 1: weights min(samples, max_samples)
    reveal_blocks: int = 1_000  # how long participants have to reveal once commits close

    def as_list(self) -> list[object]:
        return [
            self.rounds,
            self.min_participants,
            self.max_participants,
            self.f,
            u256(self.stake_required),
            self.round_blocks,
            self.target_accuracy_bp,
            self.aggregator,
            self.local_epochs,
            self.slash_bps,
            self.max_samples,
            self.krum_m,
            self.rules.as_list(),
            self.sample_weighting,
            self.reveal_blocks,
        ]

    @staticmethod
    def from_list(raw: list[Any]) -> "JobTerms":
        """From storage (stake as uint256 bytes) or from a decoded payload (stake as int)."""
        r, mn, mx, f, stake, rb, tgt, agg, le, sb, ms, km, rules, weighting, reveal = raw
        stake_wei = stake if isinstance(stake, int) else from_u256(stake)
        return JobTerms(
            r,
            mn,
            mx,
            f,
            stake_wei,
            rb,
            tgt,
            agg,
            le,
            sb,
            ms,
            km,
            Rules.from_list(rules),
            weighting,
            reveal,
        )

    @property
    def full_slash(self) -> int:
        """What evidence costs a participant: slash_bps of the job's required stake."""
        return self.stake_required * self.slash_bps // BPS

    @property
    def repeated_slash(self) -> int:
        """What repeated statistical suspicion costs: half the evidence slash."""
        return self.full_slash // 2


@dataclass(frozen=True)
class Job:
    job_id: int
    model_id: str
    owner: bytes
    terms: JobTerms
    pool: int  # what is left to pay from the L2 escrow (paid as L2 credits)
    funded: int  # everything ever put in, from L2 and L1
    current_round: int
    status: str
    param_count: int
    frac_bits: int
    pool_l1: int = 0  # what is left of L1 funding (paid as reward records claimed on L1)
    slashed_clients: int = 0  # distinct clients slashed so far (each is out of the job)

    @property
    def aggregator(self) -> bytes:
        return self.terms.aggregator or self.owner

    def encode(self) -> bytes:
        return pack(
            [
                self.job_id,
                self.model_id,
                self.owner,
                self.terms.as_list(),
                u256(self.pool),
                u256(self.funded),
                self.current_round,
                self.status,
                self.param_count,
                self.frac_bits,
                u256(self.pool_l1),
                self.slashed_clients,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "Job":
        jid, mid, owner, terms, pool, funded, rnd, status, pc, fb, pool_l1, slashed = unpack(raw)
        return Job(
            jid,
            mid,
            owner,
            JobTerms.from_list(terms),
            from_u256(pool),
            from_u256(funded),
            rnd,
            status,
            pc,
            fb,
            from_u256(pool_l1),
            slashed,
        )

    def replace(self, **changes: object) -> "Job":
        return Job(**{**self.__dict__, **changes})


@dataclass(frozen=True)
class Round:
    job_id: int
    number: int
    opened_height: int
    deadline_height: int
    submitters: tuple[bytes, ...]  # in arrival order
    status: str
    decisions: tuple[tuple[bytes, str, int | None], ...] = ()  # (client, reason, krum score)
    # decisions' outcomes derive from their reasons (stf.aggregation.Decision.outcome)
    accuracy_bp: int = 0
    global_hash: bytes = b""
    reveal_deadline_height: int = 0  # set when commits close

    def encode(self) -> bytes:
        decisions = [[c, r, b"" if s is None else u256(s)] for c, r, s in self.decisions]
        return pack(
            [
                self.job_id,
                self.number,
                self.opened_height,
                self.deadline_height,
                list(self.submitters),
                self.status,
                decisions,
                self.accuracy_bp,
                self.global_hash,
                self.reveal_deadline_height,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "Round":
        jid, num, opened, deadline, subs, status, decisions, acc, gh, reveal = unpack(raw)
        decs = tuple((c, r, None if s == b"" else from_u256(s)) for c, r, s in decisions)
        return Round(jid, num, opened, deadline, tuple(subs), status, decs, acc, gh, reveal)

    def replace(self, **changes: object) -> "Round":
        return Round(**{**self.__dict__, **changes})


@dataclass(frozen=True)
class SubmissionInfo:
    """A participant's commitment in a round, and once revealed its sample count and the
    hash of its (fixed-point) parameters."""

    commitment: bytes
    height: int  # of the commitment
    samples: int = 0
    params_hash: bytes = b""  # empty until revealed
    revealed_height: int = 0

    @property
    def revealed(self) -> bool:
        return bool(self.params_hash)

    def encode(self) -> bytes:
        return pack(
            [self.commitment, self.height, self.samples, self.params_hash, self.revealed_height]
        )

    @staticmethod
    def decode(raw: bytes) -> "SubmissionInfo":
        commitment, height, samples, params_hash, revealed_height = unpack(raw)
        return SubmissionInfo(commitment, height, samples, params_hash, revealed_height)


# -- keys and getters -------------------------------------------------------------------------


def job_key(job_id: int) -> bytes:
    return b"job/" + u64_key(job_id)


def round_key(job_id: int, number: int) -> bytes:
    return b"round/" + u64_key(job_id) + number.to_bytes(4, "big")


def global_key(job_id: int, number: int) -> bytes:
    """The global model after round `number` (0 = the starting point)."""
    return b"jobg/" + u64_key(job_id) + number.to_bytes(4, "big")


def submission_key(job_id: int, number: int, client: bytes) -> bytes:
    return b"sub/" + u64_key(job_id) + number.to_bytes(4, "big") + client


def params_key(job_id: int, number: int, client: bytes) -> bytes:
    """Revealed parameters of a round not yet aggregated, as revealed (float32 wire bytes):
    the very bytes the reveal action carries, so the node stores them once; they are
    quantized again, exactly, when the round is aggregated."""
    return b"subp/" + u64_key(job_id) + number.to_bytes(4, "big") + client


def stake_key(client: bytes) -> bytes:
    return b"stake/" + client


def get_stake(state: KV, client: bytes) -> int:
    raw = state.get(stake_key(client))
    return 0 if raw is None else from_u256(raw)


def set_stake(state: KV, client: bytes, amount: int) -> None:
    state.put(stake_key(client), u256(amount))


def get_job(state: KV, job_id: int) -> Job | None:
    raw = state.get(job_key(job_id))
    return None if raw is None else Job.decode(raw)


def require_job(state: KV, job_id: int) -> Job:
    job = get_job(state, job_id)
    if job is None:
        raise InvalidAction("unknown_job", f"no job {job_id}")
    return job


def get_round(state: KV, job_id: int, number: int) -> Round | None:
    raw = state.get(round_key(job_id, number))
    return None if raw is None else Round.decode(raw)


def get_submission(state: KV, job_id: int, number: int, client: bytes) -> SubmissionInfo | None:
    raw = state.get(submission_key(job_id, number, client))
    return None if raw is None else SubmissionInfo.decode(raw)


def get_global(state: KV, job_id: int, number: int) -> bytes | None:
    return state.get(global_key(job_id, number))


# -- propose (train) --------------------------------------------------------------------------


def _check_terms(t: JobTerms) -> None:
    def need(ok: bool, detail: str) -> None:
        if not ok:
            raise InvalidAction("bad_terms", detail)

    need(1 <= t.rounds <= MAX_ROUNDS, f"rounds must be 1..{MAX_ROUNDS}")
    need(t.f >= 0 and t.min_participants >= 2 * t.f + 3, "Krum needs min_participants >= 2f + 3")
    need(
        t.min_participants <= t.max_participants <= MAX_PARTICIPANTS,
        "min <= max participants <= 1000",
    )
    need(t.stake_required >= 1, "a job requires a positive stake, or nobody could be slashed")
    need(1 <= t.round_blocks <= MAX_ROUND_BLOCKS, "round_blocks out of range")
    need(t.target_accuracy_bp <= BPS, "target accuracy is in basis points")
    need(len(t.aggregator) in (0, 32), "aggregator is empty or a 32-byte key")
    need(t.slash_bps <= MAX_SLASH_BPS, "a slash is at most the job's stake_required")
    need(1 <= t.max_samples <= MAX_SAMPLE_WEIGHT, f"max_samples must be 1..{MAX_SAMPLE_WEIGHT}")
    need(t.sample_weighting in (0, 1), "sample_weighting is 0 (equal weights) or 1")
    need(1 <= t.reveal_blocks <= MAX_ROUND_BLOCKS, "reveal_blocks out of range")
    need(
        t.krum_m == 0 or t.min_participants - t.f <= t.krum_m <= t.max_participants,
        "krum_m is 0 (n - f) or keeps at least min_participants - f",
    )
    outside = rules_outside_envelope(t.rules)
    need(not outside, f"rules outside the protocol's envelope: {', '.join(outside)}")


def open_job(
    state: KV,
    action: Action,
    block: BlockInfo,
    effects: Effects,
    model_id: str,
    pool: int,
    terms: JobTerms,
) -> None:
    model = models.require_model(state, model_id)
    if model.owner != action.sender and models.get_access(state, model_id, action.sender) is None:
        raise InvalidAction(
            "no_access", "train jobs are opened by the model's owner or a key with access"
        )
    _check_terms(terms)
    if pool:  # a job may start unfunded and be funded from L1 (RewardManager.fundJob)
        accounts.debit(state, action.sender, pool)
    job_id = models.new_proposal_id(state)
    models.put_proposal(
        state,
        models.Proposal(
            job_id, "train", action.sender, model_id, pool, models.ACTIVE, block.height, 0
        ),
    )
    params = models.get_model_params(state, model_id)
    if params is None:
        raise StateCorrupted(f"model {model_id} has no parameters")
    job = Job(
        job_id,
        model_id,
        action.sender,
        terms,
        pool,
        pool,
        1,
        ACTIVE,
        model.param_count,
        model.frac_bits,
    )
    state.put(job_key(job_id), job.encode())
    state.put(global_key(job_id, 0), params)
    _open_round(state, job, 1, block)
    effects.emit(
        "JobCreated",
        job_id=job_id,
        model_id=model_id,
        owner=action.sender,
        pool=pool,
        rounds=terms.rounds,
    )


def _open_round(state: KV, job: Job, number: int, block: BlockInfo) -> None:
    rnd = Round(
        job.job_id, number, block.height, block.height + job.terms.round_blocks, (), ROUND_OPEN
    )
    state.put(round_key(job.job_id, number), rnd.encode())


def credit_job_pool_l1(state: KV, job_id: int, amount: int, effects: Effects) -> bool:
    """Top up an active job with L1 funding; False if there is no such active job."""
    job = get_job(state, job_id)
    if job is None or job.status != ACTIVE:
        return False
    state.put(
        job_key(job_id),
        job.replace(pool_l1=job.pool_l1 + amount, funded=job.funded + amount).encode(),
    )
    effects.emit("JobFunded", job_id=job_id, amount=amount)
    return True


def unbonding_key(client: bytes) -> bytes:
    return b"unbonding/" + client


def set_unbonding(state: KV, client: bytes, unbonding: bool) -> None:
    if unbonding:
        state.put(unbonding_key(client), b"\x01")
    else:
        state.delete(unbonding_key(client))


def is_unbonding(state: KV, client: bytes) -> bool:
    return state.get(unbonding_key(client)) is not None


def is_job_member(state: KV, proposal: models.Proposal, author: bytes) -> bool:
    """Who may post on a train proposal besides its proposer and the model owner."""
    if proposal.kind != "train":
        return False
    job = get_job(state, proposal.proposal_id)
    return job is not None and (
        author == job.aggregator or get_stake(state, author) >= job.terms.stake_required
    )


# -- stake / withdraw -------------------------------------------------------------------------


@dataclass(frozen=True)
class Amount:
    amount: int


@dataclass(frozen=True)
class Withdraw:
    amount: int
    recipient: bytes  # the L1 address to pay; empty: the address bound to the sender's key


def process_withdraw(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """Move L2 balance out: a withdrawal record that L1 pays once its batch is final."""
    p: Withdraw = action.payload
    if p.amount == 0:
        raise InvalidAction("zero_amount", "withdraw a positive amount")
    if len(p.recipient) not in (0, 20):
        raise InvalidAction("bad_recipient", "the L1 recipient is empty or a 20-byte address")
    accounts.debit(state, action.sender, p.amount)
    record = new_record(state, WITHDRAWAL, 0, 0, action.sender, p.amount, p.recipient)
    effects.records.append(record)
    effects.emit(
        "WithdrawalRequested", client=action.sender, amount=p.amount, record_id=record.record_id
    )


# -- submit -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class CommitParams:
    job_id: int
    round: int
    commitment: bytes  # compute_commitment(job, round, sender, params, samples, salt)


@dataclass(frozen=True)
class RevealParams:
    job_id: int
    round: int
    params: bytes  # float32 little-endian, as committed
    samples: int
    salt: bytes  # 32 bytes


def compute_commitment(
    job_id: int, number: int, client: bytes, params: bytes, samples: int, salt: bytes
) -> bytes:
    """What a participant commits to: its key is inside, so nobody (the sequencer included)
    can commit to another's parameters, and the salt hides them until the reveal."""
    h = hashlib.blake2b(digest_size=32, person=b"fr/commit/v1")
    for part in (COMMIT_DOMAIN, u64_key(job_id), number.to_bytes(8, "big"), client):
        h.update(len(part).to_bytes(4, "big") + part)
    h.update(samples.to_bytes(8, "big") + salt + params)
    return h.digest()


def _check_participant(state: KV, job: Job, client: bytes) -> None:
    if get_stake(state, client) < job.terms.stake_required:
        raise InvalidAction("not_staked", f"job needs a stake of {job.terms.stake_required}")
    if is_unbonding(state, client):
        raise InvalidAction("unbonding", "a key that asked to unstake no longer trains")
    if client in (job.owner, job.aggregator):
        raise InvalidAction("not_participant", "the job's owner and aggregator do not train it")
    if is_slashed_in_job(state, job.job_id, client):
        raise InvalidAction("slashed_in_job", "a client slashed in a job trains it no more")


def process_commit(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """Commit phase: a participant binds itself to parameters it does not show yet."""
    p: CommitParams = action.payload
    job = require_job(state, p.job_id)
    rnd = get_open_round(state, job, p.round)
    if rnd.status != ROUND_OPEN:
        raise InvalidAction("commits_closed", f"round {p.round} is taking reveals")
    if block.height > rnd.deadline_height:
        raise InvalidAction(
            "round_deadline_passed", f"round closed for commitments at height {rnd.deadline_height}"
        )
    if len(p.commitment) != 32:
        raise InvalidAction("bad_commitment", "a commitment is 32 bytes")
    _check_participant(state, job, action.sender)
    if get_submission(state, p.job_id, p.round, action.sender) is not None:
        raise InvalidAction("duplicate_submission", "one commitment per client per round")
    if len(rnd.submitters) >= job.terms.max_participants:
        raise InvalidAction(
            "round_full", f"round has its {job.terms.max_participants} participants"
        )
    info = SubmissionInfo(p.commitment, block.height)
    state.put(submission_key(p.job_id, p.round, action.sender), info.encode())
    state.put(
        round_key(p.job_id, p.round),
        rnd.replace(submitters=(*rnd.submitters, action.sender)).encode(),
    )
    effects.emit(
        "ParamsCommitted",
        job_id=p.job_id,
        round=p.round,
        client=action.sender,
        commitment=p.commitment,
    )


def process_reveal(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """Reveal phase: the parameters and salt that open the participant's commitment."""
    p: RevealParams = action.payload
    job = require_job(state, p.job_id)
    rnd = get_open_round(state, job, p.round)
    if rnd.status != ROUND_REVEAL:
        raise InvalidAction("not_revealing", f"round {p.round} takes reveals once commits close")
    if block.height > rnd.reveal_deadline_height:
        raise InvalidAction(
            "reveal_deadline_passed", f"reveals closed at height {rnd.reveal_deadline_height}"
        )
    info = get_submission(state, p.job_id, p.round, action.sender)
    if info is None:
        raise InvalidAction("not_committed", "only a committed participant reveals")
    if info.revealed:
        raise InvalidAction("already_revealed", "one reveal per commitment")
    if len(p.salt) != 32:
        raise InvalidAction("bad_salt", "the salt is 32 bytes")
    if not 1 <= p.samples <= MAX_SAMPLES:
        raise InvalidAction("bad_samples", f"sample count must be 1..{MAX_SAMPLES}")
    opened = compute_commitment(p.job_id, p.round, action.sender, p.params, p.samples, p.salt)
    if opened != info.commitment:
        raise InvalidAction("commitment_mismatch", "the reveal does not open the commitment")
    fixed = models.quantize_params(p.params, job.param_count, job.frac_bits)
    params_hash = models.blob_hash(fixed)
    state.put(params_key(p.job_id, p.round, action.sender), p.params)
    revealed = SubmissionInfo(info.commitment, info.height, p.samples, params_hash, block.height)
    state.put(submission_key(p.job_id, p.round, action.sender), revealed.encode())
    effects.emit(
        "ParamsRevealed",
        job_id=p.job_id,
        round=p.round,
        client=action.sender,
        params_hash=params_hash,
        samples=p.samples,
    )


# -- aggregate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class AggregateRound:
    job_id: int
    round: int
    accuracy_bp: int


def process_aggregate(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    """Close the round's current phase: commits -> reveals (or expiry, with too few
    commitments past the deadline), reveals -> the round decision (once every committed
    participant revealed, or the reveal deadline passed). The aggregator closes a phase when
    it likes; after the phase's deadline any key may (a job whose aggregator vanished does
    not stall), but only the aggregator's accuracy counts."""
    p: AggregateRound = action.payload
    job = require_job(state, p.job_id)
    rnd = get_open_round(state, job, p.round)
    if p.accuracy_bp > BPS:
        raise InvalidAction("bad_accuracy", "accuracy is in basis points")
    deadline = rnd.deadline_height if rnd.status == ROUND_OPEN else rnd.reveal_deadline_height
    past_deadline = block.height > deadline
    is_aggregator = action.sender == job.aggregator
    if not is_aggregator and not past_deadline:
        raise InvalidAction(
            "not_aggregator",
            f"only the job's aggregator closes this phase before height {deadline}",
        )
    if rnd.status == ROUND_OPEN:
        _close_commits(state, job, rnd, block, effects, past_deadline)
        return
    infos = _submissions(state, job, rnd)
    if not past_deadline and not all(info.revealed for info in infos.values()):
        raise InvalidAction("reveals_pending", f"reveals are open until height {deadline}")
    _aggregate(state, job, rnd, p.accuracy_bp if is_aggregator else 0, infos, block, effects)


def _close_commits(
    state: KV, job: Job, rnd: Round, block: BlockInfo, effects: Effects, past_deadline: bool
) -> None:
    n = len(rnd.submitters)
    if n < job.terms.min_participants:
        if not past_deadline:
            raise InvalidAction(
                "too_few_submissions", f"{n} commitments; need {job.terms.min_participants}"
            )
        _expire_round(state, job, rnd, block, effects)
        return
    reveal_deadline = block.height + job.terms.reveal_blocks
    state.put(
        round_key(job.job_id, rnd.number),
        rnd.replace(status=ROUND_REVEAL, reveal_deadline_height=reveal_deadline).encode(),
    )
    effects.emit(
        "CommitsClosed",
        job_id=job.job_id,
        round=rnd.number,
        commitments=n,
        reveal_deadline_height=reveal_deadline,
    )


def _submissions(state: KV, job: Job, rnd: Round) -> dict[bytes, SubmissionInfo]:
    out = {}
    for client in sorted(rnd.submitters):
        info = get_submission(state, job.job_id, rnd.number, client)
        if info is None:
            raise StateCorrupted(f"round {rnd.number} lists a submitter with no commitment")
        out[client] = info
    return out


def get_open_round(state: KV, job: Job, number: int) -> Round:
    if job.status != ACTIVE:
        raise InvalidAction("job_closed", f"job {job.job_id} is {job.status}")
    if number != job.current_round:
        raise InvalidAction("wrong_round", f"job {job.job_id} is in round {job.current_round}")
    rnd = get_round(state, job.job_id, number)
    if rnd is None or rnd.status not in (ROUND_OPEN, ROUND_REVEAL):
        raise StateCorrupted(f"job {job.job_id} has no open round {number}")
    return rnd


def _load_vector(state: KV, key: bytes, count: int) -> npt.NDArray[np.int32]:
    raw = state.get(key)
    if raw is None:
        raise StateCorrupted(f"missing vector {key.hex()}")
    return unpack_int32(raw, count)


def _load_revealed(state: KV, job: Job, number: int, client: bytes) -> npt.NDArray[np.int32]:
    """A revealed submission in fixed point: the reveal checked these bytes quantize."""
    raw = state.get(params_key(job.job_id, number, client))
    if raw is None:
        raise StateCorrupted(f"revealed parameters of {client.hex()} are missing")
    try:
        fixed = models.quantize_params(raw, job.param_count, job.frac_bits)
    except InvalidAction as exc:
        raise StateCorrupted(f"stored parameters of {client.hex()}: {exc}") from None
    return unpack_int32(fixed, job.param_count)


# -- per-client history of a job (strikes and accumulated update) ----------------------------


def history_key(job_id: int, client: bytes) -> bytes:
    return b"jobhist/" + u64_key(job_id) + client


def accumulated_key(job_id: int, client: bytes) -> bytes:
    return b"jobacc/" + u64_key(job_id) + client


def get_history(state: KV, job: Job, client: bytes) -> ClientHistory | None:
    raw = state.get(history_key(job.job_id, client))
    if raw is None:
        return None
    strikes, rounds = unpack(raw)
    acc = state.get(accumulated_key(job.job_id, client))
    vector = None if acc is None else unpack_int32(acc, sketch_dim(job.param_count))
    return ClientHistory(strikes, rounds, vector)


def put_history(state: KV, job: Job, client: bytes, history: ClientHistory) -> None:
    state.put(history_key(job.job_id, client), pack([history.strikes, history.rounds]))
    if history.accumulated is not None:
        state.put(accumulated_key(job.job_id, client), pack_int32(history.accumulated))


def _load_round_rows(
    state: KV, job: Job, rnd: Round, infos: dict[bytes, SubmissionInfo]
) -> RoundRows:
    """The revealed parameters, quantized straight into the rows of one matrix."""
    clients = tuple(sorted(c for c, info in infos.items() if info.revealed))
    params = np.empty((len(clients), job.param_count), dtype=np.int32)
    for row, client in enumerate(clients):
        params[row] = _load_revealed(state, job, rnd.number, client)
    weights = tuple(_weight(job, infos[c].samples) for c in clients)
    return RoundRows(clients, weights, params)


def _weight(job: Job, samples: int) -> int:
    return min(samples, job.terms.max_samples) if job.terms.sample_weighting else 1


def _aggregate(
    state: KV,
    job: Job,
    rnd: Round,
    accuracy_bp: int,
    infos: dict[bytes, SubmissionInfo],
    block: BlockInfo,
    effects: Effects,
) -> None:
    count = job.param_count
    previous = _load_vector(state, global_key(job.job_id, rnd.number - 1), count)
    previous_update = None
    if rnd.number >= 2:
        before = _load_vector(state, global_key(job.job_id, rnd.number - 2), count)
        # |G| < 2**30 for every stored model, so the difference fits int32 exactly.
        previous_update = np.subtract(previous, before, dtype=np.int32)
    rows = _load_round_rows(state, job, rnd, infos)
    history: dict[bytes, ClientHistory] = {}
    for client in rows.clients:
        past = get_history(state, job, client)
        if past is not None:
            history[client] = past
    outcome = decide_round_rows(
        previous, previous_update, rows, job.terms.f, job.terms.rules, job.terms.krum_m, history
    )
    unrevealed = [Decision(c, UNREVEALED) for c, info in infos.items() if not info.revealed]
    outcome = outcome.with_decisions(unrevealed)
    new_global = pack_int32(outcome.new_global)
    state.put(global_key(job.job_id, rnd.number), new_global)
    for client in rnd.submitters:
        state.delete(params_key(job.job_id, rnd.number, client))  # absent if unrevealed: a no-op
    for client, after in sorted(outcome.history.items()):
        put_history(state, job, client, after)
    slashed = _settle_slashes(state, job, rnd, outcome.decisions, effects)
    job = count_new_slashed(state, job, [d.client for d in outcome.decisions if d.slashed])
    kept = [d.client for d in outcome.decisions if d.kept]
    job, each_l2, each_l1 = _settle_rewards(state, job, rnd, kept, effects)
    decisions = tuple((d.client, d.reason, d.score) for d in outcome.decisions)
    global_hash = models.blob_hash(new_global)
    state.put(
        round_key(job.job_id, rnd.number),
        rnd.replace(
            status=ROUND_AGGREGATED,
            decisions=decisions,
            accuracy_bp=accuracy_bp,
            global_hash=global_hash,
        ).encode(),
    )
    effects.emit(
        "RoundAggregated",
        job_id=job.job_id,
        round=rnd.number,
        global_hash=global_hash,
        accuracy_bp=accuracy_bp,
        kept=kept,
        excluded=[d.client for d in outcome.decisions if d.outcome == "excluded"],
        krum_f=-1 if outcome.krum_f is None else outcome.krum_f,
        reward_each_l2=each_l2,
        reward_each_l1=each_l1,
        decisions=[
            [d.client, d.outcome, d.reason, -1 if d.score is None else d.score, d.strike]
            for d in outcome.decisions
        ],
        slashed=slashed,
    )
    target = job.terms.target_accuracy_bp
    reached = target > 0 and accuracy_bp >= target
    _advance(state, job, rnd.number, block, effects, reached=reached, last_kept=kept)


def slashed_key(job_id: int, client: bytes) -> bytes:
    return b"jobslashed/" + u64_key(job_id) + client


def is_slashed_in_job(state: KV, job_id: int, client: bytes) -> bool:
    return state.get(slashed_key(job_id, client)) is not None


def count_new_slashed(state: KV, job: Job, clients: list[bytes]) -> Job:
    """Remember who this job slashed: they submit to it no more."""
    fresh = [c for c in clients if not is_slashed_in_job(state, job.job_id, c)]
    for c in fresh:
        state.put(slashed_key(job.job_id, c), b"\x01")
    return job.replace(slashed_clients=job.slashed_clients + len(fresh))


def _settle_slashes(
    state: KV, job: Job, rnd: Round, decisions: Sequence[Decision], effects: Effects
) -> list[list[object]]:
    """Evidence costs the job's full slash, repeated suspicion half of it; both are bounded
    by the job's stake_required (and by what the client still has)."""
    out: list[list[object]] = []
    for d in decisions:
        if not d.slashed:
            continue
        stake = get_stake(state, d.client)
        amount = min(stake, job.terms.full_slash if d.evidence else job.terms.repeated_slash)
        set_stake(state, d.client, stake - amount)
        record = new_record(state, SLASH, job.job_id, rnd.number, d.client, amount)
        effects.records.append(record)
        out.append([d.client, amount, d.reason])
    return out


def _settle_rewards(
    state: KV, job: Job, rnd: Round, kept: list[bytes], effects: Effects
) -> tuple[Job, int, int]:
    """This round's share of what is left, split equally among the kept clients: the L2
    escrow as L2 credits, the L1 funding as reward records claimed on L1 (whose
    RewardManager pays a job no more than it was funded)."""
    rounds_left = job.terms.rounds - rnd.number + 1
    return _pay_equally(state, job, rnd, kept, rounds_left, effects)


def _pay_equally(
    state: KV, job: Job, rnd: Round, clients: list[bytes], shares: int, effects: Effects
) -> tuple[Job, int, int]:
    """Pay each client 1/shares of the pools, split equally among them."""
    if not clients:
        return job, 0, 0
    each_l2 = job.pool // shares // len(clients)
    each_l1 = job.pool_l1 // shares // len(clients)
    for client in clients:
        if each_l2:
            accounts.credit(state, client, each_l2)
        if each_l1:
            effects.records.append(
                new_record(state, REWARD, job.job_id, rnd.number, client, each_l1)
            )
    job = job.replace(
        pool=job.pool - each_l2 * len(clients), pool_l1=job.pool_l1 - each_l1 * len(clients)
    )
    return job, each_l2, each_l1


def _expire_round(state: KV, job: Job, rnd: Round, block: BlockInfo, effects: Effects) -> None:
    """Too few submissions by the deadline: the round passes with no update, no pay, no slash."""
    previous = state.get(global_key(job.job_id, rnd.number - 1))
    if previous is None:
        raise StateCorrupted(f"job {job.job_id} has no global model {rnd.number - 1}")
    state.put(global_key(job.job_id, rnd.number), previous)
    for client in rnd.submitters:
        state.delete(params_key(job.job_id, rnd.number, client))
    state.put(
        round_key(job.job_id, rnd.number),
        rnd.replace(status=ROUND_EXPIRED, global_hash=models.blob_hash(previous)).encode(),
    )
    effects.emit(
        "RoundExpired", job_id=job.job_id, round=rnd.number, submissions=len(rnd.submitters)
    )
    _advance(state, job, rnd.number, block, effects, reached=False)


def _advance(
    state: KV,
    job: Job,
    finished: int,
    block: BlockInfo,
    effects: Effects,
    reached: bool,
    last_kept: Sequence[bytes] = (),
) -> None:
    if finished >= job.terms.rounds or reached:
        if reached and finished < job.terms.rounds:  # ended early: the rest is the workers'
            rnd = get_round(state, job.job_id, finished)
            if rnd is not None:
                job, _, _ = _pay_equally(state, job, rnd, list(last_kept), 1, effects)
        if job.pool:
            accounts.credit(state, job.owner, job.pool)
        from stf.staking import refund_unspent_l1  # unspent L1 funding: back to its funders

        refund_unspent_l1(state, job, effects)
        state.put(job_key(job.job_id), job.replace(status=COMPLETED, pool=0, pool_l1=0).encode())
        effects.emit(
            "JobCompleted",
            job_id=job.job_id,
            rounds=finished,
            refunded_l2=job.pool,
            refunded_l1=job.pool_l1,
            target_reached=reached,
        )
        return
    job = job.replace(current_round=finished + 1)
    state.put(job_key(job.job_id), job.encode())
    _open_round(state, job, finished + 1, block)
