"""Typed payload fields: strict decoding of msgpack-decoded values into Python values.

Each action payload is a msgpack array with a fixed field order (no maps: one encoding per
value). Integers above 64 bits (wei amounts) travel as minimal big-endian byte strings, so
there is exactly one encoding of every amount.

Every field also states what it accepts as JSON Schema (`Field.schema`), built from the same
bounds its decoder checks; the API description publishes it. In that view a msgpack binary is
written as lowercase 0x-hex (`"x-msgpack": "bin"`).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
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
    schema: dict[str, Any] = field(default_factory=dict, compare=False)


def _bin(name: str, pattern: str, description: str, **extra: Any) -> dict[str, Any]:
    return {
        "title": name,
        "type": "string",
        "pattern": pattern,
        "x-msgpack": "bin",
        "description": description,
        **extra,
    }


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

    schema = {"title": name, "type": "integer", "minimum": 0, "maximum": max_value}
    return Field(name, decode, lambda v: v, schema)


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

    minimal = "^0x(?:(?:0[1-9a-f]|[1-9a-f][0-9a-f])(?:[0-9a-f]{2}){0,31})?$"
    schema = _bin(name, minimal, "uint256, minimal big-endian bytes (0 is empty)")
    return Field(name, decode, u256_to_bytes, schema)


def fixed_bytes(name: str, size: int) -> Field:
    def decode(v: Any) -> bytes:
        if type(v) is not bytes or len(v) != size:
            raise _bad(name, f"expected exactly {size} bytes")
        return v

    schema = _bin(name, f"^0x[0-9a-f]{{{2 * size}}}$", f"exactly {size} bytes")
    return Field(name, decode, lambda v: v, schema)


def var_bytes(name: str, max_len: int) -> Field:
    def decode(v: Any) -> bytes:
        if type(v) is not bytes or len(v) > max_len:
            raise _bad(name, f"expected at most {max_len} bytes")
        return v

    schema = _bin(
        name, "^0x(?:[0-9a-f]{2})*$", f"at most {max_len} bytes", maxLength=2 + 2 * max_len
    )
    return Field(name, decode, lambda v: v, schema)


def text(name: str, max_len: int) -> Field:
    def decode(v: Any) -> str:
        if type(v) is not str or len(v.encode()) > max_len:
            raise _bad(name, f"expected a UTF-8 string of at most {max_len} bytes")
        return v

    # maxLength counts characters; the bound is on the UTF-8 bytes (x-max-bytes).
    schema = {"title": name, "type": "string", "maxLength": max_len, "x-max-bytes": max_len}
    return Field(name, decode, lambda v: v, schema)


def list_of(name: str, item: Field, max_items: int) -> Field:
    def decode(v: Any) -> tuple[Any, ...]:
        if type(v) is not list or len(v) > max_items:
            raise _bad(name, f"expected a list of at most {max_items} items")
        return tuple(item.decode(x) for x in v)

    schema = {"title": name, "type": "array", "items": item.schema, "maxItems": max_items}
    return Field(name, decode, lambda v: [item.encode(x) for x in v], schema)


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

    schema = _bin(
        name,
        "^0x(?:[0-9a-f]{8})*$",
        f"little-endian float32 values, finite, at most {max_values}",
        maxLength=2 + 8 * max_values,
    )
    return Field(name, decode, lambda v: v, schema)


def tuple_of(name: str, items: tuple[Field, ...]) -> Field:
    """A fixed-arity array whose members have their own types."""

    def decode(v: Any) -> tuple[Any, ...]:
        if type(v) is not list or len(v) != len(items):
            raise _bad(name, f"expected an array of {len(items)} members")
        return tuple(f.decode(x) for f, x in zip(items, v, strict=True))

    schema = {"title": name, **array_schema(items)}
    return Field(
        name, decode, lambda v: [f.encode(x) for f, x in zip(items, v, strict=True)], schema
    )


def array_schema(items: tuple[Field, ...]) -> dict[str, Any]:
    """A fixed-arity array of these fields, in order (a payload, a tuple field)."""
    return {
        "type": "array",
        "prefixItems": [f.schema for f in items],
        "items": False,
        "minItems": len(items),
        "maxItems": len(items),
    }


def optional_of(name: str, inner: Field) -> Field:
    """Absent is an empty array; present is a one-member array (one encoding each)."""

    def decode(v: Any) -> Any:
        if type(v) is not list or len(v) > 1:
            raise _bad(name, "expected [] or [value]")
        return inner.decode(v[0]) if v else None

    schema = {"title": name, "type": "array", "items": inner.schema, "maxItems": 1}
    return Field(name, decode, lambda v: [] if v is None else [inner.encode(v)], schema)
