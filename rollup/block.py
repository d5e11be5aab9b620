"""Blocks and receipts: their canonical encodings and hashes (all versioned)."""

from dataclasses import dataclass
from typing import Any, Literal, TypedDict

import msgpack

from rollup.codec import pack
from rollup.hashing import BLOCK_DOMAIN, RECEIPT_DOMAIN, h256
from rollup.jsonshape import DecimalString, Hex20, Hex32, Uint
from stf.context import Event
from stf.settlement import KIND_NAMES, KindName, SettlementRecord

BLOCK_VERSION = 1
RECEIPT_VERSION = 1
ZERO_HASH = bytes(32)
_BIGINT_EXT = 1


class L1OriginJson(TypedDict):
    height: Uint
    hash: Hex32


class HeaderJson(TypedDict):
    version: Uint
    height: Uint
    hash: Hex32
    parent_hash: Hex32
    timestamp_ms: Uint
    actions_root: Hex32
    receipts_root: Hex32
    state_root: Hex32
    l1_origin: L1OriginJson
    l1_messages_root: Hex32


class EventJson(TypedDict):
    name: str
    data: dict[str, Any]  # the event's fields: bytes as 0x-hex, big integers as decimal strings


class RecordJson(TypedDict):
    """A settlement record as a receipt shows it."""

    version: Uint
    kind: KindName
    job: Uint
    round: Uint
    rollup_key: Hex32
    payee: Hex20
    amount: DecimalString
    record_id: Hex32


class ReceiptJson(TypedDict):
    action_hash: Hex32
    status: Literal["executed", "failed"]
    error: str | None
    detail: str | None
    events: list[EventJson]
    records: list[RecordJson]


@dataclass(frozen=True)
class BlockHeader:
    height: int
    parent_hash: bytes
    timestamp_ms: int
    actions_root: bytes
    receipts_root: bytes
    state_root: bytes
    l1_origin_height: int = 0
    l1_origin_hash: bytes = ZERO_HASH
    l1_messages_root: bytes = ZERO_HASH
    version: int = BLOCK_VERSION

    def encode(self) -> bytes:
        return pack(
            [
                self.version,
                self.height,
                self.parent_hash,
                self.timestamp_ms,
                self.actions_root,
                self.receipts_root,
                self.state_root,
                self.l1_origin_height,
                self.l1_origin_hash,
                self.l1_messages_root,
            ]
        )

    @staticmethod
    def decode(raw: bytes) -> "BlockHeader":
        v, height, parent, ts, aroot, rroot, sroot, l1h, l1hash, l1root = msgpack.unpackb(raw)
        return BlockHeader(height, parent, ts, aroot, rroot, sroot, l1h, l1hash, l1root, v)

    def hash(self) -> bytes:
        return h256(BLOCK_DOMAIN, self.encode())

    def to_json(self) -> HeaderJson:
        return {
            "version": self.version,
            "height": self.height,
            "hash": hexb(self.hash()),
            "parent_hash": hexb(self.parent_hash),
            "timestamp_ms": self.timestamp_ms,
            "actions_root": hexb(self.actions_root),
            "receipts_root": hexb(self.receipts_root),
            "state_root": hexb(self.state_root),
            "l1_origin": {"height": self.l1_origin_height, "hash": hexb(self.l1_origin_hash)},
            "l1_messages_root": hexb(self.l1_messages_root),
        }


@dataclass(frozen=True)
class Receipt:
    action_hash: bytes
    ok: bool
    error: str = ""
    detail: str = ""
    events: tuple[Event, ...] = ()
    records: tuple[SettlementRecord, ...] = ()

    def encode(self) -> bytes:
        """Encoded once: the receipts root and the store both need the bytes. (Kept in the
        instance dict by hand: functools.cached_property takes a lock per first read.)"""
        cache = self.__dict__
        encoded: bytes | None = cache.get("_encoded")
        if encoded is None:
            encoded = cache["_encoded"] = self._encode()
        return encoded

    def _encode(self) -> bytes:
        events = [
            [name, [[k, _encode_value(v)] for k, v in sorted(data.items())]]
            for name, data in self.events
        ]
        records = [_encode_value(r.as_list()) for r in self.records]
        return pack(
            [RECEIPT_VERSION, self.action_hash, self.ok, self.error, self.detail, events, records]
        )

    @staticmethod
    def decode(raw: bytes) -> "Receipt":
        _, action_hash, ok, error, detail, events, records = msgpack.unpackb(
            raw, ext_hook=_decode_ext
        )
        return Receipt(
            action_hash,
            ok,
            error,
            detail,
            tuple((n, dict(kv)) for n, kv in events),
            tuple(SettlementRecord.from_list(r) for r in records),
        )

    def hash(self) -> bytes:
        return h256(RECEIPT_DOMAIN, self.encode())

    def to_json(self) -> ReceiptJson:
        return {
            "action_hash": hexb(self.action_hash),
            "status": "executed" if self.ok else "failed",
            "error": self.error or None,
            "detail": self.detail or None,
            "events": [
                {"name": n, "data": {k: jsonable(v) for k, v in d.items()}} for n, d in self.events
            ],
            "records": [record_json(r) for r in self.records],
        }


def _encode_value(value: Any) -> Any:
    """Integers beyond msgpack's 64 bits (wei amounts) go as an ext of minimal bytes."""
    if type(value) is bytes:  # the commonest event value (keys, hashes): nothing to do
        return value
    if type(value) is int and not -(2**63) <= value < 2**64:
        if value < 0:
            raise ValueError("negative big integers are not encodable")
        return msgpack.ExtType(_BIGINT_EXT, value.to_bytes((value.bit_length() + 7) // 8, "big"))
    if isinstance(value, list | tuple):
        return [_encode_value(v) for v in value]
    return value


def _decode_ext(code: int, data: bytes) -> Any:
    if code == _BIGINT_EXT:
        return int.from_bytes(data, "big")
    return msgpack.ExtType(code, data)


def hexb(data: bytes) -> str:
    return "0x" + data.hex()


def jsonable(value: Any) -> Any:
    """JSON form of event data: bytes as 0x-hex, big integers as decimal strings."""
    if isinstance(value, bytes):
        return hexb(value)
    if type(value) is int and abs(value) >= 2**53:
        return str(value)
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    return value


def record_json(r: SettlementRecord) -> RecordJson:
    return {
        "version": r.version,
        "kind": KIND_NAMES[r.kind],
        "job": r.job,
        "round": r.round,
        "rollup_key": hexb(r.rollup_key),
        "payee": hexb(r.payee),
        "amount": str(r.amount),
        "record_id": hexb(r.record_id),
    }
