"""`fedrollup train`: one participant as its own process. It stakes on L1 if it must, then
each round fetches the global model, trains on its shard with torch (or plays one of the
adversaries, for experiments), submits, and waits for the round to close, until the job
completes. The node's keeper pays its rewards on L1 once their batch is final; a
participant that trusts nobody can claim them itself (node.sdk.wallet.claim)."""

import time
from dataclasses import dataclass
from typing import Any

from nacl.signing import SigningKey
from rich.console import Console

from node.participant import fl
from node.sdk.client import ApiError, Client, PendingReveal
from node.sdk.wallet import Wallet, connect, stake
from stf.identity import BindL1


@dataclass(frozen=True)
class Shard:
    """`digits:INDEX/COUNT[:SEED]`: this participant's share of the seeded non-IID split."""

    index: int
    count: int
    seed: int

    @staticmethod
    def parse(text: str) -> "Shard":
        kind, _, rest = text.partition(":")
        if kind != "digits" or "/" not in rest:
            raise ValueError("--data is digits:INDEX/COUNT[:SEED], e.g. digits:3/20:0")
        share, _, seed = rest.partition(":")
        index, count = (int(x) for x in share.split("/"))
        if not 0 <= index < count:
            raise ValueError("shard index out of range")
        return Shard(index, count, int(seed or 0))


def ensure_stake(
    client: Client,
    key: SigningKey,
    wallet: Wallet,
    required: int,
    fund_from_dev: bool,
    console: Console,
) -> None:
    pub = bytes(key.verify_key)
    have = client.stake_of(pub)
    if have >= required:
        return
    _, deployment = connect(client.url)
    try:  # the key names its L1 address on L2 first: a stake from an unbound address goes back
        client.execute(key, "bind_l1", BindL1(bytes.fromhex(wallet.address[2:])))
        console.print(f"bound {wallet.address} to the rollup key")
    except ApiError as exc:
        if exc.code != "already_bound":
            raise
    need = required - have
    if fund_from_dev and wallet.balance() < need + 10**17:
        wallet.fund_from(wallet.w3.eth.accounts[0], need + 10**18)
    stake(wallet, deployment, pub, need)
    console.print(f"staked {need / 1e18:.3f} ETH on L1 from {wallet.address}")
    deadline = time.monotonic() + 120
    while client.stake_of(pub) < required:
        if time.monotonic() > deadline:
            raise TimeoutError("the L1 stake did not reach L2")
        time.sleep(0.2)


_NOT_TAKING_PART = (
    "not_staked",
    "round_full",
    "round_deadline_passed",
    "unbonding",
    "slashed_in_job",
    "commits_closed",
)


def _wait_for_change(client: Client, job_id: int, r: int, status: str, poll_s: float) -> None:
    """Until the round leaves this phase (or the job moves on)."""
    while True:
        job = client.job(job_id)
        if job["status"] != "active" or int(job["current_round"]) != r:
            return
        if client.round(job_id, r)["status"] != status:
            return
        time.sleep(poll_s)


def run_participant(
    client: Client,
    key: SigningKey,
    job_id: int,
    shard: Shard,
    behaviour: str,
    console: Console,
    poll_s: float = 0.2,
) -> dict[str, Any]:
    data = fl.load_digits_split(shard.seed, shard.count)
    X, y = data.clients[shard.index]
    agent = fl.make_behaviour(behaviour)
    me = "0x" + bytes(key.verify_key).hex()
    previous = None
    pending: PendingReveal | None = None
    history: list[tuple[int, str]] = []
    while True:
        job = client.job(job_id)
        if job["status"] != "active":
            break
        r = int(job["current_round"])
        rnd = client.round(job_id, r)
        mine = next((s for s in rnd["submissions"] if s["client"] == me), None)
        if rnd["status"] == "open" and mine is None:
            current = client.global_params(job_id, r - 1)
            ctx = fl.RoundContext(
                r, current, previous, X, y, fl.client_seed(shard.seed, r, shard.index)
            )
            try:
                action, pending = client.commit_params(key, job_id, r, agent.submit(ctx), len(y))
                client.wait(action)
            except ApiError as exc:
                if exc.code in _NOT_TAKING_PART:
                    console.print(f"round {r}: not taking part ({exc.code})")
                    break
                raise
            previous = current
        elif rnd["status"] == "reveal" and mine is not None and not mine["revealed"]:
            if pending is None or pending.round != r:
                raise RuntimeError(f"round {r}: committed, but the reveal was lost")
            client.wait(client.reveal_params(key, pending))
        _wait_for_change(client, job_id, r, str(rnd["status"]), poll_s)
        if client.job(job_id)["current_round"] != r or client.job(job_id)["status"] != "active":
            decided = {d["client"]: d["reason"] for d in client.round(job_id, r)["decisions"]}
            if me in decided:
                history.append((r, decided[me]))
                console.print(f"round {r}: {decided[me]}")
    return {
        "job": job_id,
        "rounds": history,
        "stake_left": str(client.stake_of(bytes(key.verify_key))),
    }


def main(args: Any) -> int:
    import json

    from node.sdk.keys import read_key

    console = Console(stderr=True)
    client = Client(args.node, timeout=120)
    key = read_key(args.key)
    job = client.job(args.job)
    if args.l1_key:
        w3, _ = connect(args.node, args.l1_rpc)
        wallet = Wallet(w3, bytes.fromhex(args.l1_key.removeprefix("0x")))
        ensure_stake(
            client, key, wallet, int(job["terms"]["stake_required"]), args.fund_from_dev, console
        )
    report = run_participant(client, key, args.job, Shard.parse(args.data), args.behaviour, console)
    print(json.dumps(report))
    return 0
