"""The watcher: reads the inbox's numbered L1 -> L2 messages once they have N confirmations.

It never decides what counts: the L2 state holds the next expected message nonce, so a
message offered twice (after a restart, or a rescan after a reorg) is applied once. After a
restart it rescans from the deployment block, so no message the node had seen but not yet
included is lost with its memory. Reorgs
shallower than the confirmations never reach it; a deeper one is detected (the hash of the
last safe block changed), counted, and answered by rescanning from before it.

The safe head is `latest - confirmations`; with `head_tag` "safe" or "finalized" it is also
never past the chain's own safe / finalized block (post-merge chains, anvil). On a chain
without the tag the poll fails and is retried like any L1 error (never silently weaker).

Logs are read in windows of at most `log_window` blocks per `eth_getLogs` call (hosted RPCs
refuse or truncate larger ranges), one window after another up to the safe head.
"""

import logging
from collections.abc import Iterator
from typing import Any

from l1_bridge.link import L1Link
from stf.l1 import L1Message

log = logging.getLogger(__name__)
DEFAULT_LOG_WINDOW = 1000  # blocks per eth_getLogs call
HEAD_TAGS = ("latest", "safe", "finalized")


class Watcher:
    def __init__(
        self,
        link: L1Link,
        confirmations: int,
        start_block: int,
        log_window: int = DEFAULT_LOG_WINDOW,
        head_tag: str = "latest",
    ) -> None:
        if log_window < 1:
            raise ValueError("log_window must be at least one block")
        if head_tag not in HEAD_TAGS:
            raise ValueError(f"head_tag is one of {', '.join(HEAD_TAGS)}")
        self.head_tag = head_tag
        self.link = link
        self.log_window = log_window
        self.confirmations = confirmations
        self.start_block = start_block
        self.cursor = start_block  # next L1 block to scan
        self.origin: tuple[int, bytes] | None = None
        self.deep_reorgs = 0

    def poll(self, next_nonce: int) -> tuple[list[L1Message], tuple[int, bytes]] | None:
        """Messages with nonce >= next_nonce up to the safe head, contiguous, and that head."""
        w3 = self.link.w3
        safe = self.safe_head()
        if safe < self.start_block:
            return None
        self._check_reorg()
        if safe < self.cursor:
            return None
        logs: list[Any] = []
        for first, last in log_windows(self.cursor, safe, self.log_window):
            logs += self.get_logs(first, last)
        # Every message not yet applied is offered; the node holds the ones whose turn has
        # not come (an earlier one may still wait for its block) until it has.
        messages = sorted(
            (m for m in map(_message, logs) if m.nonce >= next_nonce), key=lambda m: m.nonce
        )
        self.cursor = safe + 1
        self.origin = (safe, bytes(w3.eth.get_block(safe)["hash"]))
        return messages, self.origin

    def safe_head(self) -> int:
        """The newest L1 block whose messages may be taken (see the module docstring)."""
        w3 = self.link.w3
        head = int(w3.eth.block_number) - self.confirmations
        if self.head_tag != "latest":
            head = min(head, tagged_head(w3, self.head_tag))
        return head

    def get_logs(self, first: int, last: int) -> list[Any]:
        """The inbox's MessageSent logs of L1 blocks first..last (one bounded window)."""
        event = self.link.deployment.inbox.events.MessageSent()
        return list(event.get_logs(from_block=first, to_block=last))

    def _check_reorg(self) -> None:
        if self.origin is None:
            return
        height, block_hash = self.origin
        if bytes(self.link.w3.eth.get_block(height)["hash"]) != block_hash:
            self.deep_reorgs += 1
            self.cursor = max(self.start_block, height - 2 * self.confirmations - 1)
            log.warning(
                "L1 reorg below the safe head at %d: rescanning from %d", height, self.cursor
            )
            self.origin = None


def log_windows(first: int, last: int, window: int) -> Iterator[tuple[int, int]]:
    """Block ranges of at most `window` blocks tiling first..last, in order (the watcher's and
    the verifier's eth_getLogs calls)."""
    if window < 1:
        raise ValueError("a log window is at least one block")
    while first <= last:
        end = min(last, first + window - 1)
        yield first, end
        first = end + 1


def tagged_head(w3: Any, head_tag: str) -> int:
    """The number of the chain's `latest`, `safe` or `finalized` block. A chain without the tag
    raises (the caller retries or gives up; never a silently weaker head)."""
    if head_tag not in HEAD_TAGS:
        raise ValueError(f"head_tag is one of {', '.join(HEAD_TAGS)}")
    return int(w3.eth.get_block(head_tag)["number"])


def _message(entry: object) -> L1Message:
    args = entry.args  # type: ignore[attr-defined]
    return L1Message(
        nonce=int(args.nonce),
        kind=int(args.kind),
        rollup_key=bytes(args.rollupKey),
        sender=bytes.fromhex(str(args.sender)[2:]),
        amount=int(args.amount),
        data=bytes(args.data),
        l1_block=int(entry.blockNumber),  # type: ignore[attr-defined]
    )
