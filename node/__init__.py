"""The node and everything around it, in rooms with one purpose each. Imports go one way:

    foundations (node/*.py) <- sdk <- core <- server <- participant <- bench <- ops

* foundations: configuration, logging, metrics, the halt record, the API's answer types and
  their JSON Schema, small process helpers; they import no subpackage of node;
* sdk: talking to a node as a user (HTTP client, wallet, ed25519 key files, dev keys);
* core: the node's engine — the sequencer service, the L1 link, the follower, replay;
* server: the HTTP API over core (routes, FL views, OpenAPI, the explorer page);
* participant: the FL participant's side and simulations (training, Flower, Ray, the
  experiment, the demo);
* bench: the benchmarks;
* ops: the command line and the verifier.
"""
