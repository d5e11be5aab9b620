"""Key files: JSON {"type": "ed25519", "secret": "0x<32-byte seed>", "public": "0x..."}."""

import json
import os
from pathlib import Path

from nacl.signing import SigningKey


def write_key(path: Path, key: SigningKey) -> None:
    data = {
        "type": "ed25519",
        "secret": "0x" + bytes(key).hex(),
        "public": "0x" + bytes(key.verify_key).hex(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def read_key(path: Path) -> SigningKey:
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("type") != "ed25519":
        raise ValueError(f"{path}: not an ed25519 key file")
    seed = bytes.fromhex(str(data["secret"]).removeprefix("0x"))
    if len(seed) != 32:
        raise ValueError(f"{path}: secret must be 32 bytes")
    return SigningKey(seed)
