"""How fast a fresh follower catches up: a sequencer (no L1) executes SENDERS x 1,000
transfers, then a follower starts on an empty data dir; prints the seconds until it answers
and until it holds the sequencer's head, as JSON.

    .venv/bin/python scripts/follower_catchup.py [SENDERS]
"""

import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from node.cli_util import free_port, node_command
from node.sdk.client import Client
from node.sdk.devkeys import dev_key
from rollup.codec import encode_action
from stf.accounts import Transfer

PER_SENDER = 1000


def health(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url + "/v1/health", timeout=30) as resp:
        body: dict[str, Any] = json.loads(resp.read())
    return body


def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    while proc.poll() is None:
        try:
            health(url)
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"node at {url} exited with {proc.returncode}")


def load(url: str, senders: int) -> dict[str, Any]:
    client = Client(url, timeout=120)
    to = bytes(dev_key(9).verify_key)
    for k in range(senders):
        wires = [
            encode_action(dev_key(k), client.chain_id, "transfer", n, Transfer(to, 1))
            for n in range(1, PER_SENDER + 1)
        ]
        assert client.submit_batch(wires)["accepted"] == PER_SENDER
    while client.health()["pending_actions"]:
        time.sleep(0.2)
    head: dict[str, Any] = client.health()["head"]
    return head


def main(senders: int) -> None:
    with tempfile.TemporaryDirectory(prefix="fedrollup-catchup-") as tmp:
        seq_port, follower_port = free_port(), free_port()
        seq_url, follower_url = (f"http://127.0.0.1:{p}" for p in (seq_port, follower_port))
        procs = [subprocess.Popen(node_command(str(Path(tmp) / "seq"), seq_port, "--l1", "none"))]
        try:
            wait_up(seq_url, procs[0])
            head = load(seq_url, senders)
            started = time.monotonic()
            procs.append(
                subprocess.Popen(
                    node_command(str(Path(tmp) / "f"), follower_port, "--follow", seq_url)
                )
            )
            wait_up(follower_url, procs[1])
            up = time.monotonic()
            while health(follower_url)["head"] != head:
                time.sleep(0.05)
            done = time.monotonic()
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(timeout=60)
    transfers = senders * PER_SENDER
    result = {
        "blocks": head["height"],
        "transfers": transfers,
        "follower_up_s": round(up - started, 2),
        "catch_up_s": round(done - up, 2),
        "transfers_per_s": round(transfers / (done - up)),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 8)
