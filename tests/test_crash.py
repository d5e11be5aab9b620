"""Crash safety: SIGKILL the node while actions stream in, restart it on the same data dir,
and check that every acknowledged action executed exactly once and that an independent
replay in another process reaches the same state root."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from node.sdk.client import ApiError, Client
from node.sdk.devkeys import dev_key
from rollup.codec import encode_action
from stf.accounts import Transfer
from tests.conftest import ROOT, NodeProcess, free_port

SENDERS = [dev_key(i) for i in range(6)]


class Submitter(threading.Thread):
    """Streams transfers (single and batched) until the node dies; records what was acked."""

    def __init__(self, client: Client, start_nonces: dict[bytes, int]) -> None:
        super().__init__(daemon=True)
        self.client = client
        self.nonces = dict(start_nonces)
        self.acked: list[str] = []
        self.stop = threading.Event()

    def _next(self, key: SigningKey, to: SigningKey) -> bytes:
        pub = bytes(key.verify_key)
        nonce = self.nonces[pub]
        self.nonces[pub] = nonce + 1
        return encode_action(
            key, self.client.chain_id, "transfer", nonce, Transfer(bytes(to.verify_key), 1)
        )

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            key, to = SENDERS[i % len(SENDERS)], SENDERS[(i + 1) % len(SENDERS)]
            i += 1
            try:
                if i % 3 == 0:
                    wires = [self._next(key, to) for _ in range(50)]
                    result = self.client.submit_batch(wires)
                    self.acked += [
                        r["hash"] for r in result["results"] if r.get("status") == "accepted"
                    ]
                else:
                    self.acked.append(self.client.submit(self._next(key, to)))
            except (OSError, ApiError):
                return  # the node is gone; anything unacked may or may not have landed


def _next_nonces(client: Client) -> dict[bytes, int]:
    return {
        bytes(k.verify_key): int(client.account(bytes(k.verify_key))["next_nonce"]) for k in SENDERS
    }


def _recovered_count(log: str) -> int:
    match = re.search(r"recovered (\d+) accepted actions", log)
    return int(match.group(1)) if match else 0


def _wait_drained(client: Client, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while client.health()["pending_actions"]:
        assert time.monotonic() < deadline, "node never drained its mempool"
        time.sleep(0.05)


def test_sigkill_during_submission_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    extra = ["--block-time-ms", "150", "--l1", "none", "--single-process"]
    node = NodeProcess(tmp_path / "data", free_port(), extra)
    acked: list[str] = []
    recovered = 0
    try:
        for cycle in range(3):
            node.start()
            recovered += _recovered_count(node.log())
            client = Client(node.url)
            submitter = Submitter(client, _next_nonces(client))
            submitter.start()
            time.sleep(1.0 + 0.37 * cycle)  # kill at a different phase of the block cycle each time
            node.kill()
            submitter.join(timeout=30)
            acked += submitter.acked
        node.start()
        recovered += _recovered_count(node.log())
        check_exactly_once(node, acked, recovered)
    finally:
        node.kill()


def ingress_pid(node: NodeProcess) -> int:
    """The ingress child of a split node's executor process."""
    assert node.proc is not None
    children = Path(f"/proc/{node.proc.pid}/task/{node.proc.pid}/children").read_text().split()
    assert len(children) == 1, children
    return int(children[0])


def _gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":
            return True
        time.sleep(0.02)
    return False


@pytest.mark.parametrize("target", ["ingress", "executor"])
def test_sigkill_one_process_of_a_split_node_loses_and_duplicates_nothing(
    tmp_path: Path, target: str
) -> None:
    """--split-ingress: SIGKILL one of the two processes alone mid-load; the other stops by
    itself (fail-stop), and after a restart every acknowledged action executed exactly once."""
    extra = ["--block-time-ms", "150", "--l1", "none", "--split-ingress"]
    node = NodeProcess(tmp_path / "data", free_port(), extra)
    acked: list[str] = []
    recovered = 0
    try:
        for cycle in range(2):
            node.start()
            assert node.proc is not None
            recovered += _recovered_count(node.log())
            child = ingress_pid(node)
            client = Client(node.url)
            submitter = Submitter(client, _next_nonces(client))
            submitter.start()
            time.sleep(1.0 + 0.37 * cycle)
            if target == "ingress":
                os.kill(child, signal.SIGKILL)
                # The executor stops by itself rather than go on without its ingress.
                assert node.proc.wait(timeout=30) == 1, node.log()
            else:
                node.kill()
                assert _gone(child), "the ingress outlived its executor"
            submitter.join(timeout=30)
            acked += submitter.acked
        node.start()
        recovered += _recovered_count(node.log())
        check_exactly_once(node, acked, recovered)
    finally:
        node.kill()


def check_exactly_once(node: NodeProcess, acked: list[str], recovered: int) -> None:
    """Every acked action is in exactly one block, and an independent replay in another
    process reaches the node's state root."""
    client = Client(node.url)
    _wait_drained(client)
    # Proof that the kills hit acknowledged-but-unexecuted actions, not just idle nodes.
    assert recovered > 0

    head = int(client.health()["head"]["height"])
    included: Counter[str] = Counter()
    for height in range(1, head + 1):
        included.update(client.block(height)["action_hashes"])
    assert len(acked) > 300, f"the load was too light to prove anything ({len(acked)} acked)"
    duplicates = [h for h, n in included.items() if n > 1]
    assert duplicates == []
    missing = [h for h in acked if h not in included]
    assert missing == []
    statuses = Counter(client.action(h)["status"] for h in acked[:: max(1, len(acked) // 200)])
    assert set(statuses) == {"executed"}

    replay = subprocess.run(
        [sys.executable, "-m", "node.ops.cli", "replay", "--node", node.url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert replay.returncode == 0, replay.stdout + replay.stderr
    report = json.loads(replay.stdout)
    assert report["match"] is True
    assert report["height"] == head
    assert report["state_root"] == client.health()["head"]["state_root"]
