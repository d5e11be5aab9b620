"""The action envelope codec: round trips, one canonical encoding, field rules, signatures
bound to the domain and chain, and no exception other than CodecError on hostile input."""

from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from nacl.signing import SigningKey

from rollup.codec import (
    ENVELOPE_VERSION,
    SIGNING_DOMAIN,
    CodecError,
    action_hash,
    decode_action,
    encode_action,
    pack,
    signing_message,
)
from stf.accounts import Transfer
from stf.fields import MAX_U64, MAX_U256, u256_to_bytes

CHAIN = 1337
KEY = SigningKey(b"\x11" * 32)
OTHER_KEY = SigningKey(b"\x22" * 32)
SENDER = bytes(KEY.verify_key)
TO = b"\x07" * 32
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def body_fields(
    *,
    version: Any = ENVELOPE_VERSION,
    chain_id: Any = CHAIN,
    action_type: Any = "transfer",
    sender: Any = SENDER,
    nonce: Any = 1,
    payload: Any = None,
) -> list[Any]:
    if payload is None:
        payload = [TO, u256_to_bytes(5)]
    return [version, chain_id, action_type, sender, nonce, payload]


def signed_wire(fields: list[Any], key: SigningKey = KEY) -> bytes:
    """Sign the fields exactly as encode_action would, whatever they contain."""
    signature = key.sign(signing_message(fields[1], pack(fields))).signature
    return pack([*fields, signature])


def assemble(parts: list[bytes], header: bytes = b"\x97") -> bytes:
    return header + b"".join(parts)


def wire_parts(fields: list[Any], key: SigningKey = KEY) -> list[bytes]:
    """The seven canonically packed fields of a validly signed action, one bytes per field."""
    obj = msgpack.unpackb(signed_wire(fields, key))
    return [pack(f) for f in obj]


def refused(raw: bytes, chain_id: int = CHAIN) -> CodecError:
    with pytest.raises(CodecError) as info:
        decode_action(raw, chain_id)
    return info.value


GOOD = encode_action(KEY, CHAIN, "transfer", 1, Transfer(TO, 5))


def test_reference_action_decodes() -> None:
    sa = decode_action(GOOD, CHAIN)
    assert sa.action.sender == SENDER
    assert sa.action.payload == Transfer(TO, 5)
    assert assemble(wire_parts(body_fields())) == GOOD


# -- round trip and hash --------------------------------------------------------------------

seeds = st.binary(min_size=32, max_size=32)
chain_ids = st.integers(0, MAX_U64)
nonces = st.integers(1, MAX_U64)
recipients = st.binary(min_size=32, max_size=32)
amounts = st.integers(0, MAX_U256)


@FAST
@given(seed=seeds, chain_id=chain_ids, nonce=nonces, to=recipients, amount=amounts)
def test_round_trip_returns_the_same_fields(
    seed: bytes, chain_id: int, nonce: int, to: bytes, amount: int
) -> None:
    key = SigningKey(seed)
    wire = encode_action(key, chain_id, "transfer", nonce, Transfer(to, amount))
    sa = decode_action(wire, chain_id)
    assert sa.chain_id == chain_id
    assert sa.wire == wire
    assert sa.action.type == "transfer"
    assert sa.action.sender == bytes(key.verify_key)
    assert sa.action.nonce == nonce
    assert sa.action.payload == Transfer(to, amount)
    assert len(sa.signature) == 64
    body = pack(
        body_fields(
            chain_id=chain_id,
            sender=bytes(key.verify_key),
            nonce=nonce,
            payload=[to, u256_to_bytes(amount)],
        )
    )
    assert sa.signing_message == SIGNING_DOMAIN + chain_id.to_bytes(8, "big") + body
    assert sa.action.hash == action_hash(sa.signing_message)


@FAST
@given(
    seed=seeds,
    chain_id=st.integers(0, MAX_U64 - 1),
    nonce=st.integers(1, MAX_U64 - 1),
    to=recipients,
    amount=st.integers(0, MAX_U256 - 1),
)
def test_hash_is_stable_and_changes_with_every_field(
    seed: bytes, chain_id: int, nonce: int, to: bytes, amount: int
) -> None:
    key = SigningKey(seed)

    def h(
        k: SigningKey = key, c: int = chain_id, n: int = nonce, t: bytes = to, a: int = amount
    ) -> bytes:
        return decode_action(encode_action(k, c, "transfer", n, Transfer(t, a)), c).action.hash

    base = h()
    assert h() == base  # deterministic signing, one encoding, one hash
    other_to = bytes([to[0] ^ 1]) + to[1:]
    variants = [
        h(k=SigningKey(bytes([seed[0] ^ 1]) + seed[1:])),
        h(c=chain_id + 1),
        h(n=nonce + 1),
        h(t=other_to),
        h(a=amount + 1),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


# -- canonical form -----------------------------------------------------------------------


def _replace(index: int, raw: bytes) -> bytes:
    parts = wire_parts(body_fields())
    parts[index] = raw
    return assemble(parts)


NON_CANONICAL = {
    "version_as_uint8": _replace(0, b"\xcc\x01"),
    "chain_id_as_uint32": _replace(1, b"\xce\x00\x00\x05\x39"),
    "chain_id_as_uint64": _replace(1, b"\xcf" + CHAIN.to_bytes(8, "big")),
    "type_as_str8": _replace(2, b"\xd9\x08transfer"),
    "type_as_str16": _replace(2, b"\xda\x00\x08transfer"),
    "sender_as_bin16": _replace(3, b"\xc5\x00\x20" + SENDER),
    "nonce_as_uint8": _replace(4, b"\xcc\x01"),
    "nonce_as_uint32": _replace(4, b"\xce\x00\x00\x00\x01"),
    "nonce_as_int64": _replace(4, b"\xd3" + (1).to_bytes(8, "big")),
    "payload_as_array16": _replace(5, b"\xdc\x00\x02" + pack(TO) + pack(b"\x05")),
    "amount_as_bin16": _replace(5, b"\x92" + pack(TO) + b"\xc5\x00\x01\x05"),
    "signature_as_bin16": assemble(
        [*wire_parts(body_fields())[:6], b"\xc5\x00\x40" + decode_action(GOOD, CHAIN).signature]
    ),
    "envelope_as_array16": assemble(wire_parts(body_fields()), header=b"\xdc\x00\x07"),
    "envelope_as_array32": assemble(wire_parts(body_fields()), header=b"\xdd\x00\x00\x00\x07"),
}


@pytest.mark.parametrize("name", sorted(NON_CANONICAL))
def test_non_canonical_reencoding_is_refused(name: str) -> None:
    raw = NON_CANONICAL[name]
    assert msgpack.unpackb(raw) == msgpack.unpackb(GOOD)  # same value, other bytes
    assert raw != GOOD
    assert refused(raw).code == "non_canonical"


@pytest.mark.parametrize("extra", [b"\x00", b"\xc0", GOOD])
def test_trailing_bytes_are_refused(extra: bytes) -> None:
    assert refused(GOOD + extra).code == "malformed"


def test_every_truncation_is_refused_with_codec_error() -> None:
    for cut in range(len(GOOD)):
        err = refused(GOOD[:cut])
        assert err.code in ("malformed", "non_canonical"), (cut, err.code)


# -- field rules --------------------------------------------------------------------------

SIG = b"\x00" * 64  # field checks run before signature verification


def _bad(**kw: Any) -> bytes:
    return pack([*body_fields(**kw), SIG])


FIELD_CASES: dict[str, tuple[bytes, str]] = {
    "version_0": (_bad(version=0), "bad_version"),
    "version_2": (_bad(version=2), "bad_version"),
    "version_bool": (_bad(version=True), "bad_version"),
    "version_str": (_bad(version="1"), "bad_version"),
    "version_map": (_bad(version={"v": 1}), "bad_version"),
    "chain_other": (_bad(chain_id=CHAIN + 1), "wrong_chain"),
    "chain_negative": (_bad(chain_id=-CHAIN), "wrong_chain"),
    "chain_float": (_bad(chain_id=float(CHAIN)), "wrong_chain"),
    "type_unknown": (_bad(action_type="transfers"), "unknown_action"),
    "type_empty": (_bad(action_type=""), "unknown_action"),
    "type_bytes": (_bad(action_type=b"transfer"), "malformed"),
    "type_too_long": (_bad(action_type="t" * 65), "malformed"),
    "sender_31": (_bad(sender=SENDER[:31]), "malformed"),
    "sender_33": (_bad(sender=SENDER + b"\x00"), "malformed"),
    "sender_str": (_bad(sender="a" * 32), "malformed"),
    "sender_map": (_bad(sender={"k": SENDER}), "malformed"),
    "nonce_0": (_bad(nonce=0), "malformed"),
    "nonce_true": (_bad(nonce=True), "malformed"),
    "nonce_negative": (_bad(nonce=-1), "malformed"),
    "nonce_int64_min": (_bad(nonce=-(2**63)), "malformed"),
    "nonce_float_2_64": (_bad(nonce=2.0**64), "malformed"),
    "nonce_none": (_bad(nonce=None), "malformed"),
    "payload_bytes": (_bad(payload=b"\x00"), "malformed"),
    "payload_int": (_bad(payload=5), "malformed"),
    "payload_map": (_bad(payload={"to": TO, "amount": b"\x05"}), "malformed"),
    "payload_empty": (_bad(payload=[]), "bad_payload"),
    "payload_one_field": (_bad(payload=[TO]), "bad_payload"),
    "payload_three_fields": (_bad(payload=[TO, b"\x05", b""]), "bad_payload"),
    "to_31": (_bad(payload=[TO[:31], b"\x05"]), "bad_payload"),
    "to_map": (_bad(payload=[{"to": TO}, b"\x05"]), "bad_payload"),
    "amount_leading_zero": (_bad(payload=[TO, b"\x00\x05"]), "bad_payload"),
    "amount_single_zero_byte": (_bad(payload=[TO, b"\x00"]), "bad_payload"),
    "amount_33_bytes": (_bad(payload=[TO, b"\x01" * 33]), "bad_payload"),
    "amount_int": (_bad(payload=[TO, 5]), "bad_payload"),
    "amount_negative_int": (_bad(payload=[TO, -5]), "bad_payload"),
    "amount_str": (_bad(payload=[TO, "5"]), "bad_payload"),
    "amount_map": (_bad(payload=[TO, {"v": b"\x05"}]), "bad_payload"),
    "signature_63": (pack([*body_fields(), SIG[:63]]), "malformed"),
    "signature_65": (pack([*body_fields(), SIG + b"\x00"]), "malformed"),
    "signature_str": (pack([*body_fields(), "s" * 64]), "malformed"),
    "signature_map": (pack([*body_fields(), {"s": SIG}]), "malformed"),
    "envelope_map": (pack(dict(enumerate([*body_fields(), SIG]))), "malformed"),
    "envelope_str_keyed_map": (pack({"version": 1, "chain_id": CHAIN}), "malformed"),
    "envelope_6_fields": (pack(body_fields()), "malformed"),
    "envelope_8_fields": (pack([*body_fields(), SIG, SIG]), "malformed"),
    "envelope_bytes": (pack(GOOD), "malformed"),
}


@pytest.mark.parametrize("name", sorted(FIELD_CASES))
def test_field_rule_violation_is_refused_with_its_code(name: str) -> None:
    raw, code = FIELD_CASES[name]
    assert refused(raw).code == code


def test_field_checks_apply_even_when_validly_signed() -> None:
    # the signer is honest; the payload is not canonical money
    assert refused(signed_wire(body_fields(payload=[TO, b"\x00\x05"]))).code == "bad_payload"
    assert refused(signed_wire(body_fields(nonce=0))).code == "malformed"


def test_nonce_bounds_are_inclusive() -> None:
    for nonce in (1, MAX_U64):
        assert decode_action(signed_wire(body_fields(nonce=nonce)), CHAIN).action.nonce == nonce


def test_amount_bounds() -> None:
    zero = decode_action(signed_wire(body_fields(payload=[TO, b""])), CHAIN)
    assert zero.action.payload.amount == 0
    top = decode_action(signed_wire(body_fields(payload=[TO, b"\xff" * 32])), CHAIN)
    assert top.action.payload.amount == MAX_U256


def test_oversized_transfer_body_is_too_large() -> None:
    assert refused(_bad(payload=[TO, b"\x01" * 5000])).code == "too_large"


# -- signatures ---------------------------------------------------------------------------


def _flip(raw: bytes, offset: int, bit: int) -> bytes:
    return raw[:offset] + bytes([raw[offset] ^ (1 << bit)]) + raw[offset + 1 :]


@FAST
@given(offset=st.integers(0, 63), bit=st.integers(0, 7))
def test_flipped_signature_bit_fails(offset: int, bit: int) -> None:
    sig_start = len(GOOD) - 64
    assert refused(_flip(GOOD, sig_start + offset, bit)).code == "bad_signature"


@FAST
@given(offset=st.integers(0, 31), bit=st.integers(0, 7), which=st.sampled_from(["to", "sender"]))
def test_flipped_body_bit_fails(offset: int, bit: int, which: str) -> None:
    start = GOOD.index(TO if which == "to" else SENDER)
    raw = _flip(GOOD, start + offset, bit)
    assert decode_action(raw, CHAIN, verify=False)  # still a well-formed action
    assert refused(raw).code == "bad_signature"


def test_flipped_amount_and_nonce_fail() -> None:
    amount_at = GOOD.index(b"\xc4\x01\x05") + 2
    assert refused(_flip(GOOD, amount_at, 1)).code == "bad_signature"  # 5 -> 7
    nonce_at = GOOD.index(SENDER) + 32  # positive fixint 1
    assert refused(_flip(GOOD, nonce_at, 1)).code == "bad_signature"  # 1 -> 3


def test_signature_for_chain_1_does_not_verify_on_chain_2() -> None:
    on_1 = encode_action(KEY, 1, "transfer", 1, Transfer(TO, 5))
    assert decode_action(on_1, 1).action.sender == SENDER
    rewrapped = msgpack.unpackb(on_1)
    rewrapped[1] = 2
    raw = pack(rewrapped)
    assert len(raw) == len(on_1)
    assert refused(raw, chain_id=2).code == "bad_signature"
    assert refused(on_1, chain_id=2).code == "wrong_chain"


def test_signature_without_domain_tag_does_not_verify() -> None:
    fields = body_fields()
    body = pack(fields)
    for message in (body, CHAIN.to_bytes(8, "big") + body, SIGNING_DOMAIN + body):
        raw = pack([*fields, KEY.sign(message).signature])
        assert refused(raw).code == "bad_signature"


def test_signature_by_another_key_fails() -> None:
    fields = body_fields()
    forged = pack([*fields, OTHER_KEY.sign(signing_message(CHAIN, pack(fields))).signature])
    assert refused(forged).code == "bad_signature"
    assert decode_action(forged, CHAIN, verify=False).action.sender == SENDER


@pytest.mark.parametrize("sender", [b"\x00" * 32, b"\xff" * 32, b"\x01" + b"\x00" * 31])
def test_invalid_public_key_as_sender_fails_cleanly(sender: bytes) -> None:
    raw = pack([*body_fields(sender=sender), KEY.sign(b"x").signature])
    assert refused(raw).code == "bad_signature"


# -- fuzz ---------------------------------------------------------------------------------


def _decode_only_codec_errors(raw: bytes) -> None:
    try:
        decode_action(raw, CHAIN)
    except CodecError as exc:
        assert exc.code and isinstance(exc.detail, str)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fuzz_random_bytes_only_raise_codec_error(raw: bytes) -> None:
    _decode_only_codec_errors(raw)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200).map(lambda b: GOOD[:1] + b))
def test_fuzz_bytes_behind_a_fixarray7_header_only_raise_codec_error(raw: bytes) -> None:
    _decode_only_codec_errors(raw)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_fuzz_mutated_valid_action_only_raises_codec_error(data: st.DataObject) -> None:
    raw = bytearray(GOOD)
    for _ in range(data.draw(st.integers(1, 4))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    _decode_only_codec_errors(bytes(raw))


leaves = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), MAX_U64)
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=70)
    | st.just("transfer")
    | st.just(SENDER)
    | st.just(CHAIN)
)
values = st.recursive(
    leaves,
    lambda inner: (
        st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=24,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_fuzz_random_msgpack_values_only_raise_codec_error(obj: Any) -> None:
    _decode_only_codec_errors(pack(obj))


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=7, max_size=7))
def test_fuzz_envelope_shaped_values_only_raise_codec_error(obj: list[Any]) -> None:
    _decode_only_codec_errors(pack(obj))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 6), values)
def test_fuzz_one_field_replaced_only_raises_codec_error(index: int, value: Any) -> None:
    obj = msgpack.unpackb(GOOD)
    obj[index] = value
    raw = pack(obj)
    _decode_only_codec_errors(raw)
    if raw != GOOD:
        with pytest.raises(CodecError):
            decode_action(raw, CHAIN)
