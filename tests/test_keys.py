"""ed25519 key files: plain ones as before, encrypted ones (argon2id + SecretBox) that need
the passphrase from the environment or a file, and refuse a wrong one."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from node.sdk.keys import (
    PASSPHRASE_ENV,
    PASSPHRASE_FILE_ENV,
    KeyFileError,
    passphrase_from_env,
    read_key,
    write_key,
)
from tests.conftest import ROOT

SEED = bytes(range(32))


def test_plain_key_file_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key(path, SigningKey(SEED))
    assert bytes(read_key(path)) == SEED
    assert os.stat(path).st_mode & 0o777 == 0o600


def test_encrypted_key_file_hides_the_seed_and_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    key = SigningKey(SEED)
    write_key(path, key, b"correct horse")
    text = path.read_text()
    assert SEED.hex() not in text and "secret" not in text
    data = json.loads(text)
    assert data["crypto"]["kdf"] == "argon2id"
    assert data["public"] == "0x" + bytes(key.verify_key).hex()
    assert bytes(read_key(path, b"correct horse")) == SEED
    # two files of one key differ: a fresh salt and nonce each time
    other = tmp_path / "k2.json"
    write_key(other, key, b"correct horse")
    assert json.loads(other.read_text())["crypto"] != data["crypto"]


def test_wrong_or_missing_passphrase_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "k.json"
    write_key(path, SigningKey(SEED), b"correct horse")
    with pytest.raises(KeyFileError, match="wrong passphrase"):
        read_key(path, b"battery staple")
    monkeypatch.delenv(PASSPHRASE_ENV, raising=False)
    monkeypatch.delenv(PASSPHRASE_FILE_ENV, raising=False)
    with pytest.raises(KeyFileError, match="is encrypted"):
        read_key(path)


def test_tampered_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    write_key(path, SigningKey(SEED), b"pw")
    data = json.loads(path.read_text())
    box = bytearray(bytes.fromhex(data["crypto"]["box"][2:]))
    box[-1] ^= 1
    data["crypto"]["box"] = "0x" + box.hex()
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError):
        read_key(path, b"pw")
    data = json.loads(path.read_text())
    data["crypto"]["memlimit"] = 1 << 40  # a file may not demand a terabyte
    path.write_text(json.dumps(data))
    with pytest.raises(KeyFileError, match="out of range"):
        read_key(path, b"pw")


def test_passphrase_from_env_or_file(tmp_path: Path) -> None:
    assert passphrase_from_env({}) is None
    assert passphrase_from_env({PASSPHRASE_ENV: "s3cret"}) == b"s3cret"
    pw = tmp_path / "pw"
    pw.write_text("from a file\n")
    assert passphrase_from_env({PASSPHRASE_FILE_ENV: str(pw)}) == b"from a file"
    with pytest.raises(KeyFileError, match="cannot read"):
        passphrase_from_env({PASSPHRASE_FILE_ENV: str(tmp_path / "none")})


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDROLLUP_KEY_")}
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, **env},
    )


def test_keygen_encrypt_takes_the_passphrase_from_a_file_never_argv(tmp_path: Path) -> None:
    key_file, pw = tmp_path / "k.json", tmp_path / "pw"
    pw.write_text("hunter2\n")
    refused = _cli({}, "keygen", "--encrypt", "--out", str(key_file))
    assert refused.returncode == 2 and PASSPHRASE_ENV in refused.stderr
    assert not key_file.exists()
    out = _cli({PASSPHRASE_FILE_ENV: str(pw)}, "keygen", "--encrypt", "--out", str(key_file))
    assert out.returncode == 0, out.stderr
    public = out.stdout.strip()
    assert json.loads(key_file.read_text())["public"] == public
    assert "0x" + bytes(read_key(key_file, b"hunter2").verify_key).hex() == public
    # `send` reads it with the passphrase from the environment, and says so when it is wrong
    wrong = _cli(
        {PASSPHRASE_ENV: "nope"},
        "send", "stake", "--key", str(key_file), "--amount", "1", "--node", "http://127.0.0.1:9",
    )  # fmt: skip
    assert wrong.returncode == 2 and "wrong passphrase" in wrong.stderr
    assert "Traceback" not in wrong.stderr
