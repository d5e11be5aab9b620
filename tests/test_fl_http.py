"""The federated-learning actions end to end over real HTTP against a node process: models,
paid access with a sealed key, messages, a training round with cheaters, commit-reveal submissions,
door pre-checks, and a replay of the whole chain in another process."""

import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest

from node.sdk.client import SUCCESS_STATUSES, ApiError, Client, event, open_sealed
from rollup.genesis import Genesis
from stf import jobs
from stf.jobs import JobTerms
from tests.conftest import ROOT, NodeProcess, free_port
from tests.fl_harness import ARCH, PARAMS, key, pub
from tests.fl_harness import terms as harness_terms

OWNER, BUYER, STRANGER = 0, 1, 2
HONEST, FLIPPERS, COPIER, NOISY = list(range(3, 11)), [11, 12], 13, 14
CLIENTS = [*HONEST, *FLIPPERS, COPIER, NOISY]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> NodeProcess:  # type: ignore[misc]
    tmp = tmp_path_factory.mktemp("fl")
    genesis = Genesis(4242, 0, {pub(i): 10**21 for i in range(20)})
    path = tmp / "genesis.json"
    path.write_text(json.dumps(genesis.to_json()))
    proc = NodeProcess(
        tmp / "data", free_port(), ["--block-time-ms", "50", "--genesis", str(path)]
    ).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def client(node: NodeProcess) -> Client:
    return node.client


def terms() -> JobTerms:
    return harness_terms(rounds=2, round_blocks=10_000)


@pytest.fixture(scope="module")
def model(client: Client) -> np.ndarray:  # type: ignore[type-arg]
    init = np.random.default_rng(0).normal(0, 0.1, PARAMS).astype(np.float32)
    client.execute(key(OWNER), "upload", _upload(init, price=500))
    return init


def _upload(init: np.ndarray, price: int) -> object:  # type: ignore[type-arg]
    from stf.models import Upload

    return Upload("digits", ARCH, init.astype("<f4").tobytes(), 16, price, b"encrypted model bytes")


def test_model_reads(client: Client, model: np.ndarray) -> None:  # type: ignore[type-arg]
    m = client.model("digits")
    assert (
        m["owner"] == "0x" + pub(OWNER).hex() and m["param_count"] == PARAMS and m["price"] == "500"
    )
    listing = client.models()
    assert listing["count"] == 1 and [x["model_id"] for x in listing["models"]] == ["digits"]
    params = client.model_params("digits")
    assert np.max(np.abs(params - model)) <= 2**-17  # fixed point, half an ulp of 2^-16
    assert client.blob(m["artifact_hash"]) == b"encrypted model bytes"


def test_paid_access_with_sealed_key_and_messages(client: Client, model: np.ndarray) -> None:  # type: ignore[type-arg]
    status = client.wait(client.propose_access(key(BUYER), "digits", 500))
    pid = int(event(status, "ProposalCreated")["proposal_id"])
    client.execute(key(BUYER), "message", _msg(pid, "which cipher?"))
    client.execute(key(OWNER), "message", _msg(pid, "XSalsa20-Poly1305"))
    assert [m["text"] for m in client.messages(pid)] == ["which cipher?", "XSalsa20-Poly1305"]
    owner_before = int(client.account(pub(OWNER))["balance"])
    client.wait(client.approve(key(OWNER), pid, pub(BUYER), b"artifact key 32 bytes long......"))
    assert client.proposal(pid)["status"] == "approved"
    assert int(client.account(pub(OWNER))["balance"]) == owner_before + 500
    sealed = bytes.fromhex(client.access("digits", pub(BUYER))["sealed_key"][2:])
    assert open_sealed(key(BUYER), sealed) == b"artifact key 32 bytes long......"
    # Door pre-checks: these never reach a block.
    with pytest.raises(ApiError) as exc:
        client.approve(key(OWNER), pid, pub(BUYER), b"again")
    assert (exc.value.status, exc.value.code) == (409, "proposal_closed")
    with pytest.raises(ApiError) as exc:
        client.message(key(STRANGER), pid, "spam")
    assert (exc.value.status, exc.value.code) == (403, "not_a_party")


def _msg(pid: int, text: str) -> object:
    from stf.models import PostMessage

    return PostMessage(pid, text)


def _params(g: np.ndarray, who: int, direction: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    if who in HONEST:
        noise = np.random.default_rng(who).normal(0, 0.003, PARAMS)
        return (g + direction + noise).astype(np.float32)
    if who in FLIPPERS:
        return (g - 3 * direction + np.random.default_rng(who).normal(0, 0.02, PARAMS)).astype(
            np.float32
        )
    if who == COPIER:
        return g.astype(np.float32)
    return (g + np.random.default_rng(who).normal(0, 0.012, PARAMS)).astype(np.float32)


def test_training_round_slashes_evidence_and_excludes_suspicion(
    node: NodeProcess, client: Client, model: np.ndarray
) -> None:  # type: ignore[type-arg]
    status = client.execute(key(OWNER), "propose", _train())
    job_id = int(event(status, "JobCreated")["job_id"])
    stake_on_l1_from_bound_wallets(client, CLIENTS, 2 * 10**18)
    g = client.global_params(job_id, 0)
    direction = np.random.default_rng(7).normal(0, 0.01, PARAMS)
    commits = [
        client.commit_params(key(w), job_id, 1, _params(g, w, direction), 100 + w) for w in CLIENTS
    ]
    statuses = [client.wait(h) for h, _ in commits]
    assert {s["status"] for s in statuses} <= set(SUCCESS_STATUSES)

    # In the commit phase only commitments exist: blocks hide nothing, and there is
    # nothing to copy.
    rnd = client.round(job_id, 1)
    assert rnd["status"] == "open" and len(rnd["submissions"]) == len(CLIENTS)
    assert not any(s["revealed"] for s in rnd["submissions"])
    block = client.block(statuses[0]["height"], full=True)
    assert None not in block["actions"]
    assert client.state_proof(jobs.params_key(job_id, 1, pub(HONEST[0])))["value"] is None
    # ... and the door refuses what the STF would refuse.
    with pytest.raises(ApiError) as exc:
        client.commit_params(key(HONEST[0]), job_id, 1, g, 1)
    assert (exc.value.status, exc.value.code) == (409, "duplicate_submission")
    with pytest.raises(ApiError) as exc:
        client.reveal_params(key(HONEST[0]), commits[0][1])
    assert exc.value.code == "not_revealing"
    # ... but never simulates an aggregate (the costly action): the STF refuses that one.
    refused = client.wait(client.aggregate(key(STRANGER), job_id, 1))
    assert refused["status"] == "failed" and refused["receipt"]["error"] == "not_aggregator"
    with pytest.raises(ApiError) as exc:
        client.commit_params(key(STRANGER), job_id, 1, g, 1)
    assert exc.value.code == "not_staked"

    client.execute(key(OWNER), "aggregate", _aggregate(job_id, 1, 0))  # commits close
    assert client.round(job_id, 1)["status"] == "reveal"
    with pytest.raises(ApiError) as exc:
        client.commit_params(key(15), job_id, 1, g, 1)
    assert exc.value.code in ("commits_closed", "not_staked")
    bad = g.copy()
    bad[3] = np.nan
    with pytest.raises(ApiError) as exc:
        client.reveal_params(key(HONEST[0]), replace(commits[0][1], params=bad.tobytes()))
    assert (exc.value.status, exc.value.code) == (400, "non_finite")
    with pytest.raises(ApiError) as exc:
        client.reveal_params(key(HONEST[0]), replace(commits[0][1], salt=b"\x00" * 32))
    assert (exc.value.status, exc.value.code) == (400, "commitment_mismatch")
    reveals = [client.reveal_params(key(w), p) for w, (_, p) in zip(CLIENTS, commits, strict=True)]
    assert {client.wait(h)["status"] for h in reveals} <= set(SUCCESS_STATUSES)

    client.execute(key(OWNER), "aggregate", _aggregate(job_id, 1, 9100))
    rnd = client.round(job_id, 1)
    reasons = {d["client"]: d["reason"] for d in rnd["decisions"]}
    slashed = {d["client"] for d in rnd["decisions"] if d["slashed"]}
    excluded = {d["client"] for d in rnd["decisions"] if d["excluded"]}
    assert {d["outcome"] for d in rnd["decisions"]} <= {"kept", "excluded", "slashed"}
    assert slashed == {"0x" + pub(COPIER).hex()}  # evidence
    assert {"0x" + pub(w).hex() for w in [*FLIPPERS, NOISY]} <= excluded  # suspicion
    assert reasons["0x" + pub(COPIER).hex()] == "copy"
    assert reasons["0x" + pub(NOISY).hex()] == "unrelated"
    assert {reasons["0x" + pub(w).hex()] for w in FLIPPERS} == {"opposed"}
    assert (
        client.stake_of(pub(COPIER)) == 2 * 10**18 - 10**18 // 2
        and client.stake_of(pub(FLIPPERS[0])) == 2 * 10**18
        and client.stake_of(pub(HONEST[0])) == 2 * 10**18
    )
    assert client.job(job_id)["current_round"] == 2
    moved = client.global_params(job_id, 1).astype(np.float64) - g
    assert float(moved @ direction) / float(direction @ direction) > 0.8

    # After aggregation the blocks are public again and replay from genesis in another process.
    assert None not in client.block(statuses[0]["height"], full=True)["actions"]
    replay = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.ops.cli",
            "replay",
            "--node",
            node.url,
            "--genesis",
            str(node.data_dir.parent / "genesis.json"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin"},
    )
    report = json.loads(replay.stdout)
    assert report["match"] is True, report
    assert report["state_root"] == client.health()["head"]["state_root"]


def _train() -> object:
    from stf.actions import Propose, terms_to_tuple

    return Propose("train", "digits", 4 * 10**18, 0, terms_to_tuple(terms()))


def stake_on_l1_from_bound_wallets(client: Client, who: list[int], amount: int) -> None:
    """The only way to stake: each key binds an L1 wallet on L2, which stakes on the node's
    embedded L1; wait until every stake is credited on L2."""
    import time

    from node.sdk.wallet import Wallet, connect, stake
    from stf.identity import BindL1

    w3, dep = connect(client.url)
    faucet = w3.eth.accounts[0]
    for w in who:
        wallet = Wallet(w3, bytes([0x5A, w]) * 16)
        client.execute(key(w), "bind_l1", BindL1(bytes.fromhex(wallet.address[2:])))
        wallet.fund_from(faucet, amount + 10**18)
        stake(wallet, dep, pub(w), amount)
    deadline = time.monotonic() + 60
    while any(client.stake_of(pub(w)) < amount for w in who):
        assert time.monotonic() < deadline, "the L1 stakes did not reach L2"
        time.sleep(0.1)


def _amount(a: int) -> object:
    return jobs.Amount(a)


def _aggregate(job_id: int, rnd: int, acc: int) -> object:
    return jobs.AggregateRound(job_id, rnd, acc)


def test_unknown_things_are_404(client: Client) -> None:
    for path in ("/v1/models/nope", "/v1/jobs/999", "/v1/jobs/1/rounds/999", "/v1/proposals/999"):
        with pytest.raises(ApiError) as exc:
            client._get(path)
        assert exc.value.status == 404
    with pytest.raises(ApiError) as exc:
        client._get("/v1/jobs/abc")
    assert (exc.value.status, exc.value.code) == (400, "bad_number")


def test_price_reject_cancel_and_withdraw_over_http(client: Client, model: np.ndarray) -> None:  # type: ignore[type-arg]
    from stf.models import SetPrice

    client.execute(key(OWNER), "set_price", SetPrice("digits", 700))
    assert client._get("/v1/models/digits/price")["price"] == "700"
    with pytest.raises(ApiError) as exc:
        client.set_price(key(STRANGER), "digits", 1)
    assert (exc.value.status, exc.value.code) == (403, "not_owner")
    buyer_before = int(client.account(pub(STRANGER))["balance"])
    pid = int(
        event(client.wait(client.propose_access(key(STRANGER), "digits", 700)), "ProposalCreated")[
            "proposal_id"
        ]
    )
    assert int(client.account(pub(STRANGER))["balance"]) == buyer_before - 700
    client.wait(client.reject(key(OWNER), pid))
    assert client.proposal(pid)["status"] == "rejected"
    assert int(client.account(pub(STRANGER))["balance"]) == buyer_before
    pid = int(
        event(
            client.wait(client.propose_access(key(STRANGER), "digits", 700, expiry_blocks=1)),
            "ProposalCreated",
        )["proposal_id"]
    )
    client.execute(key(STRANGER), "message", _msg(pid, "waiting"))  # blocks pass: it expires
    client.execute(key(STRANGER), "message", _msg(pid, "still waiting"))
    client.wait(client.cancel(key(STRANGER), pid))
    assert client.proposal(pid)["status"] == "expired"
    assert int(client.account(pub(STRANGER))["balance"]) == buyer_before
    status = client.wait(client.withdraw(key(STRANGER), 5, recipient="0x" + "ab" * 20))
    (record,) = status["receipt"]["records"]
    assert (
        record["kind"] == "withdrawal"
        and record["amount"] == "5"
        and record["payee"] == "0x" + "ab" * 20
    )
