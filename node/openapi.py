"""The OpenAPI 3 description of every route (tests check it lists exactly the app's routes)."""

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_HEX32 = {"type": "string", "pattern": "^0x[0-9a-fA-F]{64}$"}


def _errors(*codes: int) -> dict[str, Any]:
    return {
        str(c): {"description": "error", "content": {"application/json": {"schema": _ERROR}}}
        for c in codes
    }


def _json(schema: dict[str, Any], description: str = "ok") -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _path_param(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "schema": schema,
        "description": description,
    }


_MSGPACK_BODY = {
    "required": True,
    "content": {"application/msgpack": {"schema": {"type": "string", "format": "binary"}}},
}


def openapi_spec() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/v1/actions": {
            "post": {
                "summary": "Submit one signed action (canonical msgpack envelope)",
                "requestBody": _MSGPACK_BODY,
                "responses": {
                    "202": _json(
                        {"$ref": "#/components/schemas/Accepted"},
                        "accepted: durable in the mempool log",
                    ),
                    **_errors(400, 401, 409, 413, 415, 503),
                },
            }
        },
        "/v1/actions/batch": {
            "post": {
                "summary": "Submit many signed actions: a msgpack array of binaries, each one encoded action",
                "requestBody": _MSGPACK_BODY,
                "responses": {
                    "200": _json(
                        {"$ref": "#/components/schemas/BatchResult"},
                        "one result per action, in order",
                    ),
                    **_errors(400, 413, 415),
                },
            }
        },
        "/v1/actions/{hash}": {
            "get": {
                "summary": "Status of an action: accepted, executed or failed (with receipt and block height)",
                "parameters": [_path_param("hash", _HEX32, "action hash")],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/ActionStatus"}),
                    **_errors(400, 404),
                },
            }
        },
        "/v1/blocks/{ref}": {
            "get": {
                "summary": "A block header by height or 'latest'; ?full=1 adds the encoded actions and receipts",
                "parameters": [
                    _path_param(
                        "ref",
                        {"type": "string", "pattern": "^(latest|[0-9]{1,19})$"},
                        "height or 'latest'",
                    ),
                    {
                        "name": "full",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
                    },
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Block"}),
                    **_errors(400, 404),
                },
            }
        },
        "/v1/accounts/{key}": {
            "get": {
                "summary": "An account's nonce, next nonce and L2 balance, with its Merkle proof against the head state root",
                "parameters": [_path_param("key", _HEX32, "ed25519 public key")],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/Account"}),
                    **_errors(400),
                },
            }
        },
        "/v1/state/{key}/proof": {
            "get": {
                "summary": "Any state value (or its absence) with its Merkle proof against the head state root",
                "parameters": [
                    _path_param(
                        "key",
                        {"type": "string", "pattern": "^0x([0-9a-fA-F]{2}){0,1024}$"},
                        "state key, hex",
                    )
                ],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/StateProof"}),
                    **_errors(400),
                },
            }
        },
        "/v1/health": {
            "get": {
                "summary": "Liveness, chain id, genesis hash and head",
                "responses": {"200": _json({"type": "object"})},
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {
                    "200": {
                        "description": "text exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            }
        },
        "/openapi.json": {
            "get": {"summary": "This document", "responses": {"200": _json({"type": "object"})}}
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "fedrollup node API", "version": "1"},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }


def _schemas() -> dict[str, Any]:
    proof = {
        "type": "object",
        "description": "compact sparse Merkle proof (see rollup.smt.SmtProof.to_json)",
    }
    proof_props: dict[str, Any] = {
        "height": {"type": "integer"},
        "state_root": _HEX32,
        "state_key": {"type": "string"},
        "value": {"type": "string", "nullable": True},
        "proof": proof,
    }
    state_proof = {
        "type": "object",
        "required": ["height", "state_root", "state_key", "value", "proof"],
        "properties": proof_props,
    }
    return {
        "Error": {
            "type": "object",
            "required": ["error", "detail"],
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        },
        "Accepted": {
            "type": "object",
            "required": ["hash", "status"],
            "properties": {"hash": _HEX32, "status": {"type": "string", "enum": ["accepted"]}},
        },
        "BatchResult": {
            "type": "object",
            "required": ["accepted", "rejected", "results"],
            "properties": {
                "accepted": {"type": "integer"},
                "rejected": {"type": "integer"},
                "results": {"type": "array", "items": {"type": "object"}},
            },
        },
        "ActionStatus": {
            "type": "object",
            "required": ["hash", "status"],
            "properties": {
                "hash": _HEX32,
                "status": {"type": "string", "enum": ["accepted", "executed", "failed"]},
                "height": {"type": "integer", "nullable": True},
                "index": {"type": "integer", "nullable": True},
                "receipt": {"type": "object"},
            },
        },
        "Block": {
            "type": "object",
            "required": ["height", "hash", "state_root"],
            "properties": {
                "height": {"type": "integer"},
                "hash": _HEX32,
                "parent_hash": _HEX32,
                "timestamp_ms": {"type": "integer"},
                "actions_root": _HEX32,
                "receipts_root": _HEX32,
                "state_root": _HEX32,
                "l1_origin": {"type": "object"},
                "action_count": {"type": "integer"},
                "action_hashes": {"type": "array", "items": _HEX32},
            },
        },
        "Account": {
            "type": "object",
            "required": ["key", "nonce", "next_nonce", "balance"],
            "properties": {
                "key": _HEX32,
                "nonce": {"type": "integer"},
                "next_nonce": {"type": "integer"},
                "balance": {"type": "string", "description": "wei, decimal"},
                **proof_props,
            },
        },
        "StateProof": state_proof,
    }
