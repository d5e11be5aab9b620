"""L1 keys the Ethereum way, on anvil: eth-account keystores (password from the environment),
`fedrollup deploy --keystore` with separate role addresses, and a node whose proposer and
keeper sign their own EIP-1559 transactions — none of anvil's unlocked accounts sends a
thing after the test funded the keystore accounts."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from eth_account import Account
from web3 import Web3

from l1_bridge.contracts import Deployment
from l1_bridge.keystore import (
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    KeystoreError,
    load_keystore,
    password_from_env,
    write_keystore,
)
from node.cli_util import free_port
from node.sdk.devkeys import dev_key
from stf.accounts import Transfer
from tests.conftest import ROOT, NodeProcess
from tests.l1_helpers import (
    ANVIL,
    committed_batches,
    pay,
    run_anvil,
    set_balance,
    wait_until,
    write_genesis,
)

PASSWORD = "correct horse battery staple"
FAST_KDF = {"kdf": "scrypt", "iterations": 2**10}  # tests only: the CLI keeps eth-account's
ETH = 10**18


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FEDROLLUP_L1_PASSWORD")}
    return subprocess.run(
        [sys.executable, "-m", "node", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        env={**clean, **env},
    )


def test_keystore_round_trip_and_wrong_password(tmp_path: Path) -> None:
    account = Account.create()
    path = tmp_path / "k.json"
    assert write_keystore(path, account, PASSWORD, **FAST_KDF) == account.address
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert account.key.hex().removeprefix("0x") not in path.read_text()
    assert load_keystore(path, PASSWORD).key == account.key
    with pytest.raises(KeystoreError, match="MAC mismatch"):
        load_keystore(path, "wrong")
    pw = tmp_path / "pw"
    pw.write_text(PASSWORD + "\n")
    assert password_from_env({PASSWORD_FILE_ENV: str(pw)}) == PASSWORD
    assert password_from_env({}) is None


def test_l1_keygen_takes_the_password_from_the_environment(tmp_path: Path) -> None:
    out = tmp_path / "k.json"
    refused = _cli({}, "l1-keygen", "--out", str(out))
    assert refused.returncode == 2 and PASSWORD_ENV in refused.stderr and not out.exists()
    made = _cli({PASSWORD_ENV: PASSWORD}, "l1-keygen", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert load_keystore(out, PASSWORD).address == made.stdout.strip()
    assert json.loads(out.read_text())["crypto"]["kdf"] == "scrypt"


def _senders_since(w3: Web3, first_block: int) -> list[tuple[str, int]]:
    """(from, type) of every transaction mined since first_block."""
    out = []
    for number in range(first_block, w3.eth.block_number + 1):
        for tx in w3.eth.get_block(number, full_transactions=True)["transactions"]:
            out.append((str(tx["from"]), int(tx["type"])))  # type: ignore[index]
    return out


def test_deploy_and_run_with_keystores_only(
    tmp_path: Path, node_factory: type[NodeProcess]
) -> None:
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL} (run `npm ci` in the project root)")
    deployer, keeper = Account.create(), Account.create()
    admin, guardian, challenger, protocol = (Account.create().address for _ in range(4))
    stores = {}
    for name, account in (("deployer", deployer), ("keeper", keeper)):
        stores[name] = tmp_path / f"{name}.json"
        write_keystore(stores[name], account, PASSWORD, **FAST_KDF)
    pw_file = tmp_path / "password"
    pw_file.write_text(PASSWORD + "\n")
    env = {PASSWORD_FILE_ENV: str(pw_file)}
    genesis = write_genesis(
        tmp_path / "genesis.json", 4345, [bytes(dev_key(i).verify_key) for i in range(4)], 10**21
    )
    with run_anvil(tmp_path / "anvil.log") as anvil:
        w3 = anvil.w3
        unlocked = list(w3.eth.accounts)
        for account in (deployer, keeper):  # the faucet: test set-up, not the node
            pay(w3, unlocked[0], account.address, 10 * ETH)
        nonces = [w3.eth.get_transaction_count(a) for a in unlocked]
        first = w3.eth.block_number + 1

        zero = _cli(
            env, "deploy", "--l1-rpc", anvil.url, "--out", str(tmp_path / "z.json"),
            "--keystore", str(stores["deployer"]), "--guardian", "0x" + "00" * 20,
        )  # fmt: skip
        assert zero.returncode != 0 and "zero address" in zero.stderr
        zero_admin = _cli(
            env, "deploy", "--l1-rpc", anvil.url, "--out", str(tmp_path / "z.json"),
            "--keystore", str(stores["deployer"]), "--admin", "0x" + "00" * 20,
        )  # fmt: skip
        assert zero_admin.returncode != 0 and "zero address" in zero_admin.stderr
        dep_file = tmp_path / "dep.json"
        # No --proposer: --role-keystores makes it a fresh keystore, distinct from the deployer.
        deployed = _cli(
            env,
            "deploy", "--l1-rpc", anvil.url, "--out", str(dep_file), "--genesis", str(genesis),
            "--challenge-window-s", "5", "--unbonding-s", "60",
            "--keystore", str(stores["deployer"]), "--admin", admin, "--role-keystores",
            str(tmp_path / "roles"), "--guardian", guardian, "--challenger", challenger,
            "--protocol-addr", protocol,
        )  # fmt: skip
        assert deployed.returncode == 0, deployed.stderr
        assert sorted(p.name for p in (tmp_path / "roles").iterdir()) == ["proposer.json"]
        stores["proposer"] = tmp_path / "roles" / "proposer.json"
        assert os.stat(stores["proposer"]).st_mode & 0o777 == 0o600
        proposer = load_keystore(stores["proposer"], PASSWORD)
        set_balance(w3, proposer.address, 10 * ETH)  # no transaction: the senders stay clean
        dep = Deployment.from_json(w3, dep_file.read_text())
        assert (dep.params.deployer, dep.params.proposer) == (deployer.address, proposer.address)
        assert (dep.params.guardian, dep.params.challenger) == (guardian, challenger)
        assert dep.params.admin == admin == dep.inbox.functions.admin().call()
        assert dep.current_proposer() == proposer.address != deployer.address

        node = node_factory(
            tmp_path / "data",
            free_port(),
            [
                *("--l1-rpc", anvil.url, "--deployment", str(dep_file), "--genesis", str(genesis)),
                *("--block-time-ms", "50", "--batch-interval-ms", "300"),
                *("--l1-proposer-keystore", str(stores["proposer"])),
                *("--l1-keeper-keystore", str(stores["keeper"])),
            ],
            env=env,
        ).start(timeout=60)
        client = node.client
        to = bytes(dev_key(1).verify_key)
        client.wait(client.send(dev_key(0), "transfer", Transfer(to=to, amount=5)), timeout=20)
        wait_until(lambda: len(committed_batches(dep)) >= 1, "a batch committed on L1", 60)

        sent = _senders_since(w3, first)
        senders = {s for s, _ in sent}
        assert deployer.address in senders and proposer.address in senders
        assert senders <= {deployer.address, proposer.address, keeper.address}, senders
        assert all(kind == 2 for _, kind in sent), sent  # EIP-1559, signed locally
        assert [w3.eth.get_transaction_count(a) for a in unlocked] == nonces


def test_a_proposer_keystore_that_is_not_the_deployments_proposer_is_refused(
    tmp_path: Path,
) -> None:
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL}")
    stranger = tmp_path / "stranger.json"
    write_keystore(stranger, Account.create(), PASSWORD, **FAST_KDF)
    genesis = write_genesis(tmp_path / "genesis.json", 4346, [bytes(dev_key(0).verify_key)], 1)
    with run_anvil(tmp_path / "anvil.log") as anvil:
        dep_file = tmp_path / "dep.json"
        deployed = _cli(
            {}, "deploy", "--l1-rpc", anvil.url, "--out", str(dep_file), "--genesis", str(genesis)
        )
        assert deployed.returncode == 0, deployed.stderr
        out = _cli(
            {PASSWORD_ENV: PASSWORD},
            "run", "--data-dir", str(tmp_path / "d"), "--port", str(free_port()),
            "--l1-rpc", anvil.url, "--deployment", str(dep_file), "--genesis", str(genesis),
            "--l1-proposer-keystore", str(stranger),
        )  # fmt: skip
        assert out.returncode != 0
        assert "deployment's proposer" in out.stderr
