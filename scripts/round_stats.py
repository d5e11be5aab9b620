"""Per-client, per-round statistics of the round decision, for choosing strike bounds.

Runs the in-process simulation (node.participant.fl, the rollup's own decide_round, nothing
changed) and records, for every client in every round, the statistics the round decision
reads and a few it does not (yet), as floats: diagnostics, never consensus.

  krum_ratio     Krum score / the round's median score (None if Krum did not score it)
  cos_median     cos(u, coordinate median of the round's updates)
  norm_ratio     ||u|| / median ||u||
  cos_hist_step  cos(c, accumulated global step), c the client's history (stf.aggregation's
                 c <- c + (u - c)/min(rounds, 8))
                 and the global step accumulated the same way over every round
  cos_hist_med   cos(c, coordinate median of the histories of the round's submitters)
  cos_hist_kept  cos(c, K - c), K the sum of the histories of the round's kept clients with
                 MIN_HISTORY_ROUNDS (c's own left out when kept): the opposed_history check
  history_gate   the median of cos_hist_kept over those kept clients (the check's gate)
  flagged_run    consecutive rounds (this one included) the client was not kept

Usage:
  python scripts/round_stats.py --out stats.csv --attacks sign_flip label_flip \
      --seeds 0 1 2 --sweep --workers 2
Then `--summarise stats.csv` prints the worst honest client against the attackers, per
statistic.
"""

import argparse
import csv
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from node.participant import experiment, fl
from stf.aggregation import (
    HISTORY_SIGNAL,
    KEPT,
    MIN_HISTORY_ROUNDS,
    STRIKE_OPPOSED_HISTORY,
    ClientHistory,
    Decision,
    RoundOutcome,
    Rules,
    Submission,
    decide_round,
)

F64 = npt.NDArray[np.float64]
FIELDS = [
    "kind",
    "attack",
    "seed",
    "clients",
    "alpha",
    "f",
    "round",
    "client",
    "behaviour",
    "reason",
    "strike",
    "krum_ratio",
    "cos_median",
    "norm_ratio",
    "cos_hist_step",
    "cos_hist_med",
    "cos_hist_kept",
    "history_gate",
    "flagged_run",
    "hist_rounds",
]


def _cos(a: F64, b: F64) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return float(a @ b) / (na * nb) if na > 0 and nb > 0 else 0.0


@dataclass
class Recorder:
    """A decide_round wrapper that records the statistics of every call."""

    behaviours: tuple[str, ...]
    rows: list[dict[str, Any]]
    global_step: F64 | None = None
    global_steps: int = 0
    flagged_run: dict[int, int] | None = None
    round_: int = 0

    def __call__(
        self,
        previous_global: npt.NDArray[np.int32],
        previous_update: npt.NDArray[np.int32] | None,
        subs: Sequence[Submission],
        f: int,
        rules: Rules,
        krum_m: int,
        history: dict[bytes, ClientHistory],
    ) -> RoundOutcome:
        outcome = decide_round(previous_global, previous_update, subs, f, rules, krum_m, history)
        self.round_ += 1
        self._accumulate_global(previous_update)
        self._record(previous_global, subs, outcome)
        return outcome

    def _accumulate_global(self, previous_update: npt.NDArray[np.int32] | None) -> None:
        if previous_update is None:
            return
        p = previous_update.astype(np.float64)
        self.global_steps += 1
        k = min(self.global_steps, 8)
        self.global_step = (
            p if self.global_step is None else self.global_step + (p - self.global_step) / k
        )

    def _record(
        self,
        g: npt.NDArray[np.int32],
        subs: Sequence[Submission],
        outcome: RoundOutcome,
    ) -> None:
        runs = self.flagged_run if self.flagged_run is not None else {}
        self.flagged_run = runs
        ordered = sorted(subs, key=lambda s: s.client)
        updates = np.stack([s.params.astype(np.float64) - g for s in ordered])
        median_u = np.median(updates, axis=0)
        norms = np.linalg.norm(updates, axis=1)
        median_norm = float(np.median(norms))
        hist = {
            c: h.accumulated.astype(np.float64)
            for c, h in outcome.history.items()
            if h.accumulated is not None
        }
        median_c = np.median(np.stack(list(hist.values())), axis=0)
        by_client: dict[bytes, Decision] = {d.client: d for d in outcome.decisions}
        # As the opposed_history check: K over the kept clients with MIN_HISTORY_ROUNDS
        # (here those kept after it, which it excluded none of when it did not fire).
        seasoned = {c for c, h in outcome.history.items() if h.rounds >= MIN_HISTORY_ROUNDS}
        kept = [d.client for d in outcome.decisions if d.reason == KEPT and d.client in seasoned]
        kept_sum = sum((hist[c] for c in kept), np.zeros_like(median_c))
        to_kept = {
            c: _cos(hist[c], kept_sum - hist[c] if c in kept else kept_sum) for c in seasoned
        }
        gate = float(np.median([to_kept[c] for c in kept])) if len(kept) >= 3 else ""
        scores = [d.score for d in outcome.decisions if d.score is not None]
        median_score = float(np.median(scores)) if scores else 0.0
        for i, s in enumerate(ordered):
            k = int.from_bytes(s.client, "big")
            d = by_client[s.client]
            runs[k] = 0 if d.reason == KEPT else runs.get(k, 0) + 1
            c = hist[s.client]
            self.rows.append(
                {
                    "round": self.round_,
                    "client": k,
                    "behaviour": self.behaviours[k],
                    "reason": d.reason,
                    "strike": int(d.strike),
                    "krum_ratio": (
                        d.score / median_score if d.score is not None and median_score > 0 else ""
                    ),
                    "cos_median": _cos(updates[i], median_u),
                    "norm_ratio": float(norms[i]) / median_norm if median_norm > 0 else 0.0,
                    "cos_hist_step": (
                        _cos(c, self.global_step) if self.global_step is not None else ""
                    ),
                    "cos_hist_med": _cos(c, median_c),
                    "cos_hist_kept": to_kept.get(s.client, ""),
                    "history_gate": gate,
                    "hist_rounds": history_rounds(outcome, s.client),
                    "flagged_run": runs[k],
                }
            )


def history_rounds(outcome: RoundOutcome, client: bytes) -> int:
    return outcome.history[client].rounds


def execute(run: experiment.Run) -> list[dict[str, Any]]:
    data = fl.load_digits_split(run.seed, run.clients, run.alpha)
    behaviours = tuple(run.behaviours())
    recorder = Recorder(behaviours, [])
    fl.simulate(data, behaviours, rounds=run.rounds, seed=run.seed, f=run.f, decide=recorder)
    meta = {
        "kind": run.kind,
        "attack": run.name,
        "seed": run.seed,
        "clients": run.clients,
        "alpha": run.alpha,
        "f": "" if run.f is None else run.f,
    }
    return [{**meta, **row} for row in recorder.rows]


def collect(args: argparse.Namespace) -> None:
    runs = [
        experiment.Run("attack", a, "fedrollup", s, 20, 0.5, args.rounds, None)
        for a in args.attacks
        for s in args.seeds
    ]
    if args.sweep:
        runs += experiment.sweep_runs(args.sweep_rounds, args.alphas, args.clients)
    with Path(args.out).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        writer.writeheader()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            for rows in pool.map(execute, runs):
                writer.writerows(rows)
                fh.flush()


def _num(v: str) -> float | None:
    return float(v) if v not in ("", None) else None


def summarise(path: str, after_round: int) -> None:
    """Per statistic: the most extreme honest value in the file against each attacker's
    typical value (its median over rounds after `after_round`)."""
    with Path(path).open() as fh:
        rows = [r for r in csv.DictReader(fh) if int(r["round"]) > after_round]
    stats = {
        "krum_ratio": max,
        "cos_median": min,
        "norm_ratio": max,
        "cos_hist_step": min,
        "cos_hist_med": min,
        "cos_hist_kept": min,
        "flagged_run": max,
    }
    honest = [r for r in rows if r["behaviour"] == "honest"]
    for name, worst in stats.items():
        values = [(v, r) for r in honest if (v := _num(r[name])) is not None]
        if not values:
            continue
        v, r = worst(values, key=lambda t: t[0])
        where = f"{r['kind']} {r['attack']} alpha={r['alpha']} n={r['clients']} f={r['f']}"
        print(f"{name}: worst honest {v:.4f} ({where} seed={r['seed']} round={r['round']})")
    by_attacker: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for r in rows:
        if r["behaviour"] not in ("honest", "free_rider", "extrapolating_free_rider"):
            by_attacker.setdefault((r["attack"], r["seed"], r["client"]), []).append(r)
    for (attack, seed, client), rs in sorted(by_attacker.items()):
        parts = []
        for name in stats:
            vals = sorted(v for r in rs if (v := _num(r[name])) is not None)
            if vals:
                parts.append(f"{name}={vals[len(vals) // 2]:.3f}[{vals[0]:.3f},{vals[-1]:.3f}]")
        reasons = sorted({r["reason"] for r in rs})
        print(f"{attack} seed={seed} client={client} rounds={len(rs)} {reasons} " + " ".join(parts))


def summarise_history_margin(path: str) -> None:
    """The opposed_history check's margin: among rounds whose gate is above HISTORY_SIGNAL,
    the lowest cos(c, K - c) of any honest client, against STRIKE_OPPOSED_HISTORY; and how
    many gated rounds each non-honest client spent at or below the bound."""
    signal = HISTORY_SIGNAL[0] / HISTORY_SIGNAL[1]
    bound = -STRIKE_OPPOSED_HISTORY[0] / STRIKE_OPPOSED_HISTORY[1]
    worst: tuple[float, dict[str, str]] | None = None
    below: dict[tuple[str, str, str], list[int]] = {}
    gated_runs: dict[str, int] = {}
    with Path(path).open() as fh:
        for r in csv.DictReader(fh):
            gate, cos = _num(r["history_gate"]), _num(r["cos_hist_kept"])
            if gate is None or cos is None or gate <= signal:
                continue
            setting = f"{r['kind']} {r['attack']} alpha={r['alpha']} n={r['clients']} f={r['f']}"
            gated_runs[setting] = gated_runs.get(setting, 0) + 1
            if r["behaviour"] == "honest":
                if worst is None or cos < worst[0]:
                    worst = (cos, r)
            else:
                key = (r["attack"], r["seed"], f"{r['client']} {r['behaviour']}")
                below.setdefault(key, [0, 0])[0] += cos <= bound
                below[key][1] += 1
    for setting, n in sorted(gated_runs.items()):
        print(f"gated client-rounds: {setting}: {n}")
    if worst is not None:
        cos, r = worst
        print(
            f"worst honest cos(c, K - c) in a gated round: {cos:.4f} (bound {bound}, margin "
            f"{cos - bound:.4f}; alpha={r['alpha']} n={r['clients']} f={r['f']} "
            f"seed={r['seed']} round={r['round']})"
        )
    for (attack, seed, who), (hits, n) in sorted(below.items()):
        print(f"{attack} seed={seed} client {who}: at or below the bound in {hits}/{n}")


def main(argv: Sequence[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("--out", default="round_stats.csv")
    p.add_argument("--attacks", nargs="*", default=["sign_flip", "label_flip"])
    p.add_argument("--seeds", nargs="*", type=int, default=list(experiment.SEEDS))
    p.add_argument("--rounds", type=int, default=experiment.ATTACK_ROUNDS)
    p.add_argument("--sweep", action="store_true", help="also the honest sweep")
    p.add_argument("--sweep-rounds", type=int, default=experiment.SWEEP_ROUNDS)
    p.add_argument("--alphas", nargs="*", type=float, default=list(experiment.SWEEP_ALPHAS))
    p.add_argument("--clients", nargs="*", type=int, default=list(experiment.SWEEP_CLIENTS))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--summarise", metavar="CSV", help="summarise a CSV instead of running")
    p.add_argument("--after-round", type=int, default=0)
    args = p.parse_args(argv)
    if args.summarise:
        summarise(args.summarise, args.after_round)
        summarise_history_margin(args.summarise)
    else:
        collect(args)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
