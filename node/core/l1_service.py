"""The node's L1 side: starts or attaches to L1, runs the watcher, the poster and the keeper
as background loops on one L1 thread (web3 calls block; eth-tester is not thread-safe), and
answers the L1 questions of the API (batches, settlement proofs, action finality)."""

import asyncio
import bisect
import logging
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from l1_bridge.batches import COMMITTED, FINALIZED, Batch, genesis_output_root
from l1_bridge.book import BatchBook
from l1_bridge.keeper import Keeper, batch_proof
from l1_bridge.keystore import load_keystore
from l1_bridge.link import L1Link, embedded_link, rpc_link
from l1_bridge.poster import Poster
from l1_bridge.watcher import Watcher
from node.api_models import Batch as BatchJson
from node.api_models import SettlementProof
from node.config import NodeConfig, effective_confirmations
from node.core.service import Node

log = logging.getLogger(__name__)
T = TypeVar("T")
_EMBEDDED_MARK = b"meta/l1-embedded"
_MAX_BACKOFF_S = 30.0


class EmbeddedRestart(Exception):
    pass


class L1Service:
    def __init__(self, node: Node, link: L1Link, config: NodeConfig) -> None:
        self.node = node
        self.link = link
        self.config = config
        self.book = BatchBook(node.store)
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="l1")
        # A real L1 client can wait on a commit receipt while the watcher and keeper go on;
        # the embedded py-evm is not thread-safe and mines at once, so it keeps one thread.
        self._poster_executor = (
            self._executor
            if link.embedded
            else ThreadPoolExecutor(1, thread_name_prefix="l1-poster")
        )
        genesis = node.store.live.block(0)
        assert genesis is not None
        # From the deployment block: messages seen but not yet included survive a restart.
        self.watcher = Watcher(
            link,
            effective_confirmations(config),
            link.deployment.block_number,
            config.l1_log_window_blocks,
            config.l1_head_tag,
        )
        self.poster = Poster(
            link,
            self.book,
            node.store.live.block,
            genesis_output_root(genesis),
            config.batch_max_blocks,
            config.batch_interval_ms / 1000,
        )
        if config.resume_after_rejection:
            self.poster.clear_rejection()
        self.keeper = Keeper(link, self.book)
        self._index: list[
            tuple[int, int, int, str]
        ] = []  # (last height, first height, index, status)
        self.errors = 0
        self._refresh_index()
        node.batch_status = self.batch_of_height
        node.finalized_height = self.finalized_height
        self._register_gauges()

    @staticmethod
    def start(node: Node, config: NodeConfig) -> "L1Service | None":
        if config.l1 == "none":
            return None
        if config.l1 == "embedded":
            if node.head.height > 0 and node.store.live.raw(_EMBEDDED_MARK) is not None:
                raise EmbeddedRestart(
                    "this data dir ran with the embedded L1, which lives and dies with the node "
                    "process; start it with --l1 none, or use a persistent L1 (--l1-rpc), or a "
                    "fresh --data-dir"
                )
            genesis = node.store.live.block(0)
            assert genesis is not None
            link = embedded_link(genesis_output_root(genesis), config.challenge_window_s)
            node.store.put_meta({_EMBEDDED_MARK: b"1"})
        else:
            assert config.l1_deployment is not None
            link = rpc_link(config.l1_rpc, config.l1_deployment, **l1_accounts(config))
        return L1Service(node, link, config)

    async def call(self, fn: Any, *args: Any, executor: ThreadPoolExecutor | None = None) -> Any:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor or self._executor, fn, *args)

    async def _loop(self, name: str, step: Any) -> None:
        backoff = self.config.l1_poll_ms / 1000
        while True:
            try:
                await self.call(step, executor=self._poster_executor if name == "poster" else None)
                backoff = self.config.l1_poll_ms / 1000
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # an L1 outage: keep the node up, retry with backoff
                self.errors += 1
                # jitter: nodes that lost the same RPC do not come back to it in step
                delay = backoff * random.uniform(0.8, 1.2)
                log.warning("%s: %s; retrying in %.1fs", name, exc, delay)
                backoff = min(backoff * 2, _MAX_BACKOFF_S)
                await asyncio.sleep(delay)
                continue
            await asyncio.sleep(backoff)

    def tasks(self) -> list["asyncio.Task[None]"]:
        loops = [("watcher", self._watch), ("poster", self._post)]
        if self.config.keeper:
            loops.append(("keeper", self.keeper.settle))
        return [asyncio.create_task(self._loop(name, step), name=name) for name, step in loops]

    def _watch(self) -> None:
        found = self.watcher.poll(self.node.next_l1_nonce())
        if found is not None:
            messages, origin = found
            self.node.loop.call_soon_threadsafe(self.node.offer_l1, messages, origin)

    def _post(self) -> None:
        self.poster.define(self.node.head.height)
        self.poster.post()
        self._refresh_index()
        reason = self.poster.rejected
        if reason is not None and self.node.halted is None:
            self.node.loop.call_soon_threadsafe(self.node.halt, reason)

    def _refresh_index(self) -> None:
        self._index = [
            (b.last_height, b.first_height, b.index, b.status) for b in self.book.batches()
        ]

    def finalized_height(self) -> int:
        """The last block of the newest finalized batch (-1: none yet)."""
        finalized = [last for last, _, _, status in self._index if status == FINALIZED]
        return max(finalized, default=-1)

    def batch_of_height(self, height: int) -> tuple[int, str] | None:
        pos = bisect.bisect_left(self._index, (height, -1, -1, ""))
        if pos < len(self._index):
            last, first, index, status = self._index[pos]
            if first <= height <= last:
                return index, status
        return None

    def proof_json(self, record_id: bytes) -> SettlementProof | None:
        return settlement_proof_json(self.book, record_id)

    def batch_json(self, batch: Batch) -> BatchJson:
        return batch_json(batch)

    def _register_gauges(self) -> None:
        g = self.node.metrics.gauges
        g["l1_batches_committed"] = lambda: float(
            sum(1 for b in self._index if b[3] in (COMMITTED, FINALIZED))
        )
        g["l1_batches_finalized"] = lambda: float(sum(1 for b in self._index if b[3] == FINALIZED))
        g["l1_errors"] = lambda: float(self.errors)
        g["l1_deep_reorgs"] = lambda: float(self.watcher.deep_reorgs)
        g["keeper_executed"] = lambda: float(self.keeper.executed)
        g["keeper_failed"] = lambda: float(self.keeper.failed)
        g["poster_rejected_batches"] = lambda: float(self.poster.rejected is not None)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._poster_executor.shutdown(wait=True)


def l1_accounts(config: NodeConfig) -> dict[str, Any]:
    """The proposer's and keeper's keystore accounts, when configured (password: env)."""
    out: dict[str, Any] = {}
    if config.l1_proposer_keystore is not None:
        out["proposer_account"] = load_keystore(config.l1_proposer_keystore)
    if config.l1_keeper_keystore is not None:
        out["keeper_account"] = load_keystore(config.l1_keeper_keystore)
    return out


def settlement_proof_json(book: BatchBook, record_id: bytes) -> SettlementProof | None:
    """A batched settlement record with its Merkle proof against its batch's output root."""
    index = book.batch_of_record(record_id)
    if index is None:
        return None
    batch = book.get(index)
    assert batch is not None
    position = next(i for i, r in enumerate(batch.records) if r.record_id == record_id)
    proof = batch_proof(batch, position)
    r = proof.record
    answer: SettlementProof = {
        "batch_index": batch.index,
        "batch_status": batch.status,
        "settled": book.settled(record_id),
        "state_root": "0x" + batch.state_root.hex(),
        "settlement_root": "0x" + batch.settlement_root.hex(),
        "last_block_hash": "0x" + batch.last_block_hash.hex(),
        "output_root": "0x" + batch.output_root.hex(),
        "record": {
            "version": r.version,
            "kind": int(r.kind),
            "job_id": r.job_id,
            "round": r.round,
            "rollup_key": "0x" + r.rollup_key.hex(),
            "payee": r.payee_address,
            "amount": str(r.amount),
            "record_id": "0x" + r.record_id.hex(),
        },
        "proof": ["0x" + p.hex() for p in proof.proof],
    }
    return answer


def batch_json(batch: Batch) -> BatchJson:
    return {
        "index": batch.index,
        "status": batch.status,
        "first_height": batch.first_height,
        "last_height": batch.last_height,
        "state_root": "0x" + batch.state_root.hex(),
        "settlement_root": "0x" + batch.settlement_root.hex(),
        "last_block_hash": "0x" + batch.last_block_hash.hex(),
        "output_root": "0x" + batch.output_root.hex(),
        "prev_output_root": "0x" + batch.prev_output_root.hex(),
        "data_hash": "0x" + batch.data_hash.hex(),
        "records": len(batch.records),
    }
