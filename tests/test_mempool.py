"""The durable mempool log: group commit, ordered recovery, torn tails, pruning."""

import asyncio
from pathlib import Path

import pytest

from rollup.mempool import LogCorrupt, MempoolLog


def _run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


async def _append_all(log: MempoolLog[int], payloads: list[bytes]) -> list[int]:
    task = asyncio.create_task(log.run())
    try:
        futs = [log.append(p, i) for i, p in enumerate(payloads)]
        return list(await asyncio.gather(*futs))
    finally:
        task.cancel()


def test_group_commit_shares_fsyncs_and_keeps_order(tmp_path: Path) -> None:
    sunk: list[tuple[int, int]] = []
    log: MempoolLog[int] = MempoolLog(tmp_path, sunk.extend)
    assert log.recover(0) == []
    payloads = [f"action-{i}".encode() for i in range(500)]
    seqs = _run(_append_all(log, payloads))
    assert seqs == list(range(1, 501))
    assert [item for _, item in sunk] == list(range(500))
    assert log.fsyncs < 50  # 500 appends queued together share a handful of fsyncs
    log.close()
    again: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None)
    assert again.recover(200) == [
        (s, p) for s, p in zip(range(201, 501), payloads[200:], strict=True)
    ]


def test_torn_tail_is_truncated_and_never_replayed(tmp_path: Path) -> None:
    log: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None)
    log.recover(0)
    _run(_append_all(log, [b"one", b"two", b"three"]))
    log.close()
    segment = next(tmp_path.glob("*.seg"))
    data = segment.read_bytes()
    segment.write_bytes(data[:-2])  # a crash in the middle of the last write
    reopened: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None)
    assert reopened.recover(0) == [(1, b"one"), (2, b"two")]
    seqs = _run(_append_all(reopened, [b"four"]))
    assert seqs == [3]
    reopened.close()
    final: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None)
    assert final.recover(0) == [(1, b"one"), (2, b"two"), (3, b"four")]


def test_corrupt_record_in_old_segment_is_refused(tmp_path: Path) -> None:
    log: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None, segment_bytes=64)
    log.recover(0)
    for i in range(6):
        _run(_append_all(log, [bytes([i]) * 40]))
    log.close()
    first = sorted(tmp_path.glob("*.seg"))[0]
    raw = bytearray(first.read_bytes())
    raw[10] ^= 0xFF
    first.write_bytes(bytes(raw))
    with pytest.raises(LogCorrupt):
        MempoolLog(tmp_path, lambda _: None).recover(0)


def test_prune_drops_only_fully_executed_segments(tmp_path: Path) -> None:
    log: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None, segment_bytes=64)
    log.recover(0)
    for i in range(6):
        _run(_append_all(log, [bytes([i]) * 60]))  # one record per segment (each > 64 bytes)
    assert len(list(tmp_path.glob("*.seg"))) == 6
    assert log.prune(3) == 3
    log.close()
    reopened: MempoolLog[int] = MempoolLog(tmp_path, lambda _: None)
    assert [s for s, _ in reopened.recover(3)] == [4, 5, 6]
