"""The HTTP API over node.core: routes, FL read views, the OpenAPI description and the
explorer page. May import node.core, node.sdk and node's foundations."""
