"""A follower (`fedrollup run --follow URL`): it pulls the sequencer's blocks over the
sequencer's public HTTP API, re-executes each one through the same STF on its own LevelDB,
checks every field of the header, commits it, and serves the read API from its own state.

It trusts the sequencer for the order of actions only. A header its re-execution does not
reproduce (state root, actions root, receipts root, parent hash, height, ...) stops it before
anything of that block is committed: a log line, a metric, a record in the data dir
(`DIVERGED.json`, refused at the next start like `HALTED.json`) and exit code 3. When the
sequencer cannot be reached, the follower keeps serving its last verified state and says so
in `/v1/health`."""

import asyncio
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import plyvel

from node.api_models import SequencerHealth
from node.core.follower_batches import BatchMirror
from node.core.replay import BlockData
from node.core.service import Node
from node.halt import record_halt, write_json_durably
from rollup.block import BlockHeader, hexb
from rollup.chain import ExecutedBlock, StfHalt
from rollup.codec import CodecError, SignedAction, decode_action
from rollup.store import ChainStore
from stf.l1 import L1Message

log = logging.getLogger(__name__)

FOLLOWS_KEY = b"meta/follows"  # the sequencer URL a follower's data dir follows
DIVERGED_FILE = "DIVERGED.json"
DIVERGED_EXIT_CODE = 3  # as `fedrollup replay`: a header differs from its re-execution
_MAX_BACKOFF_S = 5.0
_BLOCKS_PER_SYNC = 200  # then the sequencer's head is asked again (health stays fresh)
_REQUEST_TIMEOUT_S = 30.0
# Batches change every batch_interval_ms on the sequencer (2 s by default), and its listing
# reads its whole book: asked at most this often.
_BATCH_REFRESH_S = 1.0


class Divergence(Exception):
    """The sequencer served something this follower's re-execution does not reproduce."""

    def __init__(
        self, height: int, reason: str, fields: dict[str, tuple[str, str]] | None = None
    ) -> None:
        self.height = height
        self.reason = reason
        self.fields = fields or {}
        detail = "; ".join(f"{k}: sequencer {s}, replay {r}" for k, (s, r) in self.fields.items())
        super().__init__(f"block {height}: {reason}" + (f" ({detail})" if detail else ""))


class SequencerUnreachable(Exception):
    """No usable answer from the sequencer (down, timing out, 5xx, or an undecodable body):
    never evidence against it; the follower retries and keeps serving what it verified."""


class NotServed(SequencerUnreachable, LookupError):
    """The sequencer answers 404 (for /v1/l1/deployment: it runs without L1)."""


@dataclass
class SequencerStatus:
    """What the follower last knew of its sequencer, for /v1/health and /metrics."""

    url: str
    reachable: bool = False
    head_height: int | None = None
    last_contact: float | None = None  # unix time of the last good answer
    last_error: str | None = None
    verified_blocks: int = 0
    stopped: str | None = field(default=None)

    def to_json(self, own_height: int) -> SequencerHealth:
        return {
            "url": self.url,
            "reachable": self.reachable,
            "head_height": self.head_height,
            "lag_blocks": None if self.head_height is None else self.head_height - own_height,
            "seconds_since_contact": (
                None if self.last_contact is None else round(time.time() - self.last_contact, 3)
            ),
            "last_error": self.last_error,
            "stopped": self.stopped,
        }


# BlockHeader fields in the order they are compared and named in a divergence.
HEADER_FIELDS = (
    "version",
    "height",
    "parent_hash",
    "timestamp_ms",
    "actions_root",
    "receipts_root",
    "state_root",
    "l1_origin_height",
    "l1_origin_hash",
    "l1_messages_root",
)


def header_from_json(b: dict[str, Any]) -> BlockHeader:
    """The header a block answer claims (KeyError/ValueError/TypeError if malformed)."""
    origin = b["l1_origin"]
    return BlockHeader(
        height=int(b["height"]),
        parent_hash=_hex(b["parent_hash"]),
        timestamp_ms=int(b["timestamp_ms"]),
        actions_root=_hex(b["actions_root"]),
        receipts_root=_hex(b["receipts_root"]),
        state_root=_hex(b["state_root"]),
        l1_origin_height=int(origin["height"]),
        l1_origin_hash=_hex(origin["hash"]),
        l1_messages_root=_hex(b["l1_messages_root"]),
        version=int(b["version"]),
    )


def _hex(text: Any) -> bytes:
    if not isinstance(text, str) or not text.startswith("0x"):
        raise ValueError(f"not 0x-hex: {text!r}")
    return bytes.fromhex(text[2:])


def _show(value: Any) -> str:
    return hexb(value) if isinstance(value, bytes) else str(value)


def header_differences(served: BlockHeader, replayed: BlockHeader) -> dict[str, tuple[str, str]]:
    """Every header field where the sequencer's header and the re-execution's differ."""
    return {
        name: (_show(getattr(served, name)), _show(getattr(replayed, name)))
        for name in HEADER_FIELDS
        if getattr(served, name) != getattr(replayed, name)
    }


class Follower:
    """Keeps `node`'s chain equal to the sequencer's, block by verified block."""

    def __init__(self, node: Node, url: str, poll_ms: int) -> None:
        self.node = node
        self.url = url.rstrip("/")
        self.poll_s = poll_ms / 1000
        self.status = SequencerStatus(self.url)
        self.batches = BatchMirror(node)
        # Marks the data dir as a follower's: `run` without --follow refuses it (see cli).
        node.store.put_meta({FOLLOWS_KEY: self.url.encode()})
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="follow")
        self._session: aiohttp.ClientSession | None = None
        self._batches_asked = float("-inf")  # monotonic time of the last batch refresh
        self._register_metrics()

    # -- the loop ----------------------------------------------------------------------

    async def run(self) -> None:
        """Poll until stopped: a divergence or an STF halt ends the process (fail-stop)."""
        timeout = aiohttp.ClientTimeout(total=_REQUEST_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            self._session = session
            delay = self.poll_s
            while True:
                try:
                    caught_up = await self.sync_once()
                    if caught_up:
                        await self._refresh_batches()
                    delay = self.poll_s if caught_up else 0.0
                except SequencerUnreachable as exc:
                    self._note_unreachable(str(exc))
                    delay = min(max(delay * 2, self.poll_s), _MAX_BACKOFF_S)
                except Divergence as exc:
                    self._stop_diverged(exc)
                    return
                except StfHalt as exc:
                    self._stop_halted(exc)
                    return
                except Exception as exc:  # a bug of its own: say so, keep serving, retry
                    log.exception("follower loop failed; retrying")
                    self._note_unreachable(f"follower error: {exc!r}")
                    delay = min(max(delay * 2, self.poll_s), _MAX_BACKOFF_S)
                await asyncio.sleep(delay)

    async def close(self) -> None:
        self._worker.shutdown(wait=True)

    async def sync_once(self) -> bool:
        """Ask the sequencer's head, then verify and commit the blocks up to it (at most
        _BLOCKS_PER_SYNC). True when this follower has the sequencer's head."""
        health = await self._get("/v1/health")
        try:
            seq_height = int(health["head"]["height"])
            seq_hash = _hex(health["head"]["hash"])
            chain_id, genesis_hash = int(health["chain_id"]), _hex(health["genesis_hash"])
        except (KeyError, ValueError, TypeError) as exc:
            raise SequencerUnreachable(f"undecodable /v1/health answer: {exc!r}") from None
        self._check_same_chain(chain_id, genesis_hash)
        self.status.head_height = seq_height
        own = self.node.chain.head
        if seq_height <= own.height:
            self._check_known_head(seq_height, seq_hash)
            return True
        last = min(seq_height, own.height + _BLOCKS_PER_SYNC)
        for height in range(own.height + 1, last + 1):
            await self.apply(height, await self._get(f"/v1/blocks/{height}?full=1"))
        return last == seq_height

    async def _refresh_batches(self) -> None:
        if time.monotonic() - self._batches_asked < _BATCH_REFRESH_S:
            return
        self._batches_asked = time.monotonic()
        try:
            await self.batches.refresh(self._get)
        except (KeyError, ValueError, TypeError) as exc:
            raise SequencerUnreachable(f"undecodable batch answer: {exc!r}") from None

    def _check_same_chain(self, chain_id: int, genesis_hash: bytes) -> None:
        genesis = self.node.genesis
        if chain_id != genesis.chain_id or genesis_hash != genesis.hash():
            raise Divergence(
                0,
                "the sequencer runs another chain",
                {
                    "chain_id": (str(chain_id), str(genesis.chain_id)),
                    "genesis_hash": (hexb(genesis_hash), hexb(genesis.hash())),
                },
            )

    def _check_known_head(self, height: int, served_hash: bytes) -> None:
        """The sequencer's head is one this follower already verified: it must be the same
        block (a sequencer that rewrote its history, or lost it, is named here)."""
        ours = self.node.store.live.header(height)
        if ours is not None and ours.hash() != served_hash:
            raise Divergence(
                height,
                "the sequencer's block at this height is not the one this follower verified",
                {"hash": (hexb(served_hash), hexb(ours.hash()))},
            )

    async def apply(self, height: int, block: dict[str, Any]) -> None:
        """Re-execute one served block; commit it only if every header field matches."""
        try:
            served = header_from_json(block)
            data = BlockData.from_json(block)
            served_hash = _hex(block["hash"])
        except (KeyError, ValueError, TypeError, AttributeError) as exc:
            raise SequencerUnreachable(f"undecodable block {height}: {exc!r}") from None
        if served.hash() != served_hash:
            raise Divergence(height, "the served header does not hash to the served block hash")
        if served.height != height:
            raise Divergence(height, f"asked for block {height}, served block {served.height}")
        actions, messages = self._decode_contents(height, data)
        loop = asyncio.get_running_loop()
        executed: ExecutedBlock = await loop.run_in_executor(
            self._worker,
            self.node.chain.execute,
            actions,
            data.timestamp_ms,
            messages,
            data.l1_origin,
        )
        diff = header_differences(served, executed.record.header)
        if diff:
            raise Divergence(height, "its header differs from this follower's re-execution", diff)
        await loop.run_in_executor(self._worker, self.node.chain.commit, executed, 0)
        self._count(executed, len(messages))

    def _decode_contents(
        self, height: int, data: BlockData
    ) -> tuple[list[SignedAction], list[L1Message]]:
        """A signed action that does not decode or verify is in no honest block."""
        try:
            actions = [decode_action(w, self.node.chain_id) for w in data.actions]
        except CodecError as exc:
            raise Divergence(height, f"it holds an invalid action: {exc}") from None
        try:
            messages = [L1Message.decode(m) for m in data.l1_messages]
        except Exception as exc:  # any malformed encoding, whatever the decoder raises
            raise Divergence(height, f"it holds an undecodable L1 message: {exc!r}") from None
        return actions, messages

    async def _get(self, path: str) -> dict[str, Any]:
        assert self._session is not None, "run() opens the session"
        try:
            async with self._session.get(self.url + path) as resp:
                if resp.status == 404:
                    raise NotServed(f"GET {path}: HTTP 404")
                if resp.status != 200:
                    raise SequencerUnreachable(f"GET {path}: HTTP {resp.status}")
                body: Any = await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise SequencerUnreachable(f"GET {path}: {type(exc).__name__}: {exc}") from None
        if not isinstance(body, dict):
            raise SequencerUnreachable(f"GET {path}: not a JSON object")
        if not self.status.reachable:
            log.info("sequencer %s reachable; its head is being followed", self.url)
        self.status.reachable = True
        self.status.last_contact = time.time()
        self.status.last_error = None
        return body

    # -- bookkeeping -------------------------------------------------------------------

    def _count(self, executed: ExecutedBlock, message_count: int) -> None:
        receipts = executed.record.receipts[message_count:]
        ok = sum(1 for r in receipts if r.ok)
        counters = self.node.metrics.counters
        counters["blocks"] += 1
        counters["executed"] += ok
        counters["failed"] += len(receipts) - ok
        counters["l1_messages"] += message_count
        counters["follower_verified_blocks"] += 1
        self.status.verified_blocks += 1

    def _note_unreachable(self, why: str) -> None:
        if self.status.reachable:
            log.warning(
                "sequencer %s unreachable (%s); serving the last verified state, height %d",
                self.url,
                why,
                self.node.chain.head.height,
            )
        self.status.reachable = False
        self.status.last_error = why
        self.node.metrics.counters["follower_fetch_errors"] += 1

    def _stop_diverged(self, exc: Divergence) -> None:
        self.status.stopped = str(exc)
        self.node.metrics.counters["follower_divergences"] += 1
        log.critical(
            "FOLLOWER STOPPED: the sequencer %s diverges at %s; nothing of that block was"
            " committed; this follower stops and refuses to restart until %s is removed",
            self.url,
            exc,
            divergence_path(self.node.config.data_dir),
        )
        record_divergence(self.node.config.data_dir, exc, self.url)
        self.node.on_halt()

    def _stop_halted(self, exc: StfHalt) -> None:
        """This follower's own STF stopped (fail-stop, as on a sequencer): no verdict."""
        self.status.stopped = str(exc)
        self.node.metrics.counters["stf_halts"] += 1
        height = self.node.chain.head.height + 1
        log.critical("STF halt in block %d: %s", height, exc, exc_info=exc.cause)
        record_halt(self.node.config.data_dir, exc, height)
        self.node.on_halt()

    def _register_metrics(self) -> None:
        counters = self.node.metrics.counters
        for name in (
            "follower_verified_blocks",
            "follower_fetch_errors",
            "follower_divergences",
            "follower_batch_mismatches",
        ):
            counters[name] += 0  # exported as 0 from the start
        g = self.node.metrics.gauges
        g["follower_sequencer_reachable"] = lambda: float(self.status.reachable)
        g["follower_sequencer_head"] = lambda: float(self.status.head_height or 0)
        g["follower_lag_blocks"] = lambda: float(
            max((self.status.head_height or 0) - self.node.chain.head.height, 0)
        )


def followed_url(data_dir: Path) -> str | None:
    """The sequencer a data dir was last a follower of (None: a sequencer's, or new)."""
    chain_dir = Path(data_dir) / "chain"
    if not chain_dir.exists():
        return None
    try:
        store = ChainStore(chain_dir)
    except plyvel.Error:  # locked by a running node, or damaged: the normal start says which
        return None
    try:
        raw = store.live.raw(FOLLOWS_KEY)
    finally:
        store.close()
    return None if raw is None else raw.decode()


def divergence_path(data_dir: Path) -> Path:
    return Path(data_dir) / DIVERGED_FILE


def record_divergence(data_dir: Path, exc: Divergence, url: str) -> dict[str, Any]:
    info = {
        "sequencer": url,
        "height": exc.height,
        "reason": exc.reason,
        "fields": {k: {"sequencer": s, "replay": r} for k, (s, r) in exc.fields.items()},
    }
    write_json_durably(divergence_path(data_dir), info)
    return info


def divergence_refusal(data_dir: Path) -> str | None:
    """What a restart prints instead of following a sequencer found diverging; None if none."""
    path = divergence_path(data_dir)
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text())
        what = f"block {info.get('height')}: {info.get('reason')} {info.get('fields', {})}"
    except (OSError, ValueError, AttributeError):
        what = "(unreadable record)"
    return (
        f"refusing to start: the sequencer diverged from this follower's re-execution at {what}."
        f" Investigate (`fedrollup replay --node URL`), then remove {path} to follow again."
    )
