"""Followers (`fedrollup run --follow URL`): real processes over real loopback HTTP.

A sequencer under a stream of transfers (several senders, one at a time and in batches) and
a model upload, two followers that re-execute and check every block; the sequencer is then
SIGKILLed and both followers keep serving the same head and state root as each other and as
the sequencer's last head, with account proofs that verify against it, and `fedrollup
replay` against a follower matches. A fake sequencer that serves one tampered block makes a
follower stop (exit 3, DIVERGED.json, a log line, a metric) before committing anything."""

import asyncio
import json
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from node.config import NodeConfig
from node.core.follower import DIVERGED_EXIT_CODE, Follower, divergence_path
from node.core.service import Node
from node.sdk.client import SUCCESS_STATUSES, Client, verify_state_read
from node.sdk.devkeys import dev_genesis, dev_key
from rollup.block import hexb
from rollup.chain import Chain
from rollup.codec import decode_action, encode_action
from rollup.store import BlockRecord, ChainStore
from stf.accounts import Transfer
from tests.conftest import ROOT, NodeProcess, free_port

SENDERS = 4  # dev keys 0..3 send one transfer per request
TRANSFERS_PER_SENDER = 40
BATCH_SENDER = 4  # dev key 4 sends pre-signed batches
BATCHES, BATCH_SIZE = 4, 100
RECIPIENT = bytes(dev_key(9).verify_key)


def _send_stream(url: str, index: int, errors: list[BaseException]) -> None:
    client = Client(url, timeout=30)
    try:
        for i in range(TRANSFERS_PER_SENDER):
            client.send(dev_key(index), "transfer", Transfer(to=RECIPIENT, amount=1000 + i))
    except BaseException as exc:  # reported by the test thread
        errors.append(exc)


def _wait_until(what: str, check: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _post_status(url: str, body: bytes) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(
        url, data=body, method="POST", headers={"Content-Type": "application/msgpack"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_two_followers_track_a_loaded_sequencer_and_outlive_it(
    tmp_path: Path, node_factory: type[NodeProcess]
) -> None:
    # The sequencer with its embedded L1, cutting a batch every 300 ms; all three start at once
    # (a follower that finds no sequencer yet retries).
    seq = node_factory(
        tmp_path / "seq", free_port(), ["--block-time-ms", "50", "--batch-interval-ms", "300"]
    )
    follow = ["--follow", seq.url, "--follow-poll-ms", "50"]
    followers = [node_factory(tmp_path / f"follower{i}", free_port(), follow) for i in range(2)]
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(_start, [seq, *followers]))
    client = seq.client
    chain_id = client.chain_id

    # Load: four senders one transfer per request, a fifth in batches, and one model upload.
    errors: list[BaseException] = []
    threads = [
        threading.Thread(target=_send_stream, args=(seq.url, i, errors)) for i in range(SENDERS)
    ]
    for t in threads:
        t.start()
    nonce = 0
    for _ in range(BATCHES):
        wires = []
        for _ in range(BATCH_SIZE):
            nonce += 1
            payload = Transfer(to=RECIPIENT, amount=7)
            wires.append(encode_action(dev_key(BATCH_SENDER), chain_id, "transfer", nonce, payload))
        assert client.submit_batch(wires)["accepted"] == BATCH_SIZE
    upload = client.upload(
        dev_key(5), "follow-mlp", (("w", (4, 3)),), np.arange(12, dtype=np.float32), artifact=b"x"
    )
    withdrawal = client.withdraw(dev_key(6), 10**15, "0x" + "ab" * 20)  # a settlement record
    # Mid-load, a follower serves reads and refuses writes, naming its sequencer.
    assert followers[0].client.health()["role"] == "follower"
    wire = encode_action(dev_key(6), chain_id, "transfer", 1, Transfer(to=RECIPIENT, amount=1))
    for path in ("/v1/actions", "/v1/actions/batch"):
        status, body = _post_status(followers[0].url + path, wire)
        assert status == 421 and body["error"] == "read_only_follower", body
        assert seq.url in body["detail"]
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert client.wait(upload)["status"] in SUCCESS_STATUSES  # executed, maybe committed already
    _wait_until("the sequencer's mempool to drain", lambda: client.health()["pending_actions"] == 0)

    last = client.health()["head"]
    assert last["height"] > 5
    watched = [bytes(dev_key(i).verify_key) for i in range(BATCH_SENDER + 1)] + [RECIPIENT]
    seq_accounts = {k: client.account(k) for k in watched}
    seq_model = client.model("follow-mlp")
    for f in followers:
        _wait_until(f"{f.url} to catch up", _head_is(f.client, last))

    # Batches: a follower serves the sequencer's committed batches, re-derived from its own
    # blocks, and `fedrollup verify` against the follower (L1: the sequencer's embedded one)
    # replays every committed batch to the output root L1 holds.
    _wait_until("a committed batch up to the head", _batched_up_to(client, last["height"]))
    _wait_until("follower 0 to mirror the batches", _same_batches(client, followers[0].client))
    record_id = client.action(withdrawal)["receipt"]["records"][0]["record_id"]
    seq_proof = client._get(f"/v1/settlements/{record_id}/proof")
    follower_proof = followers[0].client._get(f"/v1/settlements/{record_id}/proof")
    for field in ("output_root", "record", "proof"):
        assert follower_proof[field] == seq_proof[field]
    verify = subprocess.run(
        [*_cli("verify", "--node", followers[0].url), "--l1-rpc", seq.url + "/l1"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    verdict = json.loads(verify.stdout)
    assert verdict["verdict"] == "ok" and verdict["verified"], verdict

    seq.kill()

    for f in followers:
        _wait_until(f"{f.url} to see the sequencer gone", _sequencer_gone(f.client))
        health = f.client.health()
        assert health["head"] == last, (health, last)
        assert health["sequencer"]["last_error"]
        root = bytes.fromhex(last["state_root"][2:])
        for key in watched:
            read = f.client.account(key)
            assert verify_state_read(read, expected_root=root), read
            assert read["balance"] == seq_accounts[key]["balance"]
            assert read["nonce"] == seq_accounts[key]["nonce"]
        assert f.client.model("follow-mlp") == seq_model
        assert f.client.action(upload)["status"] == "executed"
        metrics = _get_text(f.url + "/metrics")
        assert f"fedrollup_follower_verified_blocks_total {float(last['height'])}" in metrics
        assert "fedrollup_follower_sequencer_reachable 0.0" in metrics
        assert "fedrollup_follower_divergences_total 0.0" in metrics
    total_sent = SENDERS * TRANSFERS_PER_SENDER + BATCHES * BATCH_SIZE
    assert int(followers[0].client.account(RECIPIENT)["nonce"]) == 0
    assert sum(int(seq_accounts[bytes(dev_key(i).verify_key)]["nonce"]) for i in range(5)) == (
        total_sent
    )

    # Anyone can re-check a follower: `fedrollup replay` against it matches, to the same root.
    replay = subprocess.run(
        _cli("replay", "--node", followers[1].url),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 0, replay.stderr
    report = json.loads(replay.stdout)
    assert report["match"] and report["state_root"] == last["state_root"], report

    # A restarted follower resumes from its own LevelDB (its sequencer is gone).
    followers[0].kill()
    restarted = node_factory(followers[0].data_dir, free_port(), follow).start(timeout=60)
    assert restarted.client.health()["head"] == last


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "node.ops.cli", *args]


def _start(node: NodeProcess) -> NodeProcess:
    return node.start(timeout=90)


def _batches(client: Client) -> list[dict[str, Any]]:
    return list(client._get("/v1/batches")["batches"])


def _batched_up_to(client: Client, height: int) -> Callable[[], bool]:
    def check() -> bool:
        batches = _batches(client)
        return (
            bool(batches)
            and batches[-1]["last_height"] == height
            and all(b["status"] in ("committed", "finalized") for b in batches)
        )

    return check


def _same_batches(seq: Client, follower: Client) -> Callable[[], bool]:
    """The same batches, roots and ranges (their L1 status may move between the two reads)."""

    def check() -> bool:
        ours = [{k: v for k, v in b.items() if k != "status"} for b in _batches(follower)]
        theirs = [{k: v for k, v in b.items() if k != "status"} for b in _batches(seq)]
        return ours == theirs

    return check


def _head_is(client: Client, head: dict[str, Any]) -> Callable[[], bool]:
    return lambda: bool(client.health()["head"] == head)


def _sequencer_gone(client: Client) -> Callable[[], bool]:
    return lambda: not client.health()["sequencer"]["reachable"]


def _get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return str(resp.read().decode())


# -- a fake sequencer that serves one tampered block ---------------------------------------


class FakeSequencer:
    """A minimal HTTP server on loopback answering the two routes a follower reads."""

    def __init__(self, routes: dict[str, dict[str, Any]]) -> None:
        self.routes = routes
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                body = fake.routes.get(self.path)
                payload = json.dumps(body if body is not None else {"error": "not_found"})
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload.encode())

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @contextmanager
    def running(self) -> Iterator["FakeSequencer"]:
        thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self.server.shutdown()
            self.server.server_close()


def _block_json(record: BlockRecord) -> dict[str, Any]:
    """What GET /v1/blocks/{h}?full=1 answers (node/server/app.py get_block)."""
    body = record.header.to_json()
    body["action_count"] = len(record.actions)
    body["action_hashes"] = [hexb(r.action_hash) for r in record.receipts]
    body["actions"] = [hexb(a) for a in record.actions]
    body["l1_messages"] = [hexb(m) for m in record.l1_messages]
    body["receipts"] = [r.to_json() for r in record.receipts]
    return body


def _honest_block_one(workdir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """A real block 1 (two transfers) executed by the real chain, and its sequencer health."""
    genesis = dev_genesis()
    store = ChainStore(workdir)
    try:
        chain = Chain(store, genesis)
        actions = [
            decode_action(
                encode_action(dev_key(i), genesis.chain_id, "transfer", 1, Transfer(RECIPIENT, 5)),
                genesis.chain_id,
            )
            for i in range(2)
        ]
        executed = chain.execute(actions, 1_000)
        chain.commit(executed, 0)
        block = _block_json(executed.record)
    finally:
        store.close()
    return block, _health(genesis.chain_id, hexb(genesis.hash()), block)


def _health(chain_id: int, genesis_hash: str, block: dict[str, Any]) -> dict[str, Any]:
    return {
        "status": "ok",
        "chain_id": chain_id,
        "genesis_hash": genesis_hash,
        "head": {"height": block["height"], "hash": block["hash"]},
    }


def _rehash(block: dict[str, Any]) -> None:
    """A careful liar: the served hash is the hash of the tampered header."""
    from node.core.follower import header_from_json

    block["hash"] = hexb(header_from_json(block).hash())


def _tamper_state_root(block: dict[str, Any], health: dict[str, Any]) -> None:
    block["state_root"] = "0x" + "11" * 32
    _rehash(block)
    health["head"]["hash"] = block["hash"]


def _tamper_actions(block: dict[str, Any], health: dict[str, Any]) -> None:
    """Another validly signed action than the header's actions root commits to."""
    other = encode_action(dev_key(3), 1337, "transfer", 1, Transfer(RECIPIENT, 5))
    block["actions"][1] = hexb(other)


def _tamper_parent(block: dict[str, Any], health: dict[str, Any]) -> None:
    block["parent_hash"] = "0x" + "22" * 32
    _rehash(block)
    health["head"]["hash"] = block["hash"]


def _tamper_hash(block: dict[str, Any], health: dict[str, Any]) -> None:
    block["receipts_root"] = "0x" + "33" * 32  # and the served hash left as it was


def _tamper_height(block: dict[str, Any], health: dict[str, Any]) -> None:
    block["height"] = 2
    _rehash(block)


def _tamper_genesis(block: dict[str, Any], health: dict[str, Any]) -> None:
    health["genesis_hash"] = "0x" + "44" * 32


def _tamper_history(block: dict[str, Any], health: dict[str, Any]) -> None:
    """The sequencer's head is height 0 again, with another hash than the one verified."""
    health["head"] = {"height": 0, "hash": "0x" + "55" * 32}


TAMPERINGS: dict[str, tuple[Callable[[dict[str, Any], dict[str, Any]], None], str]] = {
    "state_root": (_tamper_state_root, "state_root"),
    "actions": (_tamper_actions, "actions_root"),
    "parent_hash": (_tamper_parent, "parent_hash"),
    "inconsistent_hash": (_tamper_hash, "does not hash to the served block hash"),
    "height": (_tamper_height, "asked for block 1, served block 2"),
    "genesis": (_tamper_genesis, "genesis_hash"),
    "rewritten_history": (_tamper_history, "hash"),
}


def _routes(block: dict[str, Any], health: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"/v1/health": health, "/v1/blocks/1?full=1": block}


@pytest.mark.parametrize("kind", sorted(TAMPERINGS))
def test_follower_stops_on_a_block_its_replay_does_not_reproduce(tmp_path: Path, kind: str) -> None:
    """In process, the follower's own loop against a fake sequencer over loopback HTTP: it
    stops, counts the divergence, records which field, and commits nothing."""
    tamper, field = TAMPERINGS[kind]  # a header field named, or words of the reason
    block, health = _honest_block_one(tmp_path / "source")
    tamper(block, health)
    config = replace(NodeConfig(), data_dir=tmp_path / "follower", l1="none")
    stopped: list[bool] = []

    async def follow(url: str) -> Node:
        node = Node(config, dev_genesis())
        node.on_halt = lambda: stopped.append(True)
        follower = Follower(node, url, poll_ms=20)
        try:
            await asyncio.wait_for(follower.run(), timeout=30)
        finally:
            await follower.close()
            await node.close()
        assert follower.status.stopped is not None
        return node

    with FakeSequencer(_routes(block, health)).running() as fake:
        node = asyncio.run(follow(fake.url))
    assert stopped == [True]
    assert "fedrollup_follower_divergences_total 1.0" in node.metrics.render()
    assert "fedrollup_follower_verified_blocks_total 0.0" in node.metrics.render()
    record = json.loads(divergence_path(config.data_dir).read_text())
    assert record["sequencer"] == fake.url
    assert field in record["fields"] or field in record["reason"], record
    store = ChainStore(config.data_dir / "chain")
    try:
        assert store.live.head_height() == 0  # nothing of the tampered block was committed
    finally:
        store.close()


def test_an_honest_fake_block_is_followed(tmp_path: Path) -> None:
    """The control for the tamperings above: the same untampered block is committed."""
    block, health = _honest_block_one(tmp_path / "source")
    config = replace(NodeConfig(), data_dir=tmp_path / "follower", l1="none")

    async def follow(url: str) -> tuple[str, int]:
        node = Node(config, dev_genesis())
        follower = Follower(node, url, poll_ms=20)
        task = asyncio.create_task(follower.run())
        try:
            for _ in range(500):
                if node.chain.head.height == 1:
                    break
                await asyncio.sleep(0.02)
            return hexb(node.chain.head.hash()), follower.status.verified_blocks
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await follower.close()
            await node.close()

    with FakeSequencer(_routes(block, health)).running() as fake:
        head_hash, verified = asyncio.run(follow(fake.url))
    assert head_hash == block["hash"] and verified == 1

    # Its data dir is a follower's: `run` without --follow refuses it rather than sequence.
    sequencer = subprocess.run(
        _cli("run", "--data-dir", str(config.data_dir), "--l1", "none", "--port", str(free_port())),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sequencer.returncode == 2, sequencer.stderr
    assert f"a follower of {fake.url}" in sequencer.stderr


def test_follower_process_exits_3_and_refuses_to_restart_after_a_divergence(
    tmp_path: Path,
) -> None:
    block, health = _honest_block_one(tmp_path / "source")
    _tamper_state_root(block, health)
    data_dir = tmp_path / "follower"
    with FakeSequencer(_routes(block, health)).running() as fake:
        cmd = [
            sys.executable,
            "-m",
            "node.ops.cli",
            "run",
            "--data-dir",
            str(data_dir),
            "--port",
            str(free_port()),
            "--follow",
            fake.url,
        ]
        first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert first.returncode == DIVERGED_EXIT_CODE, first.stderr
        assert "FOLLOWER STOPPED" in first.stderr and "state_root" in first.stderr
        assert json.loads(divergence_path(data_dir).read_text())["height"] == 1
        again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == DIVERGED_EXIT_CODE
    assert "refusing to start" in again.stderr and "state_root" in again.stderr


# -- batches: mirrored only when they re-derive from the verified blocks --------------------

INBOX = "0x" + "66" * 20


def _batch_claim(block_dir: Path, output_root: str | None = None) -> dict[str, Any]:
    """Batch 0 over block 1 as the sequencer's poster builds it (or with another root)."""
    from l1_bridge.batches import build_batch, genesis_output_root
    from node.core.follower_batches import batch_fields

    store = ChainStore(block_dir)
    try:
        genesis, block = store.live.block(0), store.live.block(1)
        assert genesis is not None and block is not None
        built = build_batch(0, genesis_output_root(genesis), [block], 1337, INBOX)
    finally:
        store.close()
    claim: dict[str, Any] = {"index": 0, "status": "committed", **batch_fields(built)}
    claim["first_height"], claim["last_height"] = 1, 1
    if output_root is not None:
        claim["output_root"] = output_root
    return claim


@pytest.mark.parametrize("honest", [True, False])
def test_follower_serves_a_batch_only_if_it_rederives(tmp_path: Path, honest: bool) -> None:
    block, health = _honest_block_one(tmp_path / "source")
    claim = _batch_claim(tmp_path / "source", None if honest else "0x" + "77" * 32)
    routes = _routes(block, health)
    routes["/v1/l1/deployment"] = {"chainId": 1337, "contracts": {"RollupInbox": INBOX}}
    routes["/v1/batches"] = {"batches": [claim]}
    config = replace(NodeConfig(), data_dir=tmp_path / "follower", l1="none")

    async def follow(url: str) -> tuple[int, str | None, str | None, int | None, str]:
        node = Node(config, dev_genesis())
        follower = Follower(node, url, poll_ms=20)
        task = asyncio.create_task(follower.run())
        mirror = follower.batches
        try:
            for _ in range(500):
                if node.chain.head.height == 1 and (mirror.book.last() or mirror.stopped_at == 0):
                    break
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.2)  # a few more polls: nothing changes
            kept = mirror.book.get(0)
            return (
                node.chain.head.height,
                follower.status.stopped,
                None if kept is None else hexb(kept.output_root),
                mirror.stopped_at,
                node.metrics.render(),
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await follower.close()
            await node.close()

    with FakeSequencer(routes).running() as fake:
        height, stopped, kept_root, stopped_at, metrics = asyncio.run(follow(fake.url))
    assert height == 1 and stopped is None  # blocks are followed either way
    mismatches = "fedrollup_follower_batch_mismatches_total"
    if honest:
        assert kept_root == claim["output_root"] and stopped_at is None
        assert f"{mismatches} 0.0" in metrics
    else:
        assert kept_root is None and stopped_at == 0
        assert f"{mismatches} 1.0" in metrics
