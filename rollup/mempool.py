"""The durable mempool log: every accepted action is on disk before it is acknowledged.

Records go to append-only segment files `<first seq>.seg` as [len:4][crc32:4][payload].
Group commit: appends queue up while the previous fsync runs, then one write and one fsync
make a whole group durable, so many actions share one fsync. Sequence numbers start at 1
and are dense; the chain store remembers the last one executed, so a restart re-queues
exactly the accepted-but-unexecuted actions, in order.
"""

import asyncio
import logging
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">II")
MAX_RECORD_BYTES = 64 * 1024 * 1024
ROTATE_EXECUTED_BYTES = 1024 * 1024
T = TypeVar("T")


class LogCorrupt(Exception):
    pass


def _segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}.seg"


def _read_records(path: Path, first_seq: int) -> tuple[list[tuple[int, bytes]], int]:
    """Records of one segment and the byte length of its valid prefix (a torn tail is cut)."""
    data = path.read_bytes()
    records: list[tuple[int, bytes]] = []
    pos = 0
    while pos + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, pos)
        end = pos + _HEADER.size + length
        if length > MAX_RECORD_BYTES or end > len(data):
            break
        payload = data[pos + _HEADER.size : end]
        if zlib.crc32(payload) != crc:
            break
        records.append((first_seq + len(records), payload))
        pos = end
    return records, pos


class MempoolLog(Generic[T]):
    """`append(payload, item)`; once durable, `sink` gets [(seq, item)] in log order."""

    def __init__(
        self,
        directory: Path,
        sink: Callable[[list[tuple[int, T]]], None],
        segment_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._dir = directory
        self._dir.mkdir(parents=True, exist_ok=True)
        self._sink = sink
        self._segment_bytes = segment_bytes
        self._pending: list[tuple[bytes, T, asyncio.Future[int]]] = []
        self._wakeup = asyncio.Event()
        self._next_seq = 1
        self._file: int | None = None
        self._file_size = 0
        self._segments: list[int] = []
        self.fsyncs = 0

    def _segment_starts(self) -> list[int]:
        return sorted(int(p.stem) for p in self._dir.glob("*.seg"))

    def recover(self, executed_seq: int) -> list[tuple[int, bytes]]:
        """Open the log; return the records after `executed_seq`, in order.

        Only the last segment may end in a torn record (a crash mid-write, never
        acknowledged); it is truncated away. Damage anywhere else is refused loudly.
        """
        starts = self._segment_starts()
        unexecuted: list[tuple[int, bytes]] = []
        next_seq = executed_seq + 1
        for i, first in enumerate(starts):
            path = self._dir / _segment_name(first)
            records, valid = _read_records(path, first)
            if valid != path.stat().st_size:
                if i != len(starts) - 1:
                    raise LogCorrupt(f"{path} is damaged before the last segment")
                log.warning("truncating torn tail of %s at byte %d", path, valid)
                with path.open("r+b") as fh:
                    fh.truncate(valid)
                    os.fsync(fh.fileno())
            if i + 1 < len(starts) and first + len(records) != starts[i + 1]:
                raise LogCorrupt(f"sequence gap after {path}")
            unexecuted.extend(r for r in records if r[0] > executed_seq)
            next_seq = max(next_seq, first + len(records))
        self._segments = starts
        self._next_seq = next_seq
        self._open_segment(reuse_last=bool(starts))
        return unexecuted

    def _open_segment(self, reuse_last: bool) -> None:
        if self._file is not None:
            os.close(self._file)
        if not reuse_last:
            self._segments.append(self._next_seq)
        path = self._dir / _segment_name(self._segments[-1])
        self._file = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._file_size = os.fstat(self._file).st_size
        _fsync_dir(self._dir)

    def append(self, payload: bytes, item: T) -> "asyncio.Future[int]":
        """Queue a record; the future gives its sequence number once it is durable."""
        if len(payload) > MAX_RECORD_BYTES:
            raise ValueError("record too large")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._pending.append((payload, item, fut))
        self._wakeup.set()
        return fut

    async def run(self) -> None:
        """The group-commit loop (a background task of the node)."""
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            group, self._pending = self._pending, []
            if not group:
                continue
            try:
                records = self._write(group)
                fd = self._file
                assert fd is not None
                await loop.run_in_executor(None, os.fsync, fd)
            except BaseException as exc:
                for _, _, fut in group:
                    if not fut.done():
                        fut.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("log stopped")
                        )
                raise
            self.fsyncs += 1
            self._sink([(seq, item) for seq, (_, item, _) in zip(records, group, strict=True)])
            for seq, (_, _, fut) in zip(records, group, strict=True):
                if not fut.done():
                    fut.set_result(seq)

    def _write(self, group: list[tuple[bytes, T, "asyncio.Future[int]"]]) -> list[int]:
        if self._file_size >= self._segment_bytes:
            self._open_segment(reuse_last=False)
        assert self._file is not None
        chunks: list[bytes] = []
        records: list[int] = []
        for payload, _, _ in group:
            chunks.append(_HEADER.pack(len(payload), zlib.crc32(payload)))
            chunks.append(payload)
            records.append(self._next_seq)
            self._next_seq += 1
        data = b"".join(chunks)
        view = memoryview(data)
        while view:
            written = os.write(self._file, view)
            view = view[written:]
        self._file_size += len(data)
        return records

    def prune(self, executed_seq: int) -> int:
        """Delete whole segments whose records are all executed; returns how many. A fully
        executed active segment of ROTATE_EXECUTED_BYTES or more is closed first, so that
        submissions do not linger on disk as a second copy until 64 MB more arrive. (All
        written records being executed means none awaits its fsync: safe to close.)"""
        if executed_seq == self._next_seq - 1 and self._file_size >= ROTATE_EXECUTED_BYTES:
            self._open_segment(reuse_last=False)
        removed = 0
        while len(self._segments) > 1 and self._segments[1] - 1 <= executed_seq:
            (self._dir / _segment_name(self._segments.pop(0))).unlink(missing_ok=True)
            removed += 1
        return removed

    def close(self) -> None:
        if self._file is not None:
            os.close(self._file)
            self._file = None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
