"""The SDK honours `503` + `Retry-After`: a busy node (all request slots taken by a slow
client) is retried after the advertised delay, and the call succeeds once a slot frees."""

import socket
import time
from pathlib import Path

import pytest

from node.cli_util import free_port
from node.sdk.client import ApiError, Client, retry_after_s
from tests.conftest import NodeProcess


def test_retry_after_parsing() -> None:
    assert retry_after_s("2") == 2.0
    assert retry_after_s(None) == 1.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT") == 1.0  # a date: the default
    assert retry_after_s("3600") == 30.0  # capped
    assert retry_after_s("-5") == 0.0


def test_client_retries_a_busy_node_after_retry_after(
    tmp_path: Path, node_factory: type[NodeProcess]
) -> None:
    node = node_factory(
        tmp_path / "data",
        free_port(),
        ["--l1", "none"],
        env={"FEDROLLUP_MAX_CONCURRENT_REQUESTS": "1", "FEDROLLUP_BODY_TIMEOUT_S": "3"},
    ).start()
    # a client that sends headers and never its body holds the one slot for body_timeout_s
    slow = socket.create_connection(("127.0.0.1", node.port))
    try:
        slow.sendall(
            b"POST /v1/actions HTTP/1.1\r\nHost: x\r\nContent-Type: application/msgpack\r\n"
            b"Content-Length: 100\r\n\r\n"
        )
        time.sleep(0.5)
        with pytest.raises(ApiError) as refused:
            Client(node.url, retries=0).health()
        assert (refused.value.status, refused.value.code) == (503, "busy")
        started = time.monotonic()
        assert Client(node.url, retries=10).health()["status"] == "ok"
        took = time.monotonic() - started
        # it waited (Retry-After: 1, each time) until the slow body timed out, not longer
        assert 1.0 <= took < 8.0, took
    finally:
        slow.close()
