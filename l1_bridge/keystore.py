"""L1 keys the Ethereum way: eth-account keystore files and local signing.

A keystore file is the encrypted JSON of `eth_account.Account.encrypt` (scrypt by default),
written with mode 0600. Its password comes from the environment (`FEDROLLUP_L1_PASSWORD`)
or a file (`FEDROLLUP_L1_PASSWORD_FILE`), never from the command line.

`use_local_signers` puts web3's signing middleware in front of a provider: every
`eth_sendTransaction` from one of the given accounts is filled (nonce, gas, EIP-1559 fees
where the chain has a base fee), signed here and sent with `eth_sendRawTransaction`, so the
deployer, poster and keeper code that calls `transact({"from": address})` works unchanged
against an RPC that holds no key at all. Transactions from other addresses pass through.
"""

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # imported where used: the CLI imports this module for KeystoreError
    from eth_account.signers.local import LocalAccount
    from web3 import Web3
    from web3.contract.contract import ContractFunction
    from web3.types import TxReceipt

PASSWORD_ENV = "FEDROLLUP_L1_PASSWORD"
PASSWORD_FILE_ENV = "FEDROLLUP_L1_PASSWORD_FILE"


class KeystoreError(ValueError):
    """A keystore is unreadable, or its password is missing or wrong."""


def password_from_env(env: dict[str, str] | None = None) -> str | None:
    """$FEDROLLUP_L1_PASSWORD, else the content of the file $FEDROLLUP_L1_PASSWORD_FILE names
    (without its trailing newline); None when neither is set."""
    env = dict(os.environ if env is None else env)
    if env.get(PASSWORD_ENV):
        return env[PASSWORD_ENV]
    if env.get(PASSWORD_FILE_ENV):
        path = Path(env[PASSWORD_FILE_ENV])
        try:
            password = path.read_text().rstrip("\r\n")
        except OSError as exc:
            raise KeystoreError(f"{PASSWORD_FILE_ENV}: cannot read {path}: {exc}") from None
        if not password:
            raise KeystoreError(f"{PASSWORD_FILE_ENV}: {path} is empty")
        return password
    return None


def _password(password: str | None) -> str:
    if password is None:
        password = password_from_env()
    if password is None:
        raise KeystoreError(
            f"a keystore needs a password: set {PASSWORD_ENV} or {PASSWORD_FILE_ENV}"
        )
    return password


def write_keystore(
    path: Path, account: "LocalAccount", password: str | None = None, **kdf: Any
) -> str:
    """Encrypt `account` into `path` (mode 0600); returns its address. `kdf` goes to
    `Account.encrypt` (`kdf="scrypt"`, `iterations=...`; the defaults are eth-account's)."""
    from eth_account import Account

    data = Account.encrypt(account.key, _password(password), **kdf)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.write("\n")
    return str(account.address)


def load_keystore(path: Path, password: str | None = None) -> "LocalAccount":
    """Decrypt a keystore file (password: given, else from the environment)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise KeystoreError(f"{path}: not a keystore file: {exc}") from None
    from eth_account import Account

    try:
        key = Account.decrypt(data, _password(password))
    except ValueError as exc:
        raise KeystoreError(f"{path}: {exc}") from None
    account: LocalAccount = Account.from_key(key)
    return account


def use_local_signers(w3: "Web3", accounts: Sequence["LocalAccount"]) -> None:
    """Sign every eth_sendTransaction from `accounts` locally (see the module docstring)."""
    from web3.middleware import SignAndSendRawMiddlewareBuilder

    if accounts:
        w3.middleware_onion.inject(SignAndSendRawMiddlewareBuilder.build(list(accounts)), layer=0)


def send_signed(w3: "Web3", account: "LocalAccount", fn: "ContractFunction") -> "TxReceipt":
    """Build `fn` as a transaction from `account` (web3 fills nonce, gas and EIP-1559 fees),
    sign it here and send it with eth_sendRawTransaction: the RPC needs no account, and no
    eth_sendTransaction is ever made. Waits for the receipt; raises if it reverted."""
    tx = fn.build_transaction(
        {"from": account.address, "nonce": w3.eth.get_transaction_count(account.address)}
    )
    signed = account.sign_transaction(cast("dict[str, Any]", tx))  # a TxParams is that dict
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction), timeout=120
    )
    if receipt["status"] != 1:
        raise RuntimeError(f"transaction {receipt['transactionHash'].hex()} reverted")
    return receipt
