"""The ingress process of a split sequencer: it owns the public port, takes POST /v1/actions
and /v1/actions/batch itself (node.core.ingress), and forwards every other request unchanged to
the executor process on loopback (a streaming reverse proxy). Started by node.server.split with
one end of a socket pair as its control channel; it dies with its parent (fail-stop)."""

import asyncio
import ctypes
import json
import logging
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable

from aiohttp import ClientError, web

from node.cli_util import tune_garbage_collector
from node.config import NodeConfig, config_from_json
from node.core.door import Rejected
from node.core.ingress import (
    HELLO,
    PROGRESS,
    RECORDS,
    ExecutorLink,
    Ingress,
    read_frame,
    write_frame,
)
from node.core.service import ActionStatus
from node.logs import setup_logging
from node.server.app import (
    DOOR,
    INGRESS_METRICS_HEADER,
    INGRESS_NONCE_HEADER,
    INGRESS_PENDING_HEADER,
    action_response,
    error,
    hardened_application,
    post_action,
    post_action_batch,
    read_bounded_body,
)
from node.server.http_util import parse_hex

log = logging.getLogger(__name__)
INGRESS: web.AppKey[Ingress] = web.AppKey("ingress", Ingress)
# Headers that describe one hop, not the message (RFC 9110 7.6.1): never forwarded.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
    }
)
_INTERNAL_HEADERS = frozenset(
    h.lower() for h in (INGRESS_PENDING_HEADER, INGRESS_NONCE_HEADER, INGRESS_METRICS_HEADER)
)
_ACCOUNT_PREFIX = "/v1/accounts/"
_CHUNK_BYTES = 64 * 1024
PR_SET_PDEATHSIG = 1


def _forwarded_headers(request: web.Request, ingress: Ingress) -> dict[str, str]:
    headers = {
        name: value
        for name, value in request.headers.items()
        if name.lower() not in _HOP_BY_HOP and name.lower() not in _INTERNAL_HEADERS
    }
    if request.method == "GET" and request.path == "/v1/health":
        headers[INGRESS_PENDING_HEADER] = str(ingress.pending_count())
    elif request.method == "GET" and request.path == "/metrics":
        headers[INGRESS_METRICS_HEADER] = json.dumps(ingress.metrics.door_snapshot())
    elif request.method == "GET" and request.path.startswith(_ACCOUNT_PREFIX):
        key = request.path[len(_ACCOUNT_PREFIX) :]
        try:
            reserved = ingress.reserved_nonce(parse_hex(key, size=32, what="account key"))
        except Rejected:
            reserved = None  # the executor answers the malformed key with its 400
        if reserved is not None:
            headers[INGRESS_NONCE_HEADER] = str(reserved)
    return headers


async def proxy(request: web.Request) -> web.StreamResponse:
    """Everything but the writes goes to the executor, and its answer comes back as it is."""
    if request.path.startswith("/internal/"):
        raise web.HTTPNotFound()
    ingress = request.app[INGRESS]
    # The executor would refuse a body over the limit or too slow: so does the ingress, before
    # forwarding. A GET's or HEAD's body means nothing to any route: not forwarded.
    body = b"" if request.method in ("GET", "HEAD") else await read_bounded_body(request)
    try:
        async with ingress.executor.session.request(
            request.method,
            ingress.executor.base + request.raw_path,
            headers=_forwarded_headers(request, ingress),
            data=body or None,
            allow_redirects=False,
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
        ) as upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            for name, value in upstream.headers.items():
                if name.lower() not in _HOP_BY_HOP:
                    response.headers.add(name, value)
            await response.prepare(request)
            async for chunk in upstream.content.iter_chunked(_CHUNK_BYTES):
                await response.write(chunk)
            await response.write_eof()
            return response
    except ClientError as exc:
        log.error("executor unreachable for %s %s: %r", request.method, request.path, exc)
        return error(503, "executor_unavailable", "the node's executor did not answer")


async def get_action(request: web.Request) -> web.StreamResponse:
    """An action durable here but not yet executed is `accepted`, whatever the executor saw."""
    text = request.match_info["hash"]
    try:
        action_hash = parse_hex(text, size=32, what="action hash")
    except Rejected:
        return await proxy(request)  # its 400, worded by the executor
    if request.app[INGRESS].is_pending(action_hash):
        return action_response(action_hash, ActionStatus(action_hash, "accepted"))
    return await proxy(request)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def create_ingress_app(config: NodeConfig, ingress: Ingress) -> web.Application:
    app = hardened_application(config)
    app[DOOR] = ingress
    app[INGRESS] = ingress
    routes: list[tuple[str, str, Handler]] = [
        ("POST", "/v1/actions", post_action),
        ("POST", "/v1/actions/batch", post_action_batch),
        ("GET", "/v1/actions/{hash}", get_action),
        ("*", "/{tail:(?s:.*)}", proxy),  # (?s): a path may hold an encoded newline
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, handler)
    return app


def die_with_parent(parent_pid: int) -> None:
    """Linux: the kernel SIGKILLs this process when its parent dies (even by SIGKILL)."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent_pid:  # the parent died before the line above
        os._exit(1)


async def _serve(control_fd: int) -> None:
    sock = socket.socket(fileno=control_fd)
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    hello = await read_frame(reader)
    if hello is None or hello[0] != HELLO:
        raise RuntimeError("the executor sent no hello")
    doc = hello[1]
    config = config_from_json(doc["config"])
    setup_logging(config.log_level, config.log_format)
    link = ExecutorLink(int(doc["internal_port"]))
    ingress = Ingress(
        config, int(doc["chain_id"]), link, lambda records: write_frame(writer, RECORDS, records)
    )
    ingress.recover(int(doc["executed_seq"]))
    log_task = asyncio.create_task(ingress.run_log(), name="mempool-log")
    runner = web.AppRunner(create_ingress_app(config, ingress), access_log=None)
    await runner.setup()
    site = await _bind(runner, config)
    print(f"======== Running on http://{config.host}:{config.port} (ingress) ========", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(_follow_executor(reader, ingress), name="executor-progress")
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({watch, stopped, log_task}, return_when=asyncio.FIRST_COMPLETED)
    if watch.done() or log_task.done():
        # Fail-stop: the executor is gone (or the log failed); everything acknowledged is
        # durable, and going on alone would acknowledge actions nobody executes.
        log.critical("the executor process is gone: the ingress stops")
        os._exit(1)
    await site.stop()
    await runner.cleanup()
    log_task.cancel()
    watch.cancel()
    await asyncio.gather(log_task, watch, return_exceptions=True)
    await link.close()
    ingress.close()
    writer.close()


async def _bind(runner: web.AppRunner, config: NodeConfig) -> web.TCPSite:
    """The public port; a previous node on it may take a moment to let go (after a crash)."""
    for attempt in range(100):
        site = web.TCPSite(runner, config.host, config.port)
        try:
            await site.start()
            return site
        except OSError:
            if attempt == 99:
                raise
            await asyncio.sleep(0.05)
    raise AssertionError("unreachable")


async def _follow_executor(reader: asyncio.StreamReader, ingress: Ingress) -> None:
    while (message := await read_frame(reader)) is not None:
        kind, body = message
        if kind == PROGRESS:
            ingress.executed(int(body["executed_seq"]), body["halted"])


def main(argv: list[str]) -> int:
    """`python -m node.server.ingress_app CONTROL_FD PARENT_PID`, started by the executor."""
    die_with_parent(int(argv[1]))
    import uvloop

    tune_garbage_collector()
    uvloop.run(_serve(int(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
