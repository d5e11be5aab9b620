"""A journaled view of state for one block: an action's writes land in its own layer, which
is merged into the block layer if the action succeeds and dropped if it fails. Nothing
reaches storage until the whole block commits."""

from collections.abc import Callable

Reader = Callable[[bytes], bytes | None]


class Journal:
    def __init__(self, read: Reader) -> None:
        self._read = read
        self._block: dict[bytes, bytes | None] = {}
        self._action: dict[bytes, bytes | None] = {}

    def get(self, key: bytes) -> bytes | None:
        if key in self._action:
            return self._action[key]
        if key in self._block:
            return self._block[key]
        return self._read(key)

    def put(self, key: bytes, value: bytes) -> None:
        self._action[key] = value

    def delete(self, key: bytes) -> None:
        self._action[key] = None

    def commit_action(self) -> None:
        self._block.update(self._action)
        self._action.clear()  # reused, not replaced: one dict less per action for the GC

    def revert_action(self) -> None:
        self._action.clear()

    def block_changes(self) -> dict[bytes, bytes | None]:
        """The block's net writes (None = delete), after the last action committed."""
        if self._action:
            raise RuntimeError("an action is still open")
        return dict(self._block)
