"""Binary Merkle root over a list of hashes (actions and receipts roots of a block).

Leaves and inner nodes are hashed under different domains, so a leaf can never pass for a
node. An odd node at the end of a level is carried up unchanged. The root of no leaves is
32 zero bytes.
"""

from rollup.hashing import MERKLE_LEAF_DOMAIN, MERKLE_NODE_DOMAIN, h256

EMPTY_ROOT = bytes(32)


def list_root(items: list[bytes]) -> bytes:
    if not items:
        return EMPTY_ROOT
    level = [h256(MERKLE_LEAF_DOMAIN, item) for item in items]
    while len(level) > 1:
        nxt = [
            h256(MERKLE_NODE_DOMAIN, level[i] + level[i + 1]) for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]
