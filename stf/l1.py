"""L1 -> L2 messages: deposits, stakes, job funding, escape-hatch stake withdrawals.

What each one does to state is in `stf.staking` (credited only when the L1 sender is the key's
bound address; refunded otherwise).

The L1 inbox numbers every message; the sequencer includes them in blocks in that order and
the STF applies each exactly once (the next expected nonce is state), so a restarted or
reorg-rewound watcher can offer a message twice without it counting twice.
"""

from dataclasses import dataclass

from stf import staking
from stf.context import BlockInfo, Effects
from stf.encoding import from_u256, pack, u256, unpack
from stf.errors import InvalidAction
from stf.state import KV

DEPOSIT, STAKE, UNSTAKE_REQUEST, JOB_FUNDED, STAKE_WITHDRAWN = 1, 2, 3, 4, 5
KIND_NAMES = {
    DEPOSIT: "deposit",
    STAKE: "stake",
    UNSTAKE_REQUEST: "unstake_request",
    JOB_FUNDED: "job_funded",
    STAKE_WITHDRAWN: "stake_withdrawn",
}
_NEXT_NONCE = b"l1/next_nonce"


@dataclass(frozen=True)
class L1Message:
    nonce: int
    kind: int
    rollup_key: bytes  # 32 bytes; zero for job funding
    sender: bytes  # the L1 address (20 bytes)
    amount: int
    data: bytes  # ABI-encoded extras (see the inbox's MessageKinds)
    l1_block: int

    def encode(self) -> bytes:
        return pack(
            [
                self.nonce,
                self.kind,
                self.rollup_key,
                self.sender,
                u256(self.amount),
                self.data,
                self.l1_block,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "L1Message":
        nonce, kind, key, sender, amount, data, block = unpack(raw)
        return L1Message(nonce, kind, key, sender, from_u256(amount), data, block)


def next_l1_nonce(state: KV) -> int:
    """The inbox numbers its messages from 0."""
    raw = state.get(_NEXT_NONCE)
    return 0 if raw is None else int.from_bytes(raw, "big")


def _word(data: bytes, index: int) -> int:
    chunk = data[32 * index : 32 * (index + 1)]
    if len(chunk) != 32:
        raise InvalidAction("bad_l1_message", "message data too short")
    return int.from_bytes(chunk, "big")


def apply_l1_message(state: KV, msg: L1Message, block: BlockInfo, effects: Effects) -> None:
    expected = next_l1_nonce(state)
    if msg.nonce != expected:
        raise InvalidAction("l1_nonce", f"expected L1 message {expected}, got {msg.nonce}")
    state.put(_NEXT_NONCE, (expected + 1).to_bytes(8, "big"))
    if msg.kind == DEPOSIT:
        staking.apply_deposit(state, msg.rollup_key, msg.sender, msg.amount, effects)
    elif msg.kind == STAKE:
        staking.apply_stake(state, msg.rollup_key, msg.sender, msg.amount, effects)
    elif msg.kind == STAKE_WITHDRAWN:  # the registry's escape hatch paid a staker
        staking.apply_escape_exit(state, msg.rollup_key, msg.sender, msg.amount, effects)
    elif msg.kind == JOB_FUNDED:
        staking.apply_job_funded(state, _word(msg.data, 0), msg.sender, msg.amount, effects)
    else:  # UNSTAKE_REQUEST (v1) is no longer sent: stake exits are the L2 `unstake` action
        effects.emit("UnknownL1Message", kind=msg.kind, l1_nonce=msg.nonce)
