"""Typed payload fields: strict decoding of msgpack-decoded values into Python values.

Each action payload is a msgpack array with a fixed field order (no maps: one encoding per
value). Integers above 64 bits (wei amounts) travel as minimal big-endian byte strings, so
there is exactly one encoding of every amount.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stf.errors import InvalidAction

MAX_U32 = 2**32 - 1
MAX_U64 = 2**64 - 1
MAX_U256 = 2**256 - 1


@dataclass(frozen=True)
class Field:
    name: str
    decode: Callable[[Any], Any]
    encode: Callable[[Any], Any]


def _bad(name: str, why: str) -> InvalidAction:
    return InvalidAction("bad_payload", f"field {name!r}: {why}")


def uint(name: str, max_value: int, what: str) -> Field:
    """An integer in [0, max_value]: every integer field is bounded at decode by what the STF
    can hold (its key encodings and stored records), so no accepted action can carry a
    number the rules or the read routes cannot represent."""

    def decode(v: Any) -> int:
        if type(v) is not int or not 0 <= v <= max_value:
            raise _bad(name, f"expected {what}")
        return v

    return Field(name, decode, lambda v: v)


def u64(name: str) -> Field:
    return uint(name, MAX_U64, "an unsigned 64-bit integer")


def u32(name: str) -> Field:
    """Round numbers and other 4-byte key components."""
    return uint(name, MAX_U32, "an unsigned 32-bit integer")


def u256_to_bytes(value: int) -> bytes:
    if not 0 <= value <= MAX_U256:
        raise ValueError("uint256 out of range")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def u256(name: str) -> Field:
    """A uint256 as minimal big-endian bytes (zero is the empty string)."""

    def decode(v: Any) -> int:
        if type(v) is not bytes or len(v) > 32:
            raise _bad(name, "expected a uint256 as at most 32 big-endian bytes")
        if v[:1] == b"\x00":
            raise _bad(name, "non-minimal uint256 encoding (leading zero byte)")
        return int.from_bytes(v, "big")

    return Field(name, decode, u256_to_bytes)


def fixed_bytes(name: str, size: int) -> Field:
    def decode(v: Any) -> bytes:
        if type(v) is not bytes or len(v) != size:
            raise _bad(name, f"expected exactly {size} bytes")
        return v

    return Field(name, decode, lambda v: v)


def var_bytes(name: str, max_len: int) -> Field:
    def decode(v: Any) -> bytes:
        if type(v) is not bytes or len(v) > max_len:
            raise _bad(name, f"expected at most {max_len} bytes")
        return v

    return Field(name, decode, lambda v: v)


def text(name: str, max_len: int) -> Field:
    def decode(v: Any) -> str:
        if type(v) is not str or len(v.encode()) > max_len:
            raise _bad(name, f"expected a UTF-8 string of at most {max_len} bytes")
        return v

    return Field(name, decode, lambda v: v)


def list_of(name: str, item: Field, max_items: int) -> Field:
    def decode(v: Any) -> tuple[Any, ...]:
        if type(v) is not list or len(v) > max_items:
            raise _bad(name, f"expected a list of at most {max_items} items")
        return tuple(item.decode(x) for x in v)

    return Field(name, decode, lambda v: [item.encode(x) for x in v])


def decode_fields(fields: tuple[Field, ...], raw: Any) -> dict[str, Any]:
    if type(raw) is not list or len(raw) != len(fields):
        raise InvalidAction("bad_payload", f"expected a list of {len(fields)} fields")
    return {f.name: f.decode(v) for f, v in zip(fields, raw, strict=True)}


def encode_fields(fields: tuple[Field, ...], values: dict[str, Any]) -> list[Any]:
    return [f.encode(values[f.name]) for f in fields]


def f32_vector(name: str, max_values: int) -> Field:
    """Little-endian float32 values as bytes; NaN and infinities are refused at the door."""
    import numpy as np

    def decode(v: Any) -> bytes:
        if type(v) is not bytes or len(v) % 4 or len(v) > 4 * max_values:
            raise _bad(name, f"expected little-endian float32 bytes, at most {max_values} values")
        if not bool(np.isfinite(np.frombuffer(v, dtype="<f4")).all()):
            raise InvalidAction("non_finite", f"field {name!r}: NaN or infinite value")
        return v

    return Field(name, decode, lambda v: v)


def tuple_of(name: str, items: tuple[Field, ...]) -> Field:
    """A fixed-arity array whose members have their own types."""

    def decode(v: Any) -> tuple[Any, ...]:
        if type(v) is not list or len(v) != len(items):
            raise _bad(name, f"expected an array of {len(items)} members")
        return tuple(f.decode(x) for f, x in zip(items, v, strict=True))

    return Field(name, decode, lambda v: [f.encode(x) for f, x in zip(items, v, strict=True)])


def optional_of(name: str, inner: Field) -> Field:
    """Absent is an empty array; present is a one-member array (one encoding each)."""

    def decode(v: Any) -> Any:
        if type(v) is not list or len(v) > 1:
            raise _bad(name, "expected [] or [value]")
        return inner.decode(v[0]) if v else None

    return Field(name, decode, lambda v: [] if v is None else [inner.encode(v)])
