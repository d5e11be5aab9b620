"""The node's engine: the sequencer service (mempool, blocks, store), the ingress of a
two-process sequencer, the L1 link, the follower and replay. May import stf, rollup,
l1_bridge, node's foundations and node.sdk."""
