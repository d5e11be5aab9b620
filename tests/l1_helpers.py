"""Helpers for end-to-end tests against a real EVM: the node's embedded py-evm (served at
http://<node>/l1) or an anvil process, both spoken to over JSON-RPC with web3."""

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_hash.auto import keccak
from nacl.signing import SigningKey
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import TxReceipt

from l1_bridge.contracts import BatchProof, DecodedError, Deployment, decode_error, revert_data
from l1_bridge.keystore import PASSWORD_FILE_ENV, write_keystore
from l1_bridge.settlement import SettlementRecord
from node.sdk.client import Client
from rollup.genesis import Genesis
from stf.identity import BindL1
from tests.conftest import ROOT, free_port

ETH = 10**18
ANVIL = ROOT / "node_modules" / ".bin" / "anvil"
T = TypeVar("T")


def wait_until(probe: Callable[[], T], what: str, timeout: float = 30.0, poll: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what} (last: {value!r})")
        time.sleep(poll)


def write_genesis(path: Path, chain_id: int, keys: list[bytes], balance: int) -> Path:
    path.write_text(json.dumps(Genesis(chain_id, 0, dict.fromkeys(keys, balance)).to_json()))
    return path


# --------------------------------------------------------------------------- JSON-RPC


def web3_at(url: str) -> Web3:
    return Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 30}))


def rpc(w3: Web3, method: str, params: list[Any]) -> Any:
    response = w3.provider.make_request(method, params)  # type: ignore[arg-type]
    if response.get("error"):
        raise RuntimeError(f"{method}: {response['error']}")
    return response.get("result")


def mine(w3: Web3, blocks: int = 1) -> None:
    for _ in range(blocks):
        rpc(w3, "evm_mine", [])


def travel(w3: Web3, seconds: int) -> None:
    """Move L1 time on by `seconds` and mine a block there (calls then see the new time)."""
    rpc(w3, "evm_increaseTime", [seconds])
    mine(w3)


def deployment_of(w3: Web3, client: Client) -> Deployment:
    return Deployment.from_json(w3, json.dumps(client._get("/v1/l1/deployment")))


def balance(w3: Web3, address: str) -> int:
    return int(w3.eth.get_balance(Web3.to_checksum_address(address)))


def transact(w3: Web3, fn: ContractFunction, sender: str, value: int = 0) -> TxReceipt:
    """Send from an account the L1 node holds (eth_sendTransaction); fail on a revert."""
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "value": value}))
    assert receipt["status"] == 1, receipt
    return receipt


def pay(w3: Web3, sender: str, to: str, value: int) -> None:
    tx = w3.eth.send_transaction({"from": sender, "to": to, "value": value})
    assert w3.eth.wait_for_transaction_receipt(tx)["status"] == 1


def local_account(label: str) -> LocalAccount:
    """A deterministic L1 account the test signs for itself (not held by the L1 node)."""
    return Account.from_key(keccak(b"fedrollup e2e " + label.encode()))


def transact_signed(
    w3: Web3, account: LocalAccount, fn: ContractFunction, value: int = 0
) -> TxReceipt:
    """Sign locally and send with eth_sendRawTransaction; fail on a revert."""
    tx = fn.build_transaction(
        {
            "from": account.address,
            "value": value,
            "nonce": w3.eth.get_transaction_count(account.address),
        }
    )
    signed = account.sign_transaction(tx)
    receipt = w3.eth.wait_for_transaction_receipt(
        w3.eth.send_raw_transaction(signed.raw_transaction)
    )
    assert receipt["status"] == 1, receipt
    return receipt


def call_revert(w3: Web3, contract: Contract, name: str, args: Any, sender: str) -> DecodedError:
    """What `contract.name(*args)` reverts with, from a raw eth_call: the revert data is the
    error's `data` on a real node; the embedded /l1 only puts it in the message (see
    test_embedded_l1_returns_revert_data_like_a_real_node)."""
    call = {"from": sender, "to": contract.address, "data": contract.encode_abi(name, args)}
    error = w3.provider.make_request("eth_call", [call, "latest"]).get("error")  # type: ignore[arg-type]
    assert error, f"{name} did not revert"
    data = error.get("data")
    raw = (
        bytes.fromhex(data[2:])
        if isinstance(data, str) and data.startswith("0x")
        else revert_data(RuntimeError(error["message"]))
    )
    decoded = decode_error(raw or b"")
    assert decoded is not None, f"{name} reverted with undecodable {error}"
    return decoded


def send_fails(w3: Web3, fn: ContractFunction, sender: str) -> None:
    """Really send it (fixed gas, no estimate): it is mined and reverts."""
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact({"from": sender, "gas": 1_000_000}))
    assert receipt["status"] == 0, receipt


def send_fails_signed(w3: Web3, account: LocalAccount, fn: ContractFunction) -> None:
    """`send_fails`, signed locally (fixed gas, no estimate): it is mined and reverts."""
    tx = fn.build_transaction(
        {
            "from": account.address,
            "gas": 1_000_000,
            "nonce": w3.eth.get_transaction_count(account.address),
        }
    )
    raw = account.sign_transaction(tx).raw_transaction
    receipt = w3.eth.wait_for_transaction_receipt(w3.eth.send_raw_transaction(raw))
    assert receipt["status"] == 0, receipt


# --------------------------------------------------------------------------- contracts


def stake_on_l1(dep: Deployment, rollup_key: bytes, staker: str) -> int:
    """What `staker` holds for a rollup key in the L1 StakingRegistry."""
    return int(dep.registry.functions.stakeOf(rollup_key, staker).call())


def bind_l1(client: Client, signer: SigningKey, address: str) -> None:
    """The key names its L1 address on L2 (its signed `bind_l1`), and waits for it."""
    client.execute(signer, "bind_l1", BindL1(bytes.fromhex(address.removeprefix("0x"))))


def proof_from_json(doc: dict[str, Any]) -> BatchProof:
    """A `/v1/settlements/{id}/proof` answer as the arguments of executeSlash / claim."""
    r = doc["record"]
    record = SettlementRecord(
        kind=int(r["kind"]),
        job_id=int(r["job_id"]),
        round=int(r["round"]),
        rollup_key=_b32(r["rollup_key"]),
        payee=bytes.fromhex(r["payee"].removeprefix("0x")),
        amount=int(r["amount"]),
        record_id=_b32(r["record_id"]),
        version=int(r["version"]),
    )
    return BatchProof(
        int(doc["batch_index"]),
        _b32(doc["state_root"]),
        _b32(doc["settlement_root"]),
        _b32(doc["last_block_hash"]),
        record,
        tuple(_b32(p) for p in doc["proof"]),
    )


def committed_batches(dep: Deployment) -> list[tuple[int, bytes, bytes]]:
    """Every BatchCommitted event since the deployment: (index, output root, prev root)."""
    logs = dep.inbox.events.BatchCommitted().get_logs(from_block=dep.block_number)
    return [
        (int(e.args.index), bytes(e.args.outputRoot), bytes(e.args.prevOutputRoot)) for e in logs
    ]


def _b32(text: str) -> bytes:
    raw = bytes.fromhex(text.removeprefix("0x"))
    assert len(raw) == 32, text
    return raw


# --------------------------------------------------------------------------- node reads


def l2_balance(client: Client, pubkey: bytes) -> int:
    return int(client.account(pubkey)["balance"])


def batches(client: Client) -> list[dict[str, Any]]:
    return list(client._get("/v1/batches")["batches"])


def settlement(client: Client, record_id: str) -> dict[str, Any]:
    return client._get(f"/v1/settlements/{record_id}/proof")


# --------------------------------------------------------------------------- anvil


@dataclass
class Anvil:
    url: str
    w3: Web3


@contextmanager
def run_anvil(log: Path) -> Iterator[Anvil]:
    port = free_port()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(ANVIL), "--port", str(port), "--silent"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}"
        w3 = web3_at(url)
        wait_until(lambda: proc.poll() is not None or _answers(w3), "anvil to listen", 30, 0.05)
        assert proc.poll() is None, log.read_text()
        yield Anvil(url, w3)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def _answers(w3: Web3) -> bool:
    try:
        return w3.eth.block_number >= 0
    except OSError:  # requests' ConnectionError: not listening yet
        return False


def deploy_with_cli(url: str, out: Path, genesis: Path, window_s: int, unbonding_s: int) -> Path:
    """`fedrollup deploy` against an RPC node; returns the deployment file."""
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node.ops.cli",
            "deploy",
            "--l1-rpc",
            url,
            "--out",
            str(out),
            "--genesis",
            str(genesis),
            "--challenge-window-s",
            str(window_s),
            "--unbonding-s",
            str(unbonding_s),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return out


# --------------------------------------------------------------------------- keystores

PASSWORD = "correct horse battery staple"
FAST_KDF = {"kdf": "scrypt", "iterations": 2**10}  # tests only: the CLI keeps eth-account's
#: Every L1 account on the node's side, each its own keystore (the protocol fee recipient
#: never signs, it only needs an address).
NODE_SIDE_ROLES = ("deployer", "admin", "proposer", "guardian", "challenger", "keeper")


def set_balance(w3: Web3, address: str, wei: int) -> None:
    """anvil_setBalance: fund an account without any account sending a transaction."""
    rpc(w3, "anvil_setBalance", [Web3.to_checksum_address(address), hex(wei)])


@dataclass
class KeystoreDeployment:
    """A deployment made by `fedrollup deploy --keystore` on anvil, every role its own
    keystore account (made here with a fast KDF, then picked up by --role-keystores)."""

    deployment: Path
    dep: Deployment
    accounts: dict[str, LocalAccount]
    stores: dict[str, Path]
    env: dict[str, str]  # the password file, as the node and the CLI read it

    def node_args(self) -> list[str]:
        return [
            *("--deployment", str(self.deployment)),
            *("--l1-proposer-keystore", str(self.stores["proposer"])),
            *("--l1-keeper-keystore", str(self.stores["keeper"])),
        ]

    def addresses(self) -> set[str]:
        return {a.address for a in self.accounts.values()}


def deploy_with_keystores(
    anvil_url: str, w3: Web3, folder: Path, genesis: Path, window_s: int, unbonding_s: int
) -> KeystoreDeployment:
    """Keystores for every role, funded with anvil_setBalance (no anvil account sends
    anything), then `fedrollup deploy --keystore deployer.json --role-keystores folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    accounts = {
        role: local_account(f"{folder} {role}") for role in (*NODE_SIDE_ROLES, "protocol_addr")
    }
    stores = {role: folder / f"{role}.json" for role in accounts}
    for role, account in accounts.items():
        write_keystore(stores[role], account, PASSWORD, **FAST_KDF)
        if role != "protocol_addr":
            set_balance(w3, account.address, 100 * ETH)
    password = folder / "password"
    password.write_text(PASSWORD + "\n")
    env = {PASSWORD_FILE_ENV: str(password)}
    out = folder / "dep.json"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "deploy",
            "--l1-rpc",
            anvil_url,
            "--out",
            str(out),
            "--genesis",
            str(genesis),
            "--challenge-window-s",
            str(window_s),
            "--unbonding-s",
            str(unbonding_s),
            "--keystore",
            str(stores["deployer"]),
            "--role-keystores",
            str(folder),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**_without_passwords(), **env},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return KeystoreDeployment(out, Deployment.from_json(w3, out.read_text()), accounts, stores, env)


def _without_passwords() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FEDROLLUP_L1_PASSWORD")}


def transactions_since(w3: Web3, first_block: int) -> list[tuple[str, int]]:
    """(from, type) of every transaction mined from first_block on."""
    out = []
    for number in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            out.append((str(tx["from"]), int(tx["type"])))  # type: ignore[index]
    return out


def embedded_challenger_keystore(folder: Path, index: int = 2) -> tuple[Path, dict[str, str]]:
    """A keystore of the embedded L1's challenger (eth-tester's dev account 2, whose key is
    public like every dev key; another `index`, another dev account) and the environment
    naming its password file: what `fedrollup verify --challenge --challenger-keystore` needs
    against `fedrollup run`."""
    from eth_tester.backends.pyevm.main import get_default_account_keys

    secret = get_default_account_keys()[index].to_bytes()
    path = folder / f"dev-{index}.json"
    write_keystore(path, Account.from_key(secret), PASSWORD, **FAST_KDF)
    password = folder / "challenger-password"
    password.write_text(PASSWORD + "\n")
    return path, {PASSWORD_FILE_ENV: str(password)}
