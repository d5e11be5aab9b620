"""The genesis file: chain id, genesis time and initial L2 balances.

JSON: {"chain_id": 1337, "timestamp_ms": 0, "alloc": {"0x<ed25519 pubkey>": "<wei>"},
       "limits": {"max_aggregate_work": N, "max_block_bytes": N, "max_block_work": N},
       "min_withdrawal_wei": "<wei>"}
"limits" is optional (absent: the defaults of stf.metering) and hashed only when present;
"min_withdrawal_wei" is optional (default 0: the smallest withdrawal the STF accepts, so
nobody grinds the keeper with 1-wei claims) and hashed only when not 0.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stf.fields import MAX_U64, MAX_U256
from stf.metering import Limits


@dataclass(frozen=True)
class Genesis:
    chain_id: int
    timestamp_ms: int
    alloc: dict[bytes, int]
    limits: Limits | None = None
    min_withdrawal_wei: int = 0

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "chain_id": self.chain_id,
            "timestamp_ms": self.timestamp_ms,
            "alloc": {"0x" + k.hex(): str(v) for k, v in sorted(self.alloc.items())},
        }
        if self.limits is not None:
            out["limits"] = self.limits.to_json()
        if self.min_withdrawal_wei:  # absent when 0, so older genesis files keep their hash
            out["min_withdrawal_wei"] = str(self.min_withdrawal_wei)
        return out

    def hash(self) -> bytes:
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.blake2b(canonical.encode(), digest_size=32).digest()

    @staticmethod
    def from_json(obj: Any) -> "Genesis":
        if not isinstance(obj, dict):
            raise ValueError("genesis must be a JSON object")
        chain_id, ts, alloc = obj.get("chain_id"), obj.get("timestamp_ms", 0), obj.get("alloc", {})
        if type(chain_id) is not int or not 0 < chain_id <= MAX_U64:
            raise ValueError("genesis chain_id must be a positive 64-bit integer")
        if type(ts) is not int or ts < 0:
            raise ValueError("genesis timestamp_ms must be a non-negative integer")
        if not isinstance(alloc, dict):
            raise ValueError("genesis alloc must be an object")
        limits = None if obj.get("limits") is None else Limits.from_json(obj["limits"])
        minimum = _amount(obj.get("min_withdrawal_wei", 0))
        return Genesis(
            chain_id, ts, {_pubkey(k): _amount(v) for k, v in alloc.items()}, limits, minimum
        )

    @staticmethod
    def load(path: Path) -> "Genesis":
        return Genesis.from_json(json.loads(path.read_text()))


def _pubkey(text: str) -> bytes:
    raw = bytes.fromhex(text.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"genesis alloc key {text!r} is not a 32-byte public key")
    return raw


def _amount(value: Any) -> int:
    amount = int(value) if isinstance(value, str) and value.isdigit() else value
    if type(amount) is not int or not 0 <= amount <= MAX_U256:
        raise ValueError(f"genesis amount {value!r} is not a uint256")
    return amount
