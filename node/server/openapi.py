"""The OpenAPI 3.1 description of every route, generated: answers from the typed models of
node.api_models (which the views build their answers with), action payloads from the STF's
own field specs (stf.actions). Tests check it lists exactly the app's routes and that real
answers, success and error, validate against it."""

from dataclasses import dataclass
from typing import Any

from node import api_models as m
from node.schema import REF_PREFIX, SchemaBuilder
from rollup.codec import ENVELOPE_VERSION
from rollup.jsonshape import hex_pattern
from stf.actions import ACTIONS
from stf.fields import MAX_U64, array_schema

JSON = "application/json"
MSGPACK = "application/msgpack"
BINARY = "application/octet-stream"
TEXT = "text/plain"
HTML = "text/html"
EXPLORER_MEDIA = (HTML, "text/javascript", "text/css")
_UINT_PATH = {"type": "string", "pattern": "^[0-9]{1,19}$"}
_HEX32_PATH = {"type": "string", "pattern": "^0[xX][0-9a-fA-F]{64}$"}
_FLAG = {"type": "string", "enum": ["0", "1", "true", "false"]}


@dataclass(frozen=True)
class Param:
    name: str
    where: str  # "path" or "query"
    schema: dict[str, Any]
    description: str


@dataclass(frozen=True)
class Operation:
    """One route: what it takes and every answer it gives. `ok` is the success status and
    its body: a model type (JSON), or a media type string for raw bytes or text."""

    method: str
    path: str
    summary: str
    ok: tuple[int, Any]
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    body: str | None = None  # the request body's media type
    also_binary: bool = False  # ?format=f32 answers raw float32 instead of the JSON


def _path(name: str, schema: dict[str, Any], description: str) -> Param:
    return Param(name, "path", schema, description)


_KEY = _path("key", _HEX32_PATH, "ed25519 public key, 0x-hex")
_MODEL = _path("model_id", {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}, "model id")
_JOB = _path("job_id", _UINT_PATH, "job id (= its train proposal id)")
_ROUND = _path("round", _UINT_PATH, "round number (0 = the starting model for /global)")
_PID = _path("pid", _UINT_PATH, "proposal id")
_FULL = Param("full", "query", _FLAG, "1 or true: include the data")
_FORMAT = Param(
    "format",
    "query",
    {"type": "string", "enum": ["fixed", "f32"]},
    "fixed: JSON fixed-point integers with frac_bits; f32: little-endian float32 bytes",
)
_PAGE = (
    Param("after", "query", {"type": "string"}, "list models after this id"),
    Param("limit", "query", _UINT_PATH, "at most this many (capped at 500)"),
)
# Every route may answer 503 `busy` (too many requests in progress).
_BUSY = 503

OPERATIONS: tuple[Operation, ...] = (
    Operation(
        "POST",
        "/v1/actions",
        "Submit one signed action (canonical msgpack envelope, see ActionEnvelope)",
        (202, m.Accepted),
        (400, 401, 408, 409, 413, 415, 421, 500, 503),
        body=MSGPACK,
    ),
    Operation(
        "POST",
        "/v1/actions/batch",
        "Submit many signed actions: a msgpack array of binaries, each one encoded action",
        (200, m.BatchResult),
        (400, 408, 413, 415, 421, 503),
        body=MSGPACK,
    ),
    Operation(
        "GET",
        "/v1/actions/{hash}",
        "Status of an action: accepted, executed (then committed, then finalized on L1) or failed, with receipt, block height and batch",
        (200, m.ActionStatus),
        (400, 404),
        (_path("hash", _HEX32_PATH, "action hash"),),
    ),
    Operation(
        "GET",
        "/v1/blocks/{ref}",
        "A block header by height or 'latest'; ?full=1 adds the encoded actions and receipts"
        " (410 data_pruned once a pruning node dropped them)",
        (200, m.Block | m.BlockFull),
        (400, 404, 410),
        (
            _path("ref", {"type": "string", "pattern": "^(latest|[0-9]{1,19})$"}, "height"),
            _FULL,
        ),
    ),
    Operation(
        "GET",
        "/v1/accounts/{key}",
        "An account's nonce, next nonce and L2 balance, with its Merkle proof against the head state root",
        (200, m.Account),
        (400,),
        (_KEY,),
    ),
    Operation(
        "GET",
        "/v1/state/{key}/proof",
        "Any state value (or its absence) with its Merkle proof against the head state root",
        (200, m.StateProof),
        (400,),
        (
            _path(
                "key",
                {"type": "string", "pattern": "^0[xX]([0-9a-fA-F]{2}){0,1024}$"},
                "state key, hex",
            ),
        ),
    ),
    Operation(
        "GET",
        "/v1/health",
        "Liveness, role (sequencer or follower), chain id, genesis hash and head; a follower adds its sequencer's reachability and head",
        (200, m.Health),
    ),
    Operation(
        "GET",
        "/v1/models",
        "Registered models in id order (the model store's entries), with the count",
        (200, m.ModelList),
        (400,),
        _PAGE,
    ),
    Operation(
        "GET", "/v1/models-count", "How many models are registered (len)", (200, m.ModelCount)
    ),
    Operation(
        "GET",
        "/v1/models/{model_id}",
        "A model: owner, architecture, scale, price, version, hashes",
        (200, m.Model),
        (400, 404),
        (_MODEL,),
    ),
    Operation(
        "GET",
        "/v1/models/{model_id}/price",
        "A model's access price (wei)",
        (200, m.ModelPrice),
        (400, 404),
        (_MODEL,),
    ),
    Operation(
        "GET",
        "/v1/models/{model_id}/params",
        "A model's current parameters",
        (200, m.FixedParams),
        (400, 404),
        (_MODEL, _FORMAT),
        also_binary=True,
    ),
    Operation(
        "GET",
        "/v1/models/{model_id}/access/{key}",
        "A buyer's access: the artifact key sealed to the buyer",
        (200, m.ModelAccess),
        (400, 404),
        (_MODEL, _KEY),
    ),
    Operation(
        "GET",
        "/v1/blobs/{hash}",
        "A content-addressed blob (a model's encrypted artifact)",
        (200, BINARY),
        (400, 404),
        (_path("hash", _HEX32_PATH, "blob hash"),),
    ),
    Operation(
        "GET",
        "/v1/proposals/{pid}",
        "An access or train proposal",
        (200, m.Proposal),
        (400, 404),
        (_PID,),
    ),
    Operation(
        "GET",
        "/v1/proposals/{pid}/messages",
        "A proposal's messages with author and block time",
        (200, m.ProposalMessages),
        (400, 404),
        (_PID,),
    ),
    Operation(
        "GET",
        "/v1/jobs/{job_id}",
        "A training job: terms, pool, current round, status",
        (200, m.Job),
        (400, 404),
        (_JOB,),
    ),
    Operation(
        "GET",
        "/v1/jobs/{job_id}/rounds/{round}",
        "A round: commitments, reveals, then decisions (outcome kept/excluded/slashed, reason, Krum score)",
        (200, m.Round),
        (400, 404),
        (_JOB, _ROUND),
    ),
    Operation(
        "GET",
        "/v1/jobs/{job_id}/rounds/{round}/global",
        "The global model after a round of a job",
        (200, m.FixedParams),
        (400, 404),
        (_JOB, _ROUND, _FORMAT),
        also_binary=True,
    ),
    Operation(
        "GET",
        "/v1/stakes/{key}",
        "A key's stake as the rollup knows it",
        (200, m.Stake),
        (400,),
        (_KEY,),
    ),
    Operation(
        "GET",
        "/v1/batches",
        "The latest 200 batches: block range, roots, data hash, L1 status",
        (200, m.BatchList),
        (404,),
    ),
    Operation(
        "GET",
        "/v1/batches/{index}",
        "One batch; ?full=1 adds its blocks' actions and L1 messages (the data verifiers replay;"
        " 410 data_pruned once pruned)",
        (200, m.Batch | m.BatchFull),
        (400, 404, 410),
        (_path("index", _UINT_PATH, "batch index"), _FULL),
    ),
    Operation(
        "GET",
        "/v1/settlements/{record_id}/proof",
        "A settlement record with its Merkle proof against its batch's output root, as SlashingManager.executeSlash / RewardManager.claim take it",
        (200, m.SettlementProof),
        (400, 404),
        (_path("record_id", _HEX32_PATH, "settlement record id"),),
    ),
    Operation(
        "GET",
        "/v1/l1/deployment",
        "The L1 deployment: chain id, contract addresses, parameters",
        (200, m.Deployment),
        (404,),
    ),
    Operation(
        "POST",
        "/l1",
        "The embedded L1's JSON-RPC endpoint (embedded mode only; one request object, no batches)",
        (200, m.JsonRpcResponse),
        (400, 404, 408, 413, 415),
        body=JSON,
    ),
    Operation("GET", "/metrics", "Prometheus metrics (text format 0.0.4)", (200, TEXT)),
    Operation("GET", "/openapi.json", "This document", (200, m.OpenApiDocument)),
    # The explorer is a page, not part of the JSON API; listed because it is a route too.
    Operation("GET", "/explorer", "The live explorer page", (200, HTML)),
    Operation("GET", "/explorer/", "The live explorer page", (200, HTML)),
    Operation(
        "GET",
        "/explorer/{name}",
        "The explorer's page, script and style (index.html, explorer.js, explorer.css)",
        (200, ", ".join(EXPLORER_MEDIA)),
        (404,),
        (_path("name", {"type": "string"}, "asset name"),),
    ),
)


def openapi_spec() -> m.OpenApiDocument:
    builder = SchemaBuilder()
    builder.ref(m.Error)
    paths: dict[str, Any] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method.lower()] = _operation(op, builder)
    schemas = {**builder.components, **action_schemas()}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "fedrollup node API",
            "version": "1",
            "description": "Generated from the node's typed answer models (node.api_models) "
            "and the STF's action field specs. JSON out, bytes as 0x-hex, wei as decimal "
            "strings; every error is {error, detail} with a 4xx (5xx: the node's own fault).",
        },
        "jsonSchemaDialect": "https://json-schema.org/draft/2020-12/schema",
        "paths": paths,
        "components": {"schemas": dict(sorted(schemas.items()))},
    }


def _operation(op: Operation, builder: SchemaBuilder) -> dict[str, Any]:
    status, answer = op.ok
    responses = {str(status): _success(answer, op.also_binary, builder)}
    for code in sorted({*op.errors, _BUSY}):
        responses[str(code)] = {
            "description": "refused (503 busy: too many requests in progress)"
            if code == _BUSY and code not in op.errors
            else "refused",
            "content": {JSON: {"schema": {"$ref": REF_PREFIX + "Error"}}},
        }
    out: dict[str, Any] = {"summary": op.summary, "responses": responses}
    if op.params:
        out["parameters"] = [
            {
                "name": p.name,
                "in": p.where,
                "required": p.where == "path",
                "schema": p.schema,
                "description": p.description,
            }
            for p in op.params
        ]
    if op.body is not None:
        out["requestBody"] = _request_body(op.body)
    return out


def _success(answer: Any, also_binary: bool, builder: SchemaBuilder) -> dict[str, Any]:
    if answer == BINARY:
        return {"description": "bytes", "content": {BINARY: {"schema": _binary()}}}
    if isinstance(answer, str):  # text media types, comma-separated
        media = answer.split(", ")
        return {
            "description": "text",
            "content": {t: {"schema": {"type": "string"}} for t in media},
        }
    content = {JSON: {"schema": builder.ref(answer)}}
    if also_binary:
        content[BINARY] = {"schema": _binary()}
    return {"description": "ok", "content": content}


def _binary() -> dict[str, Any]:
    return {"type": "string", "format": "binary"}


def _request_body(media: str) -> dict[str, Any]:
    if media == JSON:
        return {"required": True, "content": {JSON: {"schema": {"type": "object"}}}}
    # Bytes on the wire; what they decode to is described in x-msgpack-schema.
    return {
        "required": True,
        "content": {
            MSGPACK: {
                "schema": _binary(),
                "x-msgpack-schema": {"$ref": REF_PREFIX + "ActionEnvelope"},
            }
        },
    }


def payload_schema_name(action_type: str) -> str:
    return "".join(part.title() for part in action_type.split("_")) + "Payload"


def action_schemas() -> dict[str, dict[str, Any]]:
    """The action envelope and each action type's payload, in the JSON view of msgpack
    (binaries as 0x-hex), from the same field specs the decoder applies."""
    payloads = {
        payload_schema_name(name): {
            "description": f"payload of a `{name}` action, in field order",
            **array_schema(spec.fields),
        }
        for name, spec in sorted(ACTIONS.items())
    }
    hex_bin = {"type": "string", "x-msgpack": "bin"}
    envelope = {
        "description": "[version, chain_id, type, sender, nonce, payload, signature]: the "
        "signature is ed25519 over domain || chain_id (8 bytes) || msgpack(first six fields)",
        "type": "array",
        "prefixItems": [
            {"title": "version", "const": ENVELOPE_VERSION},
            {"title": "chain_id", "type": "integer", "minimum": 0, "maximum": MAX_U64},
            {"title": "type", "type": "string", "enum": sorted(ACTIONS)},
            {"title": "sender", **hex_bin, "pattern": hex_pattern(32)},
            {"title": "nonce", "type": "integer", "minimum": 1, "maximum": MAX_U64},
            {"title": "payload", "type": "array"},
            {"title": "signature", **hex_bin, "pattern": hex_pattern(64)},
        ],
        "items": False,
        "minItems": 7,
        "maxItems": 7,
        "allOf": [
            {
                "if": {"prefixItems": [True, True, {"const": name}]},
                "then": {
                    "prefixItems": [
                        *[True] * 5,
                        {"$ref": REF_PREFIX + payload_schema_name(name)},
                    ]
                },
            }
            for name in sorted(ACTIONS)
        ],
    }
    return {"ActionEnvelope": envelope, **payloads}
