"""Talking to a node as a user: the HTTP client, the wallet, key files and dev keys.
May import stf, rollup and node's foundations only (no other node subpackage)."""
