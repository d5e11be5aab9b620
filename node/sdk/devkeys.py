"""Well-known development keys and the embedded dev genesis.

These keys are derived from public seeds: anyone can sign with them. They exist so that
`fedrollup run` works with no setup, like anvil's dev accounts. Never fund them on a real
network.
"""

import hashlib

from nacl.signing import SigningKey

from rollup.genesis import Genesis

DEV_CHAIN_ID = 1337
DEV_BALANCE = 10**24  # one million "ETH" in wei
DEV_ACCOUNTS = 10


def dev_key(index: int) -> SigningKey:
    seed = hashlib.blake2b(f"fedrollup/dev-key/{index}".encode(), digest_size=32).digest()
    return SigningKey(seed)


def dev_genesis(count: int = DEV_ACCOUNTS, chain_id: int = DEV_CHAIN_ID) -> Genesis:
    alloc = {bytes(dev_key(i).verify_key): DEV_BALANCE for i in range(count)}
    return Genesis(chain_id=chain_id, timestamp_ms=0, alloc=alloc)
