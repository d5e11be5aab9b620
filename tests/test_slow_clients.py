"""Slow clients and many connections do not block other clients: with hundreds of idle
connections, slowloris clients dribbling their headers and clients dribbling their bodies,
a normal client still reads /v1/health and gets an action accepted quickly. The bounds that
keep it so: keepalive_timeout_s (idle or header-dribbling connections are closed),
body_timeout_s (a body slower than that gets 408 and the connection closes) and
max_concurrent_requests (beyond it, an immediate 503 `busy`)."""

import asyncio
import json
import statistics
import time
from pathlib import Path
from typing import Any

from node.sdk.devkeys import DEV_CHAIN_ID, dev_key
from rollup.codec import encode_action
from stf.accounts import Transfer
from tests.conftest import NodeProcess, free_port

IDLE = 200
SLOWLORIS = 20
SLOW_BODIES = 20
LATENCY_BOUND_S = 1.0
MSGPACK = "application/msgpack"
SENDER = dev_key(4)


def start_node(tmp_path: Path, **env: str) -> NodeProcess:
    return NodeProcess(
        tmp_path / "data",
        free_port(),
        ["--l1", "none", "--block-time-ms", "50"],
        env={f"FEDROLLUP_{k.upper()}": v for k, v in env.items()},
    ).start()


async def http(
    port: int, method: str, path: str, body: bytes = b"", content_type: str = MSGPACK
) -> tuple[int, dict[str, str], bytes, float]:
    """One request on a fresh connection: status, headers, body, seconds taken."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = f"{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        if body:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        writer.write(head.encode() + b"\r\n" + body)
        raw = await asyncio.wait_for(reader.read(), timeout=30)
    finally:
        writer.close()
    return (*parse_response(raw), time.monotonic() - started)


def parse_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split(" ")[1]), {k.lower(): v for k, v in headers.items()}, body


async def slowloris(port: int, stop: asyncio.Event, gap: float = 0.2) -> int:
    """Headers one byte at a time, never finished; returns how many bytes went out."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = b"POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
    head += b"X-Pad: " + b"a" * 4000
    sent = 0
    try:
        for byte in head:
            if stop.is_set() or reader.at_eof():
                break
            writer.write(bytes([byte]))
            await writer.drain()
            sent += 1
            await asyncio.sleep(gap)
    except ConnectionError:
        pass
    finally:
        writer.close()
    return sent


async def slow_body(
    port: int, stop: asyncio.Event, gap: float = 0.2
) -> tuple[int, dict[str, str]] | None:
    """Complete headers, then a 100 kB body one byte at a time; the answer, if one came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
        b"Content-Length: 100000\r\n\r\n"
    )
    answer: asyncio.Task[bytes] = asyncio.create_task(reader.read(65536))
    try:
        while not stop.is_set() and not answer.done():
            writer.write(b"\x00")
            await writer.drain()
            await asyncio.wait([answer], timeout=gap)
        if answer.done() and answer.result():
            status, headers, _ = parse_response(answer.result())
            return status, headers
        return None
    except ConnectionError:
        return None
    finally:
        answer.cancel()
        writer.close()


async def next_nonce(port: int) -> int:
    status, _, body, _ = await http(port, "GET", "/v1/accounts/0x" + bytes(SENDER.verify_key).hex())
    assert status == 200
    return int(json.loads(body)["next_nonce"])


async def normal_client(port: int, rounds: int) -> dict[str, list[float]]:
    """Health reads and accepted transfers, one after another; their latencies."""
    health: list[float] = []
    submit: list[float] = []
    nonce = await next_nonce(port)
    for i in range(rounds):
        status, _, _, took = await http(port, "GET", "/v1/health")
        assert status == 200
        health.append(took)
        action = encode_action(
            SENDER, DEV_CHAIN_ID, "transfer", nonce + i, Transfer(b"\x07" * 32, 1)
        )
        status, _, body, took = await http(port, "POST", "/v1/actions", action)
        assert status == 202, body
        submit.append(took)
        await asyncio.sleep(0.1)
    return {"health": health, "submit": submit}


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms"


def test_idle_and_slow_clients_do_not_block_a_normal_client(tmp_path: Path) -> None:
    node = start_node(tmp_path)
    try:
        port = node.port

        async def scenario() -> dict[str, Any]:
            stop = asyncio.Event()
            idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(IDLE)]
            lorises = [asyncio.create_task(slowloris(port, stop)) for _ in range(SLOWLORIS)]
            bodies = [asyncio.create_task(slow_body(port, stop)) for _ in range(SLOW_BODIES)]
            await asyncio.sleep(1.0)  # all of them connected and part-way through
            baseline = await normal_client(port, 1)
            latencies = await normal_client(port, 20)
            still_open = sum(1 for r, _ in idle if not r.at_eof())
            stop.set()
            sent = await asyncio.gather(*lorises)
            answers = await asyncio.gather(*bodies)
            for _, w in idle:
                w.close()
            return {
                "baseline": baseline,
                "latencies": latencies,
                "still_open": still_open,
                "slowloris_bytes": sent,
                "slow_body_answers": answers,
            }

        result = asyncio.run(scenario())
        lat = result["latencies"]
        print(
            f"\nunder {IDLE} idle + {SLOWLORIS} slowloris + {SLOW_BODIES} slow-body clients: "
            f"health {summary(lat['health'])}; submit {summary(lat['submit'])}"
        )
        assert max(lat["health"]) < LATENCY_BOUND_S
        assert max(lat["submit"]) < LATENCY_BOUND_S
        assert result["still_open"] == IDLE  # well within keepalive_timeout_s: not dropped
        assert min(result["slowloris_bytes"]) >= 10  # they were really dribbling meanwhile
        assert all(a is None for a in result["slow_body_answers"])  # still being read
        # The accepted transfers execute.
        deadline = time.monotonic() + 10
        while node.client.health()["pending_actions"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        account = node.client.account(bytes(SENDER.verify_key))
        assert account["nonce"] == 21
    finally:
        node.kill()


def test_timeouts_and_concurrency_bound(tmp_path: Path) -> None:
    """keepalive_timeout_s closes header-dribbling and idle connections; body_timeout_s
    answers a dribbled body with 408 and closes; past max_concurrent_requests, 503 busy
    at once, and service resumes when the slow requests are gone."""
    node = start_node(
        tmp_path, keepalive_timeout_s="1", body_timeout_s="2", max_concurrent_requests="3"
    )
    try:
        port = node.port

        async def scenario() -> None:
            stop = asyncio.Event()
            # Slowloris and idle: closed by the node after ~keepalive_timeout_s.
            started = time.monotonic()
            loris = asyncio.create_task(slowloris(port, stop, gap=0.05))
            idle_reader, idle_writer = await asyncio.open_connection("127.0.0.1", port)
            assert await asyncio.wait_for(idle_reader.read(), timeout=10) == b""
            sent = await asyncio.wait_for(loris, timeout=10)
            took = time.monotonic() - started
            idle_writer.close()
            assert took < 5, f"header dribbler kept for {took:.1f} s"
            assert sent < 200  # closed long before its 4 kB of headers were out

            # Three slow bodies fill the node's request slots: others get 503 busy at once.
            started = time.monotonic()
            bodies = [asyncio.create_task(slow_body(port, stop, gap=0.1)) for _ in range(3)]
            await asyncio.sleep(0.5)
            status, headers, body, took = await http(port, "GET", "/v1/health")
            assert status == 503 and json.loads(body)["error"] == "busy", body
            assert headers.get("retry-after") == "1" and took < LATENCY_BOUND_S
            # body_timeout_s: each slow body gets 408 and a closing connection.
            answers = await asyncio.wait_for(asyncio.gather(*bodies), timeout=15)
            took = time.monotonic() - started
            for answer in answers:
                assert answer is not None
                status, headers = answer
                assert status == 408 and headers.get("connection") == "close", answer
            assert took < 5, f"slow bodies answered after {took:.1f} s"
            status, _, _, took = await http(port, "GET", "/v1/health")
            assert status == 200 and took < LATENCY_BOUND_S

        asyncio.run(scenario())
    finally:
        node.kill()
