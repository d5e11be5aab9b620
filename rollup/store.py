"""LevelDB storage of the chain: blocks, receipts, the action index, state and its Merkle tree.

Everything a block changes is written in one atomic, synced write batch, so after a crash
the store holds either the whole block or none of it.

The thread that executes and commits blocks reads state and Merkle nodes through an
in-memory cache of committed entries (`cached_state`, `cached_smt_node`), which commit_block
keeps current: the accounts a block of transfers touches are usually those of the last
blocks, and the previous stored value of every changed key (needed for blob reference
counts) is then known without a LevelDB read. Other threads read LevelDB directly.

Large byte strings (parameter vectors, artifacts: at least BLOB_MIN_BYTES) are stored once,
content-addressed: a state value or a byte field of an action that large is written as a blob
and referenced by its hash, so a revealed submission held by both a block body and the state
costs its size once. Blobs are reference-counted (state references, block references) in the
block's own write batch; a blob no longer referenced is deleted in that batch. Pruning
(`prune_block`) drops a block's references, so its blobs go once the state drops them too.

Layout (key prefixes):
    s/<state key>            tag byte + value: 0x00 + the value inline, 0x01 + blob hash
    P/<blob hash>            blob bytes
    R/<blob hash>            reference counts: state refs:8 + block refs:8, then size:8
    H/<height:8>             blob hashes the block body references (32 bytes each)
    Z/<height:8>             marks a block whose body was pruned (its blobs may be gone)
    m/<node path>            state Merkle tree nodes (rollup.smt)
    b/<height:8>             block header
    B/<height:8>             block body: msgpack list of wire actions, each with its large
                             byte fields replaced by ext(1, blob hash)
    L/<height:8>             L1 messages the block includes (msgpack list of encodings)
    r/<height:8>             msgpack list of encoded receipts
    x/<action hash>          height:8 + index:4 of the block that executed it
    meta/head                height:8 of the last committed block
    meta/executed_seq        mempool log sequence number executed up to (inclusive)
    meta/genesis             hash of the genesis this store was created from
    meta/layout              storage layout version (LAYOUT_VERSION)
    meta/pruned_to           height:8 below which block bodies were pruned
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import plyvel

from rollup.block import BlockHeader, Receipt
from rollup.hashing import h256

STATE_PREFIX = b"s/"
SMT_PREFIX = b"m/"
BLOB_MIN_BYTES = 4096  # smaller values stay inline: a reference would save nothing
LAYOUT_VERSION = 2  # 2: content-addressed blobs; 1 (unversioned) held every value inline
_BLOB_DOMAIN = b"fr/storeblob/v1"
_HEAD = b"meta/head"
_EXECUTED_SEQ = b"meta/executed_seq"
_GENESIS = b"meta/genesis"
_LAYOUT = b"meta/layout"
_PRUNED_TO = b"meta/pruned_to"
_INLINE = b"\x00"
_BLOB = b"\x01"
_EXT_BLOB_REF = 1  # inside a stored action: a large byte field, by blob hash
_EXT_HOLLOW_ACTION = 2  # a body entry: an action whose large fields are blob references
_PRUNE_CHUNK = 256  # blocks per write batch when pruning
_PRUNE_MAX_HEIGHTS = 4096  # blocks per call: a node turning pruning on catches up gradually
# Bounds of the committed-entry caches (cleared whole when full: simple, and a few hundred
# thousand entries span many blocks of transfers). An entry costs ~200 bytes besides its
# value; stored state values are at most BLOB_MIN_BYTES, Merkle nodes 65 bytes.
_CACHE_MAX_ENTRIES = 1 << 18
_STATE_CACHE_VALUE_BYTES = 64 * 1024 * 1024


def _height_key(prefix: bytes, height: int) -> bytes:
    return prefix + height.to_bytes(8, "big")


def blob_hash(data: bytes) -> bytes:
    return h256(_BLOB_DOMAIN, data)


class StoreCorrupted(Exception):
    """The store contradicts itself (a reference to a missing blob, a negative count)."""


class LayoutMismatch(Exception):
    """The data dir was written by an older storage layout."""


class DataPruned(Exception):
    """A block body this node pruned (`--prune`): its header and receipts remain."""

    def __init__(self, height: int) -> None:
        super().__init__(
            f"block {height}'s actions were pruned by this node (--prune); "
            "ask an archive node for the full block"
        )
        self.height = height


@dataclass(frozen=True)
class BlockRecord:
    header: BlockHeader
    actions: list[bytes]
    receipts: list[Receipt]  # one per L1 message, then one per action
    l1_messages: list[bytes] = field(default_factory=list)


@dataclass(frozen=True)
class BlockSummary:
    """What a block read needs when it does not return the actions (works after pruning)."""

    header: BlockHeader
    action_count: int
    receipts: list[Receipt]


@dataclass(frozen=True)
class ActionLocation:
    height: int
    index: int


class Reader:
    """Reads against one consistent view (a snapshot, or the live DB)."""

    def __init__(self, view: Any) -> None:
        self._view = view
        self._get: Callable[[bytes], bytes | None] = view.get

    def _resolve(self, stored: bytes) -> bytes:
        """A stored state value: inline, or the blob it references."""
        if stored[:1] == _INLINE:
            return stored[1:]
        return self._blob(stored[1:])

    def _blob(self, digest: bytes) -> bytes:
        data = self._get(b"P/" + digest)
        if data is None:
            raise StoreCorrupted(f"blob {digest.hex()} is referenced but missing")
        return data

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
            out.append((key[len(STATE_PREFIX) :], self._resolve(value)))
            if len(out) >= limit:
                break
        return out

    def raw(self, key: bytes) -> bytes | None:
        return self._get(key)

    def state(self, key: bytes) -> bytes | None:
        stored = self._get(STATE_PREFIX + key)
        return None if stored is None else self._resolve(stored)

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

    def pruned_to(self) -> int:
        """Block bodies below this height went through pruning."""
        raw = self._get(_PRUNED_TO)
        return 0 if raw is None else int.from_bytes(raw, "big")

    def is_pruned(self, height: int) -> bool:
        return self._get(_height_key(b"Z/", height)) is not None

    def header(self, height: int) -> BlockHeader | None:
        raw = self._get(_height_key(b"b/", height))
        return None if raw is None else BlockHeader.decode(raw)

    def _receipts(self, height: int) -> list[Receipt]:
        raw: list[bytes] = msgpack.unpackb(self._get(_height_key(b"r/", height)) or b"\x90")
        return [Receipt.decode(r) for r in raw]

    def block(self, height: int) -> BlockRecord | None:
        """The full block, its actions byte for byte as signed; DataPruned if pruned."""
        header = self.header(height)
        if header is None:
            return None
        if self.is_pruned(height):
            raise DataPruned(height)
        stored: list[Any] = msgpack.unpackb(
            self._get(_height_key(b"B/", height)) or b"\x90", ext_hook=self._ext_hook
        )
        messages: list[bytes] = msgpack.unpackb(self._get(_height_key(b"L/", height)) or b"\x90")
        return BlockRecord(header, stored, self._receipts(height), messages)

    def block_summary(self, height: int) -> BlockSummary | None:
        header = self.header(height)
        if header is None:
            return None
        receipts = self._receipts(height)
        messages: list[bytes] = msgpack.unpackb(self._get(_height_key(b"L/", height)) or b"\x90")
        return BlockSummary(header, len(receipts) - len(messages), receipts)

    def _ext_hook(self, code: int, data: bytes) -> Any:
        """Reassembles a hollow action: its blobs back in place, packed canonically again."""
        if code == _EXT_HOLLOW_ACTION:
            tree = msgpack.unpackb(data, raw=False, use_list=True, ext_hook=self._ext_hook)
            return msgpack.packb(tree, use_bin_type=True)
        if code == _EXT_BLOB_REF:
            return self._blob(data)
        return msgpack.ExtType(code, data)

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


class _CommittedCache:
    """Committed entries (None = absent) of keys read or written by the committing thread,
    kept equal to LevelDB by commit_block. Only that thread may call `get`: a reader on
    another thread could put back a value a commit had just replaced. Bounded by entries and
    by value bytes (counted again when replaced: an overestimate, so it clears early)."""

    def __init__(
        self,
        read: Callable[[bytes], bytes | None],
        max_entries: int,
        max_value_bytes: int | None,  # None: values are small, only entries are bounded
    ) -> None:
        self._read = read
        self._max_entries = max_entries
        self._max_value_bytes = max_value_bytes
        self._entries: dict[bytes, bytes | None] = {}
        self._value_bytes = 0

    def get(self, key: bytes) -> bytes | None:
        try:
            return self._entries[key]
        except KeyError:
            value = self._read(key)
            self._make_room()
            self._entries[key] = value
            self._value_bytes += len(value) if value else 0
            return value

    def _make_room(self) -> None:
        over_bytes = self._max_value_bytes is not None and self._value_bytes > self._max_value_bytes
        if over_bytes or len(self._entries) > self._max_entries:
            self._entries.clear()
            self._value_bytes = 0

    def committed(self, writes: dict[bytes, bytes | None]) -> None:
        """After a write batch landed: the entries it wrote (None = deleted)."""
        self._make_room()
        self._entries.update(writes)
        if self._max_value_bytes is not None:
            self._value_bytes += sum(map(len, filter(None, writes.values())))


class _BlobRefs:
    """Reference-count changes and new blob bytes of one write batch."""

    def __init__(self, get: Callable[[bytes], bytes | None]) -> None:
        self._get = get
        self._state: dict[bytes, int] = {}
        self._blocks: dict[bytes, int] = {}
        self._new: dict[bytes, bytes] = {}

    def add_state(self, data: bytes) -> bytes:
        digest = self._hold(data)
        self._state[digest] = self._state.get(digest, 0) + 1
        return digest

    def add_block(self, data: bytes) -> bytes:
        digest = self._hold(data)
        self._blocks[digest] = self._blocks.get(digest, 0) + 1
        return digest

    def drop_state(self, digest: bytes) -> None:
        self._state[digest] = self._state.get(digest, 0) - 1

    def drop_block(self, digest: bytes) -> None:
        self._blocks[digest] = self._blocks.get(digest, 0) - 1

    def _hold(self, data: bytes) -> bytes:
        digest = blob_hash(data)
        self._new.setdefault(digest, data)
        return digest

    def write(self, wb: Any) -> int:
        """Put the changed counts (and new blobs) in the batch; returns the bytes of blobs
        it deletes (LevelDB frees them only when it compacts them away)."""
        freed = 0
        for digest in sorted(self._state.keys() | self._blocks.keys()):
            raw = self._get(b"R/" + digest)
            state = int.from_bytes(raw[:8], "big") if raw else 0
            blocks = int.from_bytes(raw[8:16], "big") if raw else 0
            size = int.from_bytes(raw[16:], "big") if raw else len(self._new.get(digest, b""))
            state += self._state.get(digest, 0)
            blocks += self._blocks.get(digest, 0)
            if state < 0 or blocks < 0:
                raise StoreCorrupted(f"blob {digest.hex()} released more than referenced")
            if state == 0 and blocks == 0:
                if raw is not None:
                    wb.delete(b"P/" + digest)
                    wb.delete(b"R/" + digest)
                    freed += size
                continue
            if raw is None:
                wb.put(b"P/" + digest, self._new[digest])
            counts = state.to_bytes(8, "big") + blocks.to_bytes(8, "big")
            wb.put(b"R/" + digest, counts + size.to_bytes(8, "big"))
        return freed


def _hollow(node: Any, refs: _BlobRefs, found: list[bytes]) -> Any:
    """The decoded action with every large byte field replaced by a blob reference."""
    if isinstance(node, bytes) and len(node) >= BLOB_MIN_BYTES:
        digest = refs.add_block(node)
        found.append(digest)
        return msgpack.ExtType(_EXT_BLOB_REF, digest)
    if isinstance(node, list):
        return [_hollow(item, refs, found) for item in node]
    return node


def _stored_action(wire: bytes, refs: _BlobRefs, found: list[bytes]) -> Any:
    """A body entry: the wire itself, or (if it holds a large byte field) a hollow action.
    Wires are canonical msgpack, so packing the reassembled tree gives the same bytes."""
    if len(wire) < BLOB_MIN_BYTES:
        return wire
    tree = msgpack.unpackb(wire, raw=False, use_list=True)
    if msgpack.packb(tree, use_bin_type=True) != wire:
        return wire  # not canonical (never from the door): keep it whole rather than alter it
    before = len(found)
    hollow = _hollow(tree, refs, found)
    if len(found) == before:
        return wire
    return msgpack.ExtType(_EXT_HOLLOW_ACTION, msgpack.packb(hollow, use_bin_type=True))


class ChainStore:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self._db: Any = plyvel.DB(str(path), create_if_missing=True)
        self.live = Reader(self._db)
        self._stored_state = _CommittedCache(
            self._db.get, _CACHE_MAX_ENTRIES, _STATE_CACHE_VALUE_BYTES
        )
        self._smt_nodes = _CommittedCache(self._db.get, _CACHE_MAX_ENTRIES, None)
        self.freed_blob_bytes = 0  # deleted blob bytes since the last `compact_blobs`
        layout = self._db.get(_LAYOUT)
        if self.live.genesis_hash() is not None and layout != str(LAYOUT_VERSION).encode():
            self._db.close()
            raise LayoutMismatch(
                f"{path} uses storage layout {1 if layout is None else layout.decode()}; "
                f"this node reads layout {LAYOUT_VERSION}: replay it into a fresh data dir"
            )

    def close(self) -> None:
        self._db.close()

    def compact(self) -> None:
        """Let LevelDB rewrite its files now (benchmarks measure the settled size). The
        range is explicit: plyvel's open-ended compact_range() left flushed files in place."""
        self._db.compact_range(start=b"\x00", stop=b"\xff")

    def compact_blobs(self) -> None:
        """Reclaim the space of deleted blobs now: LevelDB's own compactions reach their
        level late, so a round's replaced vectors would sit on disk for rounds."""
        self._db.compact_range(start=b"P/", stop=b"P0")

    def cached_state(self, key: bytes) -> bytes | None:
        """A committed state value, as `live.state`; for the committing thread only."""
        stored = self._stored_state.get(STATE_PREFIX + key)
        if stored is None:
            return None
        return stored[1:] if stored[:1] == _INLINE else self.live._resolve(stored)

    def cached_smt_node(self, node_key: bytes) -> bytes | None:
        """A committed Merkle node, as `live.smt_node`; for the committing thread only."""
        return self._smt_nodes.get(node_key)

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
        """The whole block in one synced write batch: blobs, references, state, body."""
        height = block.header.height
        refs = _BlobRefs(self._db.get)
        stored_state: dict[bytes, bytes | None] = {}
        with self._db.write_batch(transaction=True, sync=True) as wb:
            for key in sorted(state_changes):
                stored_key = STATE_PREFIX + key
                stored = self._put_state(wb, refs, stored_key, state_changes[key])
                stored_state[stored_key] = stored
            for node_key, node in smt_writes.items():
                if node is None:
                    wb.delete(node_key)
                else:
                    wb.put(node_key, node)
            wb.put(_height_key(b"b/", height), block.header.encode())
            found: list[bytes] = []
            body = [_stored_action(wire, refs, found) for wire in block.actions]
            wb.put(_height_key(b"B/", height), msgpack.packb(body, use_bin_type=True))
            if found:
                wb.put(_height_key(b"H/", height), b"".join(found))
            freed = refs.write(wb)
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
                wb.put(_LAYOUT, str(LAYOUT_VERSION).encode())
        self.freed_blob_bytes += freed
        self._stored_state.committed(stored_state)
        self._smt_nodes.committed(smt_writes)

    def _put_state(
        self, wb: Any, refs: _BlobRefs, stored_key: bytes, value: bytes | None
    ) -> bytes | None:
        """Write one state change; returns what is now stored under the key (None: nothing).
        The previous stored value (for its blob reference) comes from the committed cache:
        the block's execution read every key it changed, so this is rarely a LevelDB read."""
        old = self._stored_state.get(stored_key)
        if old is not None and old[:1] == _BLOB:
            refs.drop_state(old[1:])
        if value is None:
            wb.delete(stored_key)
            return None
        stored = _BLOB + refs.add_state(value) if len(value) >= BLOB_MIN_BYTES else _INLINE + value
        wb.put(stored_key, stored)
        return stored

    def prune_bodies(self, below: int) -> int:
        """Drop the blob references of block bodies below `below` (a blob goes once nothing,
        state included, references it) and mark those blocks pruned; returns how many
        bodies were pruned. Resumes where the last call stopped, and goes at most
        _PRUNE_MAX_HEIGHTS heights further."""
        pruned = 0
        start = self.live.pruned_to()
        below = min(below, start + _PRUNE_MAX_HEIGHTS)  # a call never stalls blocks for long
        while start < below:
            end = min(below, start + _PRUNE_CHUNK)
            refs = _BlobRefs(self._db.get)
            with self._db.write_batch(transaction=True, sync=True) as wb:
                for height in range(start, end):
                    hashes = self._db.get(_height_key(b"H/", height))
                    if hashes is None:
                        continue
                    for i in range(0, len(hashes), 32):
                        refs.drop_block(hashes[i : i + 32])
                    wb.delete(_height_key(b"H/", height))
                    wb.put(_height_key(b"Z/", height), b"")
                    pruned += 1
                freed = refs.write(wb)
                wb.put(_PRUNED_TO, end.to_bytes(8, "big"))
            self.freed_blob_bytes += freed
            start = end
        return pruned
