"""`fedrollup train` as separate participant processes: each stakes on L1 with its own key,
trains on its digits shard with torch each round, and finishes when the job completes. The L1
key comes from a keystore file (--l1-keystore), never from the command line."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from eth_account import Account
from nacl.signing import SigningKey

from l1_bridge.keystore import PASSWORD_ENV, write_keystore
from node.participant import fl
from node.sdk.devkeys import dev_key
from node.sdk.keys import write_key
from stf.actions import Propose, terms_to_tuple
from stf.aggregation import Rules
from stf.jobs import AggregateRound, JobTerms
from stf.models import Upload
from tests.conftest import ROOT, NodeProcess, free_port

ETH = 10**18
L1_PASSWORD = "trainer test"


def l1_keystore(tmp_path: Path, private_key: bytes) -> Path:
    """A participant's L1 account in a keystore (fast scrypt: tests only)."""
    path = tmp_path / f"l1-{Account.from_key(private_key).address}.json"
    write_keystore(path, Account.from_key(private_key), L1_PASSWORD, kdf="scrypt", iterations=2**10)
    return path


def test_three_trainer_processes_complete_a_job(tmp_path: Path) -> None:
    node = NodeProcess(tmp_path / "data", free_port(), ["--block-time-ms", "50"]).start()
    procs: list[subprocess.Popen[str]] = []
    try:
        client = node.client
        owner = dev_key(0)
        init = fl.initial_params("mlp", 0)
        arch = fl.model_arch(fl.make_model("mlp"))
        client.execute(
            owner, "upload", Upload("mlp", arch, init.astype("<f4").tobytes(), 16, 0, b"")
        )
        terms = JobTerms(2, 3, 3, 0, ETH, 1_000_000, 0, b"", 1, 5000, 10_000, 0, Rules())
        status = client.execute(
            owner, "propose", Propose("train", "mlp", 3 * ETH, 0, terms_to_tuple(terms))
        )
        job_id = next(e for e in status["receipt"]["events"] if e["name"] == "JobCreated")["data"][
            "job_id"
        ]
        for i in range(3):
            key_file = tmp_path / f"p{i}.json"
            write_key(key_file, SigningKey(bytes([40 + i]) * 32))
            cmd = [
                sys.executable,
                "-m",
                "node.ops.cli",
                "train",
                "--job",
                str(job_id),
                "--key",
                str(key_file),
                "--data",
                f"digits:{i}/3:0",
                "--node",
                node.url,
                "--l1-keystore",
                str(l1_keystore(tmp_path, bytes([70 + i]) * 32)),
                "--fund-from-dev",
            ]
            procs.append(
                subprocess.Popen(
                    cmd,
                    cwd=ROOT,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env={**os.environ, PASSWORD_ENV: L1_PASSWORD},
                )
            )
        for rnd in (1, 2):  # the owner closes the commits, then the reveals
            _wait_until(lambda r=rnd: len(client.round(job_id, r)["submissions"]) == 3, procs)
            client.execute(owner, "aggregate", AggregateRound(job_id, rnd, 0))
            _wait_until(
                lambda r=rnd: all(s["revealed"] for s in client.round(job_id, r)["submissions"]),
                procs,
            )
            client.execute(owner, "aggregate", AggregateRound(job_id, rnd, 0))
        reports = []
        for p in procs:
            out, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
            reports.append(json.loads(out.strip().splitlines()[-1]))
        assert all([r for r, _ in rep["rounds"]] == [1, 2] for rep in reports)
        assert all(
            reason in ("kept", "krum_excluded") for rep in reports for _, reason in rep["rounds"]
        )
        assert {rep["stake_left"] for rep in reports} == {str(ETH)}  # staked on L1, credited on L2
        assert client.job(job_id)["status"] == "completed"
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        node.kill()


def _wait_until(ready: Callable[..., bool], procs: list[subprocess.Popen[str]]) -> None:
    deadline = time.monotonic() + 120
    while not ready():
        assert time.monotonic() < deadline, [p.poll() for p in procs]
        time.sleep(0.2)
