"""A split sequencer (--split-ingress: an ingress process in front of the executor) answers
exactly as a single-process node does: the same requests, in the same order, to one node of
each kind give the same statuses, content types and bodies, refusals included."""

import asyncio
import http.client
import json
import time
from pathlib import Path

import msgpack
import pytest

from node.config import NodeConfig
from node.core.door import Rejected
from node.core.ingress import ExecutorLink, Ingress
from node.core.service import Node
from node.sdk.client import Client
from node.sdk.devkeys import dev_genesis, dev_key
from rollup.codec import encode_action
from stf.accounts import Transfer
from stf.models import SetPrice
from tests.conftest import NodeProcess, free_port

ALICE, BOB = dev_key(0), dev_key(1)
ALICE_HEX = "0x" + bytes(ALICE.verify_key).hex()
MSGPACK = "application/msgpack"
Answer = tuple[int, str, bytes]  # status, content type, body


def _http(port: int, method: str, path: str, body: bytes = b"", ctype: str = MSGPACK) -> Answer:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": ctype} if body else {}
        conn.request(method, path, body=body or None, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("Content-Type", ""), resp.read()
    finally:
        conn.close()


def _transfer(nonce: int, amount: int = 1, chain_id: int = 1337) -> bytes:
    payload = Transfer(bytes(BOB.verify_key), amount)
    return encode_action(ALICE, chain_id, "transfer", nonce, payload)


def _drained(port: int) -> None:
    client = Client(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 30
    while client.health()["pending_actions"]:
        assert time.monotonic() < deadline, "the node never executed its accepted actions"
        time.sleep(0.05)


Request = tuple[str, str, bytes, str]


def _script(chain_id: int) -> list[list[Request]]:
    """Requests whose answers depend on the actions alone (no clock, no block boundaries), in
    phases; the node executes all it accepted between two phases (the pre-check simulation
    only runs for a sender with nothing else in flight)."""
    bad_signature = bytearray(_transfer(3, chain_id=chain_id))
    bad_signature[-1] ^= 1
    wrong_price = encode_action(ALICE, chain_id, "set_price", 3, SetPrice("no-such-model", 5))
    batch = msgpack.packb([_transfer(3, chain_id=chain_id), _transfer(1), _transfer(9), b"x"])
    first: list[Request] = [
        ("GET", f"/v1/accounts/{ALICE_HEX}", b"", MSGPACK),
        ("POST", "/v1/actions", _transfer(1, chain_id=chain_id), MSGPACK),
        ("POST", "/v1/actions", _transfer(1, chain_id=chain_id), MSGPACK),  # duplicate
        ("POST", "/v1/actions", _transfer(2, 7, chain_id=chain_id), MSGPACK),
        ("POST", "/v1/actions", _transfer(1, 2, chain_id=chain_id), MSGPACK),  # replayed nonce
        ("POST", "/v1/actions", _transfer(5, chain_id=chain_id), MSGPACK),  # gap
        ("POST", "/v1/actions", bytes(bad_signature), MSGPACK),
        ("POST", "/v1/actions", b"\x01garbage", MSGPACK),
        ("POST", "/v1/actions", _transfer(3, chain_id=chain_id), "text/plain"),
    ]
    second: list[Request] = [
        ("POST", "/v1/actions", wrong_price, MSGPACK),  # the executor's STF pre-check
        ("POST", "/v1/actions/batch", batch, MSGPACK),
        ("POST", "/v1/actions/batch", msgpack.packb([]), MSGPACK),
        ("GET", "/v1/actions/0x" + "ab" * 32, b"", MSGPACK),
        ("GET", "/v1/actions/0xzz", b"", MSGPACK),
        ("GET", "/v1/blocks/999", b"", MSGPACK),
        ("DELETE", "/v1/health", b"", MSGPACK),
        ("GET", "/no/such/route", b"", MSGPACK),
        ("GET", "/internal/seen/0x" + "ab" * 32, b"", MSGPACK),  # never reachable from outside
        ("GET", "/openapi.json", b"", MSGPACK),
        # encoded control characters in a path value reach the executor's route (400)
        ("GET", "/v1/stakes/%C2%8D-j%07%0A%F0%BD%8E%99", b"", MSGPACK),
        ("GET", "/v1/jobs/1%0A/rounds/2", b"", MSGPACK),
    ]
    # After execution: replays are named from the executor's store.
    third: list[Request] = [
        ("POST", "/v1/actions", _transfer(1, chain_id=chain_id), MSGPACK),
        ("POST", "/v1/actions", _transfer(2, 9, chain_id=chain_id), MSGPACK),
    ]
    return [first, second, third]


def test_split_node_answers_byte_for_byte_as_a_single_process_node(tmp_path: Path) -> None:
    args = ["--l1", "none", "--block-time-ms", "50"]
    single = NodeProcess(tmp_path / "single", free_port(), [*args, "--single-process"])
    split = NodeProcess(tmp_path / "split", free_port(), [*args, "--split-ingress"])
    try:
        single.start()
        split.start()
        chain_id = single.client.chain_id
        answers: dict[str, list[Answer]] = {"single": [], "split": []}
        for name, node in (("single", single), ("split", split)):
            for phase in _script(chain_id):
                _drained(node.port)
                for method, path, body, ctype in phase:
                    answers[name].append(_http(node.port, method, path, body, ctype))
        for i, (one, two) in enumerate(zip(answers["single"], answers["split"], strict=True)):
            assert one == two, f"request {i}: {one!r} != {two!r}"
        statuses = [status for status, _, _ in answers["split"]]
        assert {202, 409, 401, 400, 415, 404, 405} <= set(statuses), statuses

        # The account (nonce, balance, next nonce) and action states agree once executed.
        accounts = [n.client.account(bytes(ALICE.verify_key)) for n in (single, split)]
        fields = ("nonce", "next_nonce", "balance")
        assert [accounts[0][f] for f in fields] == [accounts[1][f] for f in fields]
        action_hash = json.loads(answers["split"][1][2])["hash"]
        states = [n.client.action(action_hash)["status"] for n in (single, split)]
        assert states == ["executed", "executed"]
    finally:
        single.kill()
        split.kill()


def test_a_halted_executor_makes_the_ingress_refuse_writes(tmp_path: Path) -> None:
    """The executor's `halt` reaches the ingress with its progress: writes get 503 halted,
    and nothing reaches the log or the executor."""

    async def scenario() -> None:
        config = NodeConfig(data_dir=tmp_path, split_ingress=True)
        fed: list[list[tuple[int, bytes]]] = []
        link = ExecutorLink(free_port())  # never called: the refusal comes first
        ingress = Ingress(config, 1337, link, fed.append)
        try:
            ingress.recover(0)
            ingress.executed(0, "the guardian rejected batch 3")
            with pytest.raises(Rejected) as refused:
                await ingress.submit(_transfer(1))
            assert (refused.value.status, refused.value.code) == (503, "halted")
            assert "batch 3" in refused.value.detail
            results = await ingress.submit_batch([_transfer(1), _transfer(2)])
            assert [r.code for r in results if isinstance(r, Rejected)] == ["halted", "halted"]
            assert fed == []
            assert ingress.pending_count() == 0
        finally:
            await link.close()
            ingress.close()

    asyncio.run(scenario())


def test_the_executor_takes_durable_records_in_sequence_and_refuses_writes(tmp_path: Path) -> None:
    """A resent record (after a recovery) is skipped, a gap stops the executor, and actions
    sent straight to the executor's port are refused: only the ingress writes the log."""

    async def scenario() -> None:
        config = NodeConfig(data_dir=tmp_path, l1="none", split_ingress=True)
        node = Node(config, dev_genesis(), external_log=True)
        try:
            assert node.recover() == 0
            node.deliver([(1, _transfer(1))])
            node.deliver([(1, _transfer(1)), (2, _transfer(2))])
            assert node.pending_count() == 2
            with pytest.raises(RuntimeError, match="gap"):
                node.deliver([(4, _transfer(4))])
            assert node.pending_count() == 2
            with pytest.raises(Rejected) as refused:
                await node.submit(_transfer(3))
            assert (refused.value.status, refused.value.code) == (421, "not_ingress")
        finally:
            await node.close()

    asyncio.run(scenario())
