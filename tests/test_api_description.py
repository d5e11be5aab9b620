"""The API description (GET /openapi.json, generated from node.api_models and the STF's field
specs) against the node's real answers.

A node with its embedded L1 (py-evm) is driven until every route has real data: a model with
an encrypted artifact, access proposals approved (with a message), rejected and cancelled, a
job funded on L1 whose first round is aggregated (a copier slashed on evidence, the others
rewarded), a withdrawal and a stake release, batches committed and finalized and every
settlement record settled by the keeper. Then every route is asked for its successes and its
refusals (4xx, and 503 `busy` while requests fill the node's slots), and every answer is
validated (jsonschema_rs, draft 2020-12) against what the description gives for its status
and content type. A second node runs without L1 for the L1 routes' 404. Every documented
status is exercised but the one a test cannot cause honestly (500 `stf_error`).

Also: the description lists exactly the app's routes; every action in the chain validates
against its ActionEnvelope and payload schema; and for every field of every action type the
payload schema and the decoder agree at the bounds."""

import http.client
import json
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import jsonschema_rs
import msgpack
import numpy as np
import pytest
from web3 import Web3

from node import api_models
from node.config import NodeConfig
from node.sdk.client import SUCCESS_STATUSES, Client, event
from node.sdk.devkeys import dev_genesis
from node.server.app import ROUTES, create_app
from node.server.openapi import OPERATIONS, action_schemas, openapi_spec, payload_schema_name
from rollup.codec import encode_action
from stf import aggregation
from stf.accounts import Transfer
from stf.actions import ACTIONS, decode_payload
from stf.aggregation import Rules
from stf.errors import InvalidAction
from stf.jobs import Amount, JobTerms
from stf.settlement import KIND_NAMES
from tests.conftest import NodeProcess, free_port
from tests.fl_harness import ARCH, PARAMS, http_submit_round, key, pub
from tests.l1_helpers import (
    ETH,
    deployment_of,
    settlement,
    transact,
    wait_until,
    web3_at,
    write_genesis,
)

CHAIN_ID = 4343
OWNER, BUYER, SENDER = 0, 1, 2
HONEST, COPIER = [3, 4, 5, 6], 7
CLIENTS = [*HONEST, COPIER]
PRICE = ETH // 100
ARTIFACT = b"an encrypted model artifact"
# L2 genesis balances have no ETH behind them on L1: a withdrawal is paid from what L1 holds
# for the rollup (here the job funding's protocol fee), so it stays small.
WITHDRAWAL = ETH // 1000
BODY_TIMEOUT_S = 2
SLOTS = 2  # max_concurrent_requests: small, so the test can fill them
JSON = "application/json"
MSGPACK = "application/msgpack"
# The one documented answer no honest request can cause: the door's simulation hitting an
# STF fault (the node's own bug) answers 500 `stf_error`.
NOT_EXERCISED = {
    ("POST", "/v1/actions", 500),
    # a pruning node's full reads: tests/test_storage.py (this node is an archive)
    ("GET", "/v1/blocks/{ref}", 410),
    ("GET", "/v1/batches/{index}", 410),
}


# -- the description as a validator -----------------------------------------------------------


class Description:
    """Validates one answer against the response the description gives for it."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.doc = doc
        self._validators: dict[tuple[str, str, int, str], Any] = {}

    def response_schema(
        self, method: str, template: str, status: int, media: str
    ) -> dict[str, Any]:
        op = self.doc["paths"][template][method.lower()]
        response = op["responses"].get(str(status))
        assert response is not None, f"{method} {template}: status {status} is not documented"
        content = response["content"]
        assert media in content, f"{method} {template} {status}: {media} not in {list(content)}"
        schema: dict[str, Any] = content[media]["schema"]
        return schema

    def validate(self, method: str, template: str, status: int, media: str, body: bytes) -> None:
        schema = self.response_schema(method, template, status, media)
        if media != JSON:
            assert schema.get("format") == "binary" or media.startswith("text/"), schema
            return
        self.validator(schema, (method, template, status, media)).validate(json.loads(body))

    def validator(self, schema: dict[str, Any], slot: tuple[str, str, int, str]) -> Any:
        if slot not in self._validators:
            root = {**schema, "components": self.doc["components"]}
            self._validators[slot] = jsonschema_rs.Draft202012Validator(root)
        return self._validators[slot]

    def component(self, name: str) -> Any:
        root = {"$ref": f"#/components/schemas/{name}", "components": self.doc["components"]}
        return jsonschema_rs.Draft202012Validator(root)


@dataclass
class Answer:
    status: int
    media: str
    body: bytes


def exchange(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        media = (resp.getheader("Content-Type") or "").split(";")[0].strip()
        return Answer(resp.status, media, resp.read())
    finally:
        conn.close()


def raw_exchange(port: int, head: str, body: bytes = b"") -> Answer:
    """A hand-written request (a lying Content-Length, a body that never finishes). Read up
    to the answer's Content-Length: the node then lingers a while for the rest of the body
    before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(head.encode() + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        header, _, rest = data.partition(b"\r\n\r\n")
        lines = header.decode("latin-1").split("\r\n")
        fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
        while len(rest) < int(fields["content-length"]):
            rest += sock.recv(65536)
    media = fields.get("content-type", "").split(";")[0].strip()
    return Answer(int(lines[0].split(" ")[1]), media, rest)


def post_head(path: str, media: str, length: int, extra: str = "") -> str:
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: {media}\r\nContent-Length: {length}\r\n{extra}"
    )


@dataclass
class Prober:
    """Asks, validates every answer, and records which (route, status) pairs were seen."""

    description: Description
    seen: set[tuple[str, str, int]] = field(default_factory=set)
    validated: int = 0

    def check(self, method: str, template: str, answer: Answer, expect: int) -> Answer:
        assert answer.status == expect, (method, template, answer)
        self.description.validate(method, template, answer.status, answer.media, answer.body)
        self.seen.add((method, template, answer.status))
        self.validated += 1
        return answer

    def ask(
        self,
        node: NodeProcess,
        method: str,
        template: str,
        path: str,
        expect: int,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        return self.check(
            method, template, exchange(node.port, method, path, body, headers), expect
        )


# -- driving the node -------------------------------------------------------------------------


@dataclass
class Traffic:
    node: NodeProcess
    bare: NodeProcess  # --l1 none
    follower: NodeProcess  # of `bare`
    client: Client
    w3: Web3
    model_id: str
    artifact_hash: str
    approved: int  # access proposal ids
    rejected: int
    cancelled: int
    job_id: int
    actions: list[str]
    records: list[str]
    statuses_seen: set[str]


def job_terms() -> JobTerms:
    return JobTerms(
        rounds=2,
        min_participants=len(CLIENTS),
        max_participants=10,
        f=1,
        stake_required=ETH,
        round_blocks=10_000,
        target_accuracy_bp=0,
        aggregator=b"",
        local_epochs=1,
        slash_bps=5000,
        max_samples=10_000,
        krum_m=0,
        rules=Rules(),
    )


def ok(client: Client, action_hash: str, log: list[str]) -> dict[str, Any]:
    log.append(action_hash)
    status = client.wait(action_hash)
    assert status["status"] in SUCCESS_STATUSES, status
    return status


def drive(node: NodeProcess, bare: NodeProcess, follower: NodeProcess) -> Traffic:
    client = node.client
    w3 = web3_at(node.url + "/l1")
    dep = deployment_of(w3, client)
    sent: list[str] = []
    init = np.random.default_rng(0).normal(0, 0.1, PARAMS).astype(np.float32)
    ok(client, client.upload(key(OWNER), "digits", ARCH, init, artifact=ARTIFACT), sent)
    ok(client, client.set_price(key(OWNER), "digits", PRICE), sent)

    def access_proposal(expiry_blocks: int = 1000) -> int:
        status = ok(client, client.propose_access(key(BUYER), "digits", PRICE, expiry_blocks), sent)
        return int(event(status, "ProposalCreated")["proposal_id"])

    rejected = access_proposal()
    ok(client, client.reject(key(OWNER), rejected), sent)
    cancelled = access_proposal(expiry_blocks=1)
    ok(client, client.send(key(SENDER), "transfer", Transfer(pub(OWNER), 1)), sent)  # a block
    ok(client, client.cancel(key(BUYER), cancelled), sent)
    approved = access_proposal()  # last: a key with access cannot propose again
    ok(client, client.approve(key(OWNER), approved, pub(BUYER), b"\x07" * 32), sent)
    ok(client, client.message(key(BUYER), approved, "thank you"), sent)

    status = ok(client, client.propose_train(key(OWNER), "digits", 0, job_terms()), sent)
    job_id = int(event(status, "JobCreated")["job_id"])
    # L1 dev accounts 5-9 (0-4 are the node's): each participant's own, bound on L2 first.
    l1_accounts = dict(zip(CLIENTS, w3.eth.accounts[5:10], strict=True))
    transact(w3, dep.rewards.functions.fundJob(job_id), l1_accounts[COPIER], ETH)
    for who, address in l1_accounts.items():
        ok(client, client.bind_l1(key(who), address), sent)
        transact(w3, dep.registry.functions.stake(pub(who)), address, 2 * ETH)
    wait_until(lambda: all(client.stake_of(pub(w)) for w in CLIENTS), "L1 stakes on L2")
    wait_until(lambda: client.job(job_id)["funded"] != "0", "the L1 funding on L2")

    g = client.global_params(job_id, 0)
    direction = np.random.default_rng(7).normal(0, 0.01, PARAMS)
    items = []
    for who in CLIENTS:
        noise = np.random.default_rng(who).normal(0, 0.003, PARAMS)
        params = g if who == COPIER else g + direction + noise
        items.append((key(who), params.astype(np.float32), 100 + who))
    for done in http_submit_round(client, key(OWNER), job_id, 1, items):
        assert done["status"] in SUCCESS_STATUSES, done
    finals = [ok(client, client.aggregate(key(OWNER), job_id, 1, 9100), sent)]
    finals.append(ok(client, client.withdraw(key(BUYER), WITHDRAWAL, "0x" + "ab" * 20), sent))
    finals.append(ok(client, client.unstake(key(HONEST[0])), sent))
    # A removed action type, still decodable: admitted unsimulated behind the sender's own
    # pending transfer, so it reaches a block and fails there (`stake_on_l1`).
    # (one batch: the transfer is pending when the stake is admitted)
    nonce = int(client.account(pub(SENDER))["next_nonce"])
    pair = [
        encode_action(key(SENDER), CHAIN_ID, "transfer", nonce, Transfer(pub(OWNER), 2)),
        encode_action(key(SENDER), CHAIN_ID, "stake", nonce + 1, Amount(1)),
    ]
    results = client.submit_batch(pair)["results"]
    sent += [r["hash"] for r in results]
    assert client.wait(results[1]["hash"])["status"] == "failed"

    records = [r["record_id"] for f in finals for r in f["receipt"]["records"]]
    kinds = {r["kind"] for f in finals for r in f["receipt"]["records"]}
    assert kinds == {"slash", "reward", "withdrawal", "stake_release"}, kinds
    seen: set[str] = set()

    def all_final() -> bool:
        states = [client.action(h)["status"] for h in sent]
        seen.update(states)
        return all(s in ("finalized", "failed") for s in states)

    wait_until(all_final, "every action's batch to finalize", timeout=120)

    def unsettled() -> dict[str, Any]:
        docs = {r: settlement(client, r) for r in records}
        return {
            r: (d["record"]["kind"], d["settled"])
            for r, d in docs.items()
            if d["settled"] != "settled"
        }

    wait_until(lambda: not unsettled(), "the keeper to settle every record", timeout=60)
    return Traffic(
        node,
        bare,
        follower,
        client,
        w3,
        "digits",
        client.model("digits")["artifact_hash"],
        approved,
        rejected,
        cancelled,
        job_id,
        sent,
        records,
        seen,
    )


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Traffic]:
    tmp = tmp_path_factory.mktemp("api-description")
    genesis = write_genesis(tmp / "genesis.json", CHAIN_ID, [pub(i) for i in range(10)], 10**21)
    env = {
        "FEDROLLUP_MAX_CONCURRENT_REQUESTS": str(SLOTS),
        "FEDROLLUP_BODY_TIMEOUT_S": str(BODY_TIMEOUT_S),
    }
    args = ["--genesis", str(genesis), "--challenge-window-s", "2"]
    args += ["--batch-interval-ms", "300", "--block-time-ms", "50"]
    node = NodeProcess(tmp / "data", free_port(), args, env)
    bare = NodeProcess(tmp / "bare", free_port(), ["--l1", "none", "--block-time-ms", "50"])
    follow = ["--follow", bare.url, "--follow-poll-ms", "50"]
    follower = NodeProcess(tmp / "follower", free_port(), follow)
    try:
        with ThreadPoolExecutor(3) as pool:  # all start at once (a follower retries)
            for started in [pool.submit(n.start) for n in (node, bare, follower)]:
                started.result()
        yield drive(node, bare, follower)
    finally:
        for n in (node, bare, follower):
            n.kill()


# -- the tests --------------------------------------------------------------------------------


def registered_routes(tmp_path: Path) -> set[tuple[str, str]]:
    """(method, path) of every route the aiohttp app registers (built, not started). The
    HEAD that aiohttp adds beside a GET (`add_get`) is that GET's."""
    app = create_app(NodeConfig(data_dir=tmp_path), dev_genesis())
    found = set()
    for route in app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        found.add((route.method, str(path)))
    return {(m, p) for m, p in found if m != "HEAD" or ("GET", p) not in found}


def test_description_lists_exactly_the_app_routes(tmp_path: Path) -> None:
    spec = openapi_spec()
    documented = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    assert documented == registered_routes(tmp_path)
    assert {(method, path) for method, path, _ in ROUTES} < documented
    for path, ops in spec["paths"].items():
        for op in ops.values():
            names = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert names == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}


def test_every_schema_is_valid_json_schema() -> None:
    spec = openapi_spec()
    assert spec["openapi"] == "3.1.0"
    for name, schema in spec["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status, response in op["responses"].items():
                for media, content in response["content"].items():
                    assert jsonschema_rs.meta.is_valid(content["schema"]), (
                        path,
                        method,
                        status,
                        media,
                    )


def test_enums_are_complete() -> None:
    """The enums the description publishes hold every value the code can write."""
    schemas = openapi_spec()["components"]["schemas"]
    status = schemas["ActionStatus"]["properties"]["status"]["enum"]
    assert set(status) == {"accepted", "executed", "failed", "committed", "finalized"}
    assert set(status) == set(get_args(api_models.ActionState))
    reasons = set(schemas["RoundDecision"]["properties"]["reason"]["enum"])
    assert (
        reasons == {aggregation.KEPT} | aggregation.EXCLUDING_REASONS | aggregation.SLASHING_REASONS
    )
    kinds = schemas["ReceiptJson"]["properties"]["records"]["items"]
    assert kinds == {"$ref": "#/components/schemas/RecordJson"}
    assert set(schemas["RecordJson"]["properties"]["kind"]["enum"]) == set(KIND_NAMES.values())
    assert set(schemas["L1Record"]["properties"]["kind"]["enum"]) == set(KIND_NAMES)
    rules = schemas["Rules"]["properties"]
    assert tuple(rules) == aggregation.RULE_NAMES
    envelope_types = schemas["ActionEnvelope"]["prefixItems"][2]["enum"]
    assert envelope_types == sorted(ACTIONS)
    for name in ACTIONS:
        assert payload_schema_name(name) in schemas


def test_every_answer_validates_against_the_description(traffic: Traffic) -> None:
    """Successes and refusals of every route, with real data behind each."""
    t = traffic
    prober = Prober(Description(dict(openapi_spec())))
    node, port = t.node, t.node.port
    a = prober.ask

    # ingress
    wire = encode_action(key(SENDER), CHAIN_ID, "transfer", next_nonce(t), Transfer(pub(1), 3))
    mp = {"Content-Type": MSGPACK}
    a(node, "POST", "/v1/actions", "/v1/actions", 202, wire, mp)
    a(node, "POST", "/v1/actions", "/v1/actions", 409, wire, mp)
    a(node, "POST", "/v1/actions", "/v1/actions", 400, b"\x01", mp)
    forged = wire[:-1] + bytes([wire[-1] ^ 1])
    a(node, "POST", "/v1/actions", "/v1/actions", 401, forged, mp)
    a(node, "POST", "/v1/actions", "/v1/actions", 415, wire, {"Content-Type": "text/plain"})
    batch = [
        encode_action(key(SENDER), CHAIN_ID, "transfer", next_nonce(t), Transfer(pub(1), 4)),
        wire,
    ]
    answer = a(
        node, "POST", "/v1/actions/batch", "/v1/actions/batch", 200, msgpack.packb(batch), mp
    )
    assert json.loads(answer.body)["accepted"] == 1
    a(node, "POST", "/v1/actions/batch", "/v1/actions/batch", 400, msgpack.packb([]), mp)
    plain = {"Content-Type": "text/plain"}
    a(node, "POST", "/v1/actions/batch", "/v1/actions/batch", 415, b"", plain)
    too_big = 10**12
    for path in ("/v1/actions", "/v1/actions/batch"):
        prober.check("POST", path, raw_exchange(port, post_head(path, MSGPACK, too_big)), 413)
        stalled = raw_exchange(port, post_head(path, MSGPACK, 100), b"\x91")
        prober.check("POST", path, stalled, 408)

    # actions and blocks
    t_action = "/v1/actions/{hash}"
    for h in t.actions:
        a(node, "GET", t_action, f"/v1/actions/{h}", 200)
    a(node, "GET", t_action, "/v1/actions/0x12", 400)
    a(node, "GET", t_action, "/v1/actions/0x" + "00" * 32, 404)
    head = t.client.health()["head"]["height"]
    for height in range(head + 1):
        a(node, "GET", "/v1/blocks/{ref}", f"/v1/blocks/{height}?full=1", 200)
    a(node, "GET", "/v1/blocks/{ref}", "/v1/blocks/latest", 200)
    a(node, "GET", "/v1/blocks/{ref}", "/v1/blocks/-1", 400)
    a(node, "GET", "/v1/blocks/{ref}", "/v1/blocks/99999999", 404)

    # state
    for who in (OWNER, BUYER, 9, 200):
        a(node, "GET", "/v1/accounts/{key}", f"/v1/accounts/0x{pub(who).hex()}", 200)
    a(node, "GET", "/v1/accounts/{key}", "/v1/accounts/0xzz", 400)
    for state_key in (b"model/digits", b"no such key"):
        path = f"/v1/state/0x{state_key.hex()}/proof"
        a(node, "GET", "/v1/state/{key}/proof", path, 200)
    a(node, "GET", "/v1/state/{key}/proof", "/v1/state/0x1/proof", 400)
    a(node, "GET", "/v1/health", "/v1/health", 200)
    a(node, "GET", "/metrics", "/metrics", 200)
    a(node, "GET", "/openapi.json", "/openapi.json", 200)

    # models, proposals, jobs
    model = "/v1/models/digits"
    a(node, "GET", "/v1/models", "/v1/models?limit=10", 200)
    a(node, "GET", "/v1/models", "/v1/models?limit=ten", 400)
    a(node, "GET", "/v1/models-count", "/v1/models-count", 200)
    for suffix, template in (
        ("", "/v1/models/{model_id}"),
        ("/price", "/v1/models/{model_id}/price"),
    ):
        a(node, "GET", template, model + suffix, 200)
        a(node, "GET", template, f"/v1/models/no%20spaces{suffix}", 400)
        a(node, "GET", template, f"/v1/models/nothing{suffix}", 404)
    t_params = "/v1/models/{model_id}/params"
    a(node, "GET", t_params, model + "/params", 200)
    a(node, "GET", t_params, model + "/params?format=f32", 200)
    a(node, "GET", t_params, model + "/params?format=xml", 400)
    a(node, "GET", t_params, "/v1/models/nothing/params", 404)
    t_access = "/v1/models/{model_id}/access/{key}"
    a(node, "GET", t_access, f"{model}/access/0x{pub(BUYER).hex()}", 200)
    a(node, "GET", t_access, f"{model}/access/0x00", 400)
    a(node, "GET", t_access, f"{model}/access/0x{pub(9).hex()}", 404)
    a(node, "GET", "/v1/blobs/{hash}", f"/v1/blobs/{t.artifact_hash}", 200)
    a(node, "GET", "/v1/blobs/{hash}", "/v1/blobs/0x00", 400)
    a(node, "GET", "/v1/blobs/{hash}", "/v1/blobs/0x" + "11" * 32, 404)
    for pid in (t.approved, t.rejected, t.cancelled, t.job_id):
        a(node, "GET", "/v1/proposals/{pid}", f"/v1/proposals/{pid}", 200)
        a(node, "GET", "/v1/proposals/{pid}/messages", f"/v1/proposals/{pid}/messages", 200)
    for template in ("/v1/proposals/{pid}", "/v1/proposals/{pid}/messages"):
        a(node, "GET", template, template.replace("{pid}", "x"), 400)
        a(node, "GET", template, template.replace("{pid}", "999"), 404)
    job = f"/v1/jobs/{t.job_id}"
    a(node, "GET", "/v1/jobs/{job_id}", job, 200)
    a(node, "GET", "/v1/jobs/{job_id}", "/v1/jobs/x", 400)
    a(node, "GET", "/v1/jobs/{job_id}", "/v1/jobs/999", 404)
    t_round, t_global = (
        "/v1/jobs/{job_id}/rounds/{round}",
        "/v1/jobs/{job_id}/rounds/{round}/global",
    )
    a(node, "GET", t_round, f"{job}/rounds/2", 200)
    round_one = json.loads(a(node, "GET", t_round, f"{job}/rounds/1", 200).body)
    assert {d["outcome"] for d in round_one["decisions"]} >= {"kept", "slashed"}
    a(node, "GET", t_round, f"{job}/rounds/x", 400)
    a(node, "GET", t_round, f"{job}/rounds/9", 404)
    for rnd in (0, 1):
        a(node, "GET", t_global, f"{job}/rounds/{rnd}/global", 200)
        a(node, "GET", t_global, f"{job}/rounds/{rnd}/global?format=f32", 200)
    a(node, "GET", t_global, f"{job}/rounds/1/global?format=xml", 400)
    a(node, "GET", t_global, f"{job}/rounds/9/global", 404)
    for who in (HONEST[1], COPIER, 9):
        a(node, "GET", "/v1/stakes/{key}", f"/v1/stakes/0x{pub(who).hex()}", 200)
    a(node, "GET", "/v1/stakes/{key}", "/v1/stakes/0x", 400)

    # L1
    listed = json.loads(a(node, "GET", "/v1/batches", "/v1/batches", 200).body)["batches"]
    assert {b["status"] for b in listed} >= {"finalized"}
    for b in listed:
        for query in ("", "?full=1"):
            a(node, "GET", "/v1/batches/{index}", f"/v1/batches/{b['index']}{query}", 200)
    a(node, "GET", "/v1/batches/{index}", "/v1/batches/x", 400)
    a(node, "GET", "/v1/batches/{index}", "/v1/batches/99999", 404)
    t_proof = "/v1/settlements/{record_id}/proof"
    for record in t.records:
        a(node, "GET", t_proof, f"/v1/settlements/{record}/proof", 200)
    a(node, "GET", t_proof, "/v1/settlements/0x00/proof", 400)
    a(node, "GET", t_proof, f"/v1/settlements/0x{'22' * 32}/proof", 404)
    a(node, "GET", "/v1/l1/deployment", "/v1/l1/deployment", 200)
    rpc = {"Content-Type": JSON}
    for call in (
        {"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []},
        {"jsonrpc": "2.0", "id": "x", "method": "eth_noSuchMethod", "params": []},
    ):
        a(node, "POST", "/l1", "/l1", 200, json.dumps(call).encode(), rpc)
    a(node, "POST", "/l1", "/l1", 400, b"[1, 2]", rpc)
    gzip = {**rpc, "Content-Encoding": "gzip"}
    a(node, "POST", "/l1", "/l1", 415, b"\x1f\x8b", gzip)
    prober.check("POST", "/l1", raw_exchange(port, post_head("/l1", JSON, too_big)), 413)
    prober.check("POST", "/l1", raw_exchange(port, post_head("/l1", JSON, 100), b"{"), 408)
    bare = t.bare
    for path in ("/v1/batches", "/v1/l1/deployment"):
        a(bare, "GET", path, path, 404)
    a(bare, "GET", "/v1/batches/{index}", "/v1/batches/0", 404)
    a(bare, "POST", "/l1", "/l1", 404, b"{}", rpc)
    follower = t.follower
    health = json.loads(a(follower, "GET", "/v1/health", "/v1/health", 200).body)
    assert health["role"] == "follower" and health["sequencer"]["url"] == bare.url, health
    for path in ("/v1/actions", "/v1/actions/batch"):
        a(follower, "POST", path, path, 421, wire, mp)
    a(follower, "GET", "/v1/l1/deployment", "/v1/l1/deployment", 404)

    # the explorer (a page, not JSON)
    for path in ("/explorer", "/explorer/"):
        a(node, "GET", path, path, 200)
    for name in ("index.html", "explorer.js", "explorer.css"):
        a(node, "GET", "/explorer/{name}", f"/explorer/{name}", 200)
    a(node, "GET", "/explorer/{name}", "/explorer/secrets", 404)

    # 503 busy: every slot held by a request whose body never comes
    for op in OPERATIONS:
        method, template = op.method, op.path
        path = concrete(template, t)
        with held_slots(port):
            answer = exchange(port, method, path, b"{}" if method == "POST" else None, rpc)
        prober.check(method, template, answer, 503)

    documented = {
        (op.method, op.path, int(status))
        for op in OPERATIONS
        for status in openapi_spec()["paths"][op.path][op.method.lower()]["responses"]
    }
    assert prober.seen <= documented
    assert documented - prober.seen == NOT_EXERCISED, sorted(documented - prober.seen)
    print(f"\n{prober.validated} answers validated, {len(prober.seen)} (route, status) pairs")


def test_action_statuses_seen_are_documented(traffic: Traffic) -> None:
    enum = openapi_spec()["components"]["schemas"]["ActionStatus"]["properties"]["status"]
    assert {"failed", "committed", "finalized"} <= traffic.statuses_seen <= set(enum["enum"])


def test_every_action_in_the_chain_matches_its_envelope_schema(traffic: Traffic) -> None:
    description = Description(dict(openapi_spec()))
    envelope = description.component("ActionEnvelope")
    types: set[str] = set()
    head = traffic.client.health()["head"]["height"]
    for height in range(head + 1):
        for raw in traffic.client.block(height, full=True)["actions"]:
            action = msgpack.unpackb(bytes.fromhex(raw[2:]), raw=False)
            envelope.validate(json_view(action))
            types.add(action[2])
            wrong = json_view(action)
            wrong[5] = [*wrong[5], 0]  # one payload member too many
            assert not envelope.is_valid(wrong)
    assert types == set(ACTIONS), set(ACTIONS) - types


# -- payload schemas and the decoder agree at the bounds --------------------------------------


def json_view(value: Any) -> Any:
    """msgpack values as the description writes them: binaries as 0x-hex."""
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, list):
        return [json_view(v) for v in value]
    return value


def minimal(schema: dict[str, Any]) -> Any:
    """The smallest value a field schema accepts, in msgpack form."""
    if schema.get("x-msgpack") == "bin":
        pattern = schema["pattern"]
        size = int(pattern.split("{")[1].split("}")[0]) // 2 if pattern.endswith("}$") else 0
        return bytes(size)
    if schema["type"] == "integer":
        return 0
    if schema["type"] == "string":
        return ""
    if "prefixItems" in schema:
        return [minimal(s) for s in schema["prefixItems"]]
    return []


def variants(schema: dict[str, Any], value: Any) -> Iterator[Any]:
    """Values at and just past the field's bounds (and of the wrong type)."""
    if schema.get("x-msgpack") == "bin":
        yield from (None, "text", value + b"\x01", value[:-1])
        if "maxLength" in schema:
            top = (schema["maxLength"] - 2) // 2
            yield from (bytes(top), bytes(top + 1))
        if "uint256" in schema["description"]:
            yield from (b"\x01" * 32, b"\x01" * 33, b"\x00", b"\x00\x01", b"\x01\x00")
        if "float32" in schema["description"]:
            yield from (b"\x00\x00\x80\x3f" * 3, b"\x00" * 5)
        return
    if schema["type"] == "integer":
        yield from (schema["maximum"], schema["maximum"] + 1, -1, True, "1", None)
        return
    if schema["type"] == "string":
        # (no bytes here: the JSON view writes a binary as a hex string)
        yield from ("a" * schema["maxLength"], "a" * (schema["maxLength"] + 1), 1, None)
        return
    if "prefixItems" in schema:
        yield from (value[:-1], [*value, 0], "x")
        for i, member in enumerate(schema["prefixItems"]):
            for v in variants(member, value[i]):
                yield [*value[:i], v, *value[i + 1 :]]
        return
    inner = minimal(schema["items"])
    yield from ([inner] * schema["maxItems"], [inner] * (schema["maxItems"] + 1), {}, None)
    for v in variants(schema["items"], inner):
        yield [v]


def decodes(action_type: str, raw: Any) -> bool:
    try:
        decode_payload(action_type, raw)
    except InvalidAction:
        return False
    return True


@pytest.mark.parametrize("action_type", sorted(ACTIONS))
def test_payload_schema_and_decoder_agree_at_the_bounds(action_type: str) -> None:
    """For every field: the schema accepts exactly what the decoder accepts (bytes at, under
    and over their size, integers at and past their maximum, lists at and past their length,
    wrong types). Text bounds are UTF-8 bytes, which JSON Schema cannot count: ASCII here."""
    schema = action_schemas()[payload_schema_name(action_type)]
    validator = jsonschema_rs.Draft202012Validator(schema)
    base = minimal(schema)
    assert decodes(action_type, base) and validator.is_valid(json_view(base))
    checked = 0
    for raw in variants(schema, base):
        assert decodes(action_type, raw) == validator.is_valid(json_view(raw)), raw
        checked += 1
    assert checked >= 4 * len(ACTIONS[action_type].fields)


# -- helpers ----------------------------------------------------------------------------------


def next_nonce(t: Traffic) -> int:
    return int(t.client.account(pub(SENDER))["next_nonce"])


def concrete(template: str, t: Traffic) -> str:
    values = {
        "hash": t.actions[0],
        "ref": "latest",
        "key": "0x" + pub(OWNER).hex(),
        "model_id": t.model_id,
        "pid": str(t.approved),
        "job_id": str(t.job_id),
        "round": "1",
        "index": "0",
        "record_id": t.records[0],
        "name": "index.html",
    }
    for name, value in values.items():
        template = template.replace("{" + name + "}", value)
    return template


class held_slots:
    """Fill every request slot of the node with a request whose body has not arrived yet;
    the node answers everything else 503 `busy` until the bodies come (and are refused)."""

    HELD_BODY = 100

    def __init__(self, port: int) -> None:
        self.port = port
        self.socks: list[socket.socket] = []

    def __enter__(self) -> "held_slots":
        for _ in range(SLOTS):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            head = post_head("/v1/actions", MSGPACK, self.HELD_BODY) + "\r\n"
            sock.sendall(head.encode())
            self.socks.append(sock)
        wait_until(
            lambda: exchange(self.port, "GET", "/v1/health").status == 503,
            "the held requests to fill the slots",
            poll=0.02,
        )
        return self

    def __exit__(self, *exc: object) -> None:
        """Send the bodies: each is refused (400) and its slot is free once answered."""
        for sock in self.socks:
            with sock:
                sock.sendall(bytes(self.HELD_BODY))
                while sock.recv(65536):
                    pass


def test_success_answers_are_api_models() -> None:
    """Each success model is a type of node.api_models (or raw bytes / text)."""
    for op in OPERATIONS:
        answer = op.ok[1]
        if isinstance(answer, str):
            continue
        for member in get_args(answer) or (answer,):
            assert getattr(api_models, member.__name__) is member, op.path


def test_generated_schema_refuses_undeclared_fields() -> None:
    """Objects are closed: a field a view adds without its type saying so is refused."""
    description = Description(dict(openapi_spec()))
    health = {
        "status": "ok",
        "role": "sequencer",
        "chain_id": 1,
        "genesis_hash": "0x" + "00" * 32,
        "head": {"height": 0, "hash": "0x" + "00" * 32, "state_root": "0x" + "00" * 32},
        "pending_actions": 0,
    }
    body = json.dumps(health).encode()
    description.validate("GET", "/v1/health", 200, JSON, body)
    with pytest.raises(jsonschema_rs.ValidationError):
        description.validate(
            "GET", "/v1/health", 200, JSON, json.dumps({**health, "x": 1}).encode()
        )
    with pytest.raises(jsonschema_rs.ValidationError):
        bad_hash = {**health, "genesis_hash": "0x" + "00" * 31}
        description.validate("GET", "/v1/health", 200, JSON, json.dumps(bad_hash).encode())
