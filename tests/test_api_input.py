"""Hostile and malformed input against a real node over loopback HTTP: every bad request gets
its exact 4xx status and JSON error code and changes nothing (head, sender nonce, balance,
next nonce); execution-time failures burn the nonce but move no money; reads carry proofs
that verify, and tampered copies do not."""

import copy
import http.client
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from nacl.signing import SigningKey

from node.config import NodeConfig
from node.sdk.client import SUCCESS_STATUSES, Client, verify_state_read
from node.sdk.devkeys import DEV_BALANCE, DEV_CHAIN_ID, dev_key
from node.server.app import ROUTES
from node.server.explorer import EXPLORER_ROUTES
from rollup.codec import encode_action, pack, signing_message
from stf.accounts import Transfer, account_key
from stf.fields import u256_to_bytes
from tests.conftest import NodeProcess, free_port

MSGPACK = "application/msgpack"
SETTLE_S = 0.3  # several 50 ms block times
BAD_SENDER = dev_key(1)
RECIPIENT = bytes(dev_key(9).verify_key)


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    """One node for the module, started exactly like conftest's `node` fixture (a node
    start costs ~1 s; the many stateless-input cases share it and wait for quiescence)."""
    data = tmp_path_factory.mktemp("api-node") / "data"
    proc = NodeProcess(data, free_port(), ["--block-time-ms", "50"]).start()
    yield proc
    proc.kill()


@dataclass
class Response:
    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    content_type: str | None = MSGPACK,
) -> Response:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        headers = {"Content-Type": content_type} if body is not None and content_type else {}
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return Response(resp.status, resp.getheader("Content-Type", ""), resp.read())
    finally:
        conn.close()


def pub(key: SigningKey) -> bytes:
    return bytes(key.verify_key)


def wait_idle(client: Client, timeout: float = 10.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        health = client.health()
        if health["pending_actions"] == 0:
            return health
        assert time.monotonic() < deadline, "node never drained its mempool"
        time.sleep(0.02)


def observe(client: Client, key: SigningKey) -> tuple[Any, ...]:
    """Everything a rejected input must leave alone."""
    health = wait_idle(client)
    acct = client.account(pub(key))
    return (
        health["head"]["height"],
        health["head"]["state_root"],
        acct["nonce"],
        acct["balance"],
        acct["next_nonce"],
    )


def assert_refused_without_effect(
    node: NodeProcess,
    send: Callable[[], Response],
    status: int,
    code: str,
    key: SigningKey = BAD_SENDER,
) -> Response:
    client = node.client
    before = observe(client, key)
    resp = send()
    assert resp.status == status, resp.body[:300]
    assert resp.content_type.startswith("application/json")
    body = resp.json()
    assert body["error"] == code, body
    assert isinstance(body["detail"], str) and body["detail"]
    time.sleep(SETTLE_S)
    assert observe(client, key) == before
    assert client.health()["pending_actions"] == 0
    return resp


def next_nonce(client: Client, key: SigningKey) -> int:
    return int(client.account(pub(key))["next_nonce"])


def transfer(
    key: SigningKey,
    nonce: int,
    amount: int = 1,
    to: bytes = RECIPIENT,
    chain_id: int = DEV_CHAIN_ID,
) -> bytes:
    return encode_action(key, chain_id, "transfer", nonce, Transfer(to, amount))


def signed(fields: list[Any], key: SigningKey) -> bytes:
    """Sign arbitrary envelope fields honestly (so only the field itself is wrong)."""
    return pack([*fields, key.sign(signing_message(fields[1], pack(fields))).signature])


def fields(
    key: SigningKey,
    nonce: int,
    payload: list[Any] | None = None,
    version: int = 1,
    action_type: str = "transfer",
) -> list[Any]:
    if payload is None:
        payload = [RECIPIENT, u256_to_bytes(1)]
    return [version, DEV_CHAIN_ID, action_type, pub(key), nonce, payload]


def flip_last(raw: bytes) -> bytes:
    return raw[:-1] + bytes([raw[-1] ^ 1])


def balance(client: Client, key: bytes) -> int:
    return int(client.account(key)["balance"])


# -- bad actions on POST /v1/actions ------------------------------------------------------

# Each builder gets the sender's next nonce, so the one defect is the only thing wrong.
ACTION_CASES: dict[str, tuple[Callable[[int], bytes], int, str]] = {
    "truncated": (lambda n: transfer(BAD_SENDER, n)[:-10], 400, "malformed"),
    "truncated_header_only": (lambda n: b"\x97", 400, "malformed"),
    "empty_body": (lambda n: b"", 400, "malformed"),
    "trailing_byte": (lambda n: transfer(BAD_SENDER, n) + b"\xc0", 400, "malformed"),
    "non_canonical_envelope_array16": (
        lambda n: b"\xdc\x00\x07" + transfer(BAD_SENDER, n)[1:],
        400,
        "non_canonical",
    ),
    "non_canonical_chain_id_uint32": (
        lambda n: transfer(BAD_SENDER, n).replace(b"\xcd\x05\x39", b"\xce\x00\x00\x05\x39", 1),
        400,
        "non_canonical",
    ),
    "wrong_version": (
        lambda n: signed(fields(BAD_SENDER, n, version=2), BAD_SENDER),
        400,
        "bad_version",
    ),
    "unknown_action_type": (
        lambda n: signed(fields(BAD_SENDER, n, action_type="mint"), BAD_SENDER),
        400,
        "unknown_action",
    ),
    "bad_signature": (lambda n: flip_last(transfer(BAD_SENDER, n)), 401, "bad_signature"),
    "signed_by_other_key": (
        lambda n: pack(
            [
                *fields(BAD_SENDER, n),
                dev_key(2)
                .sign(signing_message(DEV_CHAIN_ID, pack(fields(BAD_SENDER, n))))
                .signature,
            ]
        ),
        401,
        "bad_signature",
    ),
    "other_chain_id": (
        lambda n: transfer(BAD_SENDER, n, chain_id=DEV_CHAIN_ID + 1),
        400,
        "wrong_chain",
    ),
    "nonce_gap": (lambda n: transfer(BAD_SENDER, n + 1), 409, "nonce_gap"),
    "nonce_far_ahead": (lambda n: transfer(BAD_SENDER, 2**64 - 1), 409, "nonce_gap"),
    "amount_as_signed_int": (
        lambda n: signed(fields(BAD_SENDER, n, payload=[RECIPIENT, -5]), BAD_SENDER),
        400,
        "bad_payload",
    ),
    "amount_33_bytes": (
        lambda n: signed(fields(BAD_SENDER, n, payload=[RECIPIENT, b"\x01" * 33]), BAD_SENDER),
        400,
        "bad_payload",
    ),
    "amount_leading_zero": (
        lambda n: signed(fields(BAD_SENDER, n, payload=[RECIPIENT, b"\x00\x01"]), BAD_SENDER),
        400,
        "bad_payload",
    ),
    "payload_arity": (
        lambda n: signed(fields(BAD_SENDER, n, payload=[RECIPIENT]), BAD_SENDER),
        400,
        "bad_payload",
    ),
    "over_action_size_limit": (
        lambda n: signed(fields(BAD_SENDER, n, payload=[RECIPIENT, b"\x01" * 5000]), BAD_SENDER),
        413,
        "too_large",
    ),
    "map_envelope": (lambda n: pack({"nonce": n}), 400, "malformed"),
}


@pytest.mark.parametrize("case", sorted(ACTION_CASES))
def test_bad_action_is_refused_and_changes_nothing(shared_node: NodeProcess, case: str) -> None:
    build, status, code = ACTION_CASES[case]
    wire = build(next_nonce(shared_node.client, BAD_SENDER))
    assert_refused_without_effect(
        shared_node, lambda: request(shared_node, "POST", "/v1/actions", wire), status, code
    )


@pytest.mark.parametrize("route", ["/v1/actions", "/v1/actions/batch"])
def test_body_over_max_body_bytes_is_413(shared_node: NodeProcess, route: str) -> None:
    n = next_nonce(shared_node.client, BAD_SENDER)
    good = transfer(BAD_SENDER, n)
    limit = NodeConfig().max_body_bytes
    if route.endswith("batch"):
        body = pack([good] + [b"\x00" * 1024 * 1024] * (limit // (1024 * 1024)))
    else:
        body = good + b"\x00" * limit
    assert len(body) > limit
    assert_refused_without_effect(
        shared_node, lambda: request(shared_node, "POST", route, body), 413, "body_too_large"
    )


@pytest.mark.parametrize("route", ["/v1/actions", "/v1/actions/batch"])
@pytest.mark.parametrize(
    "content_type", ["application/json", "text/plain", "application/x-www-form-urlencoded"]
)
def test_wrong_content_type_is_415(shared_node: NodeProcess, route: str, content_type: str) -> None:
    wire = transfer(BAD_SENDER, next_nonce(shared_node.client, BAD_SENDER))
    body = pack([wire]) if route.endswith("batch") else wire
    assert_refused_without_effect(
        shared_node,
        lambda: request(shared_node, "POST", route, body, content_type=content_type),
        415,
        "unsupported_media_type",
    )


# -- replays ------------------------------------------------------------------------------


def test_replayed_action_is_duplicate_and_old_nonce_is_replayed(shared_node: NodeProcess) -> None:
    client, key = shared_node.client, dev_key(2)
    n = next_nonce(client, key)
    wire = transfer(key, n, amount=3)
    resp = request(shared_node, "POST", "/v1/actions", wire)
    assert resp.status == 202 and resp.json()["status"] == "accepted"
    assert client.wait(resp.json()["hash"], timeout=10)["status"] in SUCCESS_STATUSES

    def post(raw: bytes) -> Callable[[], Response]:
        return lambda: request(shared_node, "POST", "/v1/actions", raw)

    assert_refused_without_effect(shared_node, post(wire), 409, "duplicate_action", key)
    assert_refused_without_effect(
        shared_node, post(transfer(key, n, amount=4)), 409, "nonce_replayed", key
    )
    batch = pack([wire])
    resp = request(shared_node, "POST", "/v1/actions/batch", batch)
    assert resp.status == 200
    assert resp.json()["results"][0]["error"] == "duplicate_action"


# -- batch route --------------------------------------------------------------------------

BATCH_BODY_CASES: dict[str, tuple[bytes, str]] = {
    "not_msgpack": (b"\xc1", "malformed"),
    "truncated": (pack([b"abc", b"def"])[:-2], "malformed"),
    "trailing_bytes": (pack([b"abc"]) + b"\x00", "malformed"),
    "a_single_binary": (pack(b"\x97"), "malformed"),
    "a_map": (pack({"actions": [b"x"]}), "malformed"),
    "an_int": (pack(7), "malformed"),
    "array_of_ints": (pack([1, 2, 3]), "malformed"),
    "array_of_strings": (pack(["0x97"]), "malformed"),
    "array_of_arrays": (pack([[b"x"]]), "malformed"),
    "binaries_and_int": (pack([b"x", 1]), "malformed"),
    "empty_array": (pack([]), "empty_batch"),
}


@pytest.mark.parametrize("case", sorted(BATCH_BODY_CASES))
def test_bad_batch_body_is_400(shared_node: NodeProcess, case: str) -> None:
    body, code = BATCH_BODY_CASES[case]
    assert_refused_without_effect(
        shared_node, lambda: request(shared_node, "POST", "/v1/actions/batch", body), 400, code
    )


def test_mixed_batch_gives_per_item_results(shared_node: NodeProcess) -> None:
    client, key = shared_node.client, dev_key(3)
    wait_idle(client)
    n = next_nonce(client, key)
    sender_before, to_before = balance(client, pub(key)), balance(client, RECIPIENT)
    good1, good2 = transfer(key, n, amount=10), transfer(key, n + 1, amount=20)
    items = [
        good1,
        flip_last(transfer(key, n + 1, amount=99)),
        good2,
        good1[:-3],
        transfer(key, n + 2, chain_id=1),
        transfer(key, n + 5),
        good1,
        transfer(key, n, amount=11),
        signed(fields(key, n + 2, payload=[RECIPIENT, b"\x00\x01"]), key),
    ]
    expected = [
        (202, None),
        (401, "bad_signature"),
        (202, None),
        (400, "malformed"),
        (400, "wrong_chain"),
        (409, "nonce_gap"),
        (409, "duplicate_action"),
        (409, "nonce_replayed"),
        (400, "bad_payload"),
    ]
    resp = request(shared_node, "POST", "/v1/actions/batch", pack(items))
    assert resp.status == 200, resp.body[:300]
    body = resp.json()
    assert (body["accepted"], body["rejected"]) == (2, 7)
    assert len(body["results"]) == len(items)
    hashes = []
    for result, (status, code) in zip(body["results"], expected, strict=True):
        if code is None:
            assert result["status"] == "accepted"
            hashes.append(result["hash"])
        else:
            assert (result["status"], result["error"]) == (status, code), result
            assert result["detail"]
    for h in hashes:
        assert client.wait(h, timeout=10)["status"] in SUCCESS_STATUSES
    assert next_nonce(client, key) == n + 2
    assert client.account(pub(key))["nonce"] == n + 1
    assert balance(client, pub(key)) == sender_before - 30
    assert balance(client, RECIPIENT) == to_before + 30


# -- URLs, routes, methods ----------------------------------------------------------------

A32 = "aa" * 32
URL_CASES: dict[str, tuple[str, str, int, str]] = {
    "account_not_hex": ("GET", "/v1/accounts/0xzz", 400, "bad_hex"),
    "account_bad_hex_digit": ("GET", f"/v1/accounts/0x{A32[:-1]}g", 400, "bad_hex"),
    "account_odd_length": ("GET", f"/v1/accounts/0x{A32[:-1]}", 400, "bad_hex"),
    "account_missing_0x": ("GET", f"/v1/accounts/{A32}", 400, "bad_hex"),
    "account_too_short": ("GET", f"/v1/accounts/0x{A32[:-2]}", 400, "bad_hex"),
    "account_too_long": ("GET", f"/v1/accounts/0x{A32}00", 400, "bad_hex"),
    "account_empty_hex": ("GET", "/v1/accounts/0x", 400, "bad_hex"),
    "action_not_hex": ("GET", "/v1/actions/nothex", 400, "bad_hex"),
    "action_short_hash": ("GET", "/v1/actions/0xabcd", 400, "bad_hex"),
    "state_not_hex": ("GET", "/v1/state/0xzz/proof", 400, "bad_hex"),
    "state_odd_length": ("GET", "/v1/state/0xabc/proof", 400, "bad_hex"),
    "state_key_too_long": ("GET", f"/v1/state/0x{'ab' * 1025}/proof", 400, "bad_hex"),
    "block_negative": ("GET", "/v1/blocks/-1", 400, "bad_height"),
    "block_word": ("GET", "/v1/blocks/abc", 400, "bad_height"),
    "block_hex": ("GET", "/v1/blocks/0x1", 400, "bad_height"),
    "block_too_many_digits": ("GET", "/v1/blocks/" + "9" * 20, 400, "bad_height"),
    "block_unknown_height": ("GET", "/v1/blocks/999999999", 404, "unknown_block"),
    "action_unknown_hash": ("GET", f"/v1/actions/0x{A32}", 404, "unknown_action"),
    "unknown_route": ("GET", "/v1/nothing", 404, "not_found"),
    "unknown_version_prefix": ("GET", "/v2/health", 404, "not_found"),
    "delete_health": ("DELETE", "/v1/health", 405, "method_not_allowed"),
    "get_actions": ("GET", "/v1/actions", 405, "method_not_allowed"),
    "put_batch": ("PUT", "/v1/actions/batch", 405, "method_not_allowed"),
    "post_account": ("POST", f"/v1/accounts/0x{A32}", 405, "method_not_allowed"),
}

# Regressions: Unicode digits once gave a 500; bytes.fromhex once skipped whitespace.
URL_BUGS = {
    "block_superscript_digit": pytest.param(
        ("GET", "/v1/blocks/%C2%B2", 400, "bad_height"), id="block_superscript_digit"
    ),
    "block_fullwidth_digit": pytest.param(
        ("GET", "/v1/blocks/%EF%BC%91", 400, "bad_height"), id="block_fullwidth_digit"
    ),
    "account_hex_with_spaces": pytest.param(
        ("GET", f"/v1/accounts/0x{A32}%20%20", 400, "bad_hex"), id="account_hex_with_spaces"
    ),
}


@pytest.mark.parametrize(
    "case",
    [pytest.param(v, id=k) for k, v in sorted(URL_CASES.items())] + list(URL_BUGS.values()),
)
def test_bad_url_or_method_is_json_4xx(
    shared_node: NodeProcess, case: tuple[str, str, int, str]
) -> None:
    method, path, status, code = case
    body = b"" if method in ("POST", "PUT") else None
    assert_refused_without_effect(
        shared_node, lambda: request(shared_node, method, path, body), status, code
    )


# -- execution-time failures --------------------------------------------------------------


def _failed_transfer(node: NodeProcess, key: SigningKey, amount: int) -> dict[str, Any]:
    client = node.client
    wait_idle(client)
    before = client.account(pub(key))
    to_before = balance(client, RECIPIENT)
    resp = request(node, "POST", "/v1/actions", transfer(key, before["next_nonce"], amount))
    assert resp.status == 202, resp.body
    status = client.wait(resp.json()["hash"], timeout=10)
    after = client.account(pub(key))
    assert after["nonce"] == before["nonce"] + 1
    assert after["next_nonce"] == before["next_nonce"] + 1
    assert after["balance"] == before["balance"]
    assert balance(client, RECIPIENT) == to_before
    assert status["status"] == "failed" and status["receipt"]["status"] == "failed"
    assert status["receipt"]["events"] == []
    return dict(status["receipt"])


def test_transfer_above_balance_fails_at_execution(shared_node: NodeProcess) -> None:
    key = dev_key(4)
    amount = balance(shared_node.client, pub(key)) + 1
    receipt = _failed_transfer(shared_node, key, amount)
    assert receipt["error"] == "insufficient_balance"


def test_zero_amount_transfer_fails_at_execution(shared_node: NodeProcess) -> None:
    receipt = _failed_transfer(shared_node, dev_key(4), 0)
    assert receipt["error"] == "zero_amount"


def test_unfunded_sender_fails_but_burns_nonce(shared_node: NodeProcess) -> None:
    receipt = _failed_transfer(shared_node, SigningKey(b"\x42" * 32), 1)
    assert receipt["error"] == "insufficient_balance"


# -- happy path and reads -----------------------------------------------------------------


def test_transfer_executes_and_moves_balances(shared_node: NodeProcess) -> None:
    client, key = shared_node.client, dev_key(5)
    to = pub(SigningKey(b"\x55" * 32))
    wait_idle(client)
    before = client.account(pub(key))
    amount = 12345 * 10**18
    resp = request(
        shared_node, "POST", "/v1/actions", transfer(key, before["next_nonce"], amount, to=to)
    )
    assert resp.status == 202
    h = resp.json()["hash"]
    status = client.wait(h, timeout=10)
    assert status["status"] in SUCCESS_STATUSES and status["height"] >= 1
    receipt = status["receipt"]
    assert receipt["action_hash"] == h and receipt["error"] is None
    assert [e["name"] for e in receipt["events"]] == ["Transfer"]
    data = receipt["events"][0]["data"]
    assert data["sender"] == "0x" + pub(key).hex() and data["to"] == "0x" + to.hex()
    assert int(data["amount"]) == amount
    after = client.account(pub(key))
    assert after["nonce"] == before["nonce"] + 1
    assert int(after["balance"]) == int(before["balance"]) - amount
    assert balance(client, to) == amount
    block = client.block(status["height"])
    assert h in block["action_hashes"]


def test_account_proof_verifies_and_tampering_fails(shared_node: NodeProcess) -> None:
    client = shared_node.client
    read = client.account(pub(dev_key(0)))
    assert read["nonce"] == 0 and int(read["balance"]) == DEV_BALANCE
    assert read["state_key"] == "0x" + account_key(pub(dev_key(0))).hex()
    assert verify_state_read(read)
    root = bytes.fromhex(read["state_root"][2:])
    assert verify_state_read(read, expected_root=root)
    assert not verify_state_read(read, expected_root=bytes(32))
    assert read["proof"]["siblings"], "a populated tree must give a non-empty path"

    def tampered(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy_ = copy.deepcopy(read)
        edit(copy_)
        return copy_

    def flip_hex(h: str) -> str:
        return h[:-1] + ("0" if h[-1] != "0" else "1")

    def value(r: dict[str, Any]) -> None:
        r["value"] = flip_hex(r["value"])

    def sibling(r: dict[str, Any]) -> None:
        r["proof"]["siblings"][0] = flip_hex(r["proof"]["siblings"][0])

    def last_sibling(r: dict[str, Any]) -> None:
        r["proof"]["siblings"][-1] = flip_hex(r["proof"]["siblings"][-1])

    def state_root(r: dict[str, Any]) -> None:
        r["state_root"] = flip_hex(r["state_root"])

    def absent(r: dict[str, Any]) -> None:
        r["value"] = None

    def other_key(r: dict[str, Any]) -> None:
        r["state_key"] = "0x" + account_key(pub(dev_key(1))).hex()

    for edit in (value, sibling, last_sibling, state_root, absent, other_key):
        assert not verify_state_read(tampered(edit)), edit.__name__


def test_absent_state_key_has_verifying_absence_proof(shared_node: NodeProcess) -> None:
    client = shared_node.client
    key = b"no/such/key/" + b"\x99" * 8
    read = client.state_proof(key)
    assert read["value"] is None
    assert read["state_key"] == "0x" + key.hex()
    assert verify_state_read(read)
    forged = copy.deepcopy(read)
    forged["value"] = "0x00"
    assert not verify_state_read(forged)
    health = client.health()
    assert read["height"] <= health["head"]["height"]


def test_present_state_key_proof_matches_account_read(shared_node: NodeProcess) -> None:
    client = shared_node.client
    wait_idle(client)
    acct = client.account(pub(dev_key(6)))
    read = client.state_proof(account_key(pub(dev_key(6))))
    assert read["value"] == acct["value"] and read["state_root"] == acct["state_root"]
    assert verify_state_read(read)


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in metrics")


def test_metrics_is_prometheus_text_and_counts_accepted(shared_node: NodeProcess) -> None:
    client = shared_node.client
    key = dev_key(7)
    resp = request(shared_node, "POST", "/v1/actions", transfer(key, next_nonce(client, key)))
    assert resp.status == 202
    client.wait(resp.json()["hash"], timeout=10)
    first = request(shared_node, "GET", "/metrics")
    assert first.status == 200 and first.content_type.startswith("text/plain")
    text = first.body.decode()
    assert "# TYPE fedrollup_accepted_total counter" in text
    assert "# TYPE fedrollup_rejected_total counter" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split()) == 2, line
    accepted = _metric(text, "fedrollup_accepted_total")
    assert accepted >= 1
    resp = request(shared_node, "POST", "/v1/actions", transfer(key, next_nonce(client, key)))
    assert resp.status == 202
    again = request(shared_node, "GET", "/metrics").body.decode()
    assert _metric(again, "fedrollup_accepted_total") == accepted + 1
    client.wait(resp.json()["hash"], timeout=10)


def test_fresh_node_exports_accepted_counter_at_zero(node: NodeProcess) -> None:
    text = request(node, "GET", "/metrics").body.decode()
    assert _metric(text, "fedrollup_accepted_total") == 0


def test_rejections_are_counted_by_code(shared_node: NodeProcess) -> None:
    before = request(shared_node, "GET", "/metrics").body.decode()
    name = 'fedrollup_rejected_total{code="wrong_chain"}'
    count = _metric(before, name) if name in before else 0.0
    wire = transfer(BAD_SENDER, next_nonce(shared_node.client, BAD_SENDER), chain_id=1)
    assert request(shared_node, "POST", "/v1/actions", wire).status == 400
    after = request(shared_node, "GET", "/metrics").body.decode()
    assert _metric(after, name) == count + 1


def test_openapi_lists_exactly_the_app_routes(shared_node: NodeProcess) -> None:
    resp = request(shared_node, "GET", "/openapi.json")
    assert resp.status == 200 and resp.content_type.startswith("application/json")
    spec = resp.json()
    assert str(spec["openapi"]).startswith("3.")
    documented = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if method in ("get", "post", "put", "delete", "patch", "head", "options")
    }
    pages = {("GET", path) for path, _ in EXPLORER_ROUTES}  # listed too (as text/html, ...)
    assert documented == {(method, path) for method, path, _ in ROUTES} | pages
    for path, ops in spec["paths"].items():
        for op in ops.values():
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == {seg[1:-1] for seg in path.split("/") if seg.startswith("{")}
