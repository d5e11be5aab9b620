"""LevelDB storage of the chain: blocks, receipts, the action index, state and its Merkle tree.

Everything a block changes is written in one atomic, synced write batch, so after a crash
the store holds either the whole block or none of it.

Layout (key prefixes):
    s/<state key>            state values
    m/<node path>            state Merkle tree nodes (rollup.smt)
    b/<height:8>             block header
    B/<height:8>             block body: msgpack list of wire actions
    L/<height:8>             L1 messages the block includes (msgpack list of encodings)
    r/<height:8>             msgpack list of encoded receipts
    x/<action hash>          height:8 + index:4 of the block that executed it
    meta/head                height:8 of the last committed block
    meta/executed_seq        mempool log sequence number executed up to (inclusive)
    meta/genesis             hash of the genesis this store was created from
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import plyvel

from rollup.block import BlockHeader, Receipt

STATE_PREFIX = b"s/"
SMT_PREFIX = b"m/"
_HEAD = b"meta/head"
_EXECUTED_SEQ = b"meta/executed_seq"
_GENESIS = b"meta/genesis"


def _height_key(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


@dataclass(frozen=True)
class BlockRecord:
    header: BlockHeader
    actions: list[bytes]
    receipts: list[Receipt]  # one per L1 message, then one per action
    l1_messages: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class ActionLocation:
    height: int
    index: int


class Reader:
    """Reads against one consistent view (a snapshot, or the live DB)."""

    def __init__(self, view: Any) -> None:
        self._view = view
        self._get: Callable[[bytes], bytes | None] = view.get

    def state_keys(
        self, prefix: bytes, after: bytes | None, limit: int
    ) -> list[tuple[bytes, bytes]]:
        """State entries under `prefix` in key order, starting after `after`."""
        full = STATE_PREFIX + prefix
        start = full + after + b"\x00" if after is not None else full
        out: list[tuple[bytes, bytes]] = []
        for key, value in self._view.iterator(start=start):
            if not key.startswith(full):
                break
            out.append((key[len(STATE_PREFIX) :], value))
            if len(out) >= limit:
                break
        return out

    def raw(self, key: bytes) -> bytes | None:
        return self._get(key)

    def state(self, key: bytes) -> bytes | None:
        return self._get(STATE_PREFIX + key)

    def smt_node(self, node_key: bytes) -> bytes | None:
        return self._get(node_key)

    def head_height(self) -> int | None:
        raw = self._get(_HEAD)
        return None if raw is None else int.from_bytes(raw, "big")

    def executed_seq(self) -> int:
        raw = self._get(_EXECUTED_SEQ)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def genesis_hash(self) -> bytes | None:
        return self._get(_GENESIS)

    def header(self, height: int) -> BlockHeader | None:
        raw = self._get(_height_key(b"b/", height))
        return None if raw is None else BlockHeader.decode(raw)

    def block(self, height: int) -> BlockRecord | None:
        header = self.header(height)
        if header is None:
            return None
        actions: list[bytes] = msgpack.unpackb(self._get(_height_key(b"B/", height)) or b"\x90")
        raw_receipts: list[bytes] = msgpack.unpackb(
            self._get(_height_key(b"r/", height)) or b"\x90"
        )
        messages: list[bytes] = msgpack.unpackb(self._get(_height_key(b"L/", height)) or b"\x90")
        return BlockRecord(header, actions, [Receipt.decode(r) for r in raw_receipts], messages)

    def locate_action(self, action_hash: bytes) -> ActionLocation | None:
        raw = self._get(b"x/" + action_hash)
        if raw is None:
            return None
        return ActionLocation(int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:], "big"))

    def receipt(self, loc: ActionLocation) -> Receipt | None:
        raw = self._get(_height_key(b"r/", loc.height))
        if raw is None:
            return None
        receipts: list[bytes] = msgpack.unpackb(raw)
        return Receipt.decode(receipts[loc.index])


class ChainStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._db: Any = plyvel.DB(str(path), create_if_missing=True)
        self.live = Reader(self._db)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def snapshot(self) -> Iterator[Reader]:
        snap = self._db.snapshot()
        try:
            yield Reader(snap)
        finally:
            snap.close()

    def put_meta(self, items: dict[bytes, bytes | None]) -> None:
        """Small synced writes of bookkeeping outside consensus state (batches, settlements)."""
        with self._db.write_batch(transaction=True, sync=True) as wb:
            for key, value in items.items():
                if value is None:
                    wb.delete(key)
                else:
                    wb.put(key, value)

    def meta_range(self, prefix: bytes, start: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.iterator(start=prefix + start):
            if not key.startswith(prefix):
                return
            yield key, value

    def commit_block(
        self,
        block: BlockRecord,
        state_changes: dict[bytes, bytes | None],
        smt_writes: dict[bytes, bytes | None],
        executed_seq: int,
        genesis_hash: bytes | None = None,
    ) -> None:
        height = block.header.height
        with self._db.write_batch(transaction=True, sync=True) as wb:
            for key in sorted(state_changes):
                value = state_changes[key]
                if value is None:
                    wb.delete(STATE_PREFIX + key)
                else:
                    wb.put(STATE_PREFIX + key, value)
            for node_key, node in smt_writes.items():
                if node is None:
                    wb.delete(node_key)
                else:
                    wb.put(node_key, node)
            wb.put(_height_key(b"b/", height), block.header.encode())
            wb.put(_height_key(b"B/", height), msgpack.packb(block.actions, use_bin_type=True))
            if block.l1_messages:
                wb.put(
                    _height_key(b"L/", height), msgpack.packb(block.l1_messages, use_bin_type=True)
                )
            wb.put(
                _height_key(b"r/", height),
                msgpack.packb([r.encode() for r in block.receipts], use_bin_type=True),
            )
            for index, receipt in enumerate(block.receipts):
                wb.put(
                    b"x/" + receipt.action_hash,
                    height.to_bytes(8, "big") + index.to_bytes(4, "big"),
                )
            wb.put(_HEAD, height.to_bytes(8, "big"))
            wb.put(_EXECUTED_SEQ, executed_seq.to_bytes(8, "big"))
            if genesis_hash is not None:
                wb.put(_GENESIS, genesis_hash)
