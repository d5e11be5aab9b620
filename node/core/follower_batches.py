"""A follower's batches: the sequencer's committed batches, each re-derived from the
follower's own verified blocks before it is kept and served.

Batch boundaries are the sequencer's choice (its poster cuts by time and count), so they come
from the sequencer; everything else a batch holds (state, settlement and output roots, data
hash, the L1 messages it consumed, its records) is recomputed here from blocks this follower
re-executed, with the sequencer's L1 deployment (chain id and inbox) that output roots are
bound to. A batch that does not re-derive is never served: the follower logs it, counts it
(`fedrollup_follower_batch_mismatches_total`) and stops mirroring batches at that index,
while it goes on following blocks (the wrong root is `fedrollup verify`'s to challenge, and
this follower still serves the blocks it needs). Its L1 status (committed, finalized) is the
sequencer's word: a follower does not read L1."""

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from l1_bridge.batches import COMMITTED, FINALIZED, Batch, build_batch, genesis_output_root
from l1_bridge.book import BatchBook
from node.core.service import Node
from rollup.block import hexb

log = logging.getLogger(__name__)

_DEPLOYMENT = b"meta/follow-deployment"
_MIRRORED = (COMMITTED, FINALIZED)  # pending batches may still be cut again by the poster
# Fields of a batch answer that must equal the re-derived batch's.
_DERIVED_FIELDS = (
    "first_height",
    "last_height",
    "state_root",
    "settlement_root",
    "last_block_hash",
    "output_root",
    "prev_output_root",
    "data_hash",
)

GetJson = Callable[[str], Awaitable[dict[str, Any]]]


class BatchMismatch(Exception):
    """A batch the sequencer reports does not re-derive from the verified blocks."""


class BatchMirror:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.book = BatchBook(node.store)
        raw = node.store.live.raw(_DEPLOYMENT)
        self.deployment_text: str | None = None if raw is None else raw.decode()
        self.sequencer_has_l1: bool | None = None if raw is None else True
        self.stopped_at: int | None = None  # the index whose batch did not re-derive

    async def refresh(self, get: GetJson) -> None:
        """Mirror every committed batch the sequencer reports that lies within this follower's
        verified blocks; refresh the statuses the sequencer reports."""
        if self.stopped_at is not None or not await self._has_deployment(get):
            return
        listing = await get("/v1/batches")
        claims = {int(b["index"]): b for b in listing["batches"]}
        start = self._next_index()
        if claims and start < min(claims):  # older than the listing's window: one by one
            for index in range(start, min(claims)):
                claims[index] = await get(f"/v1/batches/{index}")
        head = self.node.chain.head.height
        for index in sorted(claims):
            claim = claims[index]
            if claim["status"] not in _MIRRORED or int(claim["last_height"]) > head:
                break
            kept = self.book.get(index)
            if kept is not None and hexb(kept.output_root) == claim["output_root"]:
                if kept.status != claim["status"]:
                    self.book.put(kept.with_status(claim["status"]))
                continue
            try:
                self.book.put(self._derive(index, claim), index_records=True)
            except BatchMismatch as exc:
                self._stop(index, str(exc))
                return

    async def _has_deployment(self, get: GetJson) -> bool:
        if self.deployment_text is not None:
            return True
        if self.sequencer_has_l1 is False:
            return False
        try:
            doc = await get("/v1/l1/deployment")
        except LookupError:  # 404: the sequencer runs without L1, so it cuts no batches
            self.sequencer_has_l1 = False
            return False
        text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        self.node.store.put_meta({_DEPLOYMENT: text.encode()})
        self.deployment_text, self.sequencer_has_l1 = text, True
        return True

    def _next_index(self) -> int:
        last = self.book.last()
        return 0 if last is None else last.index + 1

    def _derive(self, index: int, claim: dict[str, Any]) -> Batch:
        assert self.deployment_text is not None
        deployment = json.loads(self.deployment_text)
        prev = self.book.get(index - 1) if index > 0 else None
        if index > 0 and prev is None:
            raise BatchMismatch(f"batch {index - 1} is missing before it")
        first = 1 if prev is None else prev.last_height + 1
        last = int(claim["last_height"])
        live = self.node.store.live
        blocks = [live.block(h) for h in range(first, last + 1)]
        if not blocks or any(b is None for b in blocks):
            raise BatchMismatch(f"blocks {first}-{last} are not a batch of verified blocks")
        genesis = live.block(0)
        assert genesis is not None
        built = build_batch(
            index,
            genesis_output_root(genesis) if prev is None else prev.output_root,
            [b for b in blocks if b is not None],
            int(deployment["chainId"]),
            str(deployment["contracts"]["RollupInbox"]),
            0 if prev is None else prev.messages_consumed,
        )
        ours = batch_fields(built)
        differ = [f for f in _DERIVED_FIELDS if str(claim.get(f)) != ours[f]]
        if differ:
            detail = ", ".join(f"{f}: sequencer {claim.get(f)}, derived {ours[f]}" for f in differ)
            raise BatchMismatch(detail)
        return built.with_status(str(claim["status"]))

    def _stop(self, index: int, why: str) -> None:
        self.stopped_at = index
        self.node.metrics.counters["follower_batch_mismatches"] += 1
        log.error(
            "BATCH MISMATCH: the sequencer's batch %d does not re-derive from the verified"
            " blocks (%s); it is not served, and batches after it are not mirrored",
            index,
            why,
        )


def batch_fields(batch: Batch) -> dict[str, str]:
    """A batch's derived fields as a batch answer spells them."""
    return {
        "first_height": str(batch.first_height),
        "last_height": str(batch.last_height),
        "state_root": hexb(batch.state_root),
        "settlement_root": hexb(batch.settlement_root),
        "last_block_hash": hexb(batch.last_block_hash),
        "output_root": hexb(batch.output_root),
        "prev_output_root": hexb(batch.prev_output_root),
        "data_hash": hexb(batch.data_hash),
    }
