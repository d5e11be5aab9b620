"""A sequencer in two processes (`split_ingress`): this one, the executor, opens LevelDB, cuts
blocks, runs the L1 service and serves the whole API on a loopback port only the ingress knows;
its child, the ingress (node.server.ingress_app), owns the public port and the mempool log.
They share a socket pair: durable records one way, executed progress the other. If either
dies the other stops (fail-stop); a restart recovers from the log as a single process does."""

import asyncio
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable

from aiohttp import web

from node.config import NodeConfig, config_to_json
from node.core.ingress import HELLO, PROGRESS, RECORDS, read_frame, write_frame
from node.server.app import create_app
from node.server.http_util import NODE
from rollup.genesis import Genesis

log = logging.getLogger(__name__)
CHILD_DIED_EXIT_CODE = 1
_STOP_GRACE_S = 30


async def run_split(config: NodeConfig, genesis: Genesis) -> int:
    """Run until SIGTERM/SIGINT, or until the ingress dies; returns the exit code."""
    app = create_app(config, genesis, executor=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()  # opens LevelDB, recovers the chain, starts the sequencer
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    internal_port = int(runner.addresses[0][1])
    node = app[NODE]
    ours, theirs = socket.socketpair()
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "node.server.ingress_app",
        str(theirs.fileno()),
        str(os.getpid()),
        pass_fds=(theirs.fileno(),),
    )
    theirs.close()
    reader, writer = await asyncio.open_unix_connection(sock=ours)
    hello = {
        "config": config_to_json(config),
        "chain_id": node.chain_id,
        "executed_seq": node.store.live.executed_seq(),
        "internal_port": internal_port,
    }
    write_frame(writer, HELLO, hello)
    node.on_progress = lambda seq, halted: write_frame(
        writer, PROGRESS, {"executed_seq": seq, "halted": halted}
    )
    if node.halted is not None:
        node.on_progress(node.store.live.executed_seq(), node.halted)
    log.info("executor on 127.0.0.1:%d, ingress process %d", internal_port, child.pid)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    feed = asyncio.create_task(_take_records(reader, node.deliver), name="ingress-feed")
    waits = {feed, asyncio.create_task(stop.wait()), asyncio.create_task(child.wait())}
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if not stop.is_set():
        failure = feed.exception() if feed.done() else None
        log.critical("the ingress process is gone: the executor stops", exc_info=failure)
        code = CHILD_DIED_EXIT_CODE
    await _stop_child(child)
    feed.cancel()
    await asyncio.gather(feed, return_exceptions=True)
    writer.close()
    await runner.cleanup()
    return code


DeliverFn = Callable[[list[tuple[int, bytes]]], None]


async def _take_records(reader: asyncio.StreamReader, deliver: DeliverFn) -> None:
    while (message := await read_frame(reader)) is not None:
        kind, body = message
        if kind == RECORDS:
            deliver([(int(seq), bytes(wire)) for seq, wire in body])


async def _stop_child(child: asyncio.subprocess.Process) -> None:
    """The ingress first: it finishes the requests it has (their records become durable)."""
    if child.returncode is not None:
        return
    child.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(child.wait(), _STOP_GRACE_S)
    except TimeoutError:
        child.kill()
        await child.wait()
