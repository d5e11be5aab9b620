"""`fedrollup verify` against a node with its embedded L1: an honest node's batches verify;
a wrong root committed to L1 is found and challenged, and its batch stops finalizing."""

import json
import os
import subprocess
import sys
import time
from itertools import pairwise
from pathlib import Path
from typing import Any

from web3 import Web3

from l1_bridge.contracts import Deployment
from node.ops.verify import Verifier
from node.sdk.client import Client
from node.sdk.devkeys import dev_genesis, dev_key
from node.sdk.wallet import connect
from stf.accounts import Transfer
from stf.identity import BindL1
from tests.conftest import ROOT, NodeProcess, free_port
from tests.l1_helpers import embedded_challenger_keystore


def _verify(url: str, *extra: str, env: dict[str, str] | None = None) -> tuple[int, dict]:  # type: ignore[type-arg]
    out = subprocess.run(
        [sys.executable, "-m", "node.ops.cli", "verify", "--node", url, *extra],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


def _wait(check, timeout: float = 60, what: object = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what() if callable(what) else what}"
        time.sleep(0.2)


def test_verify_passes_honest_batches_and_challenges_a_wrong_root(tmp_path: Path) -> None:
    node = NodeProcess(
        tmp_path / "data",
        free_port(),
        ["--block-time-ms", "50", "--challenge-window-s", "600", "--batch-interval-ms", "200"],
    ).start()
    try:
        client = Client(node.url)
        w3, dep = connect(node.url)
        key = bytes(dev_key(7).verify_key)
        # the key names the depositor's L1 address first (a deposit from another is refunded)
        client.execute(dev_key(7), "bind_l1", BindL1(bytes.fromhex(w3.eth.accounts[5][2:])))
        tx = dep.inbox.functions.deposit(key).transact(
            {"from": w3.eth.accounts[5], "value": 10**18}
        )
        w3.eth.wait_for_transaction_receipt(tx)
        _wait(lambda: int(client.account(key)["balance"]) >= 10**24 + 10**18)
        for i in range(3):
            client.execute(dev_key(0), "transfer", Transfer(key, 1 + i))
        _wait(
            lambda: (
                all(b["status"] == "committed" for b in client._get("/v1/batches")["batches"])
                and len(client._get("/v1/batches")["batches"]) >= 1
            ),
            what=lambda: client._get("/v1/batches")["batches"],
        )
        code, report = _verify(node.url)
        assert code == 0 and report["ok"] and report["wrong"] == [], json.dumps(report)
        committed = int(dep.inbox.functions.nextBatchIndex().call())
        assert report["verified"] == list(range(committed))
        assert report["l1_head"]["tag"] == "latest"
        _verify_in_windows_of_two_blocks(w3, dep, node.url, tmp_path, committed)
        _challenging_needs_a_challenger_keystore(node.url, tmp_path)

        # A proposer key gone rogue commits a root no replay supports.
        prev = bytes(dep.inbox.functions.committedOutputRoot(committed - 1).call())
        bogus = Web3.keccak(text="not a real state")
        sent = int(dep.inbox.functions.messageCount().call())
        tx = dep.inbox.functions.commitBatch(committed, prev, bogus, bogus, sent).transact(
            {"from": w3.eth.accounts[0]}
        )
        w3.eth.wait_for_transaction_receipt(tx)
        store, env = embedded_challenger_keystore(tmp_path)
        code, report = _verify(
            node.url, "--challenge", "--challenger-keystore", str(store), env=env
        )
        # The node has no data for that root: withheld data (exit 5), challenged all the same.
        assert code == 5 and report["verdict"] == "data_withheld", report
        assert [w["index"] for w in report["withheld"]] == [committed] and report["challenged"] == [
            committed
        ]
        assert int(dep.inbox.functions.frozenFrom().call()) == committed
        assert not dep.inbox.functions.isFinalized(committed).call()
        assert report["verified"] == list(range(committed))
    finally:
        node.kill()


class _RecordingVerifier(Verifier):
    """Notes the block range of every eth_getLogs call it makes."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ranges: dict[str, list[tuple[int, int]]] = {}

    def get_logs(self, event_name: str, first: int, last: int) -> list[Any]:
        self.ranges.setdefault(event_name, []).append((first, last))
        return super().get_logs(event_name, first, last)


def _verify_in_windows_of_two_blocks(
    w3: Web3, dep: Deployment, url: str, tmp: Path, committed: int
) -> None:
    """The verifier reads L1 logs like the watcher: windows of at most 2 blocks here, tiling
    the deployment block .. the head with no gap, and it reaches the same verdict."""
    verifier = _RecordingVerifier(url, w3, dep, dev_genesis(), tmp / "windows", log_window=2)
    try:
        report = verifier.run(None)
    finally:
        verifier.close()
    assert report.verdict == "ok" and report.verified == list(range(committed))
    head = report.l1_head["block"]
    assert head - dep.block_number > 4  # several windows were needed
    for ranges in verifier.ranges.values():
        assert all(last - first + 1 <= 2 for first, last in ranges), ranges
        assert ranges[0][0] == dep.block_number and ranges[-1][1] == head
        assert all(b[0] == a[1] + 1 for a, b in pairwise(ranges)), ranges
    assert set(verifier.ranges) == {"BatchCommitted", "MessageSent"}


def _challenging_needs_a_challenger_keystore(url: str, tmp: Path) -> None:
    """--challenge without a keystore, or with one whose account lacks the role: exit 2."""
    out = subprocess.run(
        [sys.executable, "-m", "node.ops.cli", "verify", "--node", url, "--challenge"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 2 and "--challenger-keystore" in out.stderr, out.stderr
    store, env = embedded_challenger_keystore(tmp, index=5)  # a dev account, no role
    out = subprocess.run(
        [
            *(sys.executable, "-m", "node.ops.cli", "verify", "--node", url, "--challenge"),
            *("--challenger-keystore", str(store)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert out.returncode == 2 and "CHALLENGER_ROLE" in out.stderr, out.stderr
