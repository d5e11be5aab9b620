"""The Ray backend gives the in-process backend's results bit for bit: participants' local
training as tasks on a real local Ray instance (2 CPUs, loopback), the round decision in the
driver. And the in-process backend does not depend on torch's thread count."""

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from node.participant import experiment, fl
from node.participant.ray_backend import RayTasks
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def ray_tasks() -> Iterator[RayTasks]:
    with RayTasks(2) as tasks:
        yield tasks


def _same(a: fl.SimResult, b: fl.SimResult) -> None:
    assert a.initial_accuracy == b.initial_accuracy
    assert a.accuracies == b.accuracies  # floats, compared exactly
    assert a.decisions == b.decisions
    assert a.krum_scores == b.krum_scores
    assert a.strikes == b.strikes


# Honest, an omniscient attacker (handed the honest updates), a noisy one and a free rider.
BEHAVIOURS = ["alie", "sign_flip", "free_rider", *["honest"] * 7]


def test_simulation_on_ray_is_bit_identical(ray_tasks: RayTasks) -> None:
    data = fl.load_digits_split(seed=3, clients=len(BEHAVIOURS), alpha=0.5)
    local = fl.simulate(data, BEHAVIOURS, rounds=3, aggregator="rollup", seed=3)
    on_ray = fl.simulate(
        data, BEHAVIOURS, rounds=3, aggregator="rollup", seed=3, run_tasks=ray_tasks
    )
    _same(local, on_ray)
    assert local.accuracies[-1] > local.initial_accuracy + 0.1  # it trained: not a no-op
    assert local.first_slash(BEHAVIOURS.index("free_rider")) == (1, "copy")


def test_local_backend_does_not_depend_on_torch_threads() -> None:
    data = fl.load_digits_split(seed=1, clients=6, alpha=0.5)
    who = ["honest"] * 6
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = fl.simulate(data, who, rounds=2, aggregator="fedavg", seed=1)
        torch.set_num_threads(2)
        two = fl.simulate(data, who, rounds=2, aggregator="fedavg", seed=1)
    finally:
        torch.set_num_threads(threads)
    _same(one, two)


def test_experiment_csvs_are_the_same_on_ray(ray_tasks: RayTasks, tmp_path: Path) -> None:
    """What `fedrollup experiment --backend ray` runs (experiment.run_parts on a Ray runner)
    writes the same CSVs as the local backend, byte for byte."""
    attacks = experiment.attack_runs(2, (0,), ("sign_flip",))
    sweep = experiment.sweep_runs(2, (0.05,), (10,))
    csvs: dict[str, tuple[bytes, bytes]] = {}
    for backend, runner in (("local", None), ("ray", ray_tasks)):
        out = tmp_path / backend
        out.mkdir()
        args = argparse.Namespace(
            skip_attacks=False,
            skip_sweep=False,
            workers=2,
            csv=out / "experiment.csv",
            sweep_csv=out / "sweep.csv",
            plot=out / "experiment.png",
        )
        experiment.run_parts(args, attacks, sweep, runner, Console(quiet=True))
        csvs[backend] = (args.csv.read_bytes(), args.sweep_csv.read_bytes())
    assert csvs["ray"] == csvs["local"]
    assert csvs["local"][0].count(b"\n") == 1 + len(attacks)
    assert csvs["local"][1].count(b"\n") == 1 + len(sweep)


def test_a_ray_task_is_the_local_submission(ray_tasks: RayTasks) -> None:
    data = fl.load_digits_split(seed=0, clients=4)
    ctx = fl.RoundContext(1, fl.initial_params(), None, *data.clients[0], seed=5)
    (vector,) = ray_tasks([(fl.Honest(), ctx)])
    assert np.array_equal(vector, fl.Honest().submit(ctx))


def test_ray_runs_on_loopback_only(ray_tasks: RayTasks) -> None:
    import ray

    assert [n["NodeManagerAddress"] for n in ray.nodes()] == ["127.0.0.1"]
    assert ray.get_runtime_context().gcs_address.startswith("127.0.0.1:")


def test_backend_ray_without_the_extra_says_what_to_install() -> None:
    code = (
        "import sys\n"
        "sys.modules['ray'] = None  # as if the ray extra were not installed\n"
        "from node.ops.cli import main\n"
        "sys.exit(main(['experiment', '--quick', '--backend', 'ray']))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2, out.stderr
    assert "pip install 'fedrollup[ray]'" in out.stderr and "Traceback" not in out.stderr
