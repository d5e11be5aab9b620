"""`fedrollup demo`: a federated-learning job on a real node with a real (embedded) L1.

A model owner uploads a small torch MLP and funds a job on L1; 20 participants hold non-IID
shards of scikit-learn's digits (Dirichlet alpha = 0.5), stake on L1, train locally with
torch and submit; 4 of them attack (--attack) and 2 free-ride. Every round the owner closes
it; the rollup slashes the cheaters and pays the kept clients. At the end the batches are
final on L1, the keeper has moved the slashed stakes to the SlashTreasury and paid the
rewards, and a plot compares the model's accuracy with plain FedAvg under the same attack.
"""

import hashlib
import json
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nacl.signing import SigningKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from node.cli_util import free_port, node_command
from node.participant import fl
from node.sdk.client import ApiError, Client
from node.sdk.devkeys import dev_key
from node.sdk.wallet import Wallet, connect, fund_job, stake
from stf.aggregation import SLASHING_REASONS, Rules
from stf.jobs import JobTerms

ETH = 10**18
STAKE = 2 * ETH
STAKE_REQUIRED = 2 * ETH  # evidence costs half of it (1 ETH), repeated suspicion a quarter
JOB_FUNDING = 30 * ETH


@dataclass
class Participant:
    index: int
    behaviour: str
    key: SigningKey
    wallet: Wallet
    slashed_in: list[tuple[int, str]] = field(default_factory=list)

    @property
    def rollup_key(self) -> bytes:
        return bytes(self.key.verify_key)

    @property
    def label(self) -> str:
        return f"p{self.index:02d} {self.behaviour}"


@dataclass
class DemoReport:
    attack: str
    accuracies: list[float]
    fedavg_accuracies: list[float]
    participants: list[Participant]
    slash_treasury_wei: int
    reward_wei: dict[int, int]
    l1_stake_wei: dict[int, int]
    records_settled: int
    records_total: int
    plot: Path | None
    seconds: float

    def slashed(self) -> set[int]:
        return {p.index for p in self.participants if p.slashed_in}

    def to_json(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "final_accuracy": self.accuracies[-1] if self.accuracies else None,
            "fedavg_final_accuracy": self.fedavg_accuracies[-1] if self.fedavg_accuracies else None,
            "slashed": {p.label: p.slashed_in for p in self.participants if p.slashed_in},
            "slash_treasury_wei": str(self.slash_treasury_wei),
            "records_settled": self.records_settled,
            "records_total": self.records_total,
            "seconds": round(self.seconds, 1),
        }


def _seed_bytes(*parts: object) -> bytes:
    return hashlib.blake2b("/".join(map(str, parts)).encode(), digest_size=32).digest()


def _start_node(workdir: Path, challenge_window_s: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = node_command(
        str(workdir / "data"),
        port,
        "--block-time-ms",
        "100",
        "--challenge-window-s",
        str(challenge_window_s),
        "--batch-interval-ms",
        "500",
    )
    log = (workdir / "node.log").open("wb")
    env = {**os.environ, "FEDROLLUP_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    client = Client(url)
    for _ in range(300):
        if proc.poll() is not None:
            raise RuntimeError(f"node exited:\n{(workdir / 'node.log').read_text()}")
        try:
            client.health()
            return proc, url
        except (OSError, ApiError):
            time.sleep(0.1)
    raise TimeoutError("node did not start")


def job_terms(rounds: int, clients: int, f: int) -> JobTerms:
    return JobTerms(
        rounds=rounds,
        min_participants=2 * f + 3,
        max_participants=clients,
        f=f,
        stake_required=STAKE_REQUIRED,
        round_blocks=1_000_000,
        target_accuracy_bp=0,
        aggregator=b"",
        local_epochs=fl.TrainConfig.epochs,
        slash_bps=5000,
        max_samples=fl.MAX_SAMPLES,
        krum_m=0,
        rules=Rules(),
    )  # equal weights (sample_weighting=0), the default


def scenario(attack: str, clients: int, attackers: int, free_riders: int) -> list[str]:
    riders = ["free_rider", "disguised_free_rider", "delta_replay"][:free_riders]
    bad = [attack] * attackers + riders
    return bad + ["honest"] * (clients - len(bad))


def run_demo(
    attack: str = "sign_flip",
    clients: int = 20,
    attackers: int = 4,
    free_riders: int = 2,
    rounds: int = 30,
    seed: int = 0,
    out: Path | None = Path("demo-accuracy.png"),
    challenge_window_s: int = 4,
    console: Console | None = None,
) -> DemoReport:
    console = console or Console()
    started = time.monotonic()
    behaviours = scenario(attack, clients, attackers, free_riders)
    data = fl.load_digits_split(seed, clients)
    with tempfile.TemporaryDirectory(prefix="fedrollup-demo-") as tmp:
        proc, url = _start_node(Path(tmp), challenge_window_s)
        try:
            return _run(url, behaviours, data, attack, rounds, seed, out, console, started)
        finally:
            proc.terminate()
            proc.wait(timeout=60)


def _run(
    url: str,
    behaviours: list[str],
    data: fl.FLData,
    attack: str,
    rounds: int,
    seed: int,
    out: Path | None,
    console: Console,
    started: float,
) -> DemoReport:
    client = Client(url, timeout=120)
    w3, deployment = connect(url)
    dev = list(w3.eth.accounts)
    owner_key, owner = dev_key(0), Wallet(w3, _seed_bytes("demo-owner", seed))
    owner.fund_from(dev[0], JOB_FUNDING + ETH)
    people = [
        Participant(
            i,
            b,
            SigningKey(_seed_bytes("demo-participant", seed, i)),
            Wallet(w3, _seed_bytes("demo-wallet", seed, i)),
        )
        for i, b in enumerate(behaviours)
    ]
    console.print(f"[bold]node[/] {url}  [bold]L1[/] {url}/l1  inbox {deployment.inbox.address}")
    console.print(f"[bold]explorer[/] {url}/explorer  (live while the demo runs)")
    with console.status("participants bind their L1 addresses on L2 and stake on L1 ..."):
        binds = [client.bind_l1(p.key, p.wallet.address) for p in people]
        for h in binds:  # a stake from an address the key has not bound would be sent back
            client.wait(h)
        for p in people:
            p.wallet.fund_from(dev[0], STAKE + ETH)
            stake(p.wallet, deployment, p.rollup_key, STAKE)
    l1_before = {p.index: p.wallet.balance() for p in people}
    kind = "mlp"
    init = fl.initial_params(kind, seed)
    arch = fl.model_arch(fl.make_model(kind))
    client.execute(owner_key, "upload", _upload("digits-mlp", arch, init))
    # f counts the poisoners Krum must tolerate; free-riders are caught by the checks before
    # Krum. The honest majority alone must still meet n >= 2f + 3 once cheaters are ejected.
    poisoners = sum(b not in ("honest", *fl.FREE_RIDERS) for b in behaviours)
    terms = job_terms(rounds, len(people), poisoners)
    status = client.wait(client.propose_train(owner_key, "digits-mlp", 0, terms))
    job_id = int(
        next(e for e in status["receipt"]["events"] if e["name"] == "JobCreated")["data"]["job_id"]
    )
    fund_job(owner, deployment, job_id, JOB_FUNDING)
    _wait(lambda: int(client.job(job_id)["funded"]) > 0, "the L1 funding to reach L2")
    console.print(
        f"job {job_id}: {len(people)} participants ({', '.join(sorted(set(behaviours)))}), "
        f"{rounds} rounds, {JOB_FUNDING // ETH} ETH funded on L1, "
        f"each participant staked {STAKE // ETH} ETH on L1"
    )

    accuracies, records = _rounds(client, owner_key, job_id, people, data, rounds, seed, console)
    fedavg = fl.simulate(data, behaviours, rounds=rounds, aggregator="fedavg", seed=seed)
    plot = _plot(out, accuracies, fedavg.accuracies, attack) if out else None

    with console.status("waiting for the batches to be final on L1 and the keeper to settle ..."):
        settled = _wait_settled(client, records)
    treasury = int(w3.eth.get_balance(deployment.slash_treasury.address))
    rewards = {p.index: p.wallet.balance() - l1_before[p.index] for p in people}
    stakes = {
        p.index: int(deployment.registry.functions.stakeOf(p.rollup_key, p.wallet.address).call())
        for p in people
    }
    report = DemoReport(
        attack,
        accuracies,
        fedavg.accuracies,
        people,
        treasury,
        rewards,
        stakes,
        settled,
        len(records),
        plot,
        time.monotonic() - started,
    )
    _summary(console, report)
    return report


def _upload(model_id: str, arch: Any, init: Any) -> Any:
    from stf.models import Upload

    return Upload(model_id, arch, np.asarray(init, dtype="<f4").tobytes(), 16, 0, b"")


def _wait(check: Any, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _rounds(
    client: Client,
    owner_key: SigningKey,
    job_id: int,
    people: list[Participant],
    data: fl.FLData,
    rounds: int,
    seed: int,
    console: Console,
) -> tuple[list[float], list[str]]:
    agents = [fl.make_behaviour(p.behaviour) for p in people]
    malicious = sum(p.behaviour != "honest" for p in people)
    active = [p.index for p in people]
    accuracies: list[float] = []
    records: list[str] = []
    table = Table("round", "accuracy", "kept", "excluded", "slashed (reason)", title="rounds")
    columns = [
        TextColumn("[bold]round {task.completed}/{task.total}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("acc {task.fields[acc]}"),
        TimeElapsedColumn(),
    ]
    previous = None
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("rounds", total=rounds, acc="-")
        for r in range(1, rounds + 1):
            current = client.global_params(job_id, r - 1)
            vectors = fl.round_submissions(
                data, agents, active, current, previous, r, seed, fl.TrainConfig(), malicious
            )
            pending = {}
            for k, vector in vectors.items():
                try:
                    pending[k] = client.commit_params(
                        people[k].key, job_id, r, vector, len(data.clients[k][1])
                    )
                except ApiError as exc:  # a slashed participant is out of the job
                    if exc.code not in ("not_staked", "slashed_in_job") or not people[k].slashed_in:
                        raise
            _wait_all(client, [h for h, _ in pending.values()], r, "commit")
            client.execute(owner_key, "aggregate", _aggregate(job_id, r, 0))  # commits close
            reveals = [client.reveal_params(people[k].key, p) for k, (_, p) in pending.items()]
            _wait_all(client, reveals, r, "reveal")
            reported = fl.evaluate(current, data.test_X, data.test_y)
            status = client.execute(
                owner_key, "aggregate", _aggregate(job_id, r, int(reported * 10_000))
            )
            records += [rec["record_id"] for rec in status["receipt"]["records"]]
            decided = client.round(job_id, r)["decisions"]
            slashed = _note_slashes(people, decided, r)
            active = [k for k in active if not people[k].slashed_in]
            previous = current
            acc = fl.evaluate(client.global_params(job_id, r), data.test_X, data.test_y)
            accuracies.append(acc)
            kept = sum(1 for d in decided if d["kept"])
            excluded = sum(1 for d in decided if d["excluded"])
            table.add_row(str(r), f"{acc:.3f}", str(kept), str(excluded), ", ".join(slashed) or "-")
            progress.update(task, advance=1, acc=f"{acc:.3f}")
    console.print(table)
    return accuracies, records


def _wait_all(client: Client, hashes: list[str], r: int, what: str) -> None:
    for h in hashes:
        done = client.wait(h, timeout=120)
        if done["status"] == "failed":
            raise RuntimeError(
                f"round {r}: a {what} failed: {done['receipt']['error']}: "
                f"{done['receipt']['detail']}"
            )


def _note_slashes(people: list[Participant], decided: list[dict[str, Any]], r: int) -> list[str]:
    by_key = {"0x" + p.rollup_key.hex(): p for p in people}
    out = []
    for d in decided:
        if d["reason"] in SLASHING_REASONS:
            p = by_key[d["client"]]
            p.slashed_in.append((r, d["reason"]))
            out.append(f"{p.label} ({d['reason']})")
    return out


def _aggregate(job_id: int, r: int, accuracy_bp: int) -> Any:
    from stf.jobs import AggregateRound

    return AggregateRound(job_id, r, accuracy_bp)


def _wait_settled(client: Client, records: list[str], timeout: float = 180) -> int:
    """Wait until the keeper has settled or given up on every record; how many it settled."""
    deadline = time.monotonic() + timeout
    states: dict[str, str | None] = {}
    while time.monotonic() < deadline:
        for rid in records:
            if states.get(rid) is None:
                try:
                    states[rid] = client._get(f"/v1/settlements/{rid}/proof").get("settled")
                except ApiError:
                    states[rid] = None
        if all(states.get(rid) is not None for rid in records):
            break
        time.sleep(0.5)
    failed = {rid: st for rid, st in states.items() if st not in (None, "settled")}
    if failed:
        raise RuntimeError(f"the keeper could not settle {len(failed)} records: {failed}")
    return sum(1 for st in states.values() if st == "settled")


def _plot(out: Path, rollup: list[float], fedavg: list[float], attack: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    rounds = range(1, len(rollup) + 1)
    ax.plot(
        rounds, rollup, marker="o", markersize=3, label="fedrollup (free-rider checks + exact Krum)"
    )
    ax.plot(rounds, fedavg, marker="x", markersize=3, label="plain FedAvg")
    ax.set_xlabel("round")
    ax.set_ylabel("test accuracy (held-out digits)")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"20 non-IID clients, 4 x {attack} + 2 free-riders")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def _summary(console: Console, report: DemoReport) -> None:
    table = Table(
        "participant",
        "slashed (round, reason)",
        "L1 stake left",
        "L1 balance change",
        title="L1 settlement",
    )
    for p in report.participants:
        table.add_row(
            p.label,
            ", ".join(f"r{r} {why}" for r, why in p.slashed_in) or "-",
            f"{report.l1_stake_wei[p.index] / ETH:.2f} ETH",
            f"{report.reward_wei[p.index] / ETH:+.3f} ETH",
        )
    console.print(table)
    console.print(
        f"SlashTreasury holds [bold]{report.slash_treasury_wei / ETH:.2f} ETH[/]; "
        f"{report.records_settled}/{report.records_total} settlement records executed on L1"
    )
    final = report.accuracies[-1] if report.accuracies else float("nan")
    fedavg = report.fedavg_accuracies[-1] if report.fedavg_accuracies else float("nan")
    console.print(
        f"final accuracy: fedrollup [bold]{final:.3f}[/], "
        f"plain FedAvg under the same attack {fedavg:.3f}"
    )
    if report.plot:
        console.print(f"plot: {report.plot}")
    console.print(f"done in {report.seconds:.0f} s")


def main(args: Any) -> int:
    report = run_demo(
        attack=args.attack,
        clients=args.clients,
        attackers=args.attackers,
        free_riders=args.free_riders,
        rounds=args.rounds,
        seed=args.seed,
        out=args.out,
    )
    if args.json:
        print(json.dumps(report.to_json()))
    return 0
