"""The batch poster: groups committed L2 blocks into batches and commits their output roots.

Idempotent by batch index: a batch is written to the node's book before it is sent, and on
every step the poster first asks L1 which index comes next, so after a crash or an RPC
outage it resumes with no gap and no duplicate (a second commit of an index would revert
anyway). Failures are retried by the caller's loop with backoff.

Safety over liveness: a batch the guardian rejected (L1's next index fell back below a batch
this poster committed, or L1 holds another root for it) is never committed again. The poster
records the rejection in the node's store (it survives restarts), logs it as an error, stops
cutting and committing batches, and the node stops sequencing, until an operator has
investigated and restarts with `resume_after_rejection`.

Forced inclusion: each commit states the L2's next L1-message nonce after the batch; L1
refuses a commit that leaves a message older than its inclusion window unconsumed. A batch cut
before such a message was included is dropped from the book (it was never sent) and cut again
with the newer blocks that include it.
"""

import logging
import time
from collections.abc import Callable
from typing import Any

from web3.exceptions import TimeExhausted

from l1_bridge.batches import (
    CHALLENGED,
    COMMITTED,
    DISCARDED,
    FINALIZED,
    PENDING,
    Batch,
    build_batch,
)
from l1_bridge.book import BatchBook
from l1_bridge.link import L1Link
from rollup.store import BlockRecord

log = logging.getLogger(__name__)
_MIN_TIP = 10**9  # 1 gwei
_REJECTED = b"poster/rejected"


class Poster:
    def __init__(
        self,
        link: L1Link,
        book: BatchBook,
        read_block: Callable[[int], BlockRecord | None],
        genesis_root: bytes,
        max_blocks: int,
        interval_s: float,
    ) -> None:
        self.link = link
        self.book = book
        self.read_block = read_block
        self.genesis_root = genesis_root
        self.max_blocks = max_blocks
        self.interval_s = interval_s
        self._last_defined = time.monotonic()
        self.commits = 0
        self.receipt_timeout_s = 10.0
        self._attempt: tuple[int, int, int, int] | None = None  # index, nonce, tip, max fee
        self._head = 0
        self.recuts = 0

    @property
    def rejected(self) -> str | None:
        """Why the poster stopped (a batch the guardian rejected), or None."""
        raw = self.book.store.live.raw(_REJECTED)
        return None if raw is None else raw.decode()

    def clear_rejection(self) -> None:
        """The operator's act: post again (the rejected batches stay discarded in the book)."""
        if self.rejected is not None:
            log.warning("poster: resuming after a rejected batch (%s)", self.rejected)
            self.book.store.put_meta({_REJECTED: None})

    def _reject(self, batch: Batch, why: str) -> None:
        reason = f"batch {batch.index} (output root 0x{batch.output_root.hex()}) {why}"
        self.book.put(batch.with_status(DISCARDED))
        self.book.store.put_meta({_REJECTED: reason.encode()})
        log.error(
            "SAFETY STOP: %s; the poster never recommits a rejected root and the node stops "
            "sequencing until an operator investigates and restarts it with "
            "resume_after_rejection",
            reason,
        )

    def define(self, head_height: int) -> Batch | None:
        """Cut the next batch from the blocks after the last one, if it is time."""
        self._head = head_height
        if self.rejected is not None:
            return None
        last = self.book.last()
        first = 1 if last is None else last.last_height + 1
        waiting = head_height - first + 1
        due = time.monotonic() - self._last_defined >= self.interval_s
        if waiting <= 0 or (waiting < self.max_blocks and not due):
            return None
        end = min(head_height, first + self.max_blocks - 1)
        blocks = [self.read_block(h) for h in range(first, end + 1)]
        index = 0 if last is None else last.index + 1
        prev = self.genesis_root if last is None else last.output_root
        dep = self.link.deployment
        batch = build_batch(
            index,
            prev,
            [b for b in blocks if b is not None],
            dep.chain_id,
            dep.addresses["RollupInbox"],
            0 if last is None else last.messages_consumed,
        )
        self.book.put(batch, index_records=True)
        self._last_defined = time.monotonic()
        return batch

    def post(self) -> None:
        """Bring L1 level with the book: commit what it lacks, in order, and follow statuses."""
        if self.rejected is not None:
            return
        inbox = self.link.deployment.inbox.functions
        on_l1 = int(inbox.nextBatchIndex().call())
        for batch in self.book.batches():
            if batch.status in (FINALIZED, DISCARDED):
                continue
            if batch.index < on_l1:
                self._follow(batch)
                if self.rejected is not None:
                    return
            elif batch.status in (COMMITTED, CHALLENGED) and self._discarded(batch.index):
                # We committed it, and L1 no longer has it because the guardian discarded it
                # (not because an L1 reorg dropped our commit: that one is simply sent again).
                self._reject(batch, "was discarded by the guardian")
                return
            elif batch.index == on_l1:
                if self._overdue(batch):
                    return
                self._commit(batch)
                self.commits += 1
                on_l1 += 1
                self.book.put(batch.with_status(COMMITTED))
                log.info(
                    "committed batch %d (blocks %d-%d)",
                    batch.index,
                    batch.first_height,
                    batch.last_height,
                )
            else:
                break

    def _discarded(self, index: int) -> bool:
        """Whether the guardian discarded batch `index` (a BatchesDiscarded event covers it)."""
        dep = self.link.deployment
        logs = dep.inbox.events.BatchesDiscarded().get_logs(from_block=dep.block_number)
        return any(int(e.args.fromIndex) <= index < int(e.args.toIndex) for e in logs)

    def _overdue(self, batch: Batch) -> bool:
        """Whether L1 would refuse `batch` for leaving an old message unconsumed (within a
        tenth of the window of it). If newer blocks exist, drop the batch to be cut again."""
        inbox = self.link.deployment.inbox.functions
        if batch.messages_consumed >= int(inbox.messageCount().call()):
            return False
        sent_at = int(inbox.messageTime(batch.messages_consumed).call())
        window = int(inbox.inclusionWindow().call())
        now = int(self.link.w3.eth.get_block("latest")["timestamp"])
        if sent_at + window - window // 10 >= now:
            return False
        if self._head > batch.last_height:
            log.warning(
                "batch %d leaves L1 message %d unconsumed past the inclusion window: cutting it "
                "again with the newer blocks",
                batch.index,
                batch.messages_consumed,
            )
            self.book.drop(batch.index)
            self.recuts += 1
        return True

    def _commit(self, batch: Batch) -> None:
        dep = self.link.deployment
        if self.link.embedded:  # py-evm mines at once
            dep.commit_batch(
                batch.index,
                batch.prev_output_root,
                batch.output_root,
                batch.data_hash,
                batch.messages_consumed,
                sender=self.link.proposer,
            )
            return
        fn = dep.inbox.functions.commitBatch(
            batch.index,
            batch.prev_output_root,
            batch.output_root,
            batch.data_hash,
            batch.messages_consumed,
        )
        w3 = self.link.w3
        proposer = self.link.proposer
        nonce = int(w3.eth.get_transaction_count(proposer, "latest"))  # type: ignore[arg-type]
        base_fee = int(w3.eth.get_block("latest").get("baseFeePerGas", 0))
        tip, max_fee = _MIN_TIP, 2 * base_fee + _MIN_TIP
        if self._attempt is not None and self._attempt[:2] == (batch.index, nonce):
            # The last attempt at this index was not mined (dropped, or priced out): replace
            # it, same nonce, fees up by a quarter at least (nodes want >= 10% to replace).
            tip = max(tip, self._attempt[2] * 5 // 4)
            max_fee = max(max_fee, self._attempt[3] * 5 // 4)
        self._attempt = (batch.index, nonce, tip, max_fee)
        tx: Any = {
            "from": proposer,
            "nonce": nonce,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
        }
        tx_hash = fn.transact(tx)
        try:
            receipt = w3.eth.wait_for_transaction_receipt(
                tx_hash, timeout=self.receipt_timeout_s, poll_latency=0.2
            )
        except TimeExhausted:
            log.warning(
                "commit of batch %d not mined in %.0fs; will replace it",
                batch.index,
                self.receipt_timeout_s,
            )
            raise
        if receipt["status"] != 1:
            raise RuntimeError(f"commit of batch {batch.index} reverted")
        self._attempt = None

    def _follow(self, batch: Batch) -> None:
        inbox = self.link.deployment.inbox.functions
        committed = bytes(inbox.committedOutputRoot(batch.index).call())
        if committed != batch.output_root:
            self._reject(batch, "is not on L1 (L1 holds another root for its index)")
            return
        if bool(inbox.isFinalized(batch.index).call()):
            status = FINALIZED
        else:
            status = CHALLENGED if int(inbox.frozenFrom().call()) <= batch.index else COMMITTED
        if status != batch.status:
            self.book.put(batch.with_status(status))


__all__ = ["PENDING", "Poster"]
