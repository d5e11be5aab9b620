"""A small L1 wallet for participants and job owners: a local private key that signs its own
transactions (so it works against the node's embedded /l1 endpoint, anvil or a testnet)."""

import json
import urllib.request
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from web3 import Web3

from l1_bridge.contracts import Deployment

_GAS = 600_000  # only for a call whose gas estimate fails (it reverts)
_DEFAULT_TIP = 10**9  # 1 gwei, where the L1 cannot suggest a priority fee


def connect(node_url: str, l1_rpc: str | None = None) -> tuple[Web3, Deployment]:
    """Web3 for the node's L1 (its embedded /l1 unless an RPC URL is given) and its contracts."""
    w3 = Web3(
        Web3.HTTPProvider(l1_rpc or node_url.rstrip("/") + "/l1", request_kwargs={"timeout": 60})
    )
    with urllib.request.urlopen(node_url.rstrip("/") + "/v1/l1/deployment", timeout=30) as resp:
        text = resp.read().decode()
    json.loads(text)
    return w3, Deployment.from_json(w3, text)


@dataclass
class Wallet:
    w3: Web3
    private_key: bytes

    @property
    def address(self) -> str:
        return str(Account.from_key(self.private_key).address)

    def balance(self) -> int:
        return int(self.w3.eth.get_balance(self.address))  # type: ignore[arg-type]

    def send(self, call: Any, value: int = 0) -> dict[str, Any]:
        """Sign and send a contract call and wait for it: an EIP-1559 transaction where the
        chain has a base fee (max fee = 2 x base fee + tip), with the gas estimated (+20%);
        a legacy one otherwise. A call that would revert is still sent (with fixed gas), so
        the revert is mined and reported the same way on every chain."""
        w3 = self.w3
        base: dict[str, Any] = {"from": self.address, "value": value}
        tx: dict[str, Any] = {
            **base,
            "nonce": w3.eth.get_transaction_count(self.address, "pending"),  # type: ignore[arg-type]
            "chainId": int(w3.eth.chain_id),
        }
        base_fee = w3.eth.get_block("latest").get("baseFeePerGas")
        if base_fee is None:
            tx["gasPrice"] = int(w3.eth.gas_price)
        else:
            try:
                tip = int(w3.eth.max_priority_fee)
            except Exception:  # an L1 without eth_maxPriorityFeePerGas
                tip = _DEFAULT_TIP
            tx["maxPriorityFeePerGas"] = tip
            tx["maxFeePerGas"] = 2 * int(base_fee) + tip
        try:
            tx["gas"] = int(call.estimate_gas(base)) * 12 // 10 + 10_000
        except Exception:  # it would revert: send it anyway, the receipt says so
            tx["gas"] = _GAS
        signed = Account.sign_transaction(call.build_transaction(tx), self.private_key)
        tx_hash = w3.eth.send_raw_transaction(signed.raw_transaction)
        receipt = dict(w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60))
        if receipt["status"] != 1:
            raise RuntimeError(f"L1 transaction reverted: {tx_hash.hex()}")
        return receipt

    def fund_from(self, funder: str, amount: int) -> None:
        """Dev chains: an unlocked account (eth_accounts) pays this wallet's gas and stake."""
        tx: Any = {"from": funder, "to": self.address, "value": amount}
        self.w3.eth.wait_for_transaction_receipt(self.w3.eth.send_transaction(tx), timeout=60)


def stake(wallet: Wallet, deployment: Deployment, rollup_key: bytes, amount: int) -> dict[str, Any]:
    """Stake for an ed25519 rollup key (StakingRegistry.stake). The L2 credits it only if this
    wallet's address is the one the key bound with its signed `bind_l1` action (send that first:
    `Client.bind_l1`); from any other address the stake is released back to the sender."""
    return wallet.send(deployment.registry.functions.stake(rollup_key), amount)


def fund_job(wallet: Wallet, deployment: Deployment, job_id: int, amount: int) -> dict[str, Any]:
    """Fund a training job's reward pool on L1 (RewardManager.fundJob)."""
    return wallet.send(deployment.rewards.functions.fundJob(job_id), amount)


def claim(wallet: Wallet, deployment: Deployment, proof: dict[str, Any]) -> dict[str, Any]:
    """Execute any settlement record yourself with its proof from the node
    (GET /v1/settlements/{id}/proof); nobody has to trust the node's keeper. It pays the payee
    inside the record, whoever sends this."""
    r = proof["record"]
    record = (
        r["version"],
        r["kind"],
        r["job_id"],
        r["round"],
        bytes.fromhex(r["rollup_key"][2:]),
        Web3.to_checksum_address(r["payee"]),
        int(r["amount"]),
        bytes.fromhex(r["record_id"][2:]),
    )
    args = (
        proof["batch_index"],
        bytes.fromhex(proof["state_root"][2:]),
        bytes.fromhex(proof["settlement_root"][2:]),
        bytes.fromhex(proof["last_block_hash"][2:]),
        record,
        [bytes.fromhex(p[2:]) for p in proof["proof"]],
    )
    fn = {
        1: deployment.slashing.functions.executeSlash,
        4: deployment.slashing.functions.executeRelease,
    }.get(r["kind"], deployment.rewards.functions.claim)
    return wallet.send(fn(*args))
