"""`fedrollup experiment`: the attack matrix. Every attack x {fedrollup, plain FedAvg} x 3
seeds, 20 non-IID digits clients (4 attackers + a plain and a disguised free-rider), 30
rounds. The fedrollup column runs the rollup's own round decision (stf.aggregation, on the
fixed-point parameters, slashed clients ejected as their stake falls below the job's
requirement) in process, which is what the node executes, without the HTTP round trips.
Writes a CSV and a plot."""

import csv
import statistics
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from node import fl
from stf.aggregation import SLASHING_REASONS

SEEDS = (0, 1, 2)


def run_matrix(
    rounds: int = 30, seeds: tuple[int, ...] = SEEDS, clients: int = 20
) -> list[dict[str, Any]]:
    rows = []
    for seed in seeds:
        data = fl.load_digits_split(seed, clients)
        honest_only = fl.simulate(
            data, ["honest"] * clients, rounds=rounds, aggregator="fedavg", seed=seed
        )
        rows.append(_row("none", "fedavg", seed, honest_only))
        for attack in fl.ATTACKS:
            behaviours = fl.scenario(attack, clients)
            rollup = fl.simulate(
                data, behaviours, rounds=rounds, aggregator="rollup", seed=seed, eject_slashed=True
            )
            fedavg = fl.simulate(data, behaviours, rounds=rounds, aggregator="fedavg", seed=seed)
            rows.append(_row(attack, "fedrollup", seed, rollup))
            rows.append(_row(attack, "fedavg", seed, fedavg))
    return rows


def _row(attack: str, aggregator: str, seed: int, result: fl.SimResult) -> dict[str, Any]:
    row: dict[str, Any] = {
        "attack": attack,
        "aggregator": aggregator,
        "seed": seed,
        "final_accuracy": round(result.final_accuracy, 4),
    }
    if aggregator == "fedrollup":
        firsts = [result.first_slash(k) for k, b in enumerate(result.behaviours) if b != "honest"]
        row["cheaters"] = len(firsts)
        row["cheaters_slashed_by_round_5"] = sum(1 for f in firsts if f is not None and f[0] <= 5)
        row["last_first_slash_round"] = max((f[0] for f in firsts if f is not None), default=None)
        row["never_slashed"] = sum(1 for f in firsts if f is None)
        row["honest_slashes"] = sum(
            1
            for decided in result.decisions
            for k, reason in decided.items()
            if result.behaviours[k] == "honest" and reason in SLASHING_REASONS
        )
    return row


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    fields = [
        "attack",
        "aggregator",
        "seed",
        "final_accuracy",
        "cheaters",
        "cheaters_slashed_by_round_5",
        "last_first_slash_round",
        "never_slashed",
        "honest_slashes",
    ]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: row.get(k, "") for k in fields})


def summary(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per attack: median and min final accuracy of each aggregator over seeds, slash facts."""
    out = []
    for attack in ("none", *fl.ATTACKS):
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
            caught = sum(r["cheaters_slashed_by_round_5"] for r in ours)
            line["slashed_by_r5"] = f"{caught}/{sum(r['cheaters'] for r in ours)}"
            line["honest_slashes"] = sum(r["honest_slashes"] for r in ours)
        out.append(line)
    return out


def _median_accuracy(rows: list[dict[str, Any]], attack: str, aggregator: str) -> float:
    accs = [
        r["final_accuracy"] for r in rows if r["attack"] == attack and r["aggregator"] == aggregator
    ]
    return float(statistics.median(accs))


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    attacks = list(fl.ATTACKS)
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.38
    for offset, agg in ((-width / 2, "fedrollup"), (width / 2, "fedavg")):
        medians = [
            statistics.median(
                r["final_accuracy"] for r in rows if r["attack"] == a and r["aggregator"] == agg
            )
            for a in attacks
        ]
        ax.bar([i + offset for i in range(len(attacks))], medians, width, label=agg)
    ax.set_xticks(range(len(attacks)), attacks)
    ax.set_ylabel("final test accuracy (median of 3 seeds)")
    ax.set_ylim(0, 1)
    ax.axhline(0.92, color="grey", linestyle="--", linewidth=1)
    ax.set_title("20 non-IID clients: 4 attackers + 2 free-riders, 30 rounds")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(args: Any) -> int:
    console = Console()
    with console.status("running the attack matrix ..."):
        rows = run_matrix(rounds=args.rounds)
    write_csv(rows, args.csv)
    plot(rows, args.plot)
    table = Table(
        "attack",
        "fedrollup acc (median, min)",
        "FedAvg acc (median, min)",
        "cheaters slashed by round 5",
        "honest slashes",
        title="attack matrix, 3 seeds",
    )
    for line in summary(rows):
        fr, fa = line.get("fedrollup"), line.get("fedavg")
        table.add_row(
            line["attack"],
            f"{fr[0]:.3f}, {fr[1]:.3f}" if fr else "-",
            f"{fa[0]:.3f}, {fa[1]:.3f}" if fa else "-",
            str(line.get("slashed_by_r5", "-")),
            str(line.get("honest_slashes", "-")),
        )
    console.print(table)
    console.print(f"CSV: {args.csv}  plot: {args.plot}")
    return 0
