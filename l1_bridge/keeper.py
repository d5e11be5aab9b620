"""The keeper: once a batch is finalized, executes its slash records and claims its reward
and withdrawal records on L1 with their Merkle proofs. Anyone may do this (the SDK can send
a claim itself); the node does it by default. Each record executes once on L1, and the
keeper checks before sending, so a restarted keeper never pays twice."""

import logging

from l1_bridge.batches import FINALIZED, Batch
from l1_bridge.book import BatchBook
from l1_bridge.contracts import BatchProof, decode_error, revert_data
from l1_bridge.link import L1Link
from l1_bridge.settlement import RecordKind

log = logging.getLogger(__name__)


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

    def settle(self) -> None:
        self.link.mine()
        for batch in self.book.batches():
            if batch.status != FINALIZED:
                continue
            for position, record in enumerate(batch.records):
                if self.book.settled(record.record_id) is None:
                    self._settle_one(batch, position)

    def _settle_one(self, batch: Batch, position: int) -> None:
        record = batch.records[position]
        dep = self.link.deployment
        is_slash = record.kind == RecordKind.SLASH
        done = (dep.slashing if is_slash else dep.rewards).functions
        if bool((done.isExecuted if is_slash else done.isClaimed)(record.record_id).call()):
            self.book.mark_settled(record.record_id, "settled")
            return
        proof = batch_proof(batch, position)
        try:
            if is_slash:
                dep.execute_slash(proof, sender=self.link.keeper)
            else:
                dep.claim(proof, sender=self.link.keeper)
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
            return
        self.executed += 1
        self.book.mark_settled(record.record_id, "settled")
