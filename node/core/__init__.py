"""The node's engine: the sequencer service (mempool, blocks, store), the L1 link, the
follower and replay. May import stf, rollup, l1_bridge, node's foundations and node.sdk."""
