"""The ingress of a split sequencer, a process of its own: it decodes actions, checks their
signatures (threads) and nonces, appends them to the durable mempool log (group fsync) and
answers 202; the executor process (blocks, state root, LevelDB) gets every durable record over
a socket and reports back how far it executed. The log is the only truth: a restart of both
re-sends whatever it holds beyond the executor's committed `executed_seq`."""

import asyncio
import logging
import struct
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import aiohttp
import msgpack

from node.config import NodeConfig
from node.core.service import (
    PRECHECKED,
    Rejected,
    SignatureVerifier,
    rejection_from_codec,
)
from node.metrics import Metrics
from rollup.codec import CodecError, SignedAction, decode_action
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


class _Replayed(Exception):
    def __init__(self, last: int) -> None:
        self.last = last


class Ingress:
    """What `Node` does at the door, without the chain: `feed` gets each durable group."""

    def __init__(
        self,
        config: NodeConfig,
        chain_id: int,
        executor: ExecutorLink,
        feed: Callable[[list[tuple[int, bytes]]], None],
    ) -> None:
        self.config = config
        self.chain_id = chain_id
        self.executor = executor
        self.metrics = Metrics()
        self._feed = feed
        self._log: MempoolLog[SignedAction] = MempoolLog(
            config.data_dir / "mempool", self._on_durable
        )
        self._pending: dict[bytes, int] = {}  # hash -> seq (0 until durable), not executed
        self._reserved: dict[bytes, int] = {}  # sender -> last nonce accepted
        self._pending_by_sender: dict[bytes, int] = {}
        self._unexecuted: deque[tuple[int, SignedAction]] = deque()
        self.halted: str | None = None
        self._verifier = ThreadPoolExecutor(config.verify_threads, thread_name_prefix="verify")
        self._signatures = SignatureVerifier(self._verifier)

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

    def _forget_one(self, sender: bytes) -> None:
        left = self._pending_by_sender.get(sender, 0) - 1
        if left > 0:
            self._pending_by_sender[sender] = left
        else:
            self._pending_by_sender.pop(sender, None)

    # -- reads the proxy adds to the executor's answers --------------------------------

    def is_pending(self, action_hash: bytes) -> bool:
        return action_hash in self._pending

    def pending_count(self) -> int:
        return len(self._pending)

    def reserved_nonce(self, sender: bytes) -> int | None:
        return self._reserved.get(sender)

    # -- the door ----------------------------------------------------------------------

    def _decode(self, raw: bytes) -> SignedAction:
        self._refuse_if_halted()
        try:
            return decode_action(raw, self.chain_id, verify=False)
        except CodecError as exc:
            raise rejection_from_codec(exc) from None

    def _refuse_if_halted(self) -> None:
        if self.halted is not None:
            raise Rejected(503, "halted", f"the node stopped sequencing: {self.halted}")

    async def _learn_nonces(self, actions: list[SignedAction]) -> None:
        """One executor round trip for the committed nonces of senders not seen yet."""
        missing = sorted({sa.action.sender for sa in actions} - self._reserved.keys())
        if not missing:
            return
        nonces = await self.executor.committed_nonces(missing)
        for sender, nonce in zip(missing, nonces, strict=True):
            # A reservation made while we asked is newer than the committed nonce.
            self._reserved.setdefault(sender, nonce)

    def _reserve(self, sa: SignedAction) -> int:
        """Check and reserve the nonce (no await in between); returns the previous one."""
        action = sa.action
        self._refuse_if_halted()
        last = self._reserved[action.sender]
        if action.nonce <= last:
            raise _Replayed(last)
        if action.nonce > last + 1:
            raise Rejected(
                409, "nonce_gap", f"nonce {action.nonce} skips ahead; next is {last + 1}"
            )
        if len(self._pending) >= self.config.max_pending_actions:
            raise Rejected(503, "overloaded", "too many actions waiting for execution; retry later")
        self._reserved[action.sender] = action.nonce
        self._pending[action.hash] = 0
        self._pending_by_sender[action.sender] = self._pending_by_sender.get(action.sender, 0) + 1
        return last

    async def _name_replay(self, sa: SignedAction, last: int) -> Rejected:
        known = sa.action.hash in self._pending or await self.executor.was_seen(sa.action.hash)
        if known:
            return Rejected(409, "duplicate_action", "this action was already accepted")
        return Rejected(
            409, "nonce_replayed", f"nonce {sa.action.nonce} already used; next is {last + 1}"
        )

    def _release(self, sa: SignedAction, previous: int) -> bool:
        action = sa.action
        if self._reserved.get(action.sender) != action.nonce:
            return False
        self._reserved[action.sender] = previous
        self._pending.pop(action.hash, None)
        self._forget_one(action.sender)
        return True

    async def _admit(self, sa: SignedAction) -> None:
        """As `Node._admit`: reserve, then (for a lone stateful action) the executor's STF
        simulation on its committed state; a refused one gives its nonce back."""
        if sa.action.sender not in self._reserved:
            await self._learn_nonces([sa])
        try:
            previous = self._reserve(sa)
        except _Replayed as replay:
            raise await self._name_replay(sa, replay.last) from None
        if sa.action.type not in PRECHECKED or self._pending_by_sender.get(sa.action.sender, 0) > 1:
            return
        try:
            error = await self.executor.precheck(sa.wire)
        except BaseException:
            self._release(sa, previous)
            raise
        if error is not None:
            if self._release(sa, previous):
                raise error
            log.info("pre-check refused %s, kept: a later nonce is reserved", sa.action.hash.hex())

    async def submit(self, raw: bytes) -> bytes:
        started = time.perf_counter()
        sa = self._decode(raw)
        (error,) = await self._signatures.verify_many([sa])
        if error is not None:
            raise rejection_from_codec(error)
        await self._admit(sa)
        await self._log.append(sa.wire, sa)
        self._count_accepted(1, started)
        return sa.action.hash

    async def submit_batch(self, raws: list[bytes]) -> list[bytes | Rejected]:
        started = time.perf_counter()
        results: list[bytes | Rejected] = []
        decoded: list[tuple[int, SignedAction]] = []
        for i, raw in enumerate(raws):
            try:
                decoded.append((i, self._decode(raw)))
                results.append(b"")
            except Rejected as exc:
                results.append(exc)
        errors = await self._signatures.verify_many([sa for _, sa in decoded])
        await self._learn_nonces([sa for (_, sa), e in zip(decoded, errors, strict=True) if not e])
        waits: list[asyncio.Future[int]] = []
        for (i, sa), error in zip(decoded, errors, strict=True):
            try:
                if error is not None:
                    raise rejection_from_codec(error)
                await self._admit(sa)
            except Rejected as exc:
                results[i] = exc
                continue
            waits.append(self._log.append(sa.wire, sa))
            results[i] = sa.action.hash
        await asyncio.gather(*waits)
        for r in results:
            if isinstance(r, Rejected):
                self.metrics.rejected[r.code] += 1
        self._count_accepted(len(waits), started)
        return results

    def _count_accepted(self, count: int, started: float) -> None:
        self.metrics.counters["accepted"] += count
        self.metrics.observe_accept(time.perf_counter() - started)
