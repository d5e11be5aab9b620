"""Load the compiled L1 contracts, deploy the whole set, and talk to a deployment.

Typical use::

    dep = deploy_all(
        w3, deployer=a0, proposer=a1, guardian=a2, challenger=a3,
        challenge_window_s=3600, unbonding_s=7 * 86400, min_stake_wei=10**18,
        protocol_fee_bps=250, protocol_addr=a4, genesis_output_root=b"\\0" * 32,
    )
    Path("deployment.json").write_text(dep.to_json())
    dep = Deployment.from_json(w3, Path("deployment.json").read_text())
    dep.commit_batch(0, prev_root, out_root, data_hash, sender=a1)
    dep.execute_slash(BatchProof(...), sender=anyone)

Wiring: every contract reference is an immutable constructor argument. Because the references are
circular (the registry and the SlashingManager name each other, etc.), :func:`deploy_all` predicts
the CREATE addresses from the deployer's nonce and deploys in a fixed order; the deployer must not
send other transactions while it runs (the addresses are checked afterwards).

Transactions are sent as ``transact({"from": address})``: from accounts the L1 node manages
(eth-tester, anvil dev chains), or, with ``l1_bridge.keystore.use_local_signers``, signed here
from keystore accounts and sent raw (any RPC).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, Final

from eth_abi.abi import decode as abi_decode
from eth_typing import ChecksumAddress
from eth_utils.abi import function_signature_to_4byte_selector
from eth_utils.address import to_checksum_address
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.types import Nonce, TxParams, TxReceipt, Wei
from web3.utils.address import get_create_address

from l1_bridge.settlement import RecordKind, SettlementRecord

__all__ = [
    "ARTIFACTS_DIR",
    "CONTRACT_NAMES",
    "DEPLOYMENT_FORMAT",
    "Artifact",
    "BatchProof",
    "DecodedError",
    "Deployment",
    "DeploymentParams",
    "TransactionFailed",
    "contract_at",
    "decode_error",
    "deploy_all",
    "load_artifact",
    "revert_data",
    "send",
]

ARTIFACTS_DIR: Final = Path(__file__).resolve().parent / "artifacts"

#: Deployable contracts, in deployment order.
CONTRACT_NAMES: Final = (
    "SlashTreasury",
    "RewardTreasury",
    "RollupInbox",
    "StakingRegistry",
    "SlashingManager",
    "RewardManager",
)

#: Version tag of the deployment-file format written by :meth:`Deployment.to_json`.
DEPLOYMENT_FORMAT: Final = "fedrollup-l1-deployment/3"  # 3: `admin` (two-step), rotatable proposer


class TransactionFailed(RuntimeError):
    """A transaction was mined but reverted."""

    def __init__(self, receipt: TxReceipt) -> None:
        super().__init__(f"transaction {receipt['transactionHash'].hex()} reverted")
        self.receipt = receipt


@dataclass(frozen=True, slots=True)
class Artifact:
    """A compiled contract (from ``l1_bridge/artifacts/<name>.json``)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str


@cache
def load_artifact(name: str) -> Artifact:
    """Load the committed artifact of contract ``name``."""
    data = json.loads((ARTIFACTS_DIR / f"{name}.json").read_text(encoding="utf-8"))
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=data["bytecode"],
        deployed_bytecode=data["deployedBytecode"],
        compiler_version=data["compiler"]["version"],
    )


def contract_at(w3: Web3, name: str, address: str) -> Contract:
    """A web3 contract object for contract ``name`` at ``address``."""
    return w3.eth.contract(address=to_checksum_address(address), abi=load_artifact(name).abi)


def send(
    w3: Web3, fn: ContractFunction, sender: str, *, value: int = 0, gas: int | None = None
) -> TxReceipt:
    """Send ``fn`` as a transaction from ``sender``, wait for it, raise :class:`TransactionFailed`
    if it reverted (web3 usually raises ``ContractLogicError`` earlier, at gas estimation)."""
    tx: TxParams = {"from": to_checksum_address(sender), "value": Wei(value)}
    if gas is not None:
        tx["gas"] = gas
    receipt = w3.eth.wait_for_transaction_receipt(fn.transact(tx))
    if receipt["status"] != 1:
        raise TransactionFailed(receipt)
    return receipt


@dataclass(frozen=True, slots=True)
class DecodedError:
    """A decoded Solidity custom error (``Error(string)`` and ``Panic(uint256)`` included)."""

    name: str
    args: tuple[Any, ...]


def _abi_type(param: Mapping[str, Any]) -> str:
    kind = str(param["type"])
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@cache
def _error_table() -> dict[bytes, tuple[str, tuple[str, ...]]]:
    table: dict[bytes, tuple[str, tuple[str, ...]]] = {
        bytes.fromhex("08c379a0"): ("Error", ("string",)),
        bytes.fromhex("4e487b71"): ("Panic", ("uint256",)),
    }
    for name in CONTRACT_NAMES:
        for entry in load_artifact(name).abi:
            if entry.get("type") != "error":
                continue
            types = tuple(_abi_type(p) for p in entry["inputs"])
            selector = function_signature_to_4byte_selector(f"{entry['name']}({','.join(types)})")
            table[selector] = (str(entry["name"]), types)
    return table


def decode_error(data: bytes) -> DecodedError | None:
    """Decode revert data of any of the contracts' custom errors (None if unknown/empty)."""
    entry = _error_table().get(bytes(data[:4]))
    if entry is None:
        return None
    name, types = entry
    try:
        values = abi_decode(list(types), bytes(data[4:]))
    except Exception:  # malformed payload: keep the name
        return DecodedError(name, ())
    args = tuple(
        to_checksum_address(v) if t == "address" else v for t, v in zip(types, values, strict=True)
    )
    return DecodedError(name, args)


_TESTER_REVERT = re.compile(r"execution reverted: (b'.*'|b\".*\")", re.DOTALL)


def revert_data(exc: BaseException) -> bytes | None:
    """Revert data carried by a web3 ``ContractLogicError``/``ContractCustomError`` or an
    eth-tester ``TransactionFailed`` (None if there is none)."""
    data = getattr(exc, "data", None)
    if isinstance(data, str) and data.startswith("0x"):
        return bytes.fromhex(data[2:])
    if isinstance(data, bytes):
        return data
    for arg in exc.args:
        if isinstance(arg, bytes):
            return arg
        if isinstance(arg, str):
            match = _TESTER_REVERT.search(arg)
            if match:
                value = ast.literal_eval(match.group(1))
                if isinstance(value, bytes):
                    return value
    return None


def _bytes32(value: bytes | str, name: str) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(raw)}")
    return raw


@dataclass(frozen=True, slots=True)
class BatchProof:
    """Everything needed to execute or claim one settlement record of a finalized batch."""

    batch_index: int
    state_root: bytes
    settlement_root: bytes
    last_block_hash: bytes
    record: SettlementRecord
    proof: tuple[bytes, ...]

    def args(self) -> tuple[Any, ...]:
        """Positional arguments of ``executeSlash`` / ``executeRelease`` / ``claim``."""
        return (
            self.batch_index,
            self.state_root,
            self.settlement_root,
            self.last_block_hash,
            self.record.as_abi_tuple(),
            list(self.proof),
        )


@dataclass(frozen=True, slots=True)
class DeploymentParams:
    """Constructor parameters of a deployment (all addresses checksummed)."""

    deployer: ChecksumAddress
    proposer: ChecksumAddress
    guardian: ChecksumAddress
    challenger: ChecksumAddress
    admin: ChecksumAddress
    protocol_addr: ChecksumAddress
    challenge_window_s: int
    unbonding_s: int
    min_stake_wei: int
    protocol_fee_bps: int
    genesis_output_root: str
    max_pending_batches: int
    inclusion_window_s: int = 3_600


@dataclass(frozen=True)
class Deployment:
    """Addresses and web3 contract objects of one deployment of the L1 contracts."""

    chain_id: int
    block_number: int
    params: DeploymentParams
    addresses: Mapping[str, ChecksumAddress]
    w3: Web3 = field(repr=False, compare=False)
    inbox: Contract = field(repr=False, compare=False)
    registry: Contract = field(repr=False, compare=False)
    slashing: Contract = field(repr=False, compare=False)
    rewards: Contract = field(repr=False, compare=False)
    slash_treasury: Contract = field(repr=False, compare=False)
    reward_treasury: Contract = field(repr=False, compare=False)

    @classmethod
    def attach(
        cls,
        w3: Web3,
        *,
        chain_id: int,
        block_number: int,
        params: DeploymentParams,
        addresses: Mapping[str, str],
    ) -> Deployment:
        """Build a Deployment from known addresses (keys: :data:`CONTRACT_NAMES`)."""
        missing = set(CONTRACT_NAMES) - set(addresses)
        if missing:
            raise ValueError(f"deployment lacks addresses for {sorted(missing)}")
        checked = {name: to_checksum_address(addresses[name]) for name in CONTRACT_NAMES}

        def at(name: str) -> Contract:
            return contract_at(w3, name, checked[name])

        return cls(
            chain_id=chain_id,
            block_number=block_number,
            params=params,
            addresses=checked,
            w3=w3,
            inbox=at("RollupInbox"),
            registry=at("StakingRegistry"),
            slashing=at("SlashingManager"),
            rewards=at("RewardManager"),
            slash_treasury=at("SlashTreasury"),
            reward_treasury=at("RewardTreasury"),
        )

    # ------------------------------------------------------------- deployment file

    def to_json(self) -> str:
        """The deployment file (deterministic JSON)."""
        doc = {
            "format": DEPLOYMENT_FORMAT,
            "chainId": self.chain_id,
            "blockNumber": self.block_number,
            "contracts": dict(self.addresses),
            "params": asdict(self.params),
        }
        return json.dumps(doc, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, w3: Web3, text: str, *, check_chain: bool = True) -> Deployment:
        """Load a deployment file written by :meth:`to_json`; by default checks the chain id."""
        doc = json.loads(text)
        if doc.get("format") != DEPLOYMENT_FORMAT:
            raise ValueError(f"not a {DEPLOYMENT_FORMAT} file: format={doc.get('format')!r}")
        chain_id = int(doc["chainId"])
        if check_chain and w3.eth.chain_id != chain_id:
            raise ValueError(f"deployment is for chain {chain_id}, connected to {w3.eth.chain_id}")
        raw = doc["params"]
        params = DeploymentParams(
            **{
                **raw,
                **{
                    k: to_checksum_address(raw[k])
                    for k in (
                        "deployer",
                        "proposer",
                        "guardian",
                        "challenger",
                        "admin",
                        "protocol_addr",
                    )
                },
            }
        )
        return cls.attach(
            w3,
            chain_id=chain_id,
            block_number=int(doc["blockNumber"]),
            params=params,
            addresses=doc["contracts"],
        )

    # ------------------------------------------------------------- thin wrappers

    def commit_batch(
        self,
        index: int,
        prev_output_root: bytes,
        output_root: bytes,
        data_hash: bytes,
        messages_consumed: int | None = None,
        *,
        sender: str,
    ) -> TxReceipt:
        """``RollupInbox.commitBatch`` (sender must be the proposer). `messages_consumed`: the
        L2's next L1-message nonce after the batch (default: every message sent so far)."""
        if messages_consumed is None:
            messages_consumed = int(self.inbox.functions.messageCount().call())
        fn = self.inbox.functions.commitBatch(
            index, prev_output_root, output_root, data_hash, messages_consumed
        )
        return send(self.w3, fn, sender)

    def challenge(self, index: int, *, sender: str) -> TxReceipt:
        """``RollupInbox.challenge`` (sender needs CHALLENGER_ROLE)."""
        return send(self.w3, self.inbox.functions.challenge(index), sender)

    def set_proposer(self, new_proposer: str, *, sender: str) -> TxReceipt:
        """``RollupInbox.setProposer`` (sender must be the admin)."""
        fn = self.inbox.functions.setProposer(to_checksum_address(new_proposer))
        return send(self.w3, fn, sender)

    def current_proposer(self) -> ChecksumAddress:
        """The inbox's proposer now (the deployment file names the first one)."""
        return to_checksum_address(self.inbox.functions.proposer().call())

    def resolve_challenge(self, index: int, valid: bool, *, sender: str) -> TxReceipt:
        """``RollupInbox.resolveChallenge`` (sender needs GUARDIAN_ROLE)."""
        return send(self.w3, self.inbox.functions.resolveChallenge(index, valid), sender)

    def execute_slash(self, item: BatchProof, *, sender: str) -> TxReceipt:
        """``SlashingManager.executeSlash`` for a slash record of a finalized batch."""
        return send(self.w3, self.slashing.functions.executeSlash(*item.args()), sender)

    def execute_release(self, item: BatchProof, *, sender: str) -> TxReceipt:
        """``SlashingManager.executeRelease`` for a stake-release record of a finalized batch."""
        return send(self.w3, self.slashing.functions.executeRelease(*item.args()), sender)

    def settle(self, item: BatchProof, *, sender: str) -> TxReceipt:
        """Execute any record with the entry point of its kind."""
        kind = item.record.kind
        if kind == RecordKind.SLASH:
            return self.execute_slash(item, sender=sender)
        if kind == RecordKind.STAKE_RELEASE:
            return self.execute_release(item, sender=sender)
        return self.claim(item, sender=sender)

    def is_settled(self, record: SettlementRecord) -> bool:
        """Whether ``record`` was executed on L1 (by its kind's contract)."""
        if record.kind in (RecordKind.SLASH, RecordKind.STAKE_RELEASE):
            return bool(self.slashing.functions.isExecuted(record.record_id).call())
        return bool(self.rewards.functions.isClaimed(record.record_id).call())

    def claim(self, item: BatchProof, *, sender: str) -> TxReceipt:
        """``RewardManager.claim`` for a reward/withdrawal/refund record of a finalized batch."""
        return send(self.w3, self.rewards.functions.claim(*item.args()), sender)

    def next_batch_index(self) -> int:
        """``RollupInbox.nextBatchIndex()``."""
        return int(self.inbox.functions.nextBatchIndex().call())

    def is_finalized(self, index: int) -> bool:
        """``RollupInbox.isFinalized(index)``."""
        return bool(self.inbox.functions.isFinalized(index).call())

    def committed_output_root(self, index: int) -> bytes:
        """``RollupInbox.committedOutputRoot(index)`` (reverts if not committed)."""
        return bytes(self.inbox.functions.committedOutputRoot(index).call())


def deploy_all(
    w3: Web3,
    *,
    deployer: str,
    proposer: str,
    guardian: str,
    challenger: str,
    challenge_window_s: int,
    unbonding_s: int,
    min_stake_wei: int,
    protocol_fee_bps: int,
    protocol_addr: str,
    genesis_output_root: bytes | str,
    admin: str | None = None,
    max_pending_batches: int = 512,
    inclusion_window_s: int = 3_600,
) -> Deployment:
    """Deploy and wire the six contracts; return the :class:`Deployment`.

    ``admin`` (default: ``guardian``; ``fedrollup deploy`` always names its own) is the admin of
    the inbox (grants/revokes guardians and challengers, rotates the proposer) and of the
    SlashTreasury; it moves in two steps (``transferAdmin`` then ``acceptAdmin``). No role may be
    the zero address (``ValueError`` here, ``ZeroAddress`` on-chain). ``max_pending_batches``
    (multiple of 4) bounds the number of not-yet-final batches; deployment cost grows with it
    (~22k gas per 4). ``unbonding_s`` is the StakingRegistry's ``escapeDelay``: seconds without a
    commit after which stakers may take their stake back directly (the rollup has stopped); it
    must exceed ``challenge_window_s`` (checked on-chain), and on a real chain should be long
    (days: 7 by default for ``fedrollup deploy``) so every committed slash can execute first.
    """
    params = DeploymentParams(
        deployer=to_checksum_address(deployer),
        proposer=to_checksum_address(proposer),
        guardian=to_checksum_address(guardian),
        challenger=to_checksum_address(challenger),
        admin=to_checksum_address(admin if admin is not None else guardian),
        protocol_addr=to_checksum_address(protocol_addr),
        challenge_window_s=challenge_window_s,
        unbonding_s=unbonding_s,
        min_stake_wei=min_stake_wei,
        protocol_fee_bps=protocol_fee_bps,
        genesis_output_root="0x" + _bytes32(genesis_output_root, "genesis_output_root").hex(),
        max_pending_batches=max_pending_batches,
        inclusion_window_s=inclusion_window_s,
    )
    for role in ("proposer", "guardian", "challenger", "admin"):
        if int(getattr(params, role), 16) == 0:
            raise ValueError(f"{role}: the zero address is refused")
    if unbonding_s <= challenge_window_s:
        raise ValueError("unbonding_s must exceed challenge_window_s")
    start_nonce = w3.eth.get_transaction_count(params.deployer, "pending")
    predicted = {
        name: get_create_address(params.deployer, Nonce(start_nonce + i))
        for i, name in enumerate(CONTRACT_NAMES)
    }
    ctor_args: dict[str, tuple[Any, ...]] = {
        "SlashTreasury": (params.admin,),
        "RewardTreasury": (predicted["RewardManager"],),
        "RollupInbox": (
            params.admin,
            params.proposer,
            params.guardian,
            params.challenger,
            challenge_window_s,
            _bytes32(genesis_output_root, "genesis_output_root"),
            predicted["RewardTreasury"],
            predicted["StakingRegistry"],
            predicted["RewardManager"],
            max_pending_batches,
            inclusion_window_s,
        ),
        "StakingRegistry": (
            predicted["RollupInbox"],
            predicted["SlashTreasury"],
            predicted["SlashingManager"],
            min_stake_wei,
            unbonding_s,
        ),
        "SlashingManager": (predicted["RollupInbox"], predicted["StakingRegistry"]),
        "RewardManager": (
            predicted["RollupInbox"],
            predicted["RewardTreasury"],
            params.protocol_addr,
            protocol_fee_bps,
        ),
    }
    first_block: int | None = None
    for i, name in enumerate(CONTRACT_NAMES):
        artifact = load_artifact(name)
        factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        tx_hash = factory.constructor(*ctor_args[name]).transact(
            {"from": params.deployer, "nonce": Nonce(start_nonce + i)}
        )
        receipt = w3.eth.wait_for_transaction_receipt(tx_hash)
        if receipt["status"] != 1:
            raise TransactionFailed(receipt)
        if receipt["contractAddress"] != predicted[name]:
            raise RuntimeError(
                f"{name} deployed at {receipt['contractAddress']}, expected {predicted[name]}: "
                "the deployer sent another transaction during deploy_all"
            )
        if first_block is None:
            first_block = receipt["blockNumber"]
    assert first_block is not None
    return Deployment.attach(
        w3,
        chain_id=w3.eth.chain_id,
        block_number=first_block,
        params=params,
        addresses=predicted,
    )
