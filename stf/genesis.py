"""Genesis: the initial allocation of L2 balances."""

from collections.abc import Mapping

from stf.accounts import Account, set_account
from stf.metering import Limits, put_limits
from stf.state import KV


def apply_genesis(state: KV, alloc: Mapping[bytes, int], limits: Limits | None = None) -> None:
    for pubkey in sorted(alloc):
        set_account(state, pubkey, Account(nonce=0, balance=alloc[pubkey]))
    if limits is not None:  # absent: the defaults of stf.metering
        put_limits(state, limits)
