"""The committing thread's caches of committed state and Merkle nodes (rollup.store) never
change what is stored: a store that keeps them warm across blocks and one reopened (cold)
before every block end with the same LevelDB contents byte for byte, every cached read equals
the LevelDB read, and blob reference counts equal a recount from the stored state, through
values that go inline -> blob -> other blob -> inline -> deleted. Real LevelDB."""

import random
from pathlib import Path

import plyvel
import pytest

import rollup.store as store_module
from rollup.block import BlockHeader
from rollup.smt import SparseMerkleTree
from rollup.store import BLOB_MIN_BYTES, SMT_PREFIX, STATE_PREFIX, BlockRecord, ChainStore

KEYS = [b"k/" + bytes([i]) for i in range(24)]
BLOCKS = 40


def _value(rng: random.Random) -> bytes | None:
    kind = rng.random()
    if kind < 0.2:
        return None
    if kind < 0.5:  # a few large values, often equal: blobs shared by several keys
        return bytes([rng.randrange(3)]) * (BLOB_MIN_BYTES + rng.randrange(2))
    return rng.randbytes(rng.randrange(1, 48))


def _blocks(seed: int) -> list[dict[bytes, bytes | None]]:
    rng = random.Random(seed)
    return [
        {k: _value(rng) for k in rng.sample(KEYS, rng.randrange(1, len(KEYS)))}
        for _ in range(BLOCKS)
    ]


def _commit(store: ChainStore, height: int, changes: dict[bytes, bytes | None]) -> bytes:
    root, writes = SparseMerkleTree(store.cached_smt_node, SMT_PREFIX).update(changes)
    header = BlockHeader(height, bytes(32), height, bytes(32), bytes(32), root)
    store.commit_block(BlockRecord(header, [], []), changes, writes, height)
    return root


def _contents(path: Path) -> dict[bytes, bytes]:
    db = plyvel.DB(str(path))
    try:
        return dict(db.iterator())
    finally:
        db.close()


def _recounted_refs(contents: dict[bytes, bytes]) -> dict[bytes, int]:
    counts: dict[bytes, int] = {}
    for key, stored in contents.items():
        if key.startswith(STATE_PREFIX) and stored[:1] == b"\x01":
            counts[stored[1:]] = counts.get(stored[1:], 0) + 1
    return counts


@pytest.mark.parametrize("max_entries", [None, 5])  # 5: the caches clear every block or two
def test_warm_and_cold_caches_store_the_same_bytes_and_counts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, max_entries: int | None
) -> None:
    if max_entries is not None:
        monkeypatch.setattr(store_module, "_CACHE_MAX_ENTRIES", max_entries)
    blocks = _blocks(seed=7)
    warm = ChainStore(tmp_path / "warm")
    expected: dict[bytes, bytes] = {}
    warm_roots = []
    for height, changes in enumerate(blocks):
        warm_roots.append(_commit(warm, height, changes))
        for k, v in changes.items():
            if v is None:
                expected.pop(k, None)
            else:
                expected[k] = v
        for k in KEYS:  # the cached read and the LevelDB read agree on every key
            assert warm.cached_state(k) == warm.live.state(k) == expected.get(k)
    warm.close()

    cold_roots = []
    for height, changes in enumerate(blocks):
        cold = ChainStore(tmp_path / "cold")  # a fresh store: every read goes to LevelDB
        cold_roots.append(_commit(cold, height, changes))
        cold.close()

    assert warm_roots == cold_roots
    reference, _ = SparseMerkleTree({}.get).update(dict(expected))
    assert warm_roots[-1] == reference
    contents = _contents(tmp_path / "warm")
    assert contents == _contents(tmp_path / "cold")
    stored_refs = {
        k[2:]: int.from_bytes(v[:8], "big") for k, v in contents.items() if k.startswith(b"R/")
    }
    assert stored_refs == _recounted_refs(contents)
    assert {k[2:] for k in contents if k.startswith(b"P/")} == set(stored_refs)
    assert stored_refs, "the sequence never stored a blob: it tests too little"
