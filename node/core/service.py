"""The node process's core: ingress (decode, verify, reserve nonce, durable log), the
sequencer loop that cuts blocks, and consistent reads for the API. HTTP lives in app.py."""

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from node.api_models import AccountFields, ActionState
from node.config import NodeConfig
from node.core.door import Door, Rejected, rejection_from_codec, stf_rejection
from node.halt import record_halt, refusal
from node.metrics import Metrics
from rollup.block import BlockHeader, Receipt
from rollup.chain import Chain, ExecutedBlock, StfHalt
from rollup.codec import CodecError, SignedAction, decode_action
from rollup.genesis import Genesis
from rollup.journal import Journal
from rollup.mempool import MempoolLog
from rollup.smt import SmtProof, SparseMerkleTree
from rollup.store import SMT_PREFIX, BlockRecord, BlockSummary, ChainStore, DataPruned
from stf.accounts import Account, account_key, decode_account
from stf.actions import apply_action
from stf.context import BlockInfo, Effects
from stf.errors import InvalidAction
from stf.l1 import L1Message, next_l1_nonce

log = logging.getLogger(__name__)
COMPACT_AFTER_FREED_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class ActionStatus:
    hash: bytes
    status: ActionState
    height: int | None = None
    index: int | None = None
    receipt: Receipt | None = None
    batch: int | None = None


BatchStatusFn = Callable[[int], tuple[int, str] | None]  # block height -> (batch index, status)


class _StateView:
    def __init__(self, reader: Any) -> None:
        self._reader = reader

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self._reader.state(key)
        return value

    def put(self, key: bytes, value: bytes) -> None:
        raise RuntimeError("read-only")

    def delete(self, key: bytes) -> None:
        raise RuntimeError("read-only")


@dataclass(frozen=True)
class StateRead:
    key: bytes
    value: bytes | None
    height: int
    state_root: bytes
    proof: SmtProof


ProgressFn = Callable[[int, str | None], None]  # (executed seq, halted reason)


class Node(Door):
    """`external_log`: the executor of a split node; the ingress process owns the mempool log
    and feeds its durable records through `deliver`; `on_progress` tells it what executed."""

    def __init__(self, config: NodeConfig, genesis: Genesis, external_log: bool = False) -> None:
        self._verifier = ThreadPoolExecutor(config.verify_threads, thread_name_prefix="verify")
        metrics = Metrics(door_elsewhere=external_log)
        super().__init__(config, genesis.chain_id, metrics, self._verifier)
        self.genesis = genesis
        self.store = ChainStore(config.data_dir / "chain")
        self.chain = Chain(self.store, genesis)
        self._log: MempoolLog[SignedAction] | None = (
            None if external_log else MempoolLog(config.data_dir / "mempool", self._on_durable)
        )
        self.on_progress: ProgressFn = lambda seq, halted: None
        self._delivered_seq = 0  # external log: the last record `deliver` took
        self._queue: deque[tuple[int, SignedAction]] = deque()
        self._l1_pending: dict[int, L1Message] = {}  # nonce -> message offered by the watcher
        self._l1_origin: tuple[int, bytes] | None = None
        self.batch_status: BatchStatusFn | None = None  # set by the L1 service
        # The last height finalized on L1, for pruning; set by the L1 service.
        self.finalized_height: Callable[[], int] | None = None
        self._block_worker = ThreadPoolExecutor(1, thread_name_prefix="block")
        self._compactor = ThreadPoolExecutor(1, thread_name_prefix="compact")
        self._compaction: Future[None] | None = None
        self._inflight: Future[None] | None = None
        self._work = asyncio.Event()
        self._full = asyncio.Event()
        self.started_at = time.time()
        # Fail-stop: how the node stops itself (the CLI then exits with HALT_EXIT_CODE).
        self.on_halt: Callable[[], None] = lambda: signal.raise_signal(signal.SIGTERM)
        self.loop: asyncio.AbstractEventLoop = asyncio.get_event_loop()
        self._register_gauges()

    # -- lifecycle ---------------------------------------------------------------------

    def recover(self) -> int:
        """Re-queue accepted-but-unexecuted actions from the log; returns how many."""
        refused = refusal(self.config.data_dir)
        if refused is not None:
            raise RuntimeError(refused)
        executed_seq = self.store.live.executed_seq()
        self._delivered_seq = executed_seq
        if self._log is None:
            return 0  # the ingress process recovers the log and delivers the rest
        records = self._log.recover(executed_seq)
        recovered = [(seq, decode_action(raw, self.chain_id, verify=False)) for seq, raw in records]
        self._on_durable(recovered)
        for _, sa in recovered:
            self._reserved[sa.action.sender] = max(
                self._reserved.get(sa.action.sender, 0), sa.action.nonce
            )
        if recovered:
            log.info("recovered %d accepted actions from the mempool log", len(recovered))
        return len(recovered)

    async def run_log(self) -> None:
        if self._log is not None:
            await self._log.run()

    def deliver(self, records: list[tuple[int, bytes]]) -> None:
        """Split node: durable records from the ingress process (verified there), in order;
        a record already taken (a resend after recovery) is skipped, a gap is a bug."""
        fresh: list[tuple[int, SignedAction]] = []
        for seq, raw in records:
            if seq <= self._delivered_seq:
                continue
            if seq != self._delivered_seq + 1:
                raise RuntimeError(f"mempool record {seq} after {self._delivered_seq}: a gap")
            self._delivered_seq = seq
            sa = decode_action(raw, self.chain_id, verify=False)
            sender = sa.action.sender
            self._reserved[sender] = max(self._reserved.get(sender, 0), sa.action.nonce)
            self._pending_by_sender[sender] = self._pending_by_sender.get(sender, 0) + 1
            fresh.append((seq, sa))
        self._on_durable(fresh)

    async def close(self) -> None:
        if self._inflight is not None:
            await asyncio.wrap_future(self._inflight)
        self._verifier.shutdown(wait=True)
        self._block_worker.shutdown(wait=True)
        self._compactor.shutdown(wait=True)
        if self._log is not None:
            self._log.close()
        self.store.close()

    # -- what a split node's ingress asks its executor ----------------------------------

    def committed_nonce(self, sender: bytes) -> int:
        raw = self.store.live.state(account_key(sender))
        return 0 if raw is None else decode_account(raw).nonce

    def was_seen(self, action_hash: bytes) -> bool:
        """Delivered or executed: names a replay `duplicate_action` rather than a bad nonce."""
        if action_hash in self._pending:
            return True
        return self.store.live.locate_action(action_hash) is not None

    async def precheck(self, raw: bytes) -> Rejected | None:
        """The door's STF simulation, for an action the ingress decoded and verified."""
        try:
            sa = decode_action(raw, self.chain_id, verify=False)
        except CodecError as exc:
            return rejection_from_codec(exc)
        return await self._precheck(sa)

    @property
    def external_log(self) -> bool:
        return self._log is None

    def _simulate(self, sa: SignedAction) -> Rejected | None:
        with self.store.snapshot() as snap:
            height = snap.head_height() or 0
            block = BlockInfo(
                self.chain_id, height + 1, self.chain.next_timestamp(int(time.time() * 1000))
            )
            try:
                apply_action(Journal(snap.state), sa.action, block, Effects())
            except InvalidAction as exc:
                return stf_rejection(exc)
            except Exception as exc:  # would stop the chain: refuse it, it is the node's fault
                log.exception("STF error simulating action %s", sa.action.hash.hex())
                self.metrics.counters["precheck_stf_errors"] += 1
                return Rejected(500, "stf_error", f"the STF failed on this action: {exc!r}")
        return None

    # -- where the door stands: this process's log and store ------------------------

    def _mempool(self) -> MempoolLog[SignedAction]:
        if self._log is None:
            raise Rejected(421, "not_ingress", "send actions to the node's public port")
        return self._log

    def _last_nonce(self, sender: bytes) -> int:
        last = self._reserved.get(sender)
        return self.committed_nonce(sender) if last is None else last

    async def _was_accepted(self, action_hash: bytes) -> bool:
        return self.was_seen(action_hash)

    async def _precheck(self, sa: SignedAction) -> Rejected | None:
        self.metrics.counters["precheck_simulations"] += 1
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._verifier, self._simulate, sa)

    def _on_durable(self, records: list[tuple[int, SignedAction]]) -> None:
        for seq, sa in records:
            self._pending[sa.action.hash] = seq
            self._queue.append((seq, sa))
        if self._queue:
            self._work.set()
            if len(self._queue) >= self.config.block_max_actions:
                self._full.set()

    def next_l1_nonce(self) -> int:
        with self.store.snapshot() as snap:
            return next_l1_nonce(_StateView(snap))

    def offer_l1(self, messages: list[L1Message], origin: tuple[int, bytes]) -> None:
        """The watcher's news: confirmed L1 messages and the L1 block they are confirmed at.
        The next block includes them in nonce order (force inclusion is this node's policy)."""
        for msg in messages:
            self._l1_pending.setdefault(msg.nonce, msg)
        self._l1_origin = origin  # recorded by the next block; a moving L1 alone cuts none
        if self._l1_pending:
            self._work.set()

    def _take_l1(self) -> tuple[list[L1Message], tuple[int, bytes] | None]:
        expected = self.next_l1_nonce()
        taken: list[L1Message] = []
        for nonce in sorted(self._l1_pending):
            if nonce < expected:
                del self._l1_pending[nonce]
            elif nonce == expected:
                taken.append(self._l1_pending.pop(nonce))
                expected += 1
        origin = self._l1_origin
        if origin is not None and origin[0] <= self.chain.head.l1_origin_height:
            origin = None  # nothing new from L1
        return taken, origin

    # -- sequencer ---------------------------------------------------------------------

    async def run_sequencer(self) -> None:
        block_time = self.config.block_time_ms / 1000
        last_block = time.monotonic()
        while self.halted is None:
            await self._work.wait()
            remaining = last_block + block_time - time.monotonic()
            if remaining > 0 and len(self._queue) < self.config.block_max_actions:
                self._full.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._full.wait(), remaining)
            await self._cut_block()
            last_block = time.monotonic()
            if not self._queue and not self._l1_pending:
                self._work.clear()

    def halt(self, reason: str) -> None:
        """Safety over liveness: stop cutting blocks and accepting actions (the poster found a
        rejected batch); the node keeps serving reads."""
        if self.halted is None:
            self.halted = reason
            log.error("sequencer halted: %s", reason)
            self.on_progress(self.store.live.executed_seq(), reason)

    async def _cut_block(self) -> None:
        if self.halted is not None:
            return
        batch: list[tuple[int, SignedAction]] = []
        size = 0
        while self._queue and len(batch) < self.config.block_max_actions:
            size += len(self._queue[0][1].wire)
            if batch and size > self.config.block_max_bytes:
                break
            batch.append(self._queue.popleft())
            if batch[-1][1].action.type == "aggregate":
                break  # one aggregation a block: its metered work never meets another's
        messages, origin = self._take_l1()
        if not batch and not messages:
            return
        timestamp = self.chain.next_timestamp(int(time.time() * 1000))
        started = time.perf_counter()
        last_seq = batch[-1][0] if batch else self.store.live.executed_seq()
        self._inflight = self._block_worker.submit(
            self._execute_and_commit, [sa for _, sa in batch], timestamp, last_seq, messages, origin
        )
        try:
            await asyncio.wrap_future(self._inflight)
        except StfHalt as exc:
            self._halt(exc)
            return
        finally:
            self._inflight = None
        self.metrics.block_seconds.observe(time.perf_counter() - started)
        for _, sa in batch:
            self._pending.pop(sa.action.hash, None)
            self._forget_one(sa.action.sender)
        self.metrics.counters["blocks"] += 1
        self.metrics.counters["l1_messages"] += len(messages)
        if self._log is not None:
            self._log.prune(last_seq)
        if batch:
            self.on_progress(last_seq, self.halted)

    def _halt(self, exc: StfHalt) -> None:
        """Fail-stop: nothing of the block was committed; record which action, and stop."""
        self.halted = f"STF halt (fail-stop): {exc}"
        self._work.clear()
        self.metrics.counters["stf_halts"] += 1
        height = self.chain.head.height + 1
        log.critical("STF halt in block %d: %s", height, exc, exc_info=exc.cause)
        record_halt(self.config.data_dir, exc, height)
        self.on_halt()

    def _execute_and_commit(
        self,
        actions: list[SignedAction],
        timestamp_ms: int,
        last_seq: int,
        messages: list[L1Message],
        origin: tuple[int, bytes] | None,
    ) -> None:
        executed: ExecutedBlock = self.chain.execute(actions, timestamp_ms, messages, origin)
        self.chain.commit(executed, last_seq)
        if self.config.prune:
            self.metrics.counters["pruned_blocks"] += self.store.prune_bodies(self.prunable_below())
        self._maybe_compact()
        receipts = executed.record.receipts[len(messages) :]
        ok = sum(1 for r in receipts if r.ok)
        self.metrics.counters["executed"] += ok
        self.metrics.counters["failed"] += len(actions) - ok

    def _maybe_compact(self) -> None:
        """Once enough blob bytes were deleted (replaced vectors, pruned submissions), let
        LevelDB drop them now, in its own thread, while blocks go on."""
        if self.store.freed_blob_bytes < COMPACT_AFTER_FREED_BYTES:
            return
        if self._compaction is not None and not self._compaction.done():
            return
        self.metrics.counters["blob_compactions"] += 1
        self.store.freed_blob_bytes = 0
        self._compaction = self._compactor.submit(self.store.compact_blobs)

    # -- reads -------------------------------------------------------------------------

    @property
    def head(self) -> BlockHeader:
        return self.chain.head

    def pending_count(self) -> int:
        return len(self._pending)

    def action_status(self, action_hash: bytes) -> ActionStatus | None:
        if action_hash in self._pending:
            return ActionStatus(action_hash, "accepted")
        loc = self.store.live.locate_action(action_hash)
        if loc is None:
            return None
        receipt = self.store.live.receipt(loc)
        if receipt is None:
            return None
        status: ActionState = "executed" if receipt.ok else "failed"
        batch = None
        if self.batch_status is not None:
            found = self.batch_status(loc.height)
            if found is not None:
                batch, batch_state = found
                # executed, and now also committed / finalized on L1
                if receipt.ok and batch_state == "committed":
                    status = "committed"
                elif receipt.ok and batch_state == "finalized":
                    status = "finalized"
        return ActionStatus(action_hash, status, loc.height, loc.index, receipt, batch)

    def prunable_below(self) -> int:
        """Block bodies below this height may be pruned: with L1, those of finalized batches;
        without, those `prune_depth` blocks behind the head. (A submission's blob outlives
        its block's pruning while the state still holds it, until its round is aggregated.)"""
        if self.finalized_height is not None:
            return self.finalized_height() + 1
        return max(0, self.chain.head.height - self.config.prune_depth + 1)

    def block(self, height: int) -> BlockRecord | None:
        """The full block; 410 if this node pruned its actions. From a snapshot: the body
        and its blobs must not be pruned between the reads that reassemble it."""
        try:
            with self.store.snapshot() as snap:
                return snap.block(height)
        except DataPruned as exc:
            raise Rejected(410, "data_pruned", str(exc)) from None

    def block_summary(self, height: int) -> BlockSummary | None:
        return self.store.live.block_summary(height)

    def read_state(self, key: bytes) -> StateRead:
        """A value with its Merkle proof, all from one snapshot so they match the root."""
        with self.store.snapshot() as snap:
            height = snap.head_height()
            header = snap.header(height or 0)
            assert height is not None and header is not None
            proof = SparseMerkleTree(snap.smt_node, prefix=SMT_PREFIX).prove(key)
            return StateRead(key, snap.state(key), height, header.state_root, proof)

    def next_nonce(self, pubkey: bytes, executed: Account) -> int:
        return max(self._reserved.get(pubkey, 0), executed.nonce) + 1

    def _register_gauges(self) -> None:
        g = self.metrics.gauges
        g["head_height"] = lambda: float(self.chain.head.height)
        g["mempool_pending"] = lambda: float(len(self._pending))
        g["mempool_fsyncs"] = lambda: float(0 if self._log is None else self._log.fsyncs)
        g["uptime_seconds"] = lambda: time.time() - self.started_at
        g["sequencer_halted"] = lambda: float(self.halted is not None)


def account_json(pubkey: bytes, account: Account, next_nonce: int) -> AccountFields:
    return {
        "key": "0x" + pubkey.hex(),
        "nonce": account.nonce,
        "next_nonce": next_nonce,
        "balance": str(account.balance),
    }
