"""The CLI against a real node: keygen, send (several actions, --wait), status, errors."""

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT, NodeProcess


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.ops.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_send_actions_and_status(node: NodeProcess, tmp_path: Path) -> None:
    alice, bob = tmp_path / "alice.json", tmp_path / "bob.json"
    assert _cli("keygen", "--dev", "0", "--out", str(alice)).returncode == 0
    bob_key = _cli("keygen", "--out", str(bob)).stdout.strip()
    out = _cli(
        "send",
        "transfer",
        "--key",
        str(alice),
        "--to",
        bob_key,
        "--amount",
        "10",
        "--wait",
        "--node",
        node.url,
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.split("\n", 1)[1])["status"] in (
        "executed",
        "committed",
        "finalized",
    )
    # the L2 path to a stake is gone: refused at the door (stake on L1 from the bound address)
    out = _cli("send", "stake", "--key", str(alice), "--amount", "7", "--wait", "--node", node.url)
    assert out.returncode != 0 and "stake_on_l1" in out.stdout + out.stderr
    address = "0x" + "cd" * 20
    out = _cli(
        "send", "bind_l1", "--key", str(alice), "--address", address, "--wait", "--node", node.url
    )
    assert out.returncode == 0, out.stderr
    out = _cli(
        "send",
        "transfer",
        "--key",
        str(bob),
        "--to",
        bob_key,
        "--amount",
        "100",
        "--wait",
        "--node",
        node.url,
    )
    assert out.returncode == 2  # a failed receipt: bob has 10
    assert json.loads(out.stdout.split("\n", 1)[1])["receipt"]["error"] == "insufficient_balance"
    out = _cli(
        "send",
        "withdraw",
        "--key",
        str(alice),
        "--amount",
        "3",
        "--recipient",
        "0x" + "ab" * 20,
        "--wait",
        "--node",
        node.url,
    )
    assert out.returncode == 0, out.stderr
    assert (
        _cli("send", "transfer", "--key", str(alice), "--node", node.url).returncode == 2
    )  # --to missing
    status = json.loads(_cli("status", "--account", bob_key, "--node", node.url).stdout)
    assert status["balance"] == "10"
    # An aggregate is never simulated at the door: the STF's failed receipt says why (exit 2).
    out = _cli(
        "send",
        "aggregate",
        "--key",
        str(alice),
        "--job",
        "99",
        "--round",
        "1",
        "--wait",
        "--node",
        node.url,
    )
    assert out.returncode == 2, out
    assert json.loads(out.stdout.split("\n", 1)[1])["receipt"]["error"] == "unknown_job"
