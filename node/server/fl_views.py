"""HTTP views of the federated-learning state: models, proposals, messages, jobs, rounds,
global models and stakes. All reads come from one LevelDB snapshot each.

Submissions are sealed by commitment, not by these views: in a round's commit phase only
the participants' commitments exist, and reveals (public once made) come after commits
close, so nobody can copy another participant's work."""

import numpy as np
from aiohttp import web

from node import api_models as api
from node.core.door import Rejected
from node.server.http_util import NODE, parse_hex, parse_uint
from rollup.block import hexb
from rollup.store import Reader
from stf import jobs, models
from stf.aggregation import Decision, Rules
from stf.fixedpoint import dequantize, unpack_int32

_MAX_LIST = 500


class SnapshotKV:
    """The STF's KV view over a store reader; reads only."""

    def __init__(self, reader: Reader) -> None:
        self._reader = reader

    def get(self, key: bytes) -> bytes | None:
        return self._reader.state(key)

    def put(self, key: bytes, value: bytes) -> None:
        raise RuntimeError("read-only view")

    def delete(self, key: bytes) -> None:
        raise RuntimeError("read-only view")


def _int(text: str, what: str) -> int:
    return parse_uint(text, what)


def _model_id(request: web.Request) -> str:
    model_id = request.match_info["model_id"]
    if not models.is_model_id(model_id):
        raise Rejected(400, "bad_model_id", "model ids are 1-64 of [A-Za-z0-9._-]")
    return model_id


def model_json(m: models.Model) -> api.Model:
    return {
        "model_id": m.model_id,
        "owner": hexb(m.owner),
        "arch": [{"name": n, "shape": list(s)} for n, s in m.arch],
        "param_count": m.param_count,
        "frac_bits": m.frac_bits,
        "price": str(m.price),
        "version": m.version,
        "params_hash": hexb(m.params_hash),
        "artifact_hash": hexb(m.artifact_hash) if m.artifact_hash else None,
    }


def proposal_json(p: models.Proposal) -> api.Proposal:
    return {
        "proposal_id": p.proposal_id,
        "kind": "train" if p.kind == "train" else "access",
        "proposer": hexb(p.proposer),
        "model_id": p.model_id,
        "amount": str(p.amount),
        "status": p.status,
        "created_height": p.created_height,
        "expiry_height": p.expiry_height if p.kind == "access" else None,
        "job_id": p.proposal_id if p.kind == "train" else None,
    }


def rules_json(r: Rules) -> api.Rules:
    return {
        "near_copy_norm": r.near_copy_norm,
        "affine_residual": r.affine_residual,
        "isolation_ratio": r.isolation_ratio,
        "opposed_max": r.opposed_max,
        "near_duplicate": r.near_duplicate,
        "replay_tolerance": r.replay_tolerance,
        "krum_outlier": r.krum_outlier,
    }


def job_json(j: jobs.Job) -> api.Job:
    t = j.terms
    return {
        "job_id": j.job_id,
        "model_id": j.model_id,
        "owner": hexb(j.owner),
        "aggregator": hexb(j.aggregator),
        "status": j.status,
        "current_round": j.current_round,
        "pool": str(j.pool),
        "funded": str(j.funded),
        "param_count": j.param_count,
        "frac_bits": j.frac_bits,
        "terms": {
            "rounds": t.rounds,
            "min_participants": t.min_participants,
            "max_participants": t.max_participants,
            "f": t.f,
            "stake_required": str(t.stake_required),
            "round_blocks": t.round_blocks,
            "target_accuracy_bp": t.target_accuracy_bp,
            "local_epochs": t.local_epochs,
            "slash_bps": t.slash_bps,
            "max_samples": t.max_samples,
            "krum_m": t.krum_m,
            "sample_weighting": t.sample_weighting,
            "reveal_blocks": t.reveal_blocks,
            "rules": rules_json(t.rules),
        },
    }


def round_json(kv: SnapshotKV, rnd: jobs.Round) -> api.Round:
    subs: list[api.RoundSubmission] = []
    for client in rnd.submitters:
        info = jobs.get_submission(kv, rnd.job_id, rnd.number, client)
        if info is not None:
            subs.append(
                {
                    "client": hexb(client),
                    "commitment": hexb(info.commitment),
                    "height": info.height,
                    "revealed": info.revealed,
                    "samples": info.samples if info.revealed else None,
                    "params_hash": hexb(info.params_hash) if info.revealed else None,
                    "revealed_height": info.revealed_height if info.revealed else None,
                }
            )
    return {
        "job_id": rnd.job_id,
        "round": rnd.number,
        "status": rnd.status,
        "opened_height": rnd.opened_height,
        "deadline_height": rnd.deadline_height,
        "reveal_deadline_height": rnd.reveal_deadline_height or None,
        "submissions": subs,
        "decisions": [
            {
                "client": hexb(c),
                "reason": reason,
                "score": None if s is None else str(s),
                "outcome": Decision(c, reason).outcome,
                "kept": reason == "kept",
                "excluded": Decision(c, reason).outcome == "excluded",
                "slashed": Decision(c, reason).outcome == "slashed",
            }
            for c, reason, s in rnd.decisions
        ],
        "accuracy_bp": rnd.accuracy_bp,
        "global_hash": hexb(rnd.global_hash) if rnd.global_hash else None,
    }


def _params_response(raw: bytes, count: int, frac_bits: int, fmt: str) -> web.StreamResponse:
    ints = unpack_int32(raw, count)
    if fmt == "f32":
        body = dequantize(ints, frac_bits).astype("<f4").tobytes()
        return web.Response(
            body=body,
            content_type="application/octet-stream",
            headers={"X-Frac-Bits": str(frac_bits), "X-Param-Count": str(count)},
        )
    if fmt == "fixed":
        fixed: api.FixedParams = {
            "frac_bits": frac_bits,
            "count": count,
            "values": np.asarray(ints, dtype=np.int64).tolist(),
        }
        return web.json_response(fixed)
    raise Rejected(
        400, "bad_format", "format is 'fixed' (JSON integers) or 'f32' (little-endian float32)"
    )


async def list_models(request: web.Request) -> web.Response:
    after = request.query.get("after")
    limit = min(_int(request.query.get("limit", "100"), "limit"), _MAX_LIST)
    with request.app[NODE].store.snapshot() as reader:
        kv = SnapshotKV(reader)
        entries = reader.state_keys(b"model/", after.encode() if after else None, limit)
        out = [model_json(models.Model.decode(v)) for _, v in entries]
        body: api.ModelList = {"count": models.get_model_count(kv), "models": out}
        return web.json_response(body)


async def model_count(request: web.Request) -> web.Response:
    with request.app[NODE].store.snapshot() as reader:
        body: api.ModelCount = {"count": models.get_model_count(SnapshotKV(reader))}
    return web.json_response(body)


def _model_or_404(request: web.Request) -> models.Model:
    model_id = _model_id(request)
    with request.app[NODE].store.snapshot() as reader:
        model = models.get_model(SnapshotKV(reader), model_id)
    if model is None:
        raise Rejected(404, "unknown_model", f"no model {model_id!r}")
    return model


async def get_model(request: web.Request) -> web.Response:
    return web.json_response(model_json(_model_or_404(request)))


async def model_price(request: web.Request) -> web.Response:
    model = _model_or_404(request)
    body: api.ModelPrice = {"model_id": model.model_id, "price": str(model.price)}
    return web.json_response(body)


async def model_params(request: web.Request) -> web.StreamResponse:
    model_id = _model_id(request)
    with request.app[NODE].store.snapshot() as reader:
        kv = SnapshotKV(reader)
        model = models.get_model(kv, model_id)
        raw = models.get_model_params(kv, model_id)
    if model is None or raw is None:
        raise Rejected(404, "unknown_model", f"no model {model_id!r}")
    return _params_response(
        raw, model.param_count, model.frac_bits, request.query.get("format", "fixed")
    )


async def model_access(request: web.Request) -> web.Response:
    model_id = _model_id(request)
    buyer = parse_hex(request.match_info["key"], size=32, what="buyer key")
    with request.app[NODE].store.snapshot() as reader:
        sealed = models.get_access(SnapshotKV(reader), model_id, buyer)
    if sealed is None:
        raise Rejected(404, "no_access", "this key has no access to this model")
    body: api.ModelAccess = {"model_id": model_id, "buyer": hexb(buyer), "sealed_key": hexb(sealed)}
    return web.json_response(body)


async def get_blob(request: web.Request) -> web.Response:
    digest = parse_hex(request.match_info["hash"], size=32, what="blob hash")
    with request.app[NODE].store.snapshot() as reader:
        data = SnapshotKV(reader).get(models.blob_key(digest))
    if data is None:
        raise Rejected(404, "unknown_blob", "no blob with this hash")
    return web.Response(body=data, content_type="application/octet-stream")


async def get_proposal(request: web.Request) -> web.Response:
    pid = _int(request.match_info["pid"], "proposal id")
    with request.app[NODE].store.snapshot() as reader:
        proposal = models.get_proposal(SnapshotKV(reader), pid)
    if proposal is None:
        raise Rejected(404, "unknown_proposal", f"no proposal {pid}")
    return web.json_response(proposal_json(proposal))


async def proposal_messages(request: web.Request) -> web.Response:
    pid = _int(request.match_info["pid"], "proposal id")
    with request.app[NODE].store.snapshot() as reader:
        kv = SnapshotKV(reader)
        if models.get_proposal(kv, pid) is None:
            raise Rejected(404, "unknown_proposal", f"no proposal {pid}")
        msgs = models.get_messages(kv, pid)
    body: api.ProposalMessages = {
        "proposal_id": pid,
        "messages": [
            {
                "index": i,
                "author": hexb(m.author),
                "text": m.text,
                "height": m.height,
                "timestamp_ms": m.timestamp_ms,
            }
            for i, m in enumerate(msgs)
        ],
    }
    return web.json_response(body)


async def get_job(request: web.Request) -> web.Response:
    job_id = _int(request.match_info["job_id"], "job id")
    with request.app[NODE].store.snapshot() as reader:
        job = jobs.get_job(SnapshotKV(reader), job_id)
    if job is None:
        raise Rejected(404, "unknown_job", f"no job {job_id}")
    return web.json_response(job_json(job))


_MAX_ROUND = 2**32 - 1  # rounds are 4-byte keys; a larger number names no round


def _round(request: web.Request) -> int:
    number = _int(request.match_info["round"], "round")
    if number > _MAX_ROUND:
        raise Rejected(404, "unknown_round", f"no round {number}")
    return number


async def get_round(request: web.Request) -> web.Response:
    job_id = _int(request.match_info["job_id"], "job id")
    number = _round(request)
    with request.app[NODE].store.snapshot() as reader:
        kv = SnapshotKV(reader)
        rnd = jobs.get_round(kv, job_id, number)
        if rnd is None:
            raise Rejected(404, "unknown_round", f"no round {number} of job {job_id}")
        return web.json_response(round_json(kv, rnd))


async def round_global(request: web.Request) -> web.StreamResponse:
    job_id = _int(request.match_info["job_id"], "job id")
    number = _round(request)
    with request.app[NODE].store.snapshot() as reader:
        kv = SnapshotKV(reader)
        job = jobs.get_job(kv, job_id)
        raw = jobs.get_global(kv, job_id, number)
    if job is None or raw is None:
        raise Rejected(
            404, "unknown_round", f"no global model after round {number} of job {job_id}"
        )
    return _params_response(
        raw, job.param_count, job.frac_bits, request.query.get("format", "fixed")
    )


async def get_stake(request: web.Request) -> web.Response:
    key = parse_hex(request.match_info["key"], size=32, what="key")
    with request.app[NODE].store.snapshot() as reader:
        amount = jobs.get_stake(SnapshotKV(reader), key)
    body: api.Stake = {"key": hexb(key), "stake": str(amount)}
    return web.json_response(body)
