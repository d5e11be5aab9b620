"""The chain: executes blocks of actions with the STF and commits them to the store.

The same code builds blocks in the sequencer and re-executes them in a replay, so a replica
that replays the blocks gets the same headers bit for bit.
"""

import logging
from dataclasses import dataclass

from rollup.block import BlockHeader, Receipt
from rollup.codec import SignedAction
from rollup.genesis import Genesis
from rollup.hashing import L1_MESSAGE_DOMAIN, h256
from rollup.journal import Journal
from rollup.merkle import list_root
from rollup.smt import SparseMerkleTree
from rollup.store import SMT_PREFIX, BlockRecord, ChainStore
from stf.accounts import use_nonce
from stf.actions import apply_action
from stf.context import BlockInfo, Effects
from stf.errors import InvalidAction
from stf.genesis import apply_genesis
from stf.l1 import L1Message, apply_l1_message
from stf.metering import BlockMeter, declared_cost, get_limits

log = logging.getLogger(__name__)


class GenesisMismatch(Exception):
    pass


class StfHalt(Exception):
    """An action (or L1 message) made the STF raise something other than InvalidAction: a
    bug or an exhausted machine, never a verdict. Nothing of its block may be committed;
    the node stops (fail-stop) and a replica reports it cannot replay. `subject` is the
    action hash (or L1 message hash) that did it."""

    def __init__(self, subject: bytes, kind: str, cause: BaseException) -> None:
        super().__init__(
            f"{kind} 0x{subject.hex()} stopped the STF: {type(cause).__name__}: {cause}"
        )
        self.subject = subject
        self.kind = kind
        self.cause = cause


@dataclass(frozen=True)
class ExecutedBlock:
    record: BlockRecord
    state_changes: dict[bytes, bytes | None]
    smt_writes: dict[bytes, bytes | None]


class Chain:
    def __init__(self, store: ChainStore, genesis: Genesis) -> None:
        self.store = store
        self.genesis = genesis
        self.chain_id = genesis.chain_id
        # update() runs on the committing thread: it may read through the store's cache
        self._smt = SparseMerkleTree(store.cached_smt_node, prefix=SMT_PREFIX)
        self._proofs = SparseMerkleTree(store.live.smt_node, prefix=SMT_PREFIX)
        stored = store.live.genesis_hash()
        if stored is None:
            self._init_genesis()
        elif stored != genesis.hash():
            raise GenesisMismatch("the data dir was created from another genesis")
        head = store.live.head_height()
        assert head is not None
        header = store.live.header(head)
        assert header is not None
        self.head: BlockHeader = header

    def _init_genesis(self) -> None:
        journal = Journal(self.store.cached_state)
        apply_genesis(
            journal, self.genesis.alloc, self.genesis.limits, self.genesis.min_withdrawal_wei
        )
        journal.commit_action()
        changes = journal.block_changes()
        root, writes = self._smt.update(changes)
        header = BlockHeader(
            height=0,
            parent_hash=bytes(32),
            timestamp_ms=self.genesis.timestamp_ms,
            actions_root=list_root([]),
            receipts_root=list_root([]),
            state_root=root,
        )
        self.store.commit_block(
            BlockRecord(header, [], []), changes, writes, 0, self.genesis.hash()
        )

    def next_timestamp(self, now_ms: int) -> int:
        """Block time never goes backwards, whatever the wall clock does."""
        return max(now_ms, self.head.timestamp_ms)

    def execute(
        self,
        actions: list[SignedAction],
        timestamp_ms: int,
        l1_messages: list[L1Message] | None = None,
        l1_origin: tuple[int, bytes] | None = None,
    ) -> ExecutedBlock:
        """Run a block on a journal over the committed state; nothing is written.

        L1 messages go first, in their L1 order; then the actions, in mempool order."""
        messages = l1_messages or []
        origin = l1_origin or (self.head.l1_origin_height, self.head.l1_origin_hash)
        block = BlockInfo(self.chain_id, self.head.height + 1, timestamp_ms)
        journal = Journal(self.store.cached_state)
        receipts = [_apply_message(journal, m, block) for m in messages]
        meter = BlockMeter(get_limits(journal))
        receipts += [_apply_one(journal, sa, block, meter) for sa in actions]
        changes = journal.block_changes()
        root, writes = self._smt.update(changes)
        header = BlockHeader(
            height=block.height,
            parent_hash=self.head.hash(),
            timestamp_ms=timestamp_ms,
            actions_root=list_root([sa.action.hash for sa in actions]),
            receipts_root=list_root([r.encode() for r in receipts]),
            state_root=root,
            l1_origin_height=origin[0],
            l1_origin_hash=origin[1],
            l1_messages_root=list_root([m.encode() for m in messages]),
        )
        record = BlockRecord(
            header, [sa.wire for sa in actions], receipts, [m.encode() for m in messages]
        )
        return ExecutedBlock(record, changes, writes)

    def commit(self, executed: ExecutedBlock, executed_seq: int) -> None:
        self.store.commit_block(
            executed.record, executed.state_changes, executed.smt_writes, executed_seq
        )
        self.head = executed.record.header

    def prove(self, key: bytes) -> object:
        return self._proofs.prove(key)


def l1_message_hash(message: L1Message) -> bytes:
    return h256(L1_MESSAGE_DOMAIN, message.encode())


def _apply_message(journal: Journal, message: L1Message, block: BlockInfo) -> Receipt:
    effects = Effects()
    try:
        apply_l1_message(journal, message, block, effects)
    except InvalidAction as exc:  # only a sequencer bug offers a message out of order
        journal.revert_action()
        log.error("L1 message %d refused: %s", message.nonce, exc)
        return Receipt(l1_message_hash(message), False, exc.code, exc.detail)
    except Exception as exc:  # fail-stop: see StfHalt
        raise StfHalt(l1_message_hash(message), "L1 message", exc) from exc
    journal.commit_action()
    return Receipt(
        l1_message_hash(message), True, events=tuple(effects.events), records=tuple(effects.records)
    )


def _apply_one(journal: Journal, sa: SignedAction, block: BlockInfo, meter: BlockMeter) -> Receipt:
    """Use the nonce, charge the declared cost, then apply; a failing action keeps its nonce
    used but nothing else."""
    action = sa.action
    try:
        use_nonce(journal, action.sender, action.nonce)
    except InvalidAction as exc:
        journal.revert_action()
        return Receipt(action.hash, False, exc.code, exc.detail)
    except Exception as exc:
        raise StfHalt(action.hash, "action", exc) from exc
    journal.commit_action()
    effects = Effects()
    try:
        meter.charge(declared_cost(journal, action))
        apply_action(journal, action, block, effects)
    except InvalidAction as exc:
        journal.revert_action()
        return Receipt(action.hash, False, exc.code, exc.detail)
    except Exception as exc:  # fail-stop: only InvalidAction is a verdict; see StfHalt
        raise StfHalt(action.hash, "action", exc) from exc
    journal.commit_action()
    return Receipt(action.hash, True, events=tuple(effects.events), records=tuple(effects.records))
