"""Fail-stop (issue 11): an exception other than InvalidAction in an action stops a real node
process before anything of its block is committed (exit 70, the action hash in the log and
in HALTED.json); a restart refuses to re-execute the action and names it; once the operator
removes the file (the software fixed), the action executes and nothing was lost."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from node.halt import HALT_EXIT_CODE, HALT_FILE
from node.sdk.client import ApiError, Client
from node.sdk.devkeys import dev_key
from rollup.codec import encode_action
from rollup.store import ChainStore
from stf.accounts import Transfer
from tests.conftest import ROOT, free_port

# A node whose `transfer` rule has a bug: amount 13 raises. Only the test starts it this way.
POISONED_NODE = """
import sys
from stf import actions

spec = actions.ACTIONS["transfer"]


def poisoned(state, action, block, effects):
    if action.payload.amount == 13:
        raise ZeroDivisionError("a bug in a rule")
    spec.process(state, action, block, effects)


actions.ACTIONS["transfer"] = actions.ActionSpec(
    spec.name, spec.fields, spec.payload_type, poisoned, spec.max_body_bytes
)
from node.ops.cli import main

sys.exit(main())
"""


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT)}
    with log.open("ab") as out:
        return subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env)


def _up(client: Client, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            client.health()
            return
        except (OSError, ApiError):
            time.sleep(0.05)
    raise TimeoutError(log.read_text())


@pytest.mark.parametrize("mode", ["--single-process", "--split-ingress"])
def test_poison_action_stops_the_node_commits_nothing_and_restart_refuses(
    tmp_path: Path, mode: str
) -> None:
    """Split: the executor (this process) halts; its ingress child stops with it."""
    data, port, log = tmp_path / "data", free_port(), tmp_path / "node.log"
    script = tmp_path / "poisoned_node.py"
    script.write_text(POISONED_NODE)
    args = ["run", "--data-dir", str(data), "--port", str(port), "--l1", "none"]
    args += ["--block-time-ms", "50", mode]
    proc = _start([sys.executable, str(script), *args], log)
    client = Client(f"http://127.0.0.1:{port}", timeout=30)
    try:
        _up(client, proc, log)
        alice, bob = dev_key(0), dev_key(1)
        to = bytes(dev_key(2).verify_key)
        client.execute(alice, "transfer", Transfer(to, 5))
        head = client.health()["head"]
        # One block: an honest transfer and the poison.
        wires = [
            encode_action(alice, client.chain_id, "transfer", 2, Transfer(to, 6)),
            encode_action(bob, client.chain_id, "transfer", 1, Transfer(to, 13)),
        ]
        results = client.submit_batch(wires)["results"]
        poison = results[1]["hash"]
        assert all("hash" in r for r in results), results
        assert proc.wait(timeout=60) == HALT_EXIT_CODE, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = log.read_text()
    assert "STF halt" in text and poison[2:] in text and "ZeroDivisionError" in text, text
    halted = json.loads((data / HALT_FILE).read_text())
    assert halted["hash"] == poison and halted["height"] == head["height"] + 1

    # Nothing of the block was committed.
    store = ChainStore(data / "chain")
    try:
        assert store.live.head_height() == head["height"]
        assert store.live.header(head["height"]).state_root.hex() == head["state_root"][2:]  # type: ignore[union-attr]
    finally:
        store.close()

    # A restart (even of fixed software) refuses to re-execute it silently: it names it.
    normal = [sys.executable, "-m", "node.ops.cli", *args]
    out = subprocess.run(normal, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == HALT_EXIT_CODE, out
    assert poison in out.stderr and "refusing to start" in out.stderr, out.stderr

    # The operator removes the file once the software is fixed: the action was never lost.
    (data / HALT_FILE).unlink()
    proc = _start(normal, log)
    try:
        _up(client, proc, log)
        status = client.wait(poison, timeout=30)
        assert status["status"] == "executed", status
        assert client.health()["head"]["height"] == head["height"] + 1
    finally:
        proc.kill()
        proc.wait()
