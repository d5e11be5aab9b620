"""The FL participant's side and simulations: local training, the Flower adapter, the Ray
backend, the experiment and the demo. May import node.sdk and node's foundations (and, for
the demo's node, node.core/node.server only through a subprocess)."""
