"""Re-execute a node's blocks from genesis in a fresh store and compare every header.

This is what a replica or verifier does: trust nothing but the genesis and the signed
actions, and check that the published state roots follow.
"""

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from node.sdk.client import ApiError, Client
from rollup.chain import Chain, StfHalt
from rollup.codec import decode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf.l1 import L1Message


@dataclass(frozen=True)
class BlockData:
    """What a replica needs to re-execute one block, and the hash it must reach."""

    height: int
    timestamp_ms: int
    actions: list[bytes]
    l1_messages: list[bytes]
    l1_origin: tuple[int, bytes]
    expected_hash: bytes

    @staticmethod
    def from_json(b: dict[str, Any]) -> "BlockData":
        origin = b["l1_origin"]
        return BlockData(
            int(b["height"]),
            int(b["timestamp_ms"]),
            [bytes.fromhex(a[2:]) for a in b["actions"]],
            [bytes.fromhex(m[2:]) for m in b.get("l1_messages", [])],
            (int(origin["height"]), bytes.fromhex(origin["hash"][2:])),
            bytes.fromhex(b["hash"][2:]),
        )


def replay_blocks(blocks: list[BlockData], genesis: Genesis, workdir: Path) -> dict[str, Any]:
    """Re-execute blocks from height 1 up on a fresh store; stop at the first mismatch."""
    store = ChainStore(workdir)
    try:
        chain = Chain(store, genesis)
        for b in blocks:
            height, expected = b.height, b.expected_hash
            try:
                actions = [decode_action(w, genesis.chain_id) for w in b.actions]
                messages = [L1Message.decode(m) for m in b.l1_messages]
                executed = chain.execute(actions, b.timestamp_ms, messages, b.l1_origin)
            except StfHalt as exc:  # this replica's STF stops on the block: no verdict on it
                return _inconclusive(height, f"the STF stopped: {exc}")
            except Exception as exc:  # an action or message this replica cannot decode
                return _inconclusive(height, f"undecodable block data: {exc!r}")
            chain.commit(executed, 0)
            got = executed.record.header.hash()
            if got != expected:
                return {
                    "match": False,
                    "verdict": "mismatch",
                    "exit_code": EXIT_MISMATCH,
                    "height": height,
                    "expected": "0x" + expected.hex(),
                    "got": "0x" + got.hex(),
                }
        return {
            "match": True,
            "verdict": "match",
            "height": chain.head.height,
            "state_root": "0x" + chain.head.state_root.hex(),
        }
    finally:
        store.close()


EXIT_MISMATCH = 3
EXIT_INCONCLUSIVE = 6  # as `fedrollup verify`: the replica's own or the transport's trouble


def _inconclusive(height: int, why: str) -> dict[str, Any]:
    return {
        "match": False,
        "verdict": "inconclusive",
        "exit_code": EXIT_INCONCLUSIVE,
        "height": height,
        "why": why,
    }


def replay_from_node(url: str, genesis: Genesis) -> dict[str, Any]:
    client = Client(url)
    blocks = []
    sealed_from = None
    height = 0
    try:
        head = int(client.block("latest")["height"])
        for height in range(1, head + 1):
            b = client.block(height, full=True)
            if any(a is None for a in b["actions"]):
                sealed_from = height  # open-round submissions: replayable once the round closes
                break
            blocks.append(BlockData.from_json(b))
    except ApiError as exc:
        if exc.status == 410:
            why = f"data unavailable: the node pruned block {height} ({exc.detail})"
            return _inconclusive(height, why)
        return _inconclusive(height, f"could not fetch block {height}: {exc!r}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return _inconclusive(height, f"could not fetch block {height}: {exc!r}")
    with tempfile.TemporaryDirectory(prefix="fedrollup-replay-") as tmp:
        report = replay_blocks(blocks, genesis, Path(tmp))
    report["node_head"] = head
    report["sealed_from"] = sealed_from
    return report
