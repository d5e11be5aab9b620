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
                    **_errors(400, 401, 408, 409, 413, 415, 421, 503),
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
                    **_errors(400, 408, 413, 415, 421, 503),
                },
            }
        },
        "/v1/actions/{hash}": {
            "get": {
                "summary": "Status of an action: accepted, executed (then committed, then finalized on L1) or failed (with receipt and block height)",
                "parameters": [_path_param("hash", _HEX32, "action hash")],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/ActionStatus"}),
                    **_errors(400, 404),
                },
            }
        },
        "/v1/blocks/{ref}": {
            "get": {
                "summary": "A block header by height or 'latest'; ?full=1 adds the encoded actions and receipts (410 data_pruned once a pruning node dropped them)",
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
                    **_errors(400, 404, 410),
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
                    **_errors(400, 403),
                },
            }
        },
        "/v1/health": {
            "get": {
                "summary": "Liveness, role (sequencer or follower), chain id, genesis hash and head; a follower adds its sequencer's reachability and head",
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
    paths.update(_fl_paths())
    paths.update(_l1_paths())
    return {
        "openapi": "3.0.3",
        "info": {"title": "fedrollup node API", "version": "1"},
        "paths": paths,
        "components": {"schemas": _schemas()},
    }


def _get(
    summary: str,
    params: list[dict[str, Any]],
    errors: tuple[int, ...],
    body: dict[str, Any] | None = None,
    query: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    ok = _json(body or {"type": "object"})
    return {
        "get": {
            "summary": summary,
            "parameters": params + (query or []),
            "responses": {"200": ok, **_errors(*errors)},
        }
    }


_MODEL_ID = _path_param(
    "model_id", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "model id"
)
_UINT = {"type": "string", "pattern": "^[0-9]{1,19}$"}
_FORMAT = [
    {
        "name": "format",
        "in": "query",
        "required": False,
        "schema": {"type": "string", "enum": ["fixed", "f32"]},
        "description": "fixed: JSON fixed-point integers with frac_bits; f32: little-endian float32 bytes",
    }
]
_PARAMS_OK = {
    "description": "parameters",
    "content": {
        "application/json": {"schema": {"type": "object"}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}


def _fl_paths() -> dict[str, Any]:
    job = _path_param("job_id", _UINT, "job id (= its train proposal id)")
    rnd = _path_param("round", _UINT, "round number (0 = the starting model for /global)")
    pid = _path_param("pid", _UINT, "proposal id")
    key = _path_param("key", _HEX32, "ed25519 public key")
    params_get = _get("", [], (400, 404))
    model_params = {
        "get": {
            **params_get["get"],
            "summary": "A model's current parameters",
            "parameters": [_MODEL_ID, *_FORMAT],
            "responses": {"200": _PARAMS_OK, **_errors(400, 404)},
        }
    }
    round_global = {
        "get": {
            **params_get["get"],
            "summary": "The global model after a round of a job",
            "parameters": [job, rnd, *_FORMAT],
            "responses": {"200": _PARAMS_OK, **_errors(400, 404)},
        }
    }
    page = [
        {"name": "after", "in": "query", "required": False, "schema": {"type": "string"}},
        {"name": "limit", "in": "query", "required": False, "schema": _UINT},
    ]
    return {
        "/v1/models": _get(
            "Registered models in id order (the model store's entries), with the count",
            [],
            (400,),
            query=page,
        ),
        "/v1/models-count": _get("How many models are registered (len)", [], ()),
        "/v1/models/{model_id}": _get(
            "A model: owner, architecture, scale, price, version, hashes", [_MODEL_ID], (400, 404)
        ),
        "/v1/models/{model_id}/price": _get(
            "A model's access price (wei)", [_MODEL_ID], (400, 404)
        ),
        "/v1/models/{model_id}/params": model_params,
        "/v1/models/{model_id}/access/{key}": _get(
            "A buyer's access: the artifact key sealed to the buyer", [_MODEL_ID, key], (400, 404)
        ),
        "/v1/blobs/{hash}": {
            "get": {
                "summary": "A content-addressed blob (a model's encrypted artifact)",
                "parameters": [_path_param("hash", _HEX32, "blob hash")],
                "responses": {
                    "200": {
                        "description": "bytes",
                        "content": {
                            "application/octet-stream": {
                                "schema": {"type": "string", "format": "binary"}
                            }
                        },
                    },
                    **_errors(400, 404),
                },
            }
        },
        "/v1/proposals/{pid}": _get("An access or train proposal", [pid], (400, 404)),
        "/v1/proposals/{pid}/messages": _get(
            "A proposal's messages with author and block time", [pid], (400, 404)
        ),
        "/v1/jobs/{job_id}": _get(
            "A training job: terms, pool, current round, status", [job], (400, 404)
        ),
        "/v1/jobs/{job_id}/rounds/{round}": _get(
            "A round: commitments, reveals, then decisions (outcome kept/excluded/slashed, reason, Krum score)",
            [job, rnd],
            (400, 404),
        ),
        "/v1/jobs/{job_id}/rounds/{round}/global": round_global,
        "/v1/stakes/{key}": _get("A key's stake as the rollup knows it", [key], (400,)),
    }


def _l1_paths() -> dict[str, Any]:
    index = _path_param("index", _UINT, "batch index")
    record = _path_param("record_id", _HEX32, "settlement record id")
    full = [
        {
            "name": "full",
            "in": "query",
            "required": False,
            "schema": {"type": "string", "enum": ["0", "1", "true", "false"]},
        }
    ]
    return {
        "/v1/batches": _get(
            "The latest batches: block range, roots, data hash, L1 status", [], (404,)
        ),
        "/v1/batches/{index}": _get(
            "One batch; ?full=1 adds its blocks' actions and L1 messages (the data verifiers replay)",
            [index],
            (400, 404, 410),
            query=full,
        ),
        "/v1/settlements/{record_id}/proof": _get(
            "A settlement record with its Merkle proof against its batch's output root, as SlashingManager.executeSlash / RewardManager.claim take it",
            [record],
            (400, 404),
        ),
        "/v1/l1/deployment": _get(
            "The L1 deployment: chain id, contract addresses, parameters", [], (404,)
        ),
        "/l1": {
            "post": {
                "summary": "The embedded L1's JSON-RPC endpoint (embedded mode only)",
                "requestBody": {
                    "required": True,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                "responses": {"200": _json({"type": "object"}), **_errors(400, 404)},
            }
        },
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
                "status": {
                    "type": "string",
                    "enum": ["accepted", "executed", "committed", "finalized", "failed"],
                },
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
