"""ed25519 key files, plain or passphrase-encrypted.

Plain:     {"type": "ed25519", "secret": "0x<32-byte seed>", "public": "0x..."}
Encrypted: {"type": "ed25519", "public": "0x...", "crypto": {"kdf": "argon2id",
            "opslimit": N, "memlimit": N, "salt": "0x...", "cipher": "xsalsa20-poly1305",
            "box": "0x<24-byte nonce || ciphertext || tag>"}}

The encryption key is argon2id(passphrase, salt) (PyNaCl `pwhash`); the seed is sealed with
`SecretBox`, whose tag also detects a wrong passphrase. The passphrase comes from the
environment (`FEDROLLUP_KEY_PASSPHRASE`) or a file (`FEDROLLUP_KEY_PASSPHRASE_FILE`), never
from the command line, where other users of the machine can read it.
"""

import json
import os
from pathlib import Path
from typing import Any

from nacl.exceptions import CryptoError
from nacl.pwhash import argon2id
from nacl.secret import SecretBox
from nacl.signing import SigningKey
from nacl.utils import random

PASSPHRASE_ENV = "FEDROLLUP_KEY_PASSPHRASE"
PASSPHRASE_FILE_ENV = "FEDROLLUP_KEY_PASSPHRASE_FILE"
# argon2id costs written into each file (so they can rise later without breaking old files):
# 3 passes over 64 MiB, about a quarter of a second here.
OPSLIMIT = 3
MEMLIMIT = 64 * 1024 * 1024


class KeyFileError(ValueError):
    """A key file is malformed, or its passphrase is missing or wrong."""


def passphrase_from_env(env: dict[str, str] | None = None) -> bytes | None:
    """The passphrase from $FEDROLLUP_KEY_PASSPHRASE, else the file $..._PASSPHRASE_FILE names.

    A file's trailing newline is not part of the passphrase. None when neither is set.
    """
    env = dict(os.environ if env is None else env)
    if env.get(PASSPHRASE_ENV):
        return env[PASSPHRASE_ENV].encode()
    if env.get(PASSPHRASE_FILE_ENV):
        path = Path(env[PASSPHRASE_FILE_ENV])
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise KeyFileError(f"{PASSPHRASE_FILE_ENV}: cannot read {path}: {exc}") from None
        passphrase = text.rstrip(b"\r\n")
        if not passphrase:
            raise KeyFileError(f"{PASSPHRASE_FILE_ENV}: {path} is empty")
        return passphrase
    return None


def _derive(passphrase: bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    return bytes(argon2id.kdf(SecretBox.KEY_SIZE, passphrase, salt, opslimit, memlimit))


def encrypt_seed(
    seed: bytes, passphrase: bytes, opslimit: int = OPSLIMIT, memlimit: int = MEMLIMIT
) -> dict[str, Any]:
    salt = random(argon2id.SALTBYTES)
    box = SecretBox(_derive(passphrase, salt, opslimit, memlimit)).encrypt(seed)
    return {
        "kdf": "argon2id",
        "opslimit": opslimit,
        "memlimit": memlimit,
        "salt": "0x" + salt.hex(),
        "cipher": "xsalsa20-poly1305",
        "box": "0x" + bytes(box).hex(),
    }


def decrypt_seed(crypto: dict[str, Any], passphrase: bytes) -> bytes:
    if crypto.get("kdf") != "argon2id" or crypto.get("cipher") != "xsalsa20-poly1305":
        raise KeyFileError("unsupported key encryption (expected argon2id + xsalsa20-poly1305)")
    try:
        salt = bytes.fromhex(str(crypto["salt"]).removeprefix("0x"))
        box = bytes.fromhex(str(crypto["box"]).removeprefix("0x"))
        opslimit, memlimit = int(crypto["opslimit"]), int(crypto["memlimit"])
    except (KeyError, ValueError, TypeError):
        raise KeyFileError("malformed encrypted key") from None
    if len(salt) != argon2id.SALTBYTES:
        raise KeyFileError("malformed encrypted key: salt size")
    # bound the work a file may demand: a hostile file cannot ask for 100 GiB
    if not (
        argon2id.OPSLIMIT_MIN <= opslimit <= argon2id.OPSLIMIT_SENSITIVE
        and argon2id.MEMLIMIT_MIN <= memlimit <= argon2id.MEMLIMIT_SENSITIVE
    ):
        raise KeyFileError("encrypted key asks for argon2id costs out of range")
    try:
        return bytes(SecretBox(_derive(passphrase, salt, opslimit, memlimit)).decrypt(box))
    except CryptoError:
        raise KeyFileError("wrong passphrase (or a corrupted key file)") from None


def write_key(path: Path, key: SigningKey, passphrase: bytes | None = None) -> None:
    """Write a key file, mode 0600; encrypted when a passphrase is given."""
    data: dict[str, Any] = {"type": "ed25519"}
    if passphrase is None:
        data["secret"] = "0x" + bytes(key).hex()
        data["public"] = "0x" + bytes(key.verify_key).hex()
    else:
        if not passphrase:
            raise KeyFileError("empty passphrase")
        data["public"] = "0x" + bytes(key.verify_key).hex()
        data["crypto"] = encrypt_seed(bytes(key), passphrase)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2)
        fh.write("\n")


def read_key(path: Path, passphrase: bytes | None = None) -> SigningKey:
    """Read a key file; an encrypted one takes `passphrase`, else the environment's."""
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or data.get("type") != "ed25519":
        raise KeyFileError(f"{path}: not an ed25519 key file")
    if "crypto" in data:
        if passphrase is None:
            passphrase = passphrase_from_env()
        if passphrase is None:
            raise KeyFileError(
                f"{path} is encrypted: set {PASSPHRASE_ENV} or {PASSPHRASE_FILE_ENV}"
            )
        if not isinstance(data["crypto"], dict):
            raise KeyFileError(f"{path}: malformed encrypted key")
        try:
            seed = decrypt_seed(data["crypto"], passphrase)
        except KeyFileError as exc:
            raise KeyFileError(f"{path}: {exc}") from None
    else:
        seed = bytes.fromhex(str(data["secret"]).removeprefix("0x"))
    if len(seed) != 32:
        raise KeyFileError(f"{path}: secret must be 32 bytes")
    key = SigningKey(seed)
    public = data.get("public")
    if public is not None and str(public).removeprefix("0x") != bytes(key.verify_key).hex():
        raise KeyFileError(f"{path}: the public key does not match the secret")
    return key
