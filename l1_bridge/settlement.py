"""Python mirror of the L1 commitment formats (versioned consensus; ``contracts/Settlement.sol``).

* **Settlement record v2** — ``abi.encode(uint8 version=2, uint8 kind, uint64 jobId,
  uint64 round, bytes32 rollupKey, address payee, uint256 amount, bytes32 recordId)``; kind 1 =
  slash, 2 = reward, 3 = withdrawal, 4 = stake release, 5 = refund. ``payee`` is the L1 address
  the record pays (zero for slashes); L1 pays it and nobody else, with no lookup at claim time.
* **recordId layout** — bits 95..0: the record's *execution key* (uint96, unique per record; the
  contracts keep one executed bit per key in a bitmap, so dense keys — e.g. the STF's global
  record counter — make execution cheap); the high bits are 0. A plain counter
  ``n.to_bytes(32, "big")`` is a valid recordId; :func:`make_record_id` builds one.
* **Leaf** — ``keccak256(keccak256(encoded record))`` (OpenZeppelin StandardMerkleTree double hash).
* **Settlement root** — OpenZeppelin StandardMerkleTree: leaves sorted by hash, stored in a complete
  binary tree array, each node the commutative keccak of its children (``keccak(min ‖ max)``), so
  ``MerkleProof.verify`` accepts the proofs. The root depends only on the set of records; the root
  of no records is ``bytes32(0)`` and the root of one record is its leaf.
* **Output root v2** — ``keccak256(abi.encode(uint8 2, uint256 chainId, address inbox, stateRoot,
  settlementRoot, lastBlockHash))``: bound to one L1 chain and one inbox contract (the genesis
  anchor the inbox is deployed with uses chain 0 and inbox 0: it pays nothing).

Everything here is pure; hashes are 32-byte ``bytes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Final

from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

__all__ = [
    "EMPTY_ROOT",
    "OUTPUT_ROOT_VERSION",
    "RECORD_VERSION",
    "RecordKind",
    "SettlementRecord",
    "SettlementTree",
    "encode_record",
    "execution_key",
    "execution_word",
    "hash_pair",
    "leaf_hash",
    "make_record_id",
    "output_root",
    "process_proof",
    "settlement_root",
    "verify_proof",
]

RECORD_VERSION: Final = 2
OUTPUT_ROOT_VERSION: Final = 2
EMPTY_ROOT: Final = b"\x00" * 32

_U64: Final = 1 << 64
_U96: Final = 1 << 96
_U256: Final = 1 << 256


class RecordKind(IntEnum):
    """Settlement record kinds."""

    SLASH = 1
    REWARD = 2
    WITHDRAWAL = 3
    STAKE_RELEASE = 4
    REFUND = 5


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _bytes32(value: bytes, name: str) -> bytes:
    if len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(value)}")
    return bytes(value)


@dataclass(frozen=True, slots=True)
class SettlementRecord:
    """One settlement record (v2). ``rollup_key`` is the participant's ed25519 public key;
    ``payee`` the 20-byte L1 address it pays (zero for slashes)."""

    kind: int
    job_id: int
    round: int
    rollup_key: bytes
    payee: bytes
    amount: int
    record_id: bytes
    version: int = RECORD_VERSION

    def __post_init__(self) -> None:
        if not 0 <= self.version < 256:
            raise ValueError(f"version out of uint8 range: {self.version}")
        if not 0 <= self.kind < 256:
            raise ValueError(f"kind out of uint8 range: {self.kind}")
        if not 0 <= self.job_id < _U64:
            raise ValueError(f"job_id out of uint64 range: {self.job_id}")
        if not 0 <= self.round < _U64:
            raise ValueError(f"round out of uint64 range: {self.round}")
        if not 0 <= self.amount < _U256:
            raise ValueError(f"amount out of uint256 range: {self.amount}")
        _bytes32(self.rollup_key, "rollup_key")
        _bytes32(self.record_id, "record_id")
        if len(self.payee) != 20:
            raise ValueError(f"payee must be a 20-byte address, got {len(self.payee)} bytes")

    def encode(self) -> bytes:
        """The record's ABI encoding (8 words)."""
        return encode_record(self)

    def leaf(self) -> bytes:
        """The record's Merkle leaf."""
        return leaf_hash(self)

    @classmethod
    def from_abi_tuple(cls, values: Sequence[object]) -> SettlementRecord:
        """Inverse of :meth:`as_abi_tuple`. Also takes ``stf.settlement.SettlementRecord.as_list()``
        (same field order)."""
        version, kind, job_id, round_, rollup_key, payee, amount, record_id = values
        if not (
            isinstance(version, int)
            and isinstance(kind, int)
            and isinstance(job_id, int)
            and isinstance(round_, int)
            and isinstance(amount, int)
        ):
            raise TypeError("version, kind, job_id, round and amount must be ints")
        if isinstance(payee, str):
            payee = bytes.fromhex(payee.removeprefix("0x"))
        if not (
            isinstance(rollup_key, bytes)
            and isinstance(record_id, bytes)
            and isinstance(payee, bytes)
        ):
            raise TypeError("rollup_key, payee and record_id must be bytes")
        return cls(kind, job_id, round_, rollup_key, payee, amount, record_id, version)

    @property
    def payee_address(self) -> str:
        """The payee as a checksummed ``0x`` address."""
        return to_checksum_address(self.payee)

    def as_abi_tuple(self) -> tuple[int, int, int, int, bytes, str, int, bytes]:
        """The record as the Solidity ``SettlementRecord`` struct tuple (for web3 calls)."""
        return (
            self.version,
            self.kind,
            self.job_id,
            self.round,
            self.rollup_key,
            self.payee_address,
            self.amount,
            self.record_id,
        )


def encode_record(record: SettlementRecord) -> bytes:
    """``abi.encode(version, kind, jobId, round, rollupKey, payee, amount, recordId)``."""
    return b"".join(
        (
            _word(record.version),
            _word(record.kind),
            _word(record.job_id),
            _word(record.round),
            record.rollup_key,
            bytes(12) + record.payee,
            _word(record.amount),
            record.record_id,
        )
    )


def leaf_hash(record: SettlementRecord) -> bytes:
    """``keccak256(bytes.concat(keccak256(abi.encode(record))))``."""
    return keccak(keccak(encode_record(record)))


def hash_pair(a: bytes, b: bytes) -> bytes:
    """OpenZeppelin ``Hashes.commutativeKeccak256``: keccak of the two hashes in ascending order."""
    return keccak(a + b) if a < b else keccak(b + a)


def output_root(
    state_root: bytes,
    settlement_root: bytes,
    last_block_hash: bytes,
    chain_id: int = 0,
    inbox: str | bytes = bytes(20),
) -> bytes:
    """Output root v2: ``keccak256(abi.encode(uint8 2, uint256 chainId, address inbox, stateRoot,
    settlementRoot, lastBlockHash))``. ``chain_id`` and ``inbox`` (the L1 chain and the inbox
    contract) are the domain; (0, zero address) is the genesis anchor's, which pays nothing."""
    raw_inbox = bytes.fromhex(inbox.removeprefix("0x")) if isinstance(inbox, str) else inbox
    if len(raw_inbox) != 20:
        raise ValueError("inbox must be a 20-byte address")
    return keccak(
        _word(OUTPUT_ROOT_VERSION)
        + _word(chain_id)
        + bytes(12)
        + raw_inbox
        + _bytes32(state_root, "state_root")
        + _bytes32(settlement_root, "settlement_root")
        + _bytes32(last_block_hash, "last_block_hash")
    )


def execution_key(record_id: bytes) -> int:
    """The once-only execution key of ``record_id`` (its low 96 bits)."""
    return int.from_bytes(_bytes32(record_id, "record_id"), "big") & (_U96 - 1)


def execution_word(kind: int, record_id: bytes) -> int:
    """Index of the executed-bitmap word holding ``record_id`` (255 records per word) in the
    contract that executes ``kind``: the SlashingManager (slash, stake release) or the
    RewardManager (reward, withdrawal, refund). A keeper can pre-pay a word's first store with
    ``prepareExecutionWords(word, count)`` on that contract."""
    del kind
    return execution_key(record_id) // 255


def make_record_id(key: int) -> bytes:
    """Build a recordId from an execution key (< 2**96). Keys should be dense for cheap execution
    (e.g. a global record counter)."""
    if not 0 <= key < _U96:
        raise ValueError(f"execution key out of uint96 range: {key}")
    return key.to_bytes(32, "big")


def process_proof(leaf: bytes, proof: Iterable[bytes]) -> bytes:
    """OpenZeppelin ``MerkleProof.processProof``: fold the proof into the leaf."""
    node = _bytes32(leaf, "leaf")
    for sibling in proof:
        node = hash_pair(node, _bytes32(sibling, "proof element"))
    return node


def verify_proof(root: bytes, leaf: bytes, proof: Iterable[bytes]) -> bool:
    """OpenZeppelin ``MerkleProof.verify``."""
    return process_proof(leaf, proof) == root


class SettlementTree:
    """An OpenZeppelin StandardMerkleTree-compatible tree over settlement records.

    Layout (as ``@openzeppelin/merkle-tree``): the ``n`` leaf hashes are sorted ascending and stored
    at the end of an array of ``2n - 1`` nodes in reverse order (``tree[len - 1 - i] = leaves[i]``);
    node ``i`` has children ``2i + 1`` and ``2i + 2``; the root is ``tree[0]``.
    """

    __slots__ = ("_position", "_records", "_tree")

    def __init__(self, records: Sequence[SettlementRecord]) -> None:
        self._records: tuple[SettlementRecord, ...] = tuple(records)
        hashed = sorted(
            ((leaf_hash(r), i) for i, r in enumerate(self._records)), key=lambda item: item[0]
        )
        n = len(hashed)
        size = 2 * n - 1 if n else 0
        tree: list[bytes] = [b""] * size
        position: dict[int, int] = {}
        for sorted_index, (leaf, record_index) in enumerate(hashed):
            tree_index = size - 1 - sorted_index
            tree[tree_index] = leaf
            position[record_index] = tree_index
        for i in range(size - 1 - n, -1, -1):
            left = tree[2 * i + 1]
            right = tree[2 * i + 2]
            tree[i] = keccak(left + right) if left < right else keccak(right + left)
        self._tree = tree
        self._position = position

    @property
    def records(self) -> tuple[SettlementRecord, ...]:
        """The records, in the order given."""
        return self._records

    def __len__(self) -> int:
        return len(self._records)

    @property
    def root(self) -> bytes:
        """The settlement root (``EMPTY_ROOT`` for no records)."""
        return self._tree[0] if self._tree else EMPTY_ROOT

    def leaf(self, index: int) -> bytes:
        """Leaf hash of ``records[index]``."""
        return self._tree[self._position[self._check(index)]]

    def proof(self, index: int) -> list[bytes]:
        """Merkle proof (bottom-up sibling hashes) of ``records[index]``."""
        i = self._position[self._check(index)]
        proof: list[bytes] = []
        while i > 0:
            proof.append(self._tree[i + 1 if i % 2 else i - 1])
            i = (i - 1) // 2
        return proof

    def index_of(self, record: SettlementRecord) -> int:
        """Index of ``record`` in :attr:`records` (ValueError if absent)."""
        return self._records.index(record)

    def _check(self, index: int) -> int:
        if not 0 <= index < len(self._records):
            raise IndexError(f"record index {index} out of range for {len(self._records)} records")
        return index


def settlement_root(records: Sequence[SettlementRecord]) -> bytes:
    """Settlement root of a set of records."""
    return SettlementTree(records).root
