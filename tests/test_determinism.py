"""Determinism across processes and thread counts: the same actions give bit-identical
state roots whether BLAS runs on one thread or two."""

import os
import subprocess
import sys

from tests.conftest import ROOT

SCRIPT = """
import tempfile
from pathlib import Path
import numpy as np
from tests.fl_harness import Harness, upload, open_job, stake, global_vector, f32, PARAMS, pub
from stf.jobs import SubmitParams, AggregateRound
with tempfile.TemporaryDirectory() as tmp:
    h = Harness.create(Path(tmp))
    upload(h, 0)
    job = open_job(h, 0, rounds=2)
    clients = list(range(3, 15))
    stake(h, clients)
    for rnd in (1, 2):
        g = global_vector(h, job, rnd - 1)
        direction = np.random.default_rng(rnd).normal(0, 0.01, PARAMS)
        subs = []
        for i in clients:
            noise = np.random.default_rng(100 * rnd + i).normal(0, 0.003, PARAMS)
            sign = -3 if i in (11, 12) else 1
            params = f32(g + sign * direction + noise)
            subs.append((i, "submit", SubmitParams(job, rnd, params, 10 + i)))
        h.block(subs)
        assert h.do(0, "aggregate", AggregateRound(job, rnd, 0)).ok
    print(h.chain.head.hash().hex(), h.chain.head.state_root.hex())
"""


def _run(threads: str) -> str:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_two_fl_rounds_are_bit_identical_with_one_and_two_threads() -> None:
    one, two = _run("1"), _run("2")
    assert one == two
    assert len(one.split()) == 2
