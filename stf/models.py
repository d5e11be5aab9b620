"""Models and paid access: upload, price, access proposals with escrow, approvals, messages.

A model holds public initial/global parameters (fixed point) for training, and optionally
an encrypted artifact (content-addressed bytes) that buyers pay to decrypt: the owner
approves an access proposal by posting the artifact key sealed to the buyer's public key.
"""

import hashlib
import re
from dataclasses import dataclass
from typing import Any

from stf import accounts
from stf.context import Action, BlockInfo, Effects
from stf.encoding import from_u256, pack, u64_key, u256, unpack
from stf.errors import InvalidAction
from stf.fixedpoint import DEFAULT_MAX_ABS, MAX_FRAC_BITS, MIN_FRAC_BITS, pack_int32, quantize
from stf.state import KV

MAX_PARAMS = 4_000_000
MAX_LAYERS = 256
MAX_ARTIFACT_BYTES = 8 * 1024 * 1024
MAX_MESSAGE_BYTES = 2000
MAX_EXPIRY_BLOCKS = 10_000_000
_MODEL_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_MODEL_COUNT = b"count/models"
_PROPOSAL_COUNT = b"count/proposals"

OPEN, APPROVED, REJECTED, EXPIRED, ACTIVE = "open", "approved", "rejected", "expired", "active"


def blob_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32, person=b"fr/blob/v1").digest()


@dataclass(frozen=True)
class Model:
    model_id: str
    owner: bytes
    arch: tuple[tuple[str, tuple[int, ...]], ...]
    frac_bits: int
    price: int
    artifact_hash: bytes  # empty when there is no artifact
    version: int
    params_hash: bytes

    @property
    def param_count(self) -> int:
        return param_count(self.arch)

    def encode(self) -> bytes:
        arch = [[name, list(shape)] for name, shape in self.arch]
        return pack(
            [
                self.model_id,
                self.owner,
                arch,
                self.frac_bits,
                u256(self.price),
                self.artifact_hash,
                self.version,
                self.params_hash,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "Model":
        mid, owner, arch, frac, price, art, version, phash = unpack(raw)
        return Model(
            mid,
            owner,
            tuple((n, tuple(s)) for n, s in arch),
            frac,
            from_u256(price),
            art,
            version,
            phash,
        )


@dataclass(frozen=True)
class Proposal:
    proposal_id: int
    kind: str  # "access" or "train"
    proposer: bytes
    model_id: str
    amount: int
    status: str
    created_height: int
    expiry_height: int

    def encode(self) -> bytes:
        return pack(
            [
                self.proposal_id,
                self.kind,
                self.proposer,
                self.model_id,
                u256(self.amount),
                self.status,
                self.created_height,
                self.expiry_height,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "Proposal":
        pid, kind, proposer, mid, amount, status, created, expiry = unpack(raw)
        return Proposal(pid, kind, proposer, mid, from_u256(amount), status, created, expiry)


@dataclass(frozen=True)
class Message:
    author: bytes
    text: str
    height: int
    timestamp_ms: int


# -- keys and getters -------------------------------------------------------------------


def model_key(model_id: str) -> bytes:
    return b"model/" + model_id.encode()


def model_params_key(model_id: str) -> bytes:
    return b"model-params/" + model_id.encode()


def blob_key(digest: bytes) -> bytes:
    return b"blob/" + digest


def proposal_key(pid: int) -> bytes:
    return b"proposal/" + u64_key(pid)


def message_key(pid: int, index: int) -> bytes:
    return b"msg/" + u64_key(pid) + index.to_bytes(4, "big")


def message_count_key(pid: int) -> bytes:
    return b"count/msg/" + u64_key(pid)


def access_key(model_id: str, buyer: bytes) -> bytes:
    return b"access/" + model_id.encode() + b"/" + buyer


def param_count(arch: tuple[tuple[str, tuple[int, ...]], ...]) -> int:
    total = 0
    for _, shape in arch:
        size = 1
        for dim in shape:
            size *= dim
        total += size
    return total


def _counter(state: KV, key: bytes) -> int:
    raw = state.get(key)
    return 0 if raw is None else int.from_bytes(raw, "big")


def get_model_count(state: KV) -> int:
    return _counter(state, _MODEL_COUNT)


def get_model(state: KV, model_id: str) -> Model | None:
    raw = state.get(model_key(model_id))
    return None if raw is None else Model.decode(raw)


def require_model(state: KV, model_id: str) -> Model:
    model = get_model(state, model_id)
    if model is None:
        raise InvalidAction("unknown_model", f"no model {model_id!r}")
    return model


def get_model_params(state: KV, model_id: str) -> bytes | None:
    return state.get(model_params_key(model_id))


def get_proposal(state: KV, pid: int) -> Proposal | None:
    raw = state.get(proposal_key(pid))
    return None if raw is None else Proposal.decode(raw)


def require_proposal(state: KV, pid: int) -> Proposal:
    proposal = get_proposal(state, pid)
    if proposal is None:
        raise InvalidAction("unknown_proposal", f"no proposal {pid}")
    return proposal


def get_messages(state: KV, pid: int) -> list[Message]:
    count = _counter(state, message_count_key(pid))
    out = []
    for i in range(count):
        raw = state.get(message_key(pid, i))
        if raw is not None:
            author, text, height, ts = unpack(raw)
            out.append(Message(author, text, height, ts))
    return out


def get_access(state: KV, model_id: str, buyer: bytes) -> bytes | None:
    return state.get(access_key(model_id, buyer))


def is_model_id(model_id: str) -> bool:
    return bool(_MODEL_ID.match(model_id))


def new_proposal_id(state: KV) -> int:
    pid = _counter(state, _PROPOSAL_COUNT) + 1
    state.put(_PROPOSAL_COUNT, pid.to_bytes(8, "big"))
    return pid


def put_proposal(state: KV, proposal: Proposal) -> None:
    state.put(proposal_key(proposal.proposal_id), proposal.encode())


# -- upload / price -----------------------------------------------------------------------


@dataclass(frozen=True)
class Upload:
    model_id: str
    arch: tuple[tuple[str, tuple[int, ...]], ...]
    params: bytes
    frac_bits: int
    price: int
    artifact: bytes


def _check_arch(arch: tuple[tuple[str, tuple[int, ...]], ...]) -> int:
    if not 1 <= len(arch) <= MAX_LAYERS:
        raise InvalidAction("bad_arch", f"a model has 1..{MAX_LAYERS} layers")
    names = [name for name, _ in arch]
    if len(set(names)) != len(names) or not all(names):
        raise InvalidAction("bad_arch", "layer names must be unique and non-empty")
    if any(not shape or any(d < 1 for d in shape) for _, shape in arch):
        raise InvalidAction("bad_arch", "every layer has a shape of positive dimensions")
    count = param_count(arch)
    if count > MAX_PARAMS:
        raise InvalidAction("too_large", f"at most {MAX_PARAMS} parameters")
    return count


def quantize_params(raw: bytes, expected: int, frac_bits: int) -> bytes:
    """float32 wire bytes -> packed fixed-point int32 (exact and deterministic)."""
    import numpy as np

    if len(raw) != 4 * expected:
        raise InvalidAction(
            "wrong_shape", f"expected {expected} float32 values, got {len(raw) // 4}"
        )
    try:
        return pack_int32(
            quantize(np.frombuffer(raw, dtype="<f4").astype(np.float32), frac_bits, DEFAULT_MAX_ABS)
        )
    except ValueError as exc:
        raise InvalidAction("bad_params", str(exc)) from None


def process_upload(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: Upload = action.payload
    if not is_model_id(p.model_id):
        raise InvalidAction("bad_model_id", "model ids are 1-64 of [A-Za-z0-9._-]")
    if not MIN_FRAC_BITS <= p.frac_bits <= MAX_FRAC_BITS:
        raise InvalidAction("bad_scale", f"frac_bits must be in [{MIN_FRAC_BITS}, {MAX_FRAC_BITS}]")
    count = _check_arch(p.arch)
    fixed = quantize_params(p.params, count, p.frac_bits)
    existing = get_model(state, p.model_id)
    if existing is not None and existing.owner != action.sender:
        raise InvalidAction("not_owner", f"model {p.model_id!r} belongs to another key")
    artifact_hash = b""
    if p.artifact:
        artifact_hash = blob_hash(p.artifact)
        state.put(blob_key(artifact_hash), p.artifact)
    version = 1 if existing is None else existing.version + 1
    model = Model(
        p.model_id,
        action.sender,
        p.arch,
        p.frac_bits,
        p.price,
        artifact_hash,
        version,
        blob_hash(fixed),
    )
    state.put(model_key(p.model_id), model.encode())
    state.put(model_params_key(p.model_id), fixed)
    if existing is None:
        state.put(_MODEL_COUNT, (get_model_count(state) + 1).to_bytes(8, "big"))
    effects.emit(
        "ModelUploaded" if existing is None else "ModelUpdated",
        model_id=p.model_id,
        owner=action.sender,
        version=version,
        param_count=count,
        params_hash=model.params_hash,
        artifact_hash=artifact_hash,
        price=p.price,
    )


@dataclass(frozen=True)
class SetPrice:
    model_id: str
    price: int


def process_set_price(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: SetPrice = action.payload
    model = require_model(state, p.model_id)
    if model.owner != action.sender:
        raise InvalidAction("not_owner", "only the model's owner sets its price")
    state.put(model_key(p.model_id), Model(**{**model.__dict__, "price": p.price}).encode())
    effects.emit("PriceSet", model_id=p.model_id, price=p.price)


# -- access proposals -------------------------------------------------------------------------


def open_access_proposal(
    state: KV,
    action: Action,
    block: BlockInfo,
    effects: Effects,
    model_id: str,
    amount: int,
    expiry_blocks: int,
) -> None:
    model = require_model(state, model_id)
    if model.owner == action.sender:
        raise InvalidAction("own_model", "an owner does not buy access to its own model")
    if get_access(state, model_id, action.sender) is not None:
        raise InvalidAction("already_has_access", "this key already has access")
    if amount != model.price:
        raise InvalidAction(
            "price_mismatch", f"the model's price is {model.price}, offered {amount}"
        )
    _check_expiry(expiry_blocks)
    accounts.debit(state, action.sender, amount)
    pid = new_proposal_id(state)
    put_proposal(
        state,
        Proposal(
            pid,
            "access",
            action.sender,
            model_id,
            amount,
            OPEN,
            block.height,
            block.height + expiry_blocks,
        ),
    )
    effects.emit(
        "ProposalCreated",
        proposal_id=pid,
        kind="access",
        model_id=model_id,
        proposer=action.sender,
        amount=amount,
    )


def _check_expiry(expiry_blocks: int) -> None:
    if not 1 <= expiry_blocks <= MAX_EXPIRY_BLOCKS:
        raise InvalidAction("bad_expiry", f"expiry is 1..{MAX_EXPIRY_BLOCKS} blocks")


@dataclass(frozen=True)
class Approve:
    proposal_id: int
    sealed_key: bytes


def _open_access(state: KV, pid: int) -> tuple[Proposal, Model]:
    proposal = require_proposal(state, pid)
    if proposal.kind != "access":
        raise InvalidAction("wrong_kind", "only access proposals are approved or rejected")
    if proposal.status != OPEN:
        raise InvalidAction("proposal_closed", f"proposal {pid} is {proposal.status}")
    return proposal, require_model(state, proposal.model_id)


def process_approve(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: Approve = action.payload
    proposal, model = _open_access(state, p.proposal_id)
    if model.owner != action.sender:
        raise InvalidAction("not_owner", "only the model's owner approves")
    if block.height > proposal.expiry_height:
        raise InvalidAction("proposal_expired", "the proposal expired")
    if not p.sealed_key:
        raise InvalidAction("missing_key", "approval posts the key sealed to the buyer")
    accounts.credit(state, model.owner, proposal.amount)
    put_proposal(state, Proposal(**{**proposal.__dict__, "status": APPROVED}))
    state.put(access_key(model.model_id, proposal.proposer), p.sealed_key)
    effects.emit(
        "PaymentApproved",
        proposal_id=proposal.proposal_id,
        model_id=model.model_id,
        buyer=proposal.proposer,
        owner=model.owner,
        amount=proposal.amount,
    )


@dataclass(frozen=True)
class ProposalRef:
    proposal_id: int


def process_reject(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: ProposalRef = action.payload
    proposal, model = _open_access(state, p.proposal_id)
    if model.owner != action.sender:
        raise InvalidAction("not_owner", "only the model's owner rejects")
    _refund(state, proposal, REJECTED, effects)


def process_cancel(state: KV, action: Action, block: BlockInfo, effects: Effects) -> None:
    p: ProposalRef = action.payload
    proposal, _ = _open_access(state, p.proposal_id)
    if proposal.proposer != action.sender:
        raise InvalidAction("not_proposer", "only the proposer cancels")
    if block.height <= proposal.expiry_height:
        raise InvalidAction(
            "not_expired", f"the proposal is open until height {proposal.expiry_height}"
        )
    _refund(state, proposal, EXPIRED, effects)


def _refund(state: KV, proposal: Proposal, status: str, effects: Effects) -> None:
    accounts.credit(state, proposal.proposer, proposal.amount)
    put_proposal(state, Proposal(**{**proposal.__dict__, "status": status}))
    effects.emit(
        "ProposalClosed", proposal_id=proposal.proposal_id, status=status, refunded=proposal.amount
    )


# -- messages ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PostMessage:
    proposal_id: int
    text: str


def may_post(state: KV, proposal: Proposal, author: bytes, extra_members: Any) -> bool:
    if author == proposal.proposer:
        return True
    model = get_model(state, proposal.model_id)
    return (model is not None and model.owner == author) or bool(
        extra_members(state, proposal, author)
    )


def post_message(
    state: KV, action: Action, block: BlockInfo, effects: Effects, extra_members: Any
) -> None:
    p: PostMessage = action.payload
    proposal = require_proposal(state, p.proposal_id)
    if not p.text:
        raise InvalidAction("empty_message", "a message has text")
    if not may_post(state, proposal, action.sender, extra_members):
        raise InvalidAction("not_a_party", "only the proposal's parties post messages")
    index = _counter(state, message_count_key(p.proposal_id))
    state.put(
        message_key(p.proposal_id, index),
        pack([action.sender, p.text, block.height, block.timestamp_ms]),
    )
    state.put(message_count_key(p.proposal_id), (index + 1).to_bytes(8, "big"))
    effects.emit("MessagePosted", proposal_id=p.proposal_id, index=index, author=action.sender)
