"""The action envelope: canonical msgpack, ed25519 signatures, one hash per action.

Wire form (msgpack array, fixed order, no maps):
    [version, chain_id, type, sender(32), nonce, payload(list), signature(64)]
The signed message is DOMAIN || chain_id (8 bytes, big-endian) || body, where body is the
msgpack encoding of the first six fields. A body whose re-encoding differs from the bytes
received is refused, so every action has exactly one encoding and one hash:
    hash = blake2b-256 under "fr/action/v1" of the signed message.
"""

import threading
from dataclasses import dataclass
from typing import Any

import msgpack
from nacl.bindings import crypto_sign_open
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey

from rollup.hashing import ACTION_DOMAIN, h256
from stf.actions import decode_payload, encode_payload, get_spec
from stf.context import Action
from stf.errors import InvalidAction
from stf.fields import MAX_U64

ENVELOPE_VERSION = 1
SIGNING_DOMAIN = b"fedrollup/action/v1\x00"
_WIRE_FIELDS = 7
_MAX_TYPE_LEN = 64


class CodecError(Exception):
    """A body that is not a well-formed, canonical, correctly signed action."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


@dataclass(frozen=True)
class SignedAction:
    action: Action
    chain_id: int
    wire: bytes
    signing_message: bytes
    signature: bytes


_packers = threading.local()  # a Packer is not shareable across threads; reusing one per
# thread skips building one per call (packb does), which the per-action paths felt


def pack(obj: Any) -> bytes:
    """Canonical msgpack, as msgpack.packb(obj, use_bin_type=True) gives."""
    packer: msgpack.Packer | None = getattr(_packers, "packer", None)
    if packer is None:
        packer = _packers.packer = msgpack.Packer(use_bin_type=True)
    return packer.pack(obj)  # type: ignore[no-any-return]


def signing_message(chain_id: int, body: bytes) -> bytes:
    return SIGNING_DOMAIN + chain_id.to_bytes(8, "big") + body


def action_hash(message: bytes) -> bytes:
    return h256(ACTION_DOMAIN, message)


def encode_action(
    key: SigningKey, chain_id: int, action_type: str, nonce: int, payload: Any
) -> bytes:
    """Build, sign and encode an action; the client-side half of decode_action."""
    sender = bytes(key.verify_key)
    body_fields = [
        ENVELOPE_VERSION,
        chain_id,
        action_type,
        sender,
        nonce,
        encode_payload(action_type, payload),
    ]
    message = signing_message(chain_id, pack(body_fields))
    signature = key.sign(message).signature
    return pack([*body_fields, signature])


def _unpack_strict(raw: bytes) -> Any:
    try:
        return msgpack.unpackb(raw, raw=False, use_list=True, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError("malformed", f"not a single msgpack value: {exc}") from None
    except Exception as exc:  # msgpack raises a few other types on hostile input
        raise CodecError("malformed", f"undecodable body: {type(exc).__name__}") from None


def _check_envelope(obj: Any, expected_chain_id: int) -> None:
    if type(obj) is not list or len(obj) != _WIRE_FIELDS:
        raise CodecError("malformed", f"expected an array of {_WIRE_FIELDS} fields")
    version, chain_id, action_type, sender, nonce, payload, signature = obj
    if type(version) is not int or version != ENVELOPE_VERSION:
        raise CodecError("bad_version", f"unsupported envelope version {version!r}")
    if type(chain_id) is not int or chain_id != expected_chain_id:
        raise CodecError("wrong_chain", f"chain id {chain_id!r} is not {expected_chain_id}")
    if type(action_type) is not str or len(action_type) > _MAX_TYPE_LEN:
        raise CodecError("malformed", "action type must be a short string")
    if type(sender) is not bytes or len(sender) != 32:
        raise CodecError("malformed", "sender must be a 32-byte ed25519 public key")
    if type(nonce) is not int or not 1 <= nonce <= MAX_U64:
        raise CodecError("malformed", "nonce must be an integer in [1, 2^64)")
    if type(payload) is not list:
        raise CodecError("malformed", "payload must be an array")
    if type(signature) is not bytes or len(signature) != 64:
        raise CodecError("malformed", "signature must be 64 bytes")


def decode_action(raw: bytes, expected_chain_id: int, *, verify: bool = True) -> SignedAction:
    """Strictly decode one action; with verify=False the signature is left to the caller."""
    obj = _unpack_strict(raw)
    _check_envelope(obj, expected_chain_id)
    if pack(obj) != raw:
        raise CodecError("non_canonical", "body is not in canonical msgpack form")
    _, chain_id, action_type, sender, nonce, raw_payload, signature = obj
    try:
        spec = get_spec(action_type)
        if len(raw) > spec.max_body_bytes:
            raise CodecError(
                "too_large", f"{action_type} bodies are at most {spec.max_body_bytes} bytes"
            )
        payload = decode_payload(action_type, raw_payload)
    except InvalidAction as exc:
        raise CodecError(exc.code, exc.detail) from None
    # The canonical wire is fixarray(7) + six fields + bin8(64) signature; the body is the
    # same six fields under fixarray(6), so it is sliced, not re-encoded.
    message = signing_message(chain_id, b"\x96" + raw[1 : len(raw) - 66])
    if verify:
        verify_signature(sender, message, signature)
    action = Action(
        type=action_type, sender=sender, nonce=nonce, payload=payload, hash=action_hash(message)
    )
    return SignedAction(action, chain_id, raw, message, signature)


def verify_signature(sender: bytes, message: bytes, signature: bytes) -> None:
    try:
        crypto_sign_open(signature + message, sender)
    except (BadSignatureError, ValueError):
        raise CodecError(
            "bad_signature", "signature does not verify for this sender and chain"
        ) from None
