"""Hostile actions against a real node process with its embedded L1 (issue 11).

The poisoned-action sequence of the issue — a `submit` with round 2^32 sent while the sender
has another action in flight, so that the door's simulation is skipped — is refused at
decode; every read route keeps answering 2xx/4xx and `fedrollup verify --challenge` verifies
the batches without challenging. A Hypothesis test sends arbitrary actions of every type
(batches of one to three, so some skip the door's simulation) and checks the same of
whatever the node accepted. The door reserves the nonce before simulating and never
simulates an `aggregate`."""

import json
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.core.replay import replay_from_node
from node.ops.verify import verify
from node.sdk.client import Client
from rollup.codec import encode_action
from rollup.genesis import Genesis
from stf.accounts import Transfer
from stf.actions import Propose, terms_to_tuple
from stf.jobs import AggregateRound, CommitParams
from stf.models import PostMessage, Upload
from tests.conftest import NodeProcess, free_port
from tests.fl_harness import ARCH, PARAMS, key, pub, terms
from tests.hostile_strategies import payloads

OWNER, CLIENT, STRANGER = 0, 1, 11
KEYS = 12


@pytest.fixture(scope="module")
def genesis(tmp_path_factory: pytest.TempPathFactory) -> tuple[Genesis, Path]:
    tmp = tmp_path_factory.mktemp("hostile-genesis")
    genesis = Genesis(4343, 0, {pub(i): 10**21 for i in range(KEYS)})
    path = tmp / "genesis.json"
    path.write_text(json.dumps(genesis.to_json()))
    return genesis, path


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, genesis: tuple[Genesis, Path]) -> NodeProcess:  # type: ignore[misc]
    tmp = tmp_path_factory.mktemp("hostile")
    args = ["--block-time-ms", "50", "--genesis", str(genesis[1])]
    args += ["--challenge-window-s", "600", "--batch-interval-ms", "200"]
    proc = NodeProcess(tmp / "data", free_port(), args).start()
    yield proc
    proc.kill()


@pytest.fixture(scope="module")
def job_id(node: NodeProcess) -> int:
    client = node.client
    init = np.random.default_rng(0).normal(0, 0.1, PARAMS).astype("<f4").tobytes()
    client.execute(key(OWNER), "upload", Upload("digits", ARCH, init, 16, 0, b"artifact"))
    status = client.execute(
        key(OWNER),
        "propose",
        Propose("train", "digits", 10**18, 0, terms_to_tuple(terms(rounds=2, round_blocks=5))),
    )
    events = {e["name"]: e["data"] for e in status["receipt"]["events"]}
    # Nobody stakes (stakes arrive from L1 only): the commits drawn below are refused, which
    # is what these tests need, every route still answering.
    return int(events["JobCreated"]["job_id"])


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=60) as resp:
            resp.read()
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait(check: Any, timeout: float = 90, what: Any = None) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out: {what() if callable(what) else what}"
        time.sleep(0.1)


def _drained(client: Client) -> None:
    _wait(lambda: client.health()["pending_actions"] == 0, what=client.health)


def _every_route_answers(node: NodeProcess, job: int) -> None:
    """Every read route over everything the chain holds answers 2xx or 4xx, never 5xx."""
    client = node.client
    head = int(client.block("latest")["height"])
    bad: list[tuple[str, int]] = []

    def check(path: str) -> None:
        code = _status(node.url + path)
        if code >= 500:
            bad.append((path, code))

    for height in range(head + 1):
        check(f"/v1/blocks/{height}?full=1")
        for h in client.block(height)["action_hashes"]:
            check(f"/v1/actions/{h}")
    for b in client._get("/v1/batches")["batches"]:
        check(f"/v1/batches/{b['index']}?full=1")
    for j in {job, job + 1, 0, 2**63, 2**64 - 1, 2**64}:
        check(f"/v1/jobs/{j}")
        for r in (0, 1, 2, 3, 2**32 - 1, 2**32, 2**64):
            check(f"/v1/jobs/{j}/rounds/{r}")
            check(f"/v1/jobs/{j}/rounds/{r}/global")
        check(f"/v1/proposals/{j}")
        check(f"/v1/proposals/{j}/messages")
    for path in ("/v1/health", "/v1/models", "/v1/models-count", "/v1/models/digits", "/metrics"):
        check(path)
    check(f"/v1/accounts/0x{pub(CLIENT).hex()}")
    assert not bad, bad


def _all_batches_committed(client: Client) -> bool:
    head = int(client.block("latest")["height"])
    batches = client._get("/v1/batches")["batches"]
    return (
        bool(batches)
        and all(b["status"] in ("committed", "finalized") for b in batches)
        and batches[-1]["last_height"] >= head
    )


def _close_open_rounds(client: Client, job: int) -> None:
    """Let the job's open round pass its deadline and close it, so nothing stays sealed."""
    info = client._get(f"/v1/jobs/{job}")
    if info["status"] != "active":
        return
    rnd = int(info["current_round"])
    deadline = int(client._get(f"/v1/jobs/{job}/rounds/{rnd}")["deadline_height"])
    while int(client.block("latest")["height"]) <= deadline:
        client.execute(key(OWNER), "transfer", Transfer(pub(OWNER), 1))
    status = client.wait(client.aggregate(key(OWNER), job, rnd))
    assert status["status"] in ("executed", "failed"), status


def _verdicts(node: NodeProcess, genesis: Genesis) -> tuple[dict[str, Any], dict[str, Any]]:
    client = node.client
    _drained(client)
    _wait(lambda: _all_batches_committed(client), what=lambda: client._get("/v1/batches"))
    replay = replay_from_node(node.url, genesis)
    report = verify(node.url, None, None, genesis, None, True)
    return replay, report


def test_poisoned_submit_is_refused_and_every_route_and_batch_stays_verifiable(
    node: NodeProcess, job_id: int, genesis: tuple[Genesis, Path]
) -> None:
    client = node.client
    nonce = int(client.account(pub(CLIENT))["next_nonce"])
    poison = CommitParams(job_id, 2**32, b"\x07" * 32)
    wires = [
        # An action in flight for the sender, so the door would skip its simulation ...
        encode_action(key(CLIENT), client.chain_id, "transfer", nonce, Transfer(pub(2), 1)),
        # ... and the poison: a round number no 4-byte round key can hold.
        encode_action(key(CLIENT), client.chain_id, "commit", nonce + 1, poison),
    ]
    results = client.submit_batch(wires)["results"]
    assert "hash" in results[0], results
    assert results[1]["error"] == "bad_payload" and "32-bit" in results[1]["detail"], results
    # Alone, the same poison gets the same 400.
    single = encode_action(key(CLIENT), client.chain_id, "commit", nonce + 1, poison)
    assert _status_post(node.url, single) == 400
    _drained(client)
    _every_route_answers(node, job_id)
    replay, report = _verdicts(node, genesis[0])
    assert replay["match"], replay
    assert report["verdict"] == "ok" and report["exit_code"] == 0, report
    assert report["challenged"] == [] and report["verified"], report


def _status_post(url: str, wire: bytes) -> int:
    req = urllib.request.Request(
        url + "/v1/actions",
        data=wire,
        method="POST",
        headers={"Content-Type": "application/msgpack"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _metric(node: NodeProcess, name: str) -> float:
    with urllib.request.urlopen(node.url + "/metrics", timeout=30) as resp:
        text = resp.read().decode()
    for line in text.splitlines():
        if line.startswith(f"fedrollup_{name} "):
            return float(line.split()[1])
    return 0.0


def test_door_reserves_the_nonce_first_and_never_simulates_an_aggregate(
    node: NodeProcess, job_id: int
) -> None:
    client = node.client
    _drained(client)
    sims = _metric(node, "precheck_simulations_total")
    nonce = int(client.account(pub(STRANGER))["next_nonce"])
    # A nonce-gap aggregate, sent again and again: refused by the nonce, never simulated.
    for _ in range(20):
        wire = encode_action(
            key(STRANGER), client.chain_id, "aggregate", nonce + 5, AggregateRound(job_id, 1, 0)
        )
        assert _status_post(node.url, wire) == 409
    # A nonce-gap `message` (a simulated type) is refused by its nonce before simulation too.
    wire = encode_action(
        key(STRANGER), client.chain_id, "message", nonce + 5, PostMessage(job_id, "hi")
    )
    assert _status_post(node.url, wire) == 409
    # A right-nonce aggregate by a stranger is accepted unsimulated; the STF refuses it.
    status = client.wait(client.aggregate(key(STRANGER), job_id, 1))
    assert status["status"] == "failed" and status["receipt"]["error"] == "not_aggregator"
    assert _metric(node, "precheck_simulations_total") == sims
    # A simulated action the STF would refuse gets its 4xx and gives its nonce back.
    nonce = int(client.account(pub(STRANGER))["next_nonce"])
    wire = encode_action(
        key(STRANGER), client.chain_id, "message", nonce, PostMessage(job_id, "not a party")
    )
    assert _status_post(node.url, wire) == 403
    assert _metric(node, "precheck_simulations_total") == sims + 1
    assert int(client.account(pub(STRANGER))["next_nonce"]) == nonce
    client.execute(key(STRANGER), "transfer", Transfer(pub(OWNER), 1))  # no gap was left


_SENT: dict[str, int] = {"accepted": 0}


def test_any_accepted_action_leaves_routes_answering_and_batches_verifiable(
    node: NodeProcess, job_id: int, genesis: tuple[Genesis, Path]
) -> None:
    client = node.client
    nonces = {i: int(client.account(pub(i))["next_nonce"]) for i in range(KEYS)}
    chain_id = client.chain_id

    @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        batch=st.lists(
            st.tuples(st.sampled_from([0, 0, *range(1, KEYS)]), payloads(job_id, KEYS)),
            min_size=1,
            max_size=3,
        )
    )
    def send(batch: list[tuple[int, tuple[str, Any]]]) -> None:
        wires = []
        senders = []
        for who, (kind, payload) in batch:
            wires.append(encode_action(key(who), chain_id, kind, nonces[who], payload))
            senders.append(who)
            nonces[who] += 1
        results = client.submit_batch(wires)["results"]
        for result in results:
            if "hash" in result:
                _SENT["accepted"] += 1
        # Whatever was refused left no gap: resync with the node's view of the next nonce.
        for who in set(senders):
            nonces[who] = int(client.account(pub(who))["next_nonce"])

    send()
    assert _SENT["accepted"] > 0
    _drained(client)
    _every_route_answers(node, job_id)
    _close_open_rounds(client, job_id)
    replay, report = _verdicts(node, genesis[0])
    assert replay["match"], replay
    assert report["verdict"] in ("ok", "data_withheld"), report
    assert report["challenged"] == [] and report["wrong"] == [], report
    assert report["verified"], report
