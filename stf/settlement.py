"""Settlement records: the slashes, rewards and withdrawals that L1 executes with proofs.

A record is versioned and ABI-encodable on L1 as
    (uint8 version, uint8 kind, uint64 job, uint64 round, bytes32 rollupKey, uint256 amount,
     bytes32 recordId)
Record ids are a global counter (as 32 bytes), so they are unique and dense.
"""

from dataclasses import dataclass

from stf.errors import StfInternalError
from stf.state import KV

RECORD_VERSION = 1
SLASH = 1
REWARD = 2
WITHDRAWAL = 3
KIND_NAMES = {SLASH: "slash", REWARD: "reward", WITHDRAWAL: "withdrawal"}
_COUNTER = b"count/records"


@dataclass(frozen=True)
class SettlementRecord:
    kind: int
    job: int
    round: int
    rollup_key: bytes
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
            self.amount,
            self.record_id,
        ]

    @staticmethod
    def from_list(raw: list[object]) -> "SettlementRecord":
        version, kind, job, rnd, key, amount, record_id = raw
        if (
            not (isinstance(kind, int) and isinstance(job, int) and isinstance(rnd, int))
            or not (
                isinstance(key, bytes) and isinstance(amount, int) and isinstance(record_id, bytes)
            )
            or not isinstance(version, int)
        ):
            raise StfInternalError("a stored settlement record has fields of the wrong type")
        return SettlementRecord(kind, job, rnd, key, amount, record_id, version)


def next_record_id(state: KV, recipient: bytes = b"") -> bytes:
    """recipient (20 bytes, or none) || counter (12 bytes): the low 96 bits are L1's
    once-only execution key; the high 160 bits name the L1 address a withdrawal pays (zero:
    the address the StakingRegistry binds to the rollup key)."""
    if recipient and len(recipient) != 20:
        raise ValueError("an L1 recipient is a 20-byte address")
    raw = state.get(_COUNTER)
    current = 0 if raw is None else int.from_bytes(raw, "big")
    state.put(_COUNTER, (current + 1).to_bytes(8, "big"))
    return (recipient or bytes(20)) + (current + 1).to_bytes(12, "big")


def new_record(
    state: KV, kind: int, job: int, rnd: int, key: bytes, amount: int, recipient: bytes = b""
) -> SettlementRecord:
    return SettlementRecord(kind, job, rnd, key, amount, next_record_id(state, recipient))
