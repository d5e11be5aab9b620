"""Batches: runs of L2 blocks whose output root is committed to L1.

    output root v2 = keccak(abi.encode(2, L1 chain id, inbox address, state root,
                                       settlement root, last block hash))
    data hash      = keccak(the batch's block hashes, concatenated)

The settlement root is the OpenZeppelin-compatible tree over the settlement records of the
batch's blocks, in block and receipt order. Block hashes commit to each block's actions, L1
messages and receipts, so the data hash pins all the batch data a verifier replays.
"""

from dataclasses import dataclass

from eth_hash.auto import keccak

from l1_bridge.settlement import SettlementRecord, SettlementTree, output_root
from rollup.store import BlockRecord
from stf.encoding import from_u256, pack, u256, unpack
from stf.l1 import L1Message
from stf.settlement import SettlementRecord as L2Record

ZERO = bytes(32)
PENDING, COMMITTED, FINALIZED, CHALLENGED, DISCARDED = (
    "pending",
    "committed",
    "finalized",
    "challenged",
    "discarded",
)


def to_l1_record(r: L2Record) -> SettlementRecord:
    return SettlementRecord(
        r.kind, r.job, r.round, r.rollup_key, r.payee, r.amount, r.record_id, r.version
    )


@dataclass(frozen=True)
class Batch:
    index: int
    first_height: int
    last_height: int
    state_root: bytes
    settlement_root: bytes
    last_block_hash: bytes
    output_root: bytes
    prev_output_root: bytes
    data_hash: bytes
    records: tuple[SettlementRecord, ...]
    status: str = PENDING
    messages_consumed: int = 0  # the L2's next L1-message nonce after the batch

    def encode(self) -> bytes:
        records = [
            [
                r.version,
                r.kind,
                r.job_id,
                r.round,
                r.rollup_key,
                r.payee,
                u256(r.amount),
                r.record_id,
            ]
            for r in self.records
        ]
        return pack(
            [
                self.index,
                self.first_height,
                self.last_height,
                self.state_root,
                self.settlement_root,
                self.last_block_hash,
                self.output_root,
                self.prev_output_root,
                self.data_hash,
                records,
                self.status,
                self.messages_consumed,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "Batch":
        fields = unpack(raw)
        idx, first, last, sroot, setroot, lbh, oroot, prev, dhash, records, status = fields[:11]
        consumed = fields[11] if len(fields) > 11 else 0
        recs = tuple(
            SettlementRecord(kind, job, rnd, key, payee, from_u256(amount), rid, version)
            for version, kind, job, rnd, key, payee, amount, rid in records
        )
        return Batch(
            idx, first, last, sroot, setroot, lbh, oroot, prev, dhash, recs, status, consumed
        )

    def with_status(self, status: str) -> "Batch":
        return Batch(**{**self.__dict__, "status": status})

    def tree(self) -> SettlementTree:
        return SettlementTree(list(self.records))


def build_batch(
    index: int,
    prev_output_root: bytes,
    blocks: list[BlockRecord],
    chain_id: int,
    inbox: str | bytes,
    prev_consumed: int = 0,
) -> Batch:
    """The batch of `blocks`, its output root bound to L1 chain `chain_id` and `inbox`;
    `messages_consumed` is the L2's next L1-message nonce after it (from `prev_consumed`, the
    previous batch's, and the L1 messages its blocks applied)."""
    if not blocks:
        raise ValueError("a batch holds at least one block")
    records = tuple(
        to_l1_record(r) for b in blocks for receipt in b.receipts for r in receipt.records
    )
    settlement_root = SettlementTree(list(records)).root if records else ZERO
    last = blocks[-1].header
    last_hash = last.hash()
    root = output_root(last.state_root, settlement_root, last_hash, chain_id, inbox)
    data_hash = keccak(b"".join(b.header.hash() for b in blocks))
    consumed = prev_consumed
    for b in blocks:
        for raw, receipt in zip(b.l1_messages, b.receipts, strict=False):
            if receipt.ok:
                consumed = max(consumed, L1Message.decode(raw).nonce + 1)
    return Batch(
        index,
        blocks[0].header.height,
        last.height,
        last.state_root,
        settlement_root,
        last_hash,
        root,
        prev_output_root,
        data_hash,
        records,
        messages_consumed=consumed,
    )


def genesis_output_root(genesis: BlockRecord) -> bytes:
    """The anchor batch 0 builds on: output root v2 with the null domain (it pays nothing, and
    is fixed before the inbox it is given to has an address)."""
    return output_root(genesis.header.state_root, ZERO, genesis.header.hash())
