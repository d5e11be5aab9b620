"""The key-value view of state that the STF reads and writes.

The STF never knows what backs it: a dict in unit tests, a journaled LevelDB overlay in the
node. Keys and values are bytes; every typed accessor lives next to the rules that use it.
"""

from typing import Protocol


class KV(Protocol):
    def get(self, key: bytes) -> bytes | None: ...

    def put(self, key: bytes, value: bytes) -> None: ...

    def delete(self, key: bytes) -> None: ...


class DictKV:
    """An in-memory KV, for tests and replays."""

    def __init__(self, data: dict[bytes, bytes] | None = None) -> None:
        self.data: dict[bytes, bytes] = dict(data or {})

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, value: bytes) -> None:
        self.data[key] = value

    def delete(self, key: bytes) -> None:
        self.data.pop(key, None)
