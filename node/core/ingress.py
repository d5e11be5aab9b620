"""The ingress of a split sequencer, a process of its own: it decodes actions, checks their
signatures (threads) and nonces, appends them to the durable mempool log (group fsync) and
answers 202; the executor process (blocks, state root, LevelDB) gets every durable record over
a socket and reports back how far it executed. The log is the only truth: a restart of both
re-sends whatever it holds beyond the executor's committed `executed_seq`."""

import asyncio
import logging
import struct
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import msgpack

from node.config import NodeConfig
from node.core.door import Door, Rejected
from node.metrics import Metrics
from rollup.codec import SignedAction, decode_action
from rollup.mempool import MempoolLog

log = logging.getLogger(__name__)
_FRAME = struct.Struct(">I")
MAX_FRAME_BYTES = 1 << 30
RECORDS = "records"  # ingress -> executor: [[seq, wire], ...], durable, in log order
PROGRESS = "progress"  # executor -> ingress: {"executed_seq": S, "halted": reason | None}
HELLO = "hello"  # executor -> ingress, first: config, chain id, executed_seq, internal port


def write_frame(writer: asyncio.StreamWriter, kind: str, body: Any) -> None:
    payload = msgpack.packb([kind, body], use_bin_type=True)
    writer.write(_FRAME.pack(len(payload)) + payload)


async def read_frame(reader: asyncio.StreamReader) -> tuple[str, Any] | None:
    """The next message, or None once the other process is gone (EOF)."""
    try:
        (length,) = _FRAME.unpack(await reader.readexactly(_FRAME.size))
        if length > MAX_FRAME_BYTES:
            raise ValueError(f"control frame of {length} bytes")
        kind, body = msgpack.unpackb(await reader.readexactly(length), raw=False)
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    return str(kind), body


class ExecutorLink:
    """The executor's internal HTTP routes, on loopback: committed nonces, replay naming and
    the door's STF pre-check all read the executor's LevelDB, which only it may open."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), auto_decompress=False
        )

    async def committed_nonces(self, senders: list[bytes]) -> list[int]:
        body = msgpack.packb(senders, use_bin_type=True)
        async with self.session.post(self.base + "/internal/nonces", data=body) as resp:
            resp.raise_for_status()
            nonces: list[int] = msgpack.unpackb(await resp.read())
        return nonces

    async def was_seen(self, action_hash: bytes) -> bool:
        async with self.session.get(f"{self.base}/internal/seen/0x{action_hash.hex()}") as resp:
            resp.raise_for_status()
            return bool((await resp.json())["seen"])

    async def precheck(self, wire: bytes) -> Rejected | None:
        async with self.session.post(self.base + "/internal/precheck", data=wire) as resp:
            resp.raise_for_status()
            doc = await resp.json()
        if doc.get("error") is None:
            return None
        return Rejected(int(doc["status"]), str(doc["error"]), str(doc["detail"]))

    async def close(self) -> None:
        await self.session.close()


class Ingress(Door):
    """The door, without the chain: `feed` gets each durable group; committed nonces, replay
    lookups and pre-checks are the executor's (`ExecutorLink`)."""

    def __init__(
        self,
        config: NodeConfig,
        chain_id: int,
        executor: ExecutorLink,
        feed: Callable[[list[tuple[int, bytes]]], None],
    ) -> None:
        self._verifier = ThreadPoolExecutor(config.verify_threads, thread_name_prefix="verify")
        super().__init__(config, chain_id, Metrics(), self._verifier)
        self.executor = executor
        self._feed = feed
        self._log: MempoolLog[SignedAction] = MempoolLog(
            config.data_dir / "mempool", self._on_durable
        )
        self._unexecuted: deque[tuple[int, SignedAction]] = deque()

    # -- lifecycle ---------------------------------------------------------------------

    def recover(self, executed_seq: int) -> int:
        """Open the log; every record beyond the executor's `executed_seq` goes to it again."""
        records = self._log.recover(executed_seq)
        recovered = [(seq, decode_action(raw, self.chain_id, verify=False)) for seq, raw in records]
        for _, sa in recovered:
            sender = sa.action.sender
            self._reserved[sender] = max(self._reserved.get(sender, 0), sa.action.nonce)
            self._pending_by_sender[sender] = self._pending_by_sender.get(sender, 0) + 1
        self._on_durable(recovered)
        if recovered:
            log.info("recovered %d accepted actions from the mempool log", len(recovered))
        return len(recovered)

    async def run_log(self) -> None:
        await self._log.run()

    def close(self) -> None:
        self._verifier.shutdown(wait=True)
        self._log.close()

    def _on_durable(self, records: list[tuple[int, SignedAction]]) -> None:
        for seq, sa in records:
            self._pending[sa.action.hash] = seq
            self._unexecuted.append((seq, sa))
        if records:
            self._feed([(seq, sa.wire) for seq, sa in records])

    def executed(self, executed_seq: int, halted: str | None) -> None:
        """The executor's progress: forget what it executed, prune the log behind it."""
        if halted is not None and self.halted is None:
            self.halted = halted
            log.error("the executor halted: %s", halted)
        while self._unexecuted and self._unexecuted[0][0] <= executed_seq:
            _, sa = self._unexecuted.popleft()
            self._pending.pop(sa.action.hash, None)
            self._forget_one(sa.action.sender)
        self._log.prune(executed_seq)

    # -- reads the proxy adds to the executor's answers --------------------------------

    def is_pending(self, action_hash: bytes) -> bool:
        return action_hash in self._pending

    def pending_count(self) -> int:
        return len(self._pending)

    def reserved_nonce(self, sender: bytes) -> int | None:
        return self._reserved.get(sender)

    # -- where the door stands: its own log, the executor's state ----------------------

    def _mempool(self) -> MempoolLog[SignedAction]:
        return self._log

    def _last_nonce(self, sender: bytes) -> int:
        return self._reserved[sender]  # `_learn_senders` ran first

    async def _learn_senders(self, actions: list[SignedAction]) -> None:
        """One executor round trip for the committed nonces of senders not seen yet."""
        # One lookup per action: `set - dict.keys()` would walk every sender ever seen.
        missing = sorted(
            {sa.action.sender for sa in actions if sa.action.sender not in self._reserved}
        )
        if not missing:
            return
        nonces = await self.executor.committed_nonces(missing)
        for sender, nonce in zip(missing, nonces, strict=True):
            # A reservation made while we asked is newer than the committed nonce.
            self._reserved.setdefault(sender, nonce)

    async def _was_accepted(self, action_hash: bytes) -> bool:
        return action_hash in self._pending or await self.executor.was_seen(action_hash)

    async def _precheck(self, sa: SignedAction) -> Rejected | None:
        return await self.executor.precheck(sa.wire)
