"""Versioned, domain-separated hashes of the rollup (blake2b-256)."""

import hashlib

# One keyed-up hasher per domain, copied per hash: about half the cost of building it anew.
_PERSONALISED: dict[bytes, hashlib.blake2b] = {}


def h256(domain: bytes, data: bytes) -> bytes:
    """blake2b-256 of data under a domain tag, so no two kinds of object share a hash."""
    base = _PERSONALISED.get(domain)
    if base is None:
        base = _PERSONALISED[domain] = hashlib.blake2b(digest_size=32, person=domain[:16])
    hasher = base.copy()
    hasher.update(data)
    return hasher.digest()


ACTION_DOMAIN = b"fr/action/v1"
BLOCK_DOMAIN = b"fr/block/v1"
RECEIPT_DOMAIN = b"fr/receipt/v1"
MERKLE_NODE_DOMAIN = b"fr/mnode/v1"
MERKLE_LEAF_DOMAIN = b"fr/mleaf/v1"
L1_MESSAGE_DOMAIN = b"fr/l1msg/v1"
