"""`fedrollup verify` verdicts (issue 11): it tells data withheld (exit 5) from a wrong root
(exit 4, see test_verify.py) and from its own trouble (exit 6: the node's 5xx, an answer it
cannot decode); it challenges a wrong root or a committed root whose data the node refuses,
never sealed data and never because of its own error.

The verifier is pointed at a small stand-in for the node that serves `/v1/batches/{i}?full=1`
in one of several broken ways (or passes it through), while L1 is the node's real embedded
L1; so every verdict is about the same, honest, committed batches."""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from node.ops.verify import EXIT_INCONCLUSIVE, EXIT_OK, EXIT_WITHHELD
from node.sdk.client import Client
from node.sdk.devkeys import dev_key
from node.sdk.wallet import connect
from stf.accounts import Transfer
from tests.conftest import ROOT, NodeProcess, free_port
from tests.l1_helpers import embedded_challenger_keystore


class _StandIn:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "proxy"
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:
                mode = standin.mode
                if mode == "500":
                    return self._send(500, b'{"error": "internal_error", "detail": "boom"}')
                if mode == "garbage":
                    return self._send(200, b"<html>not json")
                if mode == "404":
                    return self._send(404, b'{"error": "unknown_batch", "detail": "gone"}')
                with urllib.request.urlopen(standin.upstream + self.path, timeout=60) as resp:
                    body = json.loads(resp.read())
                if mode == "truncated":
                    body.pop("blocks", None)
                if mode == "sealed":
                    for b in body.get("blocks", []):
                        b["actions"] = [None for _ in b["actions"]]
                return self._send(200, json.dumps(body).encode())

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    tmp = tmp_path_factory.mktemp("verdicts")
    args = ["--block-time-ms", "50", "--challenge-window-s", "600", "--batch-interval-ms", "200"]
    proc = NodeProcess(tmp / "data", free_port(), args).start()
    client = Client(proc.url)
    to = bytes(dev_key(7).verify_key)
    for i in range(3):
        client.execute(dev_key(0), "transfer", Transfer(to, 1 + i))
        time.sleep(0.3)  # spread over blocks with a transaction each (sealed mode needs them)
    deadline = time.monotonic() + 90
    while True:
        batches = client._get("/v1/batches")["batches"]
        head = int(client.block("latest")["height"])
        committed = batches and all(b["status"] == "committed" for b in batches)
        if committed and batches[-1]["last_height"] >= head:
            break
        assert time.monotonic() < deadline, batches
        time.sleep(0.2)
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def standin(node: NodeProcess) -> Iterator[_StandIn]:
    s = _StandIn(node.url)
    yield s
    s.close()


def _verify(standin: _StandIn, node: NodeProcess, tmp: Path) -> tuple[int, dict[str, Any]]:
    deployment = tmp / "deployment.json"
    with urllib.request.urlopen(node.url + "/v1/l1/deployment", timeout=30) as resp:
        deployment.write_bytes(resp.read())
    cmd = [sys.executable, "-m", "node.ops.cli", "verify", "--node", standin.url]
    cmd += ["--l1-rpc", node.url + "/l1", "--deployment", str(deployment), "--challenge"]
    store, env = embedded_challenger_keystore(tmp)
    cmd += ["--challenger-keystore", str(store)]
    out = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, **env}
    )
    assert out.stdout, out.stderr
    return out.returncode, json.loads(out.stdout)


@pytest.mark.parametrize(
    ("mode", "code", "verdict"),
    [
        ("proxy", EXIT_OK, "ok"),
        ("500", EXIT_INCONCLUSIVE, "inconclusive"),
        ("garbage", EXIT_INCONCLUSIVE, "inconclusive"),
        ("truncated", EXIT_INCONCLUSIVE, "inconclusive"),
        ("sealed", EXIT_WITHHELD, "data_withheld"),
        ("404", EXIT_WITHHELD, "data_withheld"),  # last: it challenges batch 0
    ],
)
def test_verify_verdicts_and_no_challenge_on_its_own_error(
    node: NodeProcess, standin: _StandIn, tmp_path: Path, mode: str, code: int, verdict: str
) -> None:
    _, dep = connect(node.url)
    frozen_before = int(dep.inbox.functions.frozenFrom().call())
    standin.mode = mode
    got, report = _verify(standin, node, tmp_path)
    assert (got, report["verdict"], report["exit_code"]) == (code, verdict, code), report
    assert report["wrong"] == [], report
    if mode == "404":  # refused data for a committed root: challenged, as unverifiable
        assert report["challenged"] == [0], report
        assert int(dep.inbox.functions.frozenFrom().call()) == 0
        return
    assert report["challenged"] == [], report
    assert int(dep.inbox.functions.frozenFrom().call()) == frozen_before
    if verdict == "ok":
        assert report["verified"] == list(range(int(dep.inbox.functions.nextBatchIndex().call())))
    else:
        assert report["withheld"] or report["inconclusive"], report
