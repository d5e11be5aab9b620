"""Metered work: every action declares a cost before it runs, checked against limits fixed in
genesis (stored in state, so every replica applies the same ones).

* bytes: what the action carries (parameters, artifacts, keys, texts) plus a flat overhead;
  a block's actions may declare at most `max_block_bytes` together.
* work: for `aggregate`, participants x parameters of the round it closes; one job's rounds
  may never need more than `max_aggregate_work` (its terms' max_participants x the model's
  parameter count, checked when the job is proposed), nor a block more than `max_block_work`.

The default aggregate limit is sized from the measured peak memory of a whole `aggregate`
(the round decision streams: about 1.1-1.2 x its int32 input, issue 11): 250,000,000
participant-parameters are 0.95 GiB of submissions and about 1.0 GiB of working memory,
well inside this 24 GiB machine with the node and its store beside it.
"""

from dataclasses import dataclass
from typing import Any

from stf import jobs
from stf.context import Action
from stf.encoding import pack, unpack
from stf.errors import InvalidAction
from stf.state import KV

LIMITS_KEY = b"meta/limits"
ACTION_OVERHEAD_BYTES = 256  # envelope, signature and fixed fields, declared by every action

DEFAULT_MAX_AGGREGATE_WORK = 250_000_000
DEFAULT_MAX_BLOCK_BYTES = 64 * 1024 * 1024
DEFAULT_MAX_BLOCK_WORK = DEFAULT_MAX_AGGREGATE_WORK


@dataclass(frozen=True)
class Limits:
    max_aggregate_work: int = DEFAULT_MAX_AGGREGATE_WORK
    max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES
    max_block_work: int = DEFAULT_MAX_BLOCK_WORK

    def encode(self) -> bytes:
        return pack([self.max_aggregate_work, self.max_block_bytes, self.max_block_work])

    @staticmethod
    def decode(raw: bytes) -> "Limits":
        work, block_bytes, block_work = unpack(raw)
        return Limits(int(work), int(block_bytes), int(block_work))

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)

    @staticmethod
    def from_json(obj: Any) -> "Limits":
        if not isinstance(obj, dict) or set(obj) - set(Limits.__dataclass_fields__):
            raise ValueError(
                f"limits are an object with keys {sorted(Limits.__dataclass_fields__)}"
            )
        for name, value in obj.items():
            if type(value) is not int or not 1 <= value < 2**63:
                raise ValueError(f"limit {name} must be a positive 63-bit integer")
        return Limits(**obj)


def get_limits(state: KV) -> Limits:
    raw = state.get(LIMITS_KEY)
    return Limits() if raw is None else Limits.decode(raw)


def put_limits(state: KV, limits: Limits) -> None:
    state.put(LIMITS_KEY, limits.encode())


@dataclass(frozen=True)
class Cost:
    bytes: int
    work: int = 0


def declared_cost(state: KV, action: Action) -> Cost:
    """What an action may use, known before it runs (reads state, never writes)."""
    p = action.payload
    carried = 0
    for name in ("params", "artifact", "sealed_key", "recipient", "to"):
        value = getattr(p, name, None)
        if isinstance(value, bytes):
            carried += len(value)
    text = getattr(p, "text", None)
    if isinstance(text, str):
        carried += len(text.encode())
    return Cost(ACTION_OVERHEAD_BYTES + carried, aggregate_work(state, action))


def aggregate_work(state: KV, action: Action) -> int:
    """Participants x parameters of the round an `aggregate` would close (0 otherwise)."""
    if action.type != "aggregate":
        return 0
    job = jobs.get_job(state, action.payload.job_id)
    if job is None:
        return 0
    rnd = jobs.get_round(state, job.job_id, action.payload.round)
    return 0 if rnd is None else len(rnd.submitters) * job.param_count


def check_job_limits(state: KV, max_participants: int, param_count: int) -> None:
    """Refuse, at `propose`, a job whose full round would exceed the aggregate limit."""
    limit = get_limits(state).max_aggregate_work
    if max_participants * param_count > limit:
        raise InvalidAction(
            "over_limits",
            f"{max_participants} participants x {param_count} parameters exceeds this chain's "
            f"aggregate limit of {limit}",
        )


class BlockMeter:
    """Charges each action's declared cost against the block's limits."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.bytes = 0
        self.work = 0

    def charge(self, cost: Cost) -> None:
        if cost.work > self.limits.max_aggregate_work:
            raise InvalidAction("over_limits", "this aggregation exceeds the chain's limit")
        if self.bytes + cost.bytes > self.limits.max_block_bytes:
            raise InvalidAction("block_full", "the block's byte limit is used up")
        if self.work + cost.work > self.limits.max_block_work:
            raise InvalidAction("block_full", "the block's aggregation work limit is used up")
        self.bytes += cost.bytes
        self.work += cost.work
