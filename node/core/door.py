"""The door of a sequencer, shared by its two shapes: decode an action, check its signature
(on threads), reserve its sender's nonce, pre-check a lone stateful action, append it to the
durable mempool log and answer. `Node` (one process: the door and the chain) and `Ingress`
(the public process of a two-process node) differ only in where committed nonces, replay
lookups and pre-check simulations come from, and whose log it is."""

import asyncio
import functools
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from node.config import NodeConfig
from node.metrics import Metrics
from rollup.codec import CodecError, SignedAction, decode_action, verify_signature
from rollup.mempool import MempoolLog
from stf.actions import ACTIONS
from stf.errors import InvalidAction

log = logging.getLogger(__name__)
_VERIFY_CHUNK = 128
# A tick's few single actions are checked on the loop: the hop to a verifier thread (and
# the GIL handover back) costs more than the ~75 µs check itself.
_VERIFY_INLINE_MAX = 2


class Rejected(Exception):
    """An action refused at the door; `status` is the HTTP status the API answers with."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


_CODEC_STATUS = {"bad_signature": 401, "too_large": 413}
# HTTP statuses of STF rejections found by the door pre-check (default 400).
_STF_STATUS = {
    **dict.fromkeys(("unknown_model", "unknown_job", "unknown_proposal"), 404),
    **dict.fromkeys(
        (
            "not_owner",
            "not_aggregator",
            "not_staked",
            "no_access",
            "not_a_party",
            "not_proposer",
            "own_model",
        ),
        403,
    ),
    **dict.fromkeys(
        (
            "duplicate_submission",
            "wrong_round",
            "round_full",
            "round_deadline_passed",
            "job_closed",
            "proposal_closed",
            "proposal_expired",
            "already_has_access",
            "not_expired",
            "too_few_submissions",
            "insufficient_balance",
            "price_mismatch",
        ),
        409,
    ),
}
# Actions whose stateful rules are simulated at the door; transfers are too cheap to fail to
# bother, and an aggregate is never simulated (it is the costly action: a resent one, say with
# a nonce gap, would otherwise keep the verifier threads busy for nothing).
PRECHECKED = frozenset(ACTIONS) - {"transfer", "aggregate"}


def stf_rejection(exc: InvalidAction) -> Rejected:
    return Rejected(_STF_STATUS.get(exc.code, 400), exc.code, exc.detail)


def rejection_from_codec(exc: CodecError) -> Rejected:
    return Rejected(_CODEC_STATUS.get(exc.code, 400), exc.code, exc.detail)


class SignatureVerifier:
    """ed25519 checks on a thread pool (PyNaCl releases the GIL, so threads use every core)."""

    def __init__(self, pool: ThreadPoolExecutor) -> None:
        self._verifier = pool
        self._verify_queue: list[tuple[SignedAction, asyncio.Future[CodecError | None]]] = []

    async def verify_many(self, actions: list[SignedAction]) -> list[CodecError | None]:
        if len(actions) == 1:
            return [await self._verify_one(actions[0])]
        loop = asyncio.get_running_loop()
        chunks = [actions[i : i + _VERIFY_CHUNK] for i in range(0, len(actions), _VERIFY_CHUNK)]
        results = await asyncio.gather(
            *(loop.run_in_executor(self._verifier, _verify_chunk, c) for c in chunks)
        )
        return [err for chunk in results for err in chunk]

    def _verify_one(self, sa: SignedAction) -> "asyncio.Future[CodecError | None]":
        """Single actions that arrive in the same loop tick share one hop to the verifier
        threads: the hop, not the ed25519 check, dominated one-action requests."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[CodecError | None] = loop.create_future()
        self._verify_queue.append((sa, fut))
        if len(self._verify_queue) == 1:
            loop.call_soon(self._flush_verifications)
        return fut

    def _flush_verifications(self) -> None:
        queued, self._verify_queue = self._verify_queue, []
        loop = asyncio.get_running_loop()
        if len(queued) <= _VERIFY_INLINE_MAX:
            _set_results(queued, _verify_chunk([sa for sa, _ in queued]))
            return
        half = (len(queued) + 1) // 2  # one part per verifier thread
        for part in (queued[:half], queued[half:]):
            if part:
                job = loop.run_in_executor(self._verifier, _verify_chunk, [sa for sa, _ in part])
                job.add_done_callback(functools.partial(_settle, part))


class Replayed(Exception):
    """A nonce at or below the sender's last reserved one; `Door._name_replay` says which."""

    def __init__(self, last: int) -> None:
        self.last = last


class Door:
    """Decode, verify, reserve, pre-check, log: subclasses say where committed nonces
    (`_last_nonce`, `_learn_senders`), replays (`_was_accepted`) and pre-checks (`_precheck`)
    come from, and which log (`_mempool`) takes what passes."""

    def __init__(
        self, config: NodeConfig, chain_id: int, metrics: Metrics, verifiers: ThreadPoolExecutor
    ) -> None:
        self.config = config
        self.chain_id = chain_id
        self.metrics = metrics
        self.halted: str | None = None  # why sequencing stopped: writes are refused
        self._pending: dict[bytes, int] = {}  # hash -> seq (0 until durable), not executed
        self._reserved: dict[bytes, int] = {}  # sender -> last nonce accepted
        self._pending_by_sender: dict[bytes, int] = {}  # sender -> accepted, not executed
        self._signatures = SignatureVerifier(verifiers)

    # -- what a door needs from where it stands -------------------------------------

    def _mempool(self) -> MempoolLog[SignedAction]:
        raise NotImplementedError

    def _last_nonce(self, sender: bytes) -> int:
        """The sender's last reserved nonce, else its committed one."""
        raise NotImplementedError

    async def _learn_senders(self, actions: list[SignedAction]) -> None:
        """Before reserving: fetch what `_last_nonce` needs, if it is elsewhere."""

    async def _was_accepted(self, action_hash: bytes) -> bool:
        raise NotImplementedError

    async def _precheck(self, sa: SignedAction) -> Rejected | None:
        raise NotImplementedError

    # -- the door ---------------------------------------------------------------------

    async def submit(self, raw: bytes) -> bytes:
        """Accept one action: 202-worthy only once it is durable in the log."""
        started = time.perf_counter()
        mempool = self._mempool()
        sa = self._decode(raw)
        (error,) = await self._signatures.verify_many([sa])
        if error is not None:
            raise rejection_from_codec(error)
        await self._learn_senders([sa])
        await self._admit(sa)
        await mempool.append(sa.wire, sa)
        self._count_accepted(1, started)
        return sa.action.hash

    async def submit_batch(self, raws: list[bytes]) -> list[bytes | Rejected]:
        """Accept many actions; each gets its own result, in order."""
        started = time.perf_counter()
        mempool = self._mempool()
        results: list[bytes | Rejected] = []
        decoded: list[tuple[int, SignedAction]] = []
        for i, raw in enumerate(raws):
            try:
                decoded.append((i, self._decode(raw)))
                results.append(b"")
            except Rejected as exc:
                results.append(exc)
        errors = await self._signatures.verify_many([sa for _, sa in decoded])
        await self._learn_senders([sa for (_, sa), e in zip(decoded, errors, strict=True) if not e])
        waits: list[asyncio.Future[int]] = []
        for (i, sa), error in zip(decoded, errors, strict=True):
            try:
                if error is not None:
                    raise rejection_from_codec(error)
                await self._admit(sa)
            except Rejected as exc:
                results[i] = exc
                continue
            waits.append(mempool.append(sa.wire, sa))
            results[i] = sa.action.hash
        await asyncio.gather(*waits)
        for r in results:
            if isinstance(r, Rejected):
                self.metrics.rejected[r.code] += 1
        self._count_accepted(len(waits), started)
        return results

    def _decode(self, raw: bytes) -> SignedAction:
        self._refuse_if_halted()
        try:
            return decode_action(raw, self.chain_id, verify=False)
        except CodecError as exc:
            raise rejection_from_codec(exc) from None

    def _refuse_if_halted(self) -> None:
        if self.halted is not None:
            raise Rejected(503, "halted", f"the node stopped sequencing: {self.halted}")

    async def _admit(self, sa: SignedAction) -> None:
        """Reserve the nonce first (a replayed or gapped action costs no simulation), then
        simulate a stateful action on the committed state so that a hopeless one gets a 4xx
        now rather than a failed receipt later. The simulation is skipped while the sender
        has other actions in flight (they may be what makes this one valid) and always for
        `aggregate` (the costly one: the STF alone runs it); the STF stays the judge.
        The caller ran `_learn_senders` for the request's actions."""
        try:
            previous = self._reserve(sa)
        except Replayed as replay:
            raise await self._name_replay(sa, replay.last) from None
        if sa.action.type not in PRECHECKED or self._pending_by_sender.get(sa.action.sender, 0) > 1:
            return
        try:
            error = await self._precheck(sa)
        except BaseException:  # cancelled (client gone) or failed: give the nonce back
            self._release(sa, previous)
            raise
        if error is not None:
            if self._release(sa, previous):
                raise error
            log.info("pre-check refused %s, kept: a later nonce is reserved", sa.action.hash.hex())

    def _reserve(self, sa: SignedAction) -> int:
        """Check and reserve the sender's nonce; runs with no await between check and log.
        Returns the nonce reserved before this one, for `_release`."""
        action = sa.action
        self._refuse_if_halted()
        last = self._last_nonce(action.sender)
        if action.nonce <= last:
            raise Replayed(last)  # any replay fails here; only now is naming it worth a lookup
        if action.nonce > last + 1:
            raise Rejected(
                409, "nonce_gap", f"nonce {action.nonce} skips ahead; next is {last + 1}"
            )
        if len(self._pending) >= self.config.max_pending_actions:
            raise Rejected(503, "overloaded", "too many actions waiting for execution; retry later")
        self._reserved[action.sender] = action.nonce
        self._pending[action.hash] = 0
        self._pending_by_sender[action.sender] = self._pending_by_sender.get(action.sender, 0) + 1
        return last

    async def _name_replay(self, sa: SignedAction, last: int) -> Rejected:
        if await self._was_accepted(sa.action.hash):
            return Rejected(409, "duplicate_action", "this action was already accepted")
        return Rejected(
            409, "nonce_replayed", f"nonce {sa.action.nonce} already used; next is {last + 1}"
        )

    def _release(self, sa: SignedAction, previous: int) -> bool:
        """Undo a reservation the door pre-check refused; False (keep it) if a later nonce of
        the same sender was reserved meanwhile: refusing now would leave that one a gap."""
        action = sa.action
        if self._reserved.get(action.sender) != action.nonce:
            return False
        self._reserved[action.sender] = previous
        self._pending.pop(action.hash, None)
        self._forget_one(action.sender)
        return True

    def _forget_one(self, sender: bytes) -> None:
        """One of the sender's accepted actions is executed (or given back)."""
        left = self._pending_by_sender.get(sender, 0) - 1
        if left > 0:
            self._pending_by_sender[sender] = left
        else:
            self._pending_by_sender.pop(sender, None)

    def _count_accepted(self, count: int, started: float) -> None:
        self.metrics.counters["accepted"] += count
        self.metrics.observe_accept(time.perf_counter() - started)


def _settle(
    part: list[tuple[SignedAction, "asyncio.Future[CodecError | None]"]],
    done: "asyncio.Future[list[CodecError | None]]",
) -> None:
    _set_results(part, done.result())


def _set_results(
    part: list[tuple[SignedAction, "asyncio.Future[CodecError | None]"]],
    results: list[CodecError | None],
) -> None:
    for (_, fut), result in zip(part, results, strict=True):
        if not fut.done():
            fut.set_result(result)


def _verify_chunk(chunk: list[SignedAction]) -> list[CodecError | None]:
    """Runs in a verifier thread: PyNaCl releases the GIL, so threads use every core."""
    out: list[CodecError | None] = []
    for sa in chunk:
        try:
            verify_signature(sa.action.sender, sa.signing_message, sa.signature)
            out.append(None)
        except CodecError as exc:
            out.append(exc)
    return out
