"""Genesis: the initial allocation of L2 balances and the withdrawal minimum."""

from collections.abc import Mapping

from stf.accounts import Account, set_account
from stf.metering import Limits, put_limits
from stf.staking import set_min_withdrawal
from stf.state import KV


def apply_genesis(
    state: KV,
    alloc: Mapping[bytes, int],
    limits: Limits | None = None,
    min_withdrawal: int = 0,
) -> None:
    for pubkey in sorted(alloc):
        set_account(state, pubkey, Account(nonce=0, balance=alloc[pubkey]))
    if limits is not None:  # absent: the defaults of stf.metering
        put_limits(state, limits)
    if min_withdrawal:
        set_min_withdrawal(state, min_withdrawal)
