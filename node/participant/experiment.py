"""`fedrollup experiment`: the evidence behind the round decision, in two parts.

* The attack matrix: every attack x {fedrollup, plain FedAvg} x 3 seeds, 20 non-IID digits
  clients (alpha 0.5; 4 attackers, a plain and an extrapolating free-rider), 30 rounds,
  plus the sybil trap (two keys of the owner sign-flipping in a job with f = 0) and
  f-burning (plain copies in round 1, label flips after).
* The honest sweep: only honest clients, alpha in {100, 0.5, 0.1, 0.05}, 10, 20 and 50
  clients, f from 0 to n/4, 100 rounds: how often an honest participant is slashed (the
  protocol's strike bounds must keep this at 0), excluded, or struck at all.

The fedrollup runs use the rollup's own round decision (stf.aggregation on the fixed-point
parameters, the strike history carried across rounds, slashed clients out of the job), in
process, which is what the node executes, without the HTTP round trips. Runs are
independent and seeded, so `--workers` processes give the same CSVs as one. With `--backend
ray` each round's local training runs on a Ray pool of `--workers` CPUs
(node.participant.ray_backend), the round decisions staying here (`--workers` runs at a
time, in threads): the same CSVs.
Writes CSVs and a plot; `--quick` runs a small matrix and sweep.
"""

import contextlib
import csv
import statistics
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node.participant import fl
from stf.aggregation import EXCLUDING_REASONS, SLASHING_REASONS

SEEDS = (0, 1, 2)
ATTACK_ROUNDS = 30
SWEEP_ROUNDS = 100
PAID_AFTER_ROUND = 5  # "cheater rounds paid" counts rounds after this one
SWEEP_ALPHAS = (100.0, 0.5, 0.1, 0.05)
SWEEP_CLIENTS = (10, 20, 50)
SCENARIOS = (*fl.ATTACKS, "sybil_trap", "f_burn")


@dataclass(frozen=True)
class Run:
    """One simulation: who behaves how, on which data, with which Byzantine budget."""

    kind: str  # "attack" or "sweep"
    name: str  # the attack, or "honest"
    aggregator: str
    seed: int
    clients: int
    alpha: float
    rounds: int
    f: int | None  # None: the number of non-honest clients (capped by what n allows)

    def behaviours(self) -> list[str]:
        if self.kind == "sweep" or self.name == "none":
            return ["honest"] * self.clients
        if self.name == "sybil_trap":  # two keys of the owner, in a job with f = 0
            return ["sign_flip"] * 2 + ["honest"] * (self.clients - 2)
        bad = [self.name] * 4 + ["free_rider", "extrapolating_free_rider"]
        return bad + ["honest"] * (self.clients - len(bad))


def attack_runs(rounds: int, seeds: Sequence[int], scenarios: Sequence[str]) -> list[Run]:
    runs = []
    for seed in seeds:
        runs.append(Run("attack", "none", "fedavg", seed, 20, 0.5, rounds, None))
        for name in scenarios:
            f = 0 if name == "sybil_trap" else None
            for agg in ("fedrollup", "fedavg"):
                runs.append(Run("attack", name, agg, seed, 20, 0.5, rounds, f))
    return runs


def sweep_runs(
    rounds: int, alphas: Sequence[float], clients: Sequence[int], seed: int = 0
) -> list[Run]:
    runs = []
    for alpha in alphas:
        for n in clients:
            for f in sorted({0, n // 8, n // 4}):
                runs.append(Run("sweep", "honest", "fedrollup", seed, n, alpha, rounds, f))
    return runs


def execute(run: Run, run_tasks: fl.TaskRunner | None = None) -> dict[str, Any]:
    data = fl.load_digits_split(run.seed, run.clients, run.alpha)
    behaviours = run.behaviours()
    aggregator: fl.Aggregator = "rollup" if run.aggregator == "fedrollup" else "fedavg"
    result = fl.simulate(
        data,
        behaviours,
        rounds=run.rounds,
        aggregator=aggregator,
        seed=run.seed,
        f=run.f,
        eject_slashed=True,
        run_tasks=run_tasks,
    )
    return row_of(run, result)


def row_of(run: Run, result: fl.SimResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "kind": run.kind,
        "attack": run.name,
        "aggregator": run.aggregator,
        "seed": run.seed,
        "clients": run.clients,
        "alpha": run.alpha,
        "f": "" if run.f is None else run.f,
        "rounds": run.rounds,
        "final_accuracy": round(result.final_accuracy, 4),
    }
    if run.aggregator != "fedrollup":
        return row
    honest = [k for k, b in enumerate(result.behaviours) if b == "honest"]
    cheaters = [k for k, b in enumerate(result.behaviours) if b != "honest"]
    honest_rounds = sum(1 for d in result.decisions for k in honest if k in d)
    row["honest_slashes"] = sum(
        1 for d in result.decisions for k in honest if d.get(k) in SLASHING_REASONS
    )
    row["honest_exclusions"] = sum(
        1 for d in result.decisions for k in honest if d.get(k) in EXCLUDING_REASONS
    )
    row["honest_rounds"] = honest_rounds
    row["honest_strikes"] = sum(1 for strikes in result.strikes for k in honest if k in strikes)
    row["honest_max_strikes_in_5"] = _max_strikes_in_window(result, honest)
    row["cheaters"] = len(cheaters)
    row["cheaters_slashed"] = sum(1 for k in cheaters if result.first_slash(k) is not None)
    firsts = [result.first_slash(k) for k in cheaters]
    row["last_first_slash_round"] = max((f[0] for f in firsts if f is not None), default="")
    late = [
        d.get(k)
        for r, d in enumerate(result.decisions, start=1)
        if r > PAID_AFTER_ROUND
        for k in cheaters
        if k in d
    ]
    row["cheater_rounds_after_5"] = len(late)
    row["cheater_rounds_paid_after_5"] = sum(1 for reason in late if reason == "kept")
    return row


def _max_strikes_in_window(result: fl.SimResult, clients: Iterable[int]) -> int:
    """The most strikes any of these clients had among 5 consecutive rounds it took part in."""
    best = 0
    for k in clients:
        bits = [
            k in strikes
            for d, strikes in zip(result.decisions, result.strikes, strict=True)
            if k in d
        ]
        for i in range(len(bits)):
            best = max(best, sum(bits[i : i + 5]))
    return best


def run_all(
    runs: Sequence[Run], workers: int, run_tasks: fl.TaskRunner | None = None
) -> list[dict[str, Any]]:
    """Local backend: whole runs in `workers` processes. With a task runner (Ray): `workers`
    runs at a time in threads here (their round decisions and evaluations), their
    participants' training on the runner, so its CPUs stay busy while a decision runs."""
    if run_tasks is not None:
        tasks = run_tasks
        with ThreadPoolExecutor(max_workers=max(1, workers)) as threads:
            return list(threads.map(lambda run: execute(run, tasks), runs))
    if workers <= 1:
        return [execute(r) for r in runs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(execute, runs))


ATTACK_FIELDS = [
    "attack",
    "aggregator",
    "seed",
    "final_accuracy",
    "cheaters",
    "cheaters_slashed",
    "last_first_slash_round",
    "cheater_rounds_after_5",
    "cheater_rounds_paid_after_5",
    "honest_slashes",
    "honest_exclusions",
    "honest_rounds",
]
SWEEP_FIELDS = [
    "alpha",
    "clients",
    "f",
    "rounds",
    "final_accuracy",
    "honest_slashes",
    "honest_exclusions",
    "honest_rounds",
    "honest_strikes",
    "honest_max_strikes_in_5",
]


def write_csv(rows: list[dict[str, Any]], fields: list[str], path: Path) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per attack: median and min final accuracy of each aggregator over seeds, slash and pay
    facts of the fedrollup runs."""
    out = []
    for attack in ("none", *SCENARIOS):
        line: dict[str, Any] = {"attack": attack}
        for agg in ("fedrollup", "fedavg"):
            accs = [
                r["final_accuracy"]
                for r in rows
                if r["attack"] == attack and r["aggregator"] == agg
            ]
            if accs:
                line[agg] = (statistics.median(accs), min(accs))
        ours = [r for r in rows if r["attack"] == attack and r["aggregator"] == "fedrollup"]
        if ours:
            line["slashed"] = f"{sum(r['cheaters_slashed'] for r in ours)}/" + str(
                sum(r["cheaters"] for r in ours)
            )
            paid = sum(r["cheater_rounds_paid_after_5"] for r in ours)
            late = sum(r["cheater_rounds_after_5"] for r in ours)
            line["paid_after_5"] = f"{paid}/{late}"
            line["honest_slashes"] = sum(r["honest_slashes"] for r in ours)
            excluded = sum(r["honest_exclusions"] for r in ours)
            line["honest_excluded"] = excluded / max(1, sum(r["honest_rounds"] for r in ours))
        out.append(line)
    return out


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = [a for a in SCENARIOS if any(r["attack"] == a for r in rows)]
    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.38
    for offset, agg in ((-width / 2, "fedrollup"), (width / 2, "fedavg")):
        medians = [
            statistics.median(
                r["final_accuracy"] for r in rows if r["attack"] == a and r["aggregator"] == agg
            )
            for a in attacks
        ]
        ax.bar([i + offset for i in range(len(attacks))], medians, width, label=agg)
    ax.set_xticks(range(len(attacks)), attacks, rotation=20, fontsize=8)
    ax.set_ylabel("final test accuracy (median over seeds)")
    ax.set_ylim(0, 1)
    ax.axhline(0.93, color="grey", linestyle="--", linewidth=1)
    ax.set_title("20 non-IID clients (alpha 0.5): 4 attackers + 2 free-riders")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Any) -> int:
    console = Console()
    if args.quick:
        attacks = attack_runs(args.rounds or 8, (0,), ("sign_flip", "alie_jitter", "min_max"))
        sweep = sweep_runs(args.sweep_rounds or 20, (100.0, 0.05), (10,))
    else:
        seeds = tuple(args.seeds) if getattr(args, "seeds", None) else SEEDS
        attacks = attack_runs(args.rounds or ATTACK_ROUNDS, seeds, SCENARIOS)
        sweep = sweep_runs(args.sweep_rounds or SWEEP_ROUNDS, SWEEP_ALPHAS, SWEEP_CLIENTS)
    with contextlib.ExitStack() as stack:
        run_tasks: fl.TaskRunner | None = None
        if args.backend == "ray":
            from node.participant.ray_backend import RayTasks

            with console.status(f"starting Ray ({args.workers} CPUs, 127.0.0.1) ..."):
                run_tasks = stack.enter_context(RayTasks(args.workers))
        run_parts(args, attacks, sweep, run_tasks, console)
    console.print(f"CSV: {args.csv} {args.sweep_csv}  plot: {args.plot}")
    return 0


def run_parts(
    args: Any,
    attacks: list[Run],
    sweep: list[Run],
    run_tasks: fl.TaskRunner | None,
    console: Console,
) -> None:
    if not args.skip_attacks:
        with console.status(f"attack matrix: {len(attacks)} runs ..."):
            rows = run_all(attacks, args.workers, run_tasks)
        write_csv(rows, ATTACK_FIELDS, args.csv)
        plot(rows, args.plot)
        console.print(attack_table(rows))
    if not args.skip_sweep:
        with console.status(f"honest sweep: {len(sweep)} runs ..."):
            sweep_rows = run_all(sweep, args.workers, run_tasks)
        write_csv(sweep_rows, SWEEP_FIELDS, args.sweep_csv)
        console.print(sweep_table(sweep_rows))


def attack_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "attack",
        "fedrollup acc (median, min)",
        "FedAvg acc (median, min)",
        "cheaters slashed",
        "cheater rounds paid after r5",
        "honest slashes",
        "honest excluded",
        title="attack matrix",
    )
    for line in summary(rows):
        fr, fa = line.get("fedrollup"), line.get("fedavg")
        table.add_row(
            line["attack"],
            f"{fr[0]:.3f}, {fr[1]:.3f}" if fr else "-",
            f"{fa[0]:.3f}, {fa[1]:.3f}" if fa else "-",
            str(line.get("slashed", "-")),
            str(line.get("paid_after_5", "-")),
            str(line.get("honest_slashes", "-")),
            f"{line['honest_excluded']:.1%}" if "honest_excluded" in line else "-",
        )
    return table


def sweep_table(rows: list[dict[str, Any]]) -> Table:
    table = Table(
        "alpha",
        "clients",
        "f",
        "accuracy",
        "honest slashes",
        "honest excluded",
        "strikes",
        "max strikes in 5 rounds",
        title="honest sweep",
    )
    for r in rows:
        table.add_row(
            str(r["alpha"]),
            str(r["clients"]),
            str(r["f"]),
            f"{r['final_accuracy']:.3f}",
            str(r["honest_slashes"]),
            f"{r['honest_exclusions'] / max(1, r['honest_rounds']):.1%}",
            str(r["honest_strikes"]),
            str(r["honest_max_strikes_in_5"]),
        )
    return table
