"""L1 -> L2 messages: deposits, stakes, unstake requests, job funding, stake withdrawals.

The L1 inbox numbers every message; the sequencer includes them in blocks in that order and
the STF applies each exactly once (the next expected nonce is state), so a restarted or
reorg-rewound watcher can offer a message twice without it counting twice.
"""

from dataclasses import dataclass

from stf import accounts, jobs
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
        accounts.credit(state, msg.rollup_key, msg.amount)
        effects.emit("Deposited", key=msg.rollup_key, amount=msg.amount, l1_nonce=msg.nonce)
    elif msg.kind == STAKE:
        jobs.set_stake(state, msg.rollup_key, jobs.get_stake(state, msg.rollup_key) + msg.amount)
        jobs.set_unbonding(state, msg.rollup_key, False)
        effects.emit(
            "Staked",
            client=msg.rollup_key,
            amount=msg.amount,
            l1_nonce=msg.nonce,
            total=jobs.get_stake(state, msg.rollup_key),
        )
    elif msg.kind == UNSTAKE_REQUEST:
        jobs.set_unbonding(state, msg.rollup_key, True)
        effects.emit("UnstakeRequested", client=msg.rollup_key, l1_nonce=msg.nonce)
    elif msg.kind == STAKE_WITHDRAWN:
        jobs.set_stake(state, msg.rollup_key, 0)
        effects.emit("StakeWithdrawn", client=msg.rollup_key, amount=msg.amount, l1_nonce=msg.nonce)
    elif msg.kind == JOB_FUNDED:
        job_id = _word(msg.data, 0)
        funded = jobs.credit_job_pool_l1(state, job_id, msg.amount, effects)
        if not funded:  # the ETH stays in the L1 treasury under that job id; nothing to pay from
            effects.emit("FundingUnmatched", job_id=job_id, amount=msg.amount, l1_nonce=msg.nonce)
    else:
        effects.emit("UnknownL1Message", kind=msg.kind, l1_nonce=msg.nonce)
