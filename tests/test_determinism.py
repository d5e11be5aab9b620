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
from tests.fl_harness import Harness, upload, open_job, stake, global_vector, f32, PARAMS
from tests.fl_harness import submit_round
from stf.jobs import AggregateRound
with tempfile.TemporaryDirectory() as tmp:
    h = Harness.create(Path(tmp))
    upload(h, 0)
    job = open_job(h, 0, rounds=4)
    clients = list(range(3, 16))
    stake(h, clients)
    for rnd in (1, 2, 3, 4):  # flippers strike and are slashed; colluders build a history
        g = global_vector(h, job, rnd - 1)
        direction = np.random.default_rng(rnd).normal(0, 0.01, PARAMS)
        shared = np.random.default_rng(99 + rnd).normal(0, 0.01, PARAMS)
        subs = []
        for i in clients:
            noise = np.random.default_rng(100 * rnd + i).normal(0, 0.003, PARAMS)
            if i in (11, 12):
                if rnd == 4:
                    continue  # slashed for repeated strikes in round 3: out of the job
                params = f32(g - 3 * direction + noise)
            elif i in (13, 14):
                params = f32(g + shared + noise / 3)
            else:
                params = f32(g + direction + noise)
            subs.append((i, params, 10 + i))
        submit_round(h, job, rnd, subs)
        r = h.do(0, "aggregate", AggregateRound(job, rnd, 0))
        assert r.ok
        if rnd == 3:
            event = dict(r.events)["RoundAggregated"]
            slashed = [d for d in event["decisions"] if d[1] == "slashed"]
            assert len(slashed) == 2, slashed
    print(h.chain.head.hash().hex(), h.chain.head.state_root.hex())
"""


# The history rules on a round of their own: one client against the kept clients' course
# past the strike bound, one against it mildly (excluded, no strike), two colluders.
HISTORY_SCRIPT = """
import hashlib
import numpy as np
from stf.aggregation import ClientHistory, Rules, Submission, decide_round
rng = np.random.default_rng(5)
d = 3000
g = rng.integers(-(2**14), 2**14, d).astype(np.int32)
step, course = rng.integers(-(2**9), 2**9, (2, d))
subs, history = [], {}
for i in range(12):
    client = bytes([i]) * 32
    x = g + step + rng.integers(-(2**7), 2**7, d)
    subs.append(Submission(client, x.astype(np.int32), 1 + i))
    own = rng.integers(-(2**9), 2**9, d)
    mild = -course // 2 + rng.integers(-(2**11), 2**11, d)
    c = {9: -course + own, 10: mild, 11: course + own // 50}.get(i, course + own)
    if i == 8:
        c = course + own // 50  # 8 and 11: one accumulated direction (colluders)
    history[client] = ClientHistory(0b10, 4, c.astype(np.int32))
out = decide_round(g, None, subs, 2, Rules(), 0, history)
reasons = [(d.reason, d.strike) for d in out.decisions]
assert ("opposed_history", True) in reasons and ("opposed_history", False) in reasons, reasons
assert ("colluding", True) in reasons or ("colluding", False) in reasons, reasons
digest = hashlib.sha256(repr(reasons).encode() + out.new_global.tobytes())
for client in sorted(out.history):
    h = out.history[client]
    digest.update(client + bytes([h.strikes, h.rounds]) + h.accumulated.tobytes())
print(digest.hexdigest())
"""


def _run(threads: str, script: str = SCRIPT) -> str:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": threads,
        "OPENBLAS_NUM_THREADS": threads,
        "MKL_NUM_THREADS": threads,
    }
    out = subprocess.run(
        [sys.executable, "-c", script],
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


def test_the_history_rules_decide_bit_identically_with_one_and_two_threads() -> None:
    one, two = _run("1", HISTORY_SCRIPT), _run("2", HISTORY_SCRIPT)
    assert one == two
    assert len(one) == 64
