"""`fedrollup bench storage --quick` and `bench restart --quick` as smoke tests. The storage
ratios are asserted (they are sizes, not speeds); the restart time is not (the machine is
shared), only that the node came up on the data dir and answered both reads."""

import json
import subprocess
import sys

from tests.conftest import ROOT


def _bench(which: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, "-m", "node", "bench", which, "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    report: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return report


def test_bench_storage_quick_stores_submissions_once() -> None:
    report = _bench("storage")
    rounds = report["rounds"]
    assert isinstance(rounds, list) and len(rounds) == 2
    for r in rounds:
        # The reveals: one copy of the submissions (twice before blobs), before and after
        # LevelDB compaction.
        assert 0.95 <= r["reveals_growth_x"]["compacted"] <= 1.1, r
        assert r["reveals_growth_x"]["as_left"] <= 1.1, r
    # A later round replaces the per-client history instead of adding to it: submissions
    # plus the new global model (1/8 of them with 8 participants), once compacted.
    assert rounds[1]["round_growth_x"]["compacted"] <= 1 + 1 / 8 + 0.05, rounds[1]


def test_bench_restart_quick_serves_head_and_state() -> None:
    report = _bench("restart")
    assert report["actions"] == 20_000
    runs = report["runs"]
    assert isinstance(runs, list) and len(runs) == 1
    assert 0 < runs[0]["head_s"] <= runs[0]["state_read_s"]
