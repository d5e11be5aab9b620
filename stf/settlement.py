"""Settlement records: the slashes, rewards, withdrawals, stake releases and refunds that L1
executes with proofs.

A record (version 2) is ABI-encodable on L1 as
    (uint8 version, uint8 kind, uint64 job, uint64 round, bytes32 rollupKey, address payee,
     uint256 amount, bytes32 recordId)
`payee` is the L1 address the record pays, fixed here from an authenticated source: the key's
signed `bind_l1` binding, a signed withdrawal recipient, or the L1 sender of a message being
refunded. For a slash it names the slashed party (the key's bound address, whose L1 stake for
the key it takes). Record ids are a global counter (as 32 bytes), unique and dense.
"""

from dataclasses import dataclass
from typing import Literal

from stf.errors import InvalidAction, StfInternalError
from stf.identity import ZERO_ADDRESS, get_bound_address
from stf.state import KV

RECORD_VERSION = 2
SLASH = 1
REWARD = 2
WITHDRAWAL = 3
STAKE_RELEASE = 4
REFUND = 5
KindName = Literal["slash", "reward", "withdrawal", "stake_release", "refund"]
KIND_NAMES: dict[int, KindName] = {
    SLASH: "slash",
    REWARD: "reward",
    WITHDRAWAL: "withdrawal",
    STAKE_RELEASE: "stake_release",
    REFUND: "refund",
}
_COUNTER = b"count/records"


@dataclass(frozen=True)
class SettlementRecord:
    kind: int
    job: int
    round: int
    rollup_key: bytes
    payee: bytes
    amount: int
    record_id: bytes
    version: int = RECORD_VERSION

    def as_list(self) -> list[object]:
        return [
            self.version,
            self.kind,
            self.job,
            self.round,
            self.rollup_key,
            self.payee,
            self.amount,
            self.record_id,
        ]

    @staticmethod
    def from_list(raw: list[object]) -> "SettlementRecord":
        version, kind, job, rnd, key, payee, amount, record_id = raw
        if (
            not (isinstance(kind, int) and isinstance(job, int) and isinstance(rnd, int))
            or not (
                isinstance(key, bytes) and isinstance(amount, int) and isinstance(record_id, bytes)
            )
            or not (isinstance(version, int) and isinstance(payee, bytes))
        ):
            raise StfInternalError("a stored settlement record has fields of the wrong type")
        return SettlementRecord(kind, job, rnd, key, payee, amount, record_id, version)


def next_record_id(state: KV) -> bytes:
    """A dense counter as 32 bytes: L1's once-only execution key is its low 96 bits."""
    raw = state.get(_COUNTER)
    current = 0 if raw is None else int.from_bytes(raw, "big")
    state.put(_COUNTER, (current + 1).to_bytes(8, "big"))
    return (current + 1).to_bytes(32, "big")


def resolve_payee(state: KV, kind: int, key: bytes, recipient: bytes = b"") -> bytes:
    """Who a record of `kind` for `key` pays: a withdrawal's signed recipient if it named one;
    otherwise the address `key` bound by `bind_l1` (for a slash: whose stake it takes; zero if
    none, and L1 then takes nothing). A key that bound no address cannot be paid: `not_bound`."""
    if kind == SLASH:
        return get_bound_address(state, key) or ZERO_ADDRESS
    if recipient:
        if len(recipient) != 20 or recipient == ZERO_ADDRESS:
            raise InvalidAction("bad_recipient", "an L1 recipient is a non-zero 20-byte address")
        return recipient
    bound = get_bound_address(state, key)
    if bound is None:
        raise InvalidAction("not_bound", "the key has no L1 address (send bind_l1 first)")
    return bound


def new_record(
    state: KV,
    kind: int,
    job: int,
    rnd: int,
    key: bytes,
    amount: int,
    recipient: bytes = b"",
    payee: bytes | None = None,
) -> SettlementRecord:
    """A new record. `payee` names the L1 address it pays outright (refunds to an L1 sender);
    without it the payee is resolved by :func:`resolve_payee` (`recipient`, else the key's
    bound address)."""
    if payee is None:
        payee = resolve_payee(state, kind, key, recipient)
    elif len(payee) != 20:
        raise ValueError("a payee is a 20-byte address")
    return SettlementRecord(kind, job, rnd, key, payee, amount, next_record_id(state))
