"""The HTTP API over node.core: routes, FL read views, the OpenAPI description, the explorer
page, and the two processes of a split sequencer (the ingress app with its proxy, the executor
start-up). May import node.core, node.sdk and node's foundations."""
