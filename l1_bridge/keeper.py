"""The keeper: once a batch is finalized, executes its slash and stake-release records and
claims its reward, withdrawal and refund records on L1 with their Merkle proofs. Anyone may do
this (the SDK can send a claim itself); the node does it by default. Each record executes once
on L1, and the keeper checks before sending, so a restarted keeper never pays twice.

An L1 error is never a verdict for ever: a record whose execution reverted is noted
(`failed:<Error>`, counted) and tried again after `RETRY_S` (a reward whose job pool is not yet
funded, a treasury that is short, a node that answered wrongly), never dropped."""

import logging
import time

from l1_bridge.batches import FINALIZED, Batch
from l1_bridge.book import BatchBook
from l1_bridge.contracts import BatchProof, decode_error, revert_data
from l1_bridge.link import L1Link

log = logging.getLogger(__name__)
RETRY_S = 60.0


def batch_proof(batch: Batch, position: int) -> BatchProof:
    tree = batch.tree()
    return BatchProof(
        batch.index,
        batch.state_root,
        batch.settlement_root,
        batch.last_block_hash,
        batch.records[position],
        tuple(tree.proof(position)),
    )


class Keeper:
    def __init__(self, link: L1Link, book: BatchBook) -> None:
        self.link = link
        self.book = book
        self.executed = 0
        self.failed = 0
        self.retry_s = RETRY_S
        self._retry_at: dict[bytes, float] = {}

    def settle(self) -> None:
        self.link.mine()
        now = time.monotonic()
        for batch in self.book.batches():
            if batch.status != FINALIZED:
                continue
            for position, record in enumerate(batch.records):
                state = self.book.settled(record.record_id)
                if state == "settled":
                    continue
                if state is not None and self._retry_at.get(record.record_id, 0.0) > now:
                    continue
                self._settle_one(batch, position)

    def _settle_one(self, batch: Batch, position: int) -> None:
        record = batch.records[position]
        dep = self.link.deployment
        if dep.is_settled(record):
            self.book.mark_settled(record.record_id, "settled")
            return
        proof = batch_proof(batch, position)
        try:
            dep.settle(proof, sender=self.link.keeper)
        except Exception as exc:
            data = revert_data(exc)
            if data is None:  # an L1 outage, not a verdict: the keeper's loop retries with backoff
                raise
            err = decode_error(data)
            self.failed += 1
            log.warning(
                "record %s of batch %d not settled: %s",
                record.record_id.hex(),
                batch.index,
                err or exc,
            )
            self.book.mark_settled(
                record.record_id, f"failed:{err.name if err else type(exc).__name__}"
            )
            self._retry_at[record.record_id] = time.monotonic() + self.retry_s
            return
        self.executed += 1
        self.book.mark_settled(record.record_id, "settled")
