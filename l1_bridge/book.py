"""The node's book of batches and settled records (bookkeeping outside consensus state)."""

from collections.abc import Iterator

from l1_bridge.batches import Batch
from rollup.store import ChainStore

_BATCH = b"batch/"
_SETTLED = b"settled/"
_RECORD_BATCH = b"record-batch/"


class BatchBook:
    def __init__(self, store: ChainStore) -> None:
        self.store = store

    def get(self, index: int) -> Batch | None:
        raw = self.store.live.raw(_BATCH + index.to_bytes(8, "big"))
        return None if raw is None else Batch.decode(raw)

    def put(self, batch: Batch, *, index_records: bool = False) -> None:
        items: dict[bytes, bytes | None] = {_BATCH + batch.index.to_bytes(8, "big"): batch.encode()}
        if index_records:
            for r in batch.records:
                items[_RECORD_BATCH + r.record_id] = batch.index.to_bytes(8, "big")
        self.store.put_meta(items)

    def drop(self, index: int) -> None:
        """Forget a batch that was never committed (it is cut again)."""
        self.store.put_meta({_BATCH + index.to_bytes(8, "big"): None})

    def batches(self, start: int = 0) -> Iterator[Batch]:
        for _, raw in self.store.meta_range(_BATCH, start.to_bytes(8, "big")):
            yield Batch.decode(raw)

    def last(self) -> Batch | None:
        last = None
        for batch in self.batches():
            last = batch
        return last

    def batch_of_record(self, record_id: bytes) -> int | None:
        raw = self.store.live.raw(_RECORD_BATCH + record_id)
        return None if raw is None else int.from_bytes(raw, "big")

    def settled(self, record_id: bytes) -> str | None:
        raw = self.store.live.raw(_SETTLED + record_id)
        return None if raw is None else raw.decode()

    def mark_settled(self, record_id: bytes, how: str) -> None:
        self.store.put_meta({_SETTLED + record_id: how.encode()})
