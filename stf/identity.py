"""Authenticated identity: a rollup key names its L1 address by a signed L2 action.

`bind_l1` is signed by the rollup key (ed25519, like every action), so nobody but the key's
holder can say which L1 address is the key's: no L1 transaction can bind someone else's key.
The bound address is where the key's rewards, stake releases and (by default) withdrawals are
paid, and the only L1 sender whose STAKE and DEPOSIT messages are credited to the key. A binding
is once only: L1 keeps stake per (key, staker address), and slashes and releases of a key's stake
name its bound address, so the address must not change under a stake (a key whose L1 account is
lost moves to a new rollup key).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from stf.errors import InvalidAction
from stf.state import KV

if TYPE_CHECKING:  # stf.context imports stf.settlement, which imports this module
    from stf.context import Action, BlockInfo, Effects

_PREFIX = b"l1addr/"
ZERO_ADDRESS = bytes(20)


def binding_key(rollup_key: bytes) -> bytes:
    return _PREFIX + rollup_key


def get_bound_address(state: KV, rollup_key: bytes) -> bytes | None:
    """The 20-byte L1 address `rollup_key` bound, or None."""
    return state.get(binding_key(rollup_key))


def is_bound_to(state: KV, rollup_key: bytes, address: bytes) -> bool:
    return address != ZERO_ADDRESS and get_bound_address(state, rollup_key) == address


@dataclass(frozen=True)
class BindL1:
    address: bytes  # 20 bytes


def process_bind_l1(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: BindL1 = action.payload
    if len(p.address) != 20 or p.address == ZERO_ADDRESS:
        raise InvalidAction("bad_address", "bind a non-zero 20-byte L1 address")
    if get_bound_address(state, action.sender) is not None:
        raise InvalidAction("already_bound", "a key binds its L1 address once")
    state.put(binding_key(action.sender), p.address)
    effects.emit("L1AddressBound", key=action.sender, address=p.address)
