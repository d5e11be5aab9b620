"""The HTTP API (aiohttp). Views translate between HTTP and the Node; domain errors become
4xx JSON `{"error", "detail"}` here and nowhere else."""

import asyncio
import dataclasses
import json
import json.scanner
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import msgpack
from aiohttp import web
from aiohttp.typedefs import Middleware

from l1_bridge.book import BatchBook
from l1_bridge.contracts import DEPLOYMENT_FORMAT, Deployment
from node import api_models as m
from node.config import NodeConfig
from node.core.door import Rejected
from node.core.follower import Follower
from node.core.service import ActionStatus, Node, account_json
from node.metrics import CONTENT_TYPE, Metrics
from node.server import fl_views as fl
from node.server.explorer import add_explorer_routes
from node.server.http_util import NODE, parse_hex, parse_uint
from node.server.openapi import openapi_spec
from rollup.block import hexb
from rollup.genesis import Genesis
from rollup.smt import SmtProofJson
from stf.accounts import EMPTY_ACCOUNT, account_key, decode_account

log = logging.getLogger(__name__)
if TYPE_CHECKING:  # imported when an L1 is configured: web3 alone takes seconds to import
    from node.core.l1_service import L1Service


class Door(Protocol):
    """What takes actions: the Node itself, or the ingress process of a split node."""

    config: NodeConfig
    metrics: Metrics

    async def submit(self, raw: bytes) -> bytes: ...

    async def submit_batch(self, raws: list[bytes]) -> list[bytes | Rejected]: ...


L1: "web.AppKey[L1Service]" = web.AppKey("l1")
DOOR: web.AppKey[Door] = web.AppKey("door")
# Set by the ingress of a split node on what it forwards (and stripped from clients'
# requests): what it accepted that the executor may not have seen yet.
INGRESS_PENDING_HEADER = "X-Fedrollup-Ingress-Pending"
INGRESS_NONCE_HEADER = "X-Fedrollup-Ingress-Nonce"
INGRESS_METRICS_HEADER = "X-Fedrollup-Ingress-Metrics"
CONFIG: web.AppKey[NodeConfig] = web.AppKey("config", NodeConfig)
FOLLOWER: web.AppKey[Follower] = web.AppKey("follower", Follower)
_MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/octet-stream")
_MAX_STATE_KEY_BYTES = 1024
_C_JSON_MAX_BRACKETS = 1000  # see parse_json


def error(status: int, code: str, detail: str) -> web.Response:
    body: m.Error = {"error": code, "detail": detail}
    resp = web.json_response(body, status=status)
    if status in (408, 413):
        resp.force_close()  # the body was abandoned part-way: this connection is done
    return resp


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Every failure, including aiohttp's own (404, 405, 413), answers in the JSON error form."""
    try:
        return await handler(request)
    except Rejected as exc:
        return error(exc.status, exc.code, exc.detail)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(
            exc.status, "http_error"
        )
        return error(exc.status, code, exc.reason)
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal_error", "the node hit an unexpected error")


def concurrency_limit(limit: int) -> Middleware:
    """At most `limit` requests in handlers at once (their bodies are what costs memory);
    beyond it an immediate 503 `busy` rather than a queue. Idle connections and clients
    still sending headers are not requests yet and count for nothing here."""
    inflight = 0

    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        nonlocal inflight
        if request.path.startswith("/internal/"):
            return await handler(request)  # a split node's ingress; it bounds its own load
        if inflight >= limit:
            resp = error(503, "busy", "too many requests in progress; retry shortly")
            resp.headers["Retry-After"] = "1"
            return resp
        inflight += 1
        try:
            return await handler(request)
        finally:
            inflight -= 1

    return middleware


async def _read_body(request: web.Request) -> bytes:
    """The whole body, refused early when its declared length is over the limit, and
    abandoned (408, connection closed) when the client takes longer than body_timeout_s."""
    if request.headers.get("Content-Encoding", "identity").strip().lower() != "identity":
        raise Rejected(415, "unsupported_content_encoding", "send bodies uncompressed")
    return await read_bounded_body(request)


async def read_bounded_body(request: web.Request) -> bytes:
    """The body within max_body_bytes (413) and body_timeout_s (408), as it came."""
    config = request.app[CONFIG]
    declared = request.content_length
    if declared is not None and declared > config.max_body_bytes:
        raise Rejected(413, "body_too_large", f"bodies are at most {config.max_body_bytes} bytes")
    try:
        async with asyncio.timeout(config.body_timeout_s):
            return await request.read()
    except TimeoutError:
        raise Rejected(
            408, "body_timeout", f"the body took longer than {config.body_timeout_s} s"
        ) from None


async def _read_msgpack_body(request: web.Request) -> bytes:
    if request.content_type not in _MSGPACK_TYPES:
        raise Rejected(415, "unsupported_media_type", "send application/msgpack")
    return await _read_body(request)


def _refuse_writes_on_follower(request: web.Request) -> None:
    """A follower orders nothing: actions go to its sequencer, which it names."""
    follower = request.app.get(FOLLOWER)
    if follower is not None:
        raise Rejected(
            421,
            "read_only_follower",
            f"this node is a read-only follower of {follower.url}: send actions to that sequencer",
        )


async def post_action(request: web.Request) -> web.Response:
    _refuse_writes_on_follower(request)
    raw = await _read_msgpack_body(request)
    door = request.app[DOOR]
    try:
        action_hash = await door.submit(raw)
    except Rejected as exc:
        door.metrics.rejected[exc.code] += 1
        raise
    body: m.Accepted = {"hash": hexb(action_hash), "status": "accepted"}
    return web.json_response(body, status=202)


def _decode_batch(raw: bytes, max_items: int) -> list[bytes]:
    try:
        items = msgpack.unpackb(raw, raw=False, use_list=True, max_array_len=max_items)
    except Exception as exc:
        raise Rejected(
            400, "malformed", f"a batch is a msgpack array of binaries: {type(exc).__name__}"
        ) from None
    if type(items) is not list or not all(type(i) is bytes for i in items):
        raise Rejected(400, "malformed", "a batch is a msgpack array of binaries")
    if not items:
        raise Rejected(400, "empty_batch", "a batch holds at least one action")
    return items


async def post_action_batch(request: web.Request) -> web.Response:
    _refuse_writes_on_follower(request)
    door = request.app[DOOR]
    items = _decode_batch(await _read_msgpack_body(request), door.config.max_batch_actions)
    results = await door.submit_batch(items)
    out: list[m.Accepted | m.BatchItemRejected] = []
    for r in results:
        if isinstance(r, Rejected):
            out.append({"error": r.code, "detail": r.detail, "status": r.status})
        else:
            out.append({"hash": hexb(r), "status": "accepted"})
    accepted = sum(1 for r in results if not isinstance(r, Rejected))
    body: m.BatchResult = {
        "accepted": accepted,
        "rejected": len(results) - accepted,
        "results": out,
    }
    return web.json_response(body)


async def get_action(request: web.Request) -> web.Response:
    action_hash = parse_hex(request.match_info["hash"], size=32, what="action hash")
    return action_response(action_hash, request.app[NODE].action_status(action_hash))


def action_response(action_hash: bytes, status: ActionStatus | None) -> web.Response:
    if status is None:
        return error(404, "unknown_action", "no action with this hash was accepted")
    body: m.ActionStatus = {
        "hash": hexb(action_hash),
        "status": status.status,
        "height": status.height,
        "index": status.index,
        "batch": status.batch,
    }
    if status.receipt is not None:
        body["receipt"] = status.receipt.to_json()
    return web.json_response(body)


async def get_block(request: web.Request) -> web.Response:
    node = request.app[NODE]
    ref = request.match_info["ref"]
    if ref == "latest":
        height = node.head.height
    else:
        height = parse_uint(ref, "block reference (a height or 'latest')", code="bad_height")
    summary = node.block_summary(height)
    if summary is None:
        return error(404, "unknown_block", f"no block at height {height}")
    body: m.Block = {
        **summary.header.to_json(),
        "action_count": summary.action_count,
        "action_hashes": [hexb(r.action_hash) for r in summary.receipts],
    }
    if request.query.get("full") not in ("1", "true"):
        return web.json_response(body)
    # Blocks hide nothing: submissions are sealed by commitment (commit, then reveal).
    record = node.block(height)  # 410 if pruned
    assert record is not None
    full: m.BlockFull = {
        **body,
        "actions": [hexb(a) for a in record.actions],
        "l1_messages": [hexb(msg) for msg in record.l1_messages],
        "receipts": [r.to_json() for r in record.receipts],
    }
    return web.json_response(full)


async def get_account(request: web.Request) -> web.Response:
    node = request.app[NODE]
    pubkey = parse_hex(request.match_info["key"], size=32, what="account key")
    read = node.read_state(account_key(pubkey))
    account = EMPTY_ACCOUNT if read.value is None else decode_account(read.value)
    body: m.Account = {
        **_proof_json(read.height, read.state_root, read.key, read.value, read.proof.to_json()),
        **account_json(pubkey, account, _next_nonce(request, node, pubkey, account)),
    }
    return web.json_response(body)


def _next_nonce(request: web.Request, node: Node, pubkey: bytes, account: Any) -> int:
    ingress = request.headers.get(INGRESS_NONCE_HEADER) if node.external_log else None
    return max(node.next_nonce(pubkey, account), 0 if ingress is None else int(ingress) + 1)


def _proof_json(
    height: int, root: bytes, key: bytes, value: bytes | None, proof: SmtProofJson
) -> m.StateProof:
    return {
        "height": height,
        "state_root": hexb(root),
        "state_key": hexb(key),
        "value": None if value is None else hexb(value),
        "proof": proof,
    }


async def get_state_proof(request: web.Request) -> web.Response:
    key = parse_hex(request.match_info["key"], what="state key", max_size=_MAX_STATE_KEY_BYTES)
    read = request.app[NODE].read_state(key)
    return web.json_response(
        _proof_json(read.height, read.state_root, key, read.value, read.proof.to_json())
    )


async def get_health(request: web.Request) -> web.Response:
    node = request.app[NODE]
    head = node.head
    body: m.Health = {
        "status": "ok",
        "role": "sequencer",
        "chain_id": node.chain_id,
        "genesis_hash": hexb(node.genesis.hash()),
        "head": {
            "height": head.height,
            "hash": hexb(head.hash()),
            "state_root": hexb(head.state_root),
        },
        "pending_actions": _pending_count(request, node),
    }
    follower = request.app.get(FOLLOWER)
    if follower is not None:
        body["role"] = "follower"
        body["sequencer"] = follower.status.to_json(head.height)
    return web.json_response(body)


def _pending_count(request: web.Request, node: Node) -> int:
    """A split node's ingress knows what it accepted and the executor has not yet executed."""
    ingress = request.headers.get(INGRESS_PENDING_HEADER) if node.external_log else None
    return node.pending_count() if ingress is None else int(ingress)


def _l1(request: web.Request) -> "L1Service":
    service = request.app.get(L1)
    if service is None:
        raise Rejected(404, "no_l1", "this node runs without L1 (--l1 none)")
    return service


def _book(request: web.Request) -> BatchBook:
    """The node's batches: its poster's, or on a follower those it re-derived."""
    follower = request.app.get(FOLLOWER)
    if follower is None:
        return _l1(request).book
    if follower.batches.deployment_text is None:
        raise Rejected(
            404, "no_l1", "this follower's sequencer runs without L1 (or was not reached)"
        )
    return follower.batches.book


def _pure_python_json() -> json.JSONDecoder:
    decoder = json.JSONDecoder()
    decoder.scan_once = json.scanner.py_make_scanner(decoder)  # type: ignore[attr-defined]
    return decoder


_PY_JSON = _pure_python_json()


def parse_json(raw: bytes) -> Any:
    """json.loads, safe against deep nesting. The embedded L1's libraries raise the recursion
    limit (py_ecc: 100000), so the C decoder on deeply nested input overflows the C stack (a
    segfault, not a RecursionError). A body with few brackets cannot nest deeply and takes
    the C decoder; any other takes the pure-Python one, whose recursion uses no C stack
    (Python >= 3.11) and ends in RecursionError."""
    if raw.count(b"[") + raw.count(b"{") <= _C_JSON_MAX_BRACKETS:
        return json.loads(raw)
    return _PY_JSON.decode(raw.decode())


async def l1_rpc(request: web.Request) -> web.Response:
    """The embedded L1's JSON-RPC endpoint: point web3/wallets at http://<node>/l1."""
    service = _l1(request)
    if not service.link.embedded:
        raise Rejected(404, "not_embedded", "this node uses an external L1; ask it directly")
    raw = await _read_body(request)
    try:
        payload = parse_json(raw)
    except (ValueError, RecursionError):
        raise Rejected(400, "malformed", "a JSON-RPC request object") from None
    if not isinstance(payload, dict):
        raise Rejected(400, "malformed", "one JSON-RPC request object (no batches)")
    text = await service.call(service.link.rpc, payload)
    return web.Response(text=text, content_type="application/json")


def deployment_json(deployment: Deployment) -> m.Deployment:
    """The deployment file's document (`Deployment.to_json`), typed for the API."""
    return {
        "format": DEPLOYMENT_FORMAT,
        "chainId": deployment.chain_id,
        "blockNumber": deployment.block_number,
        "contracts": dict(deployment.addresses),
        "params": deployment.params,
    }


def _dataclass_json(value: object) -> dict[str, Any]:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


async def get_l1_deployment(request: web.Request) -> web.Response:
    follower = request.app.get(FOLLOWER)
    if follower is not None:
        _book(request)  # 404 unless the sequencer's deployment is known
        text = follower.batches.deployment_text  # the sequencer's, as it served it
        return web.Response(text=text, content_type="application/json")
    body = deployment_json(_l1(request).link.deployment)
    return web.json_response(body, dumps=lambda o: json.dumps(o, default=_dataclass_json))


async def list_batches(request: web.Request) -> web.Response:
    book = _book(request)
    from node.core.l1_service import batch_json  # web3 is imported only where an L1 is used

    body: m.BatchList = {"batches": [batch_json(b) for b in book.batches()][-200:]}
    return web.json_response(body)


async def get_batch(request: web.Request) -> web.Response:
    book = _book(request)
    index = parse_uint(request.match_info["index"], "batch index")
    batch = book.get(index)
    if batch is None:
        raise Rejected(404, "unknown_batch", f"no batch {index}")
    from node.core.l1_service import batch_json

    body = batch_json(batch)
    if request.query.get("full") in ("1", "true"):
        node = request.app[NODE]
        blocks: list[m.BatchBlock] = []
        for height in range(batch.first_height, batch.last_height + 1):
            record = node.block(height)
            assert record is not None
            blocks.append(
                {
                    "height": height,
                    "hash": hexb(record.header.hash()),
                    "timestamp_ms": record.header.timestamp_ms,
                    "l1_origin": {
                        "height": record.header.l1_origin_height,
                        "hash": hexb(record.header.l1_origin_hash),
                    },
                    "actions": [hexb(a) for a in record.actions],
                    "l1_messages": [hexb(m) for m in record.l1_messages],
                }
            )
        full: m.BatchFull = {**body, "blocks": blocks}
        return web.json_response(full)
    return web.json_response(body)


async def get_settlement_proof(request: web.Request) -> web.Response:
    record_id = parse_hex(request.match_info["record_id"], size=32, what="record id")
    from node.core.l1_service import settlement_proof_json

    proof = settlement_proof_json(_book(request), record_id)
    if proof is None:
        raise Rejected(404, "unknown_record", "no batched settlement record with this id (yet)")
    return web.json_response(proof)


async def get_metrics(request: web.Request) -> web.Response:
    node = request.app[NODE]
    door = request.headers.get(INGRESS_METRICS_HEADER) if node.external_log else None
    if door is not None:
        node.metrics.door = json.loads(door)  # a split node: what its ingress counted
    return web.Response(body=node.metrics.render().encode(), headers={"Content-Type": CONTENT_TYPE})


async def get_openapi(request: web.Request) -> web.Response:
    return web.json_response(openapi_spec(), dumps=lambda o: json.dumps(o, indent=1))


ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", "/v1/actions", post_action),
    ("POST", "/v1/actions/batch", post_action_batch),
    ("GET", "/v1/actions/{hash}", get_action),
    ("GET", "/v1/blocks/{ref}", get_block),
    ("GET", "/v1/accounts/{key}", get_account),
    ("GET", "/v1/state/{key}/proof", get_state_proof),
    ("GET", "/v1/health", get_health),
    ("GET", "/v1/models", fl.list_models),
    ("GET", "/v1/models-count", fl.model_count),
    ("GET", "/v1/models/{model_id}", fl.get_model),
    ("GET", "/v1/models/{model_id}/price", fl.model_price),
    ("GET", "/v1/models/{model_id}/params", fl.model_params),
    ("GET", "/v1/models/{model_id}/access/{key}", fl.model_access),
    ("GET", "/v1/blobs/{hash}", fl.get_blob),
    ("GET", "/v1/proposals/{pid}", fl.get_proposal),
    ("GET", "/v1/proposals/{pid}/messages", fl.proposal_messages),
    ("GET", "/v1/jobs/{job_id}", fl.get_job),
    ("GET", "/v1/jobs/{job_id}/rounds/{round}", fl.get_round),
    ("GET", "/v1/jobs/{job_id}/rounds/{round}/global", fl.round_global),
    ("GET", "/v1/stakes/{key}", fl.get_stake),
    ("GET", "/v1/batches", list_batches),
    ("GET", "/v1/batches/{index}", get_batch),
    ("GET", "/v1/settlements/{record_id}/proof", get_settlement_proof),
    ("GET", "/v1/l1/deployment", get_l1_deployment),
    ("POST", "/l1", l1_rpc),
    ("GET", "/metrics", get_metrics),
    ("GET", "/openapi.json", get_openapi),
]


async def internal_nonces(request: web.Request) -> web.Response:
    """Split node: the committed nonces of senders the ingress has not seen yet."""
    senders = msgpack.unpackb(await request.read(), raw=False)
    if type(senders) is not list or not all(type(s) is bytes for s in senders):
        raise Rejected(400, "malformed", "a msgpack array of sender keys")
    node = request.app[NODE]
    nonces = [node.committed_nonce(sender) for sender in senders]
    return web.Response(body=msgpack.packb(nonces), content_type="application/msgpack")


async def internal_seen(request: web.Request) -> web.Response:
    action_hash = parse_hex(request.match_info["hash"], size=32, what="action hash")
    return web.json_response({"seen": request.app[NODE].was_seen(action_hash)})


async def internal_precheck(request: web.Request) -> web.Response:
    refused = await request.app[NODE].precheck(await request.read())
    if refused is None:
        return web.json_response({"error": None})
    return web.json_response(
        {"error": refused.code, "detail": refused.detail, "status": refused.status}
    )


# A split node's executor answers these to its ingress, on loopback; the ingress never
# forwards a client's request to /internal/.
INTERNAL_ROUTES: list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]] = [
    ("POST", "/internal/nonces", internal_nonces),
    ("GET", "/internal/seen/{hash}", internal_seen),
    ("POST", "/internal/precheck", internal_precheck),
]


def hardened_application(config: NodeConfig) -> web.Application:
    """An aiohttp app with the node's limits: body size, JSON errors, concurrency, timeouts."""
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[json_errors, concurrency_limit(config.max_concurrent_requests)],
        # These override the runner's: an idle connection, or one still sending its request
        # line and headers (slowloris), is closed after keepalive_timeout_s; bodies are never
        # inflated (a 100 KB gzip body would become max_body_bytes and more in memory).
        handler_args={
            "keepalive_timeout": float(config.keepalive_timeout_s),
            "auto_decompress": False,
        },
    )
    app[CONFIG] = config
    return app


def create_app(config: NodeConfig, genesis: Genesis, executor: bool = False) -> web.Application:
    """The node's app; `executor`: that of a split node, behind its ingress process (no
    mempool log of its own, and the routes its ingress asks)."""
    app = hardened_application(config)
    for method, path, handler in ROUTES:
        app.router.add_route(method, path, handler)
    if executor:
        for method, path, handler in INTERNAL_ROUTES:
            app.router.add_route(method, path, handler)
    add_explorer_routes(app)
    app.cleanup_ctx.append(_node_context(config, genesis, executor))
    return app


def _node_context(
    config: NodeConfig, genesis: Genesis, executor: bool
) -> Callable[[web.Application], AsyncIterator[None]]:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        if config.follow:
            async for _ in _follower_lifetime(app, config, genesis):
                yield
            return
        node = Node(config, genesis, external_log=executor)
        node.recover()
        app[NODE] = node
        app[DOOR] = node
        l1 = None
        if config.l1 != "none":
            from node.core.l1_service import L1Service

            l1 = L1Service.start(node, config)
        tasks = [
            asyncio.create_task(node.run_log(), name="mempool-log"),
            asyncio.create_task(node.run_sequencer(), name="sequencer"),
        ]
        if l1 is not None:
            app[L1] = l1
            tasks += l1.tasks()
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if l1 is not None:
            l1.close()
        await node.close()

    return ctx


async def _follower_lifetime(
    app: web.Application, config: NodeConfig, genesis: Genesis
) -> AsyncIterator[None]:
    """A follower: the node's store and reads, no mempool, no sequencer, no L1; one task
    that pulls, re-executes and checks the sequencer's blocks."""
    node = Node(config, genesis)
    follower = Follower(node, config.follow, config.follow_poll_ms)
    app[NODE] = node
    app[FOLLOWER] = follower
    log.info(
        "following %s from height %d (its blocks re-executed and checked here)",
        follower.url,
        node.head.height,
    )
    task = asyncio.create_task(follower.run(), name="follower")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await follower.close()
    await node.close()
