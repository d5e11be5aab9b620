"""Hostile input, generated: the HTTP API fuzzed from its own OpenAPI description
(schemathesis) and the msgpack ingress routes fuzzed with raw bodies (Hypothesis), against a
real node process. No answer is a 5xx, answers match the description where schemathesis can
tell, refused input changes no state, and the node's memory stays bounded.

Short run (part of `make test`): ~50 generated requests per route, a few hundred raw bodies.
Long run: FEDROLLUP_LONG=1 .venv/bin/pytest -q tests/test_fuzz_api.py (1000 per route)."""

import gzip
import http.client
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from node.config import NodeConfig
from node.sdk.devkeys import DEV_CHAIN_ID, dev_key
from node.server.openapi import openapi_spec
from rollup.codec import encode_action
from stf.accounts import Transfer
from stf.actions import ACTIONS
from tests.conftest import NodeProcess, free_port

LONG = os.environ.get("FEDROLLUP_LONG") == "1"
EXAMPLES = 1000 if LONG else 50  # schemathesis cases per route
RAW_EXAMPLES = 3000 if LONG else 300  # raw bodies per ingress route
RSS_BUDGET = 200 * 1024 * 1024
MAX_BODY = NodeConfig().max_body_bytes
MSGPACK = "application/msgpack"
INGRESS = ("/v1/actions", "/v1/actions/batch")
U32_MAX = 2**32 - 1

# The description says application/msgpack bodies are binary strings: send them as bytes.
schemathesis.serializer.alias(MSGPACK, "application/octet-stream")
SCHEMA = schemathesis.openapi.from_dict(openapi_spec())
OPERATIONS: dict[str, APIOperation] = {r.ok().label: r.ok() for r in SCHEMA.get_all_operations()}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    data = tmp_path_factory.mktemp("fuzz-node") / "data"
    proc = NodeProcess(data, free_port(), ["--l1", "none", "--block-time-ms", "50"]).start()
    yield proc
    proc.kill()


def chain_state(node: NodeProcess) -> tuple[int, str, int]:
    """Head height, state root and mempool size once the mempool is quiet."""
    time.sleep(0.3)  # several block times: anything accepted would be executed by now
    health = node.client.health()
    head = health["head"]
    return head["height"], head["state_root"], health["pending_actions"]


def rss_kib(node: NodeProcess, field: str = "VmRSS") -> int:
    assert node.proc is not None
    for line in Path(f"/proc/{node.proc.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc status")


# -- schemathesis: every route, from the OpenAPI description -------------------------------


def _has_inputs(op: APIOperation) -> bool:
    return bool(list(op.iter_parameters())) or bool(op.body)


@pytest.mark.parametrize("label", sorted(OPERATIONS))
def test_schema_fuzz(fuzz_node: NodeProcess, label: str) -> None:
    """Valid and invalid requests per the description: never a 5xx, documented statuses,
    content types and response bodies."""
    op = OPERATIONS[label]
    modes = [GenerationMode.POSITIVE]
    if _has_inputs(op):
        modes.append(GenerationMode.NEGATIVE)
    session = requests.Session()

    @FUZZ_SETTINGS
    @given(case=st.one_of(*(op.as_strategy(generation_mode=m) for m in modes)))
    def run(case: Case) -> None:
        case.call_and_validate(base_url=fuzz_node.url, session=session, checks=CHECKS)

    run()


def test_rejected_input_changes_no_state(fuzz_node: NodeProcess) -> None:
    """Only invalid data to the mutating routes: all 4xx, head and state root unmoved.
    The msgpack bodies are `format: binary`, which has no schema-invalid form, so there the
    schema-valid bytes are the invalid data (no random bytes are a signed action)."""
    before = chain_state(fuzz_node)
    session = requests.Session()
    statuses: list[int] = []
    for op in OPERATIONS.values():
        if op.method.upper() != "POST":
            continue

        @FUZZ_SETTINGS
        @given(case=st.one_of(*(op.as_strategy(generation_mode=m) for m in GenerationMode)))
        def run(case: Case) -> None:
            response = case.call_and_validate(
                base_url=fuzz_node.url, session=session, checks=CHECKS
            )
            assert 400 <= response.status_code < 500, (case.path, response.status_code)
            statuses.append(response.status_code)

        run()
    assert len(statuses) >= 3 * 10
    assert chain_state(fuzz_node) == before


def test_round_number_above_u32_is_4xx(fuzz_node: NodeProcess) -> None:
    """Regression, found by test_schema_fuzz: a round above 2^32 - 1 once answered 500."""
    for path in ("/v1/jobs/1/rounds/4294967296", "/v1/jobs/1/rounds/4294967296/global"):
        status, _ = raw_request(fuzz_node, "GET", path)
        assert status == 404


# -- raw bodies: Hypothesis at the msgpack ingress ------------------------------------------


def raw_request(
    node: NodeProcess,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def _u32(n: int) -> bytes:
    return n.to_bytes(4, "big")


_HUGE = st.sampled_from([U32_MAX, 2**31, 2**31 - 1, 1 << 30])
# msgpack headers that declare a 32-bit length (bin, str, ext, array, map) and 16-bit ones.
_LEN32 = st.sampled_from([b"\xc6", b"\xdb", b"\xdd", b"\xdf"])


@st.composite
def huge_declared(draw: st.DrawFn) -> bytes:
    """A header claiming up to 4 GB followed by a tiny body, alone or inside an envelope."""
    header = draw(_LEN32) + _u32(draw(_HUGE))
    if draw(st.booleans()):
        header = b"\xc9" + _u32(draw(_HUGE)) + b"\x01"  # ext32
    tail = draw(st.binary(max_size=64))
    where = draw(st.sampled_from(["alone", "envelope", "array", "signature"]))
    if where == "envelope":
        return b"\x97\x01\xcd\x05\x39\xa8transfer" + header + tail
    if where == "array":
        return b"\xdd" + _u32(draw(_HUGE)) + header + tail
    if where == "signature":
        return b"\x97\x01\xcd\x05\x39\xa8transfer\xc4\x20" + b"\x00" * 32 + b"\x01\x90" + header
    return header + tail


@st.composite
def deeply_nested(draw: st.DrawFn) -> bytes:
    depth = draw(st.integers(min_value=1, max_value=200_000))
    opener = draw(st.sampled_from([b"\x91", b"\x81\xa1k", b"\x92\xc0", b"\xdc\x00\x01"]))
    leaf = draw(st.sampled_from([b"\xc0", b"", b"\x91"]))
    return opener * depth + leaf


_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=16)
    | st.binary(max_size=80)
)
_VALUES = st.recursive(
    _SCALARS,
    lambda children: (
        st.lists(children, max_size=8)
        | st.dictionaries(st.text(max_size=8) | st.integers(0, 1000), children, max_size=4)
    ),
    max_leaves=40,
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """Envelope-shaped arrays with real action types, so payload decoders see hostile fields
    (the signature is random: nothing of this can be accepted)."""
    fields: list[Any] = [
        draw(st.sampled_from([1, 0, 2, -1, 2**64 - 1])),
        draw(st.sampled_from([DEV_CHAIN_ID, 0, DEV_CHAIN_ID + 1])),
        draw(st.sampled_from([*sorted(ACTIONS), "", "x" * 65])),
        draw(st.binary(min_size=30, max_size=34)),
        draw(st.integers(min_value=-1, max_value=2**64 - 1)),
        draw(st.lists(_VALUES, max_size=10)),
        draw(st.binary(min_size=63, max_size=65)),
    ]
    fields = fields[: draw(st.integers(min_value=0, max_value=8))]
    return msgpack.packb(fields, use_bin_type=True)  # type: ignore[no-any-return]


_VALID = encode_action(dev_key(3), DEV_CHAIN_ID, "transfer", 1, Transfer(b"\x09" * 32, 1))


@st.composite
def mutated_valid(draw: st.DrawFn) -> bytes:
    """A real signed transfer, changed: a flipped byte, cut, or bytes inserted."""
    raw = bytearray(_VALID)
    kind = draw(st.sampled_from(["flip", "cut", "insert"]))
    at = draw(st.integers(min_value=0, max_value=len(raw) - 1))
    if kind == "flip":
        raw[at] ^= draw(st.integers(min_value=1, max_value=255))
    elif kind == "cut":
        del raw[at:]
    else:
        raw[at:at] = draw(st.binary(min_size=1, max_size=8))
    return bytes(raw)


ACTION_BODIES = st.one_of(
    st.binary(max_size=4096),
    huge_declared(),
    deeply_nested(),
    _VALUES.map(lambda v: msgpack.packb(v, use_bin_type=True)),
    envelopes(),
    mutated_valid(),
)


@st.composite
def batch_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["raw", "items", "huge_count"]))
    if kind == "raw":
        return draw(ACTION_BODIES)
    items = draw(st.lists(ACTION_BODIES, max_size=40))
    if kind == "items":
        return msgpack.packb(items, use_bin_type=True)  # type: ignore[no-any-return]
    return b"\xdd" + _u32(draw(_HUGE)) + msgpack.packb(items[:1] or [b""], use_bin_type=True)


RAW_SETTINGS = settings(
    max_examples=RAW_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.mark.parametrize("route", INGRESS)
def test_raw_body_fuzz(fuzz_node: NodeProcess, route: str) -> None:
    """Random bytes, deep nesting, 4 GB length headers, hostile envelopes and mutated
    signed actions: never a 5xx, never accepted, no state change, bounded memory."""
    before = chain_state(fuzz_node)
    hwm_before = rss_kib(fuzz_node, "VmHWM")
    content_types = st.sampled_from([MSGPACK, "application/x-msgpack", "application/octet-stream"])
    seen: dict[int, int] = {}

    @RAW_SETTINGS
    @given(
        body=ACTION_BODIES if route == "/v1/actions" else batch_bodies(),
        content_type=content_types,
    )
    def run(body: bytes, content_type: str) -> None:
        status, answer = raw_request(fuzz_node, "POST", route, body, {"Content-Type": content_type})
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (status, answer, body[:200])
        if status == 200:  # a batch: every item refused
            assert msgpack is not None and b'"accepted": 0' in answer, answer
        else:
            assert 400 <= status < 500, (status, answer)

    rss_before = rss_kib(fuzz_node)
    run()
    assert sum(seen.values()) >= RAW_EXAMPLES // 2
    assert chain_state(fuzz_node) == before
    growth = rss_kib(fuzz_node, "VmHWM") - hwm_before
    print(
        f"\n{route}: {sum(seen.values())} bodies, statuses {dict(sorted(seen.items()))}, "
        f"RSS {rss_before} -> {rss_kib(fuzz_node)} KiB, peak +{growth} KiB"
    )
    assert growth * 1024 < RSS_BUDGET, f"peak RSS grew {growth} KiB"


def _declared_send(
    node: NodeProcess, route: str, declared: str, body: bytes, extra: bytes = b""
) -> tuple[int, bytes, float]:
    """A request whose Content-Length header says `declared` and whose body is `body`; the
    status line, the JSON error and the time the answer took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", node.port), timeout=20) as sock:
        head = (
            f"POST {route} HTTP/1.1\r\nHost: x\r\nContent-Type: {MSGPACK}\r\n"
            f"Content-Length: {declared}\r\n"
        ).encode()
        sock.sendall(head + extra + b"\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.find(b"\r\n\r\n") + 20:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/1.") else 0
    return status, data, time.monotonic() - started


@pytest.mark.parametrize("route", INGRESS)
def test_oversized_and_lying_bodies(fuzz_node: NodeProcess, route: str) -> None:
    """Over max_body_bytes (declared or chunked) is a 413, a compressed body a 415; a
    Content-Length of 4 GB with a tiny body is a 413 at once (not a wait for 4 GB); a
    malformed Content-Length is a 400. Peak RSS stays within budget, state unmoved."""
    before = chain_state(fuzz_node)
    hwm_before = rss_kib(fuzz_node, "VmHWM")
    headers = {"Content-Type": MSGPACK}

    status, answer = raw_request(fuzz_node, "POST", route, b"\x00" * (MAX_BODY + 1), headers)
    assert status == 413 and b"body_too_large" in answer

    def chunks() -> Iterator[bytes]:
        for _ in range(MAX_BODY // (1 << 20) + 2):
            yield b"\x00" * (1 << 20)

    conn = http.client.HTTPConnection("127.0.0.1", fuzz_node.port, timeout=30)
    try:
        conn.request("POST", route, body=chunks(), headers=headers, encode_chunked=True)
        resp = conn.getresponse()
        assert resp.status == 413, resp.read()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the node answered 413 and closed before the client finished sending
    finally:
        conn.close()

    # Regression: aiohttp inflated this 130 KB body while reading it, peak RSS +190 MB per
    # request; the node now refuses compressed bodies and never inflates them.
    bomb = gzip.compress(b"\x00" * (MAX_BODY * 4), compresslevel=9)  # 128 MiB inflated
    for encoding in ("gzip", "deflate", "br", "x-unknown"):
        status, answer = raw_request(
            fuzz_node, "POST", route, bomb, {**headers, "Content-Encoding": encoding}
        )
        assert status == 415 and b"unsupported_content_encoding" in answer, (status, answer)

    for declared in (str(2**32), str(2**32 + 5), str(MAX_BODY + 1)):
        status, data, took = _declared_send(fuzz_node, route, declared, b"\x91\xc0")
        assert status == 413 and b"body_too_large" in data, data
        assert took < 5, f"a lying Content-Length {declared} held the request {took:.1f} s"
    for declared in ("-1", "abc", "1e9", str(2**64), "1, 2"):
        status, data, _ = _declared_send(fuzz_node, route, declared, b"\x91\xc0")
        assert 400 <= status < 500, (declared, data)
    status, data, _ = _declared_send(fuzz_node, route, "2", b"\x91\xc0", b"Content-Length: 3\r\n")
    assert 400 <= status < 500, data

    assert chain_state(fuzz_node) == before
    growth = rss_kib(fuzz_node, "VmHWM") - hwm_before
    print(f"\n{route} oversized/lying bodies: peak RSS +{growth} KiB")
    assert growth * 1024 < RSS_BUDGET, f"peak RSS grew {growth} KiB"
    assert fuzz_node.client.health()["status"] == "ok"


def test_deeply_nested_json_to_l1_rpc_is_400(node: NodeProcess) -> None:
    """Regression: POST /l1 with JSON nested past the recursion limit answered 500
    (RecursionError is not a ValueError). Needs the embedded L1, as the default node has."""
    deep = b"[" * 100_000 + b"]" * 100_000
    for body in (deep, b'{"a":' * 100_000 + b"1" + b"}" * 100_000):
        status, answer = raw_request(
            node, "POST", "/l1", body, {"Content-Type": "application/json"}
        )
        assert status == 400 and b"malformed" in answer, (status, answer)
