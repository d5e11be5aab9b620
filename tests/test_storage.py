"""Storage at FL scale: a submission is stored once (content-addressed blobs shared by the block
body and the state), full blocks come back byte for byte, pruning drops finalized bodies (410)
and leaves state, restarts and roots untouched, and a replay against a pruned node says why.

Real LevelDB stores through the real Chain (tests/fl_harness.py) and a real node process."""

import json
import time
from pathlib import Path

import numpy as np
import plyvel
import pytest

from node.core.replay import replay_from_node
from node.ops.verify import EXIT_INCONCLUSIVE, verify
from node.sdk.client import ApiError
from rollup.chain import Chain
from rollup.codec import decode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore, DataPruned, LayoutMismatch, blob_hash
from stf import jobs
from stf.accounts import Transfer
from stf.jobs import AggregateRound
from stf.models import Upload
from tests.conftest import NodeProcess, free_port
from tests.fl_harness import (
    CHAIN_ID,
    Harness,
    commit,
    key,
    open_job,
    pub,
    reveal,
    stake,
)

OWNER = 0
CLIENTS = list(range(3, 13))  # ten participants
ARCH = (("w", (200, 500)),)  # 100,000 parameters: 400 kB a submission
PARAMS = 100_000


def _f32(values: np.ndarray) -> bytes:  # type: ignore[type-arg]
    return values.astype("<f4").tobytes()


def _submissions(seed: int) -> dict[int, bytes]:
    rng = np.random.default_rng(seed)
    base = rng.normal(0, 0.1, PARAMS)
    return {c: _f32(base + rng.normal(0, 0.01, PARAMS)) for c in CLIENTS}


def _setup(h: Harness) -> int:
    init = _f32(np.random.default_rng(0).normal(0, 0.1, PARAMS))
    h.ok(OWNER, "upload", Upload("digits", ARCH, init, 16, 0, b"sealed-artifact"))
    job_id = open_job(h, OWNER, min_participants=7, max_participants=20, f=2)
    stake(h, CLIENTS)
    return job_id


def _commit_and_close(h: Harness, job_id: int, rnd: int, subs: dict[int, bytes]) -> None:
    receipts = h.block([(c, "commit", commit(h, c, job_id, rnd, p, 100)) for c, p in subs.items()])
    assert all(r.ok for r in receipts)
    h.ok(OWNER, "aggregate", AggregateRound(job_id, rnd, 0))


def _reveal_all(h: Harness, job_id: int, rnd: int, subs: dict[int, bytes]) -> int:
    receipts = h.block([(c, "reveal", reveal(job_id, rnd, p, 100)) for c, p in subs.items()])
    assert all(r.ok for r in receipts), [(r.error, r.detail) for r in receipts if not r.ok]
    return h.chain.head.height


def _dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _settled_size(h: Harness, path: Path) -> int:
    h.chain.store.compact()
    return _dir_bytes(path)


def test_a_revealed_submission_is_stored_once_not_in_block_and_state(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    h = Harness.create(path)
    job_id = _setup(h)
    subs = _submissions(1)
    _commit_and_close(h, job_id, 1, subs)
    before = _settled_size(h, path)
    _reveal_all(h, job_id, 1, subs)
    growth = _settled_size(h, path) - before
    submitted = sum(len(p) for p in subs.values())
    # Twice the submissions before blobs (block body + state); now once, plus small records.
    assert 0.95 * submitted <= growth <= 1.1 * submitted, (growth, submitted)
    # Both copies resolve: the state holds the revealed bytes, the block the signed wire.
    for c, p in subs.items():
        assert h.state.get(jobs.params_key(job_id, 1, pub(c))) == p


def test_full_blocks_come_back_byte_for_byte_and_verify(tmp_path: Path) -> None:
    h = Harness.create(tmp_path / "chain")
    job_id = _setup(h)
    subs = _submissions(2)
    subs[CLIENTS[1]] = subs[CLIENTS[0]]  # a copier: one blob, referenced twice
    _commit_and_close(h, job_id, 1, subs)
    height = _reveal_all(h, job_id, 1, subs)
    record = h.chain.store.live.block(height)
    assert record is not None
    assert len(record.actions) == len(subs)
    for i, (wire, (c, p)) in enumerate(zip(record.actions, subs.items(), strict=True)):
        signed = decode_action(wire, CHAIN_ID)  # canonical and the signature verifies
        assert signed.action.sender == pub(c)
        assert signed.action.payload.params == p
        assert signed.action.hash == record.receipts[i].action_hash
    assert record.header.actions_root == h.chain.store.live.header(height).actions_root  # type: ignore[union-attr]


def _refs(path: Path, data: bytes) -> tuple[int, int] | None:
    """(state refs, block refs) of the blob holding `data`; None if it is gone."""
    db = plyvel.DB(str(path))
    try:
        raw = db.get(b"R/" + blob_hash(data))
        present = db.get(b"P/" + blob_hash(data)) is not None
    finally:
        db.close()
    assert present == (raw is not None)
    if raw is None:
        return None
    assert int.from_bytes(raw[16:], "big") == len(data)
    return int.from_bytes(raw[:8], "big"), int.from_bytes(raw[8:16], "big")


def _reopen(h: Harness, path: Path) -> Harness:
    h.chain.store.close()
    return Harness(Chain(ChainStore(path), h.chain.genesis), h.nonces, h.time_ms)


def test_one_blob_is_shared_by_state_and_blocks_until_both_let_go(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    h = Harness.create(path)
    job_id = _setup(h)
    subs = _submissions(3)
    copier, original = CLIENTS[1], CLIENTS[0]
    subs[copier] = subs[original]
    _commit_and_close(h, job_id, 1, subs)
    reveal_height = _reveal_all(h, job_id, 1, subs)
    h.chain.store.close()
    assert _refs(path, subs[original]) == (2, 2)  # two state keys, two actions, one blob
    assert _refs(path, subs[CLIENTS[2]]) == (1, 1)
    h = _reopen(h, path)
    h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0))  # the state lets go
    h.chain.store.close()
    assert _refs(path, subs[original]) == (0, 2)  # the blocks still hold it: archive
    h = _reopen(h, path)
    assert h.chain.store.prune_bodies(reveal_height + 1) >= 1  # now the blocks let go too
    with pytest.raises(DataPruned):
        h.chain.store.live.block(reveal_height)
    summary = h.chain.store.live.block_summary(reveal_height)
    assert summary is not None and summary.action_count == len(subs)
    assert jobs.get_global(h.state, job_id, 1) is not None  # state blobs stay
    h.chain.store.close()
    assert all(_refs(path, p) is None for p in subs.values())


def _run(path: Path, restart_at: int | None) -> tuple[bytes, list[bytes]]:
    h = Harness.create(path)
    steps = [
        lambda: _setup(h),
        lambda: _commit_and_close(h, 1, 1, _submissions(4)),
        lambda: _reveal_all(h, 1, 1, _submissions(4)),
        lambda: h.ok(OWNER, "aggregate", AggregateRound(1, 1, 0)),
    ]
    for i, step in enumerate(steps):
        if i == restart_at:
            h.chain.store.close()
            h = Harness(Chain(ChainStore(path), h.chain.genesis), h.nonces, h.time_ms)
        step()
    hashes = [
        header.hash()
        for header in (h.chain.store.live.header(n) for n in range(h.chain.head.height + 1))
        if header is not None
    ]
    h.chain.store.close()
    return h.chain.head.state_root, hashes


def test_roots_are_identical_with_and_without_a_restart_and_after_pruning(tmp_path: Path) -> None:
    root_a, hashes_a = _run(tmp_path / "a", None)
    root_b, hashes_b = _run(tmp_path / "b", 2)  # closed and reopened before the reveals
    assert root_a == root_b and hashes_a == hashes_b
    store = ChainStore(tmp_path / "b")
    store.prune_bodies(len(hashes_b))
    head = store.live.head_height()
    assert head is not None
    header = store.live.header(head)
    assert header is not None and header.state_root == root_a
    store.close()


def test_a_store_of_the_old_layout_is_refused_clearly(tmp_path: Path) -> None:
    path = tmp_path / "chain"
    Harness.create(path).chain.store.close()
    db = plyvel.DB(str(path))
    db.delete(b"meta/layout")
    db.close()
    with pytest.raises(LayoutMismatch, match="layout 1"):
        ChainStore(path)


def test_a_pruning_node_answers_410_serves_state_restarts_and_replay_says_pruned(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    h = Harness.create(data / "chain")
    job_id = _setup(h)
    subs = _submissions(5)
    _commit_and_close(h, job_id, 1, subs)
    reveal_height = _reveal_all(h, job_id, 1, subs)
    h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0))
    h.chain.store.close()
    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_text(json.dumps(h.chain.genesis.to_json()))
    args = ["--l1", "none", "--genesis", str(genesis_path), "--block-time-ms", "20"]
    node = NodeProcess(data, free_port(), [*args, "--prune", "--prune-depth", "2"]).start()
    try:
        client = node.client
        client.wait(client.send(key(1), "transfer", Transfer(pub(2), 1)))  # a block: pruning runs
        with pytest.raises(ApiError) as gone:
            client.block(reveal_height, full=True)
        assert gone.value.status == 410 and gone.value.code == "data_pruned"
        assert "pruned" in gone.value.detail
        assert client.block(reveal_height)["action_count"] == len(subs)  # the summary stays
        assert client.round(job_id, 1)["status"] == "aggregated"
        assert client.global_params(job_id, 1).shape == (PARAMS,)
        head = client.block("latest")
        assert len(client.block(head["height"], full=True)["actions"]) == 1  # recent: whole
        report = replay_from_node(node.url, Genesis.from_json(json.loads(genesis_path.read_text())))
        assert report["verdict"] == "inconclusive" and "pruned" in report["why"]
        node.kill()
        node = NodeProcess(data, node.port, [*args, "--prune", "--prune-depth", "2"]).start()
        assert node.client.block("latest")["height"] == head["height"]
        with pytest.raises(ApiError) as again:
            node.client.block(reveal_height, full=True)
        assert again.value.status == 410
    finally:
        node.kill()


def test_an_archive_node_serves_every_full_block_and_replays(tmp_path: Path) -> None:
    data = tmp_path / "data"
    h = Harness.create(data / "chain")
    job_id = _setup(h)
    subs = _submissions(6)
    _commit_and_close(h, job_id, 1, subs)
    _reveal_all(h, job_id, 1, subs)
    h.ok(OWNER, "aggregate", AggregateRound(job_id, 1, 0))
    h.chain.store.close()
    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_text(json.dumps(h.chain.genesis.to_json()))
    args = ["--l1", "none", "--genesis", str(genesis_path), "--block-time-ms", "20"]
    node = NodeProcess(data, free_port(), args).start()
    try:
        genesis = Genesis.from_json(json.loads(genesis_path.read_text()))
        report = replay_from_node(node.url, genesis)
        assert report["verdict"] == "match", report
    finally:
        node.kill()


def test_with_l1_a_node_prunes_what_l1_finalized_and_keeps_the_state(tmp_path: Path) -> None:
    genesis = Genesis(CHAIN_ID, 0, {pub(i): 10**21 for i in range(3)})
    genesis_path = tmp_path / "genesis.json"
    genesis_path.write_text(json.dumps(genesis.to_json()))
    args = ["--genesis", str(genesis_path), "--block-time-ms", "50", "--prune"]
    args += ["--challenge-window-s", "1", "--batch-interval-ms", "200"]
    node = NodeProcess(tmp_path / "data", free_port(), args).start(timeout=120)
    try:
        client = node.client
        init = np.random.default_rng(7).normal(0, 0.1, PARAMS).astype(np.float32)
        upload = client.wait(client.upload(key(OWNER), "digits", ARCH, init))
        height = int(upload["height"])
        deadline = time.monotonic() + 60
        while client.action(upload["hash"])["status"] != "finalized":
            assert time.monotonic() < deadline, "the upload's batch was not finalized"
            time.sleep(0.2)
        assert len(client.block(height, full=True)["actions"]) == 1  # final, not yet pruned
        client.wait(client.send(key(1), "transfer", Transfer(pub(2), 1)))  # pruning runs
        with pytest.raises(ApiError) as gone:
            client.block(height, full=True)
        assert gone.value.status == 410 and gone.value.code == "data_pruned"
        # The model is state: its blob stays, served as ever.
        served = client.model_params("digits")
        assert np.allclose(served, init, atol=2**-16)
        # A verifier gets no verdict on a pruned, finalized batch, and is told why.
        report = verify(node.url, None, None, genesis, None)
        assert report["verdict"] != "ok" and report["exit_code"] == EXIT_INCONCLUSIVE, report
        assert report["challenged"] == [] and report["wrong"] == [], report
        assert "data unavailable" in report["inconclusive"][0]["why"], report
    finally:
        node.kill()
