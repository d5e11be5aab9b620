"""Canonical msgpack for state records (arrays only; big integers as minimal bytes)."""

from typing import Any

import msgpack

from stf.fields import u256_to_bytes


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(raw: bytes) -> Any:
    return msgpack.unpackb(raw, raw=False, use_list=True)


def u256(value: int) -> bytes:
    return u256_to_bytes(value)


def from_u256(raw: bytes) -> int:
    return int.from_bytes(raw, "big")


def u64_key(value: int) -> bytes:
    """Fixed-width big-endian, so keys sort in numeric order."""
    return value.to_bytes(8, "big")


def get_counter(read: Any, key: bytes) -> int:
    raw = read(key)
    return 0 if raw is None else int.from_bytes(raw, "big")
