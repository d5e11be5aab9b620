"""`fedrollup bench gas`: gas used (incl. the 21,000 intrinsic) by every L1 entry point, for
batches of 1, 100 and 10,000 settlement records, on the embedded EVM (py-evm). Gas is
deterministic, so the committed snapshot (gas-snapshot.json) is checked exactly, with a 5%
allowance, by tests/test_gas.py."""

import hashlib
import json
from pathlib import Path
from typing import Any

from web3 import EthereumTesterProvider, Web3

from l1_bridge.contracts import BatchProof, send
from l1_bridge.link import deploy_dev
from l1_bridge.settlement import (
    RecordKind,
    SettlementRecord,
    SettlementTree,
    make_record_id,
    output_root,
)


def _root(label: str) -> bytes:
    """Fixed roots: calldata gas depends on zero bytes, so random ones would make it drift."""
    return hashlib.blake2b(label.encode(), digest_size=32).digest()


SNAPSHOT = Path(__file__).with_name("gas-snapshot.json")
ETH = 10**18
SIZES = (1, 100, 10_000)
_KEYS = {
    RecordKind.SLASH: bytes.fromhex("a1" * 32),
    RecordKind.REWARD: bytes.fromhex("b0" * 32),
    RecordKind.WITHDRAWAL: bytes.fromhex("b0" * 32),
    RecordKind.STAKE_RELEASE: bytes.fromhex("a1" * 32),
    RecordKind.REFUND: bytes(32),
}
JOB = 7
_KINDS = (
    RecordKind.SLASH,
    RecordKind.REWARD,
    RecordKind.WITHDRAWAL,
    RecordKind.STAKE_RELEASE,
    RecordKind.REFUND,
)
_NAMES = {
    RecordKind.SLASH: "executeSlash",
    RecordKind.REWARD: "claim reward",
    RecordKind.WITHDRAWAL: "claim withdrawal",
    RecordKind.STAKE_RELEASE: "executeRelease",
    RecordKind.REFUND: "claim refund",
}


def _records(size: int, first_seq: int, payees: dict[RecordKind, bytes]) -> list[SettlementRecord]:
    """Every kind in turn; a 1-record batch holds a slash. Payees are the bench's funded L1
    accounts (the slashed/released staker, a rewarded/withdrawing participant, a funder)."""
    return [
        SettlementRecord(
            int(_KINDS[i % 5]),
            JOB if _KINDS[i % 5] in (RecordKind.REWARD, RecordKind.REFUND) else 0,
            1,
            _KEYS[_KINDS[i % 5]],
            payees[_KINDS[i % 5]],
            1_000 + i,
            make_record_id(first_seq + i),
        )
        for i in range(size)
    ]


def measure(sizes: tuple[int, ...] = SIZES) -> dict[str, int]:
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    a = list(w3.eth.accounts)
    genesis = _root("genesis")
    dep = deploy_dev(w3, genesis, challenge_window_s=10, unbonding_s=100, max_pending_batches=64)
    gas: dict[str, int] = {}
    gas["stake (new key)"] = send(
        w3, dep.registry.functions.stake(_KEYS[RecordKind.SLASH]), a[5], value=3 * ETH
    )["gasUsed"]
    send(w3, dep.registry.functions.stake(_KEYS[RecordKind.REWARD]), a[6], value=2 * ETH)
    gas["stake (top-up)"] = send(
        w3, dep.registry.functions.stake(_KEYS[RecordKind.SLASH]), a[5], value=ETH
    )["gasUsed"]
    payees = {
        RecordKind.SLASH: bytes.fromhex(a[5][2:]),
        RecordKind.STAKE_RELEASE: bytes.fromhex(a[5][2:]),
        RecordKind.REWARD: bytes.fromhex(a[6][2:]),
        RecordKind.WITHDRAWAL: bytes.fromhex(a[6][2:]),
        RecordKind.REFUND: bytes.fromhex(a[7][2:]),
    }
    gas["fundJob (new job)"] = send(w3, dep.rewards.functions.fundJob(JOB), a[7], value=50 * ETH)[
        "gasUsed"
    ]
    gas["fundJob (funded job)"] = send(w3, dep.rewards.functions.fundJob(JOB), a[7], value=ETH)[
        "gasUsed"
    ]
    prev, seq, batches = genesis, 1, []
    for index, size in enumerate(sizes):
        records = _records(size, seq, payees)
        seq += size
        tree = SettlementTree(records)
        state_root, last_hash = _root(f"state {index}"), _root(f"block {index}")
        root = output_root(state_root, tree.root, last_hash, dep.chain_id, dep.inbox.address)
        gas[f"commitBatch ({size} records)"] = dep.commit_batch(
            index, prev, root, _root(f"data {index}"), sender=a[0]
        )["gasUsed"]
        batches.append((index, size, records, tree, state_root, last_hash))
        prev = root
    tester: Any = provider.ethereum_tester
    tester.time_travel(int(w3.eth.get_block("latest")["timestamp"]) + 11)
    tester.mine_blocks(1)
    for index, size, records, tree, state_root, last_hash in batches:
        for kind, name in _NAMES.items():
            i = (
                max(j for j, r in enumerate(records) if r.kind == kind)
                if any(r.kind == kind for r in records)
                else None
            )
            if i is None:
                continue
            on_registry = kind in (RecordKind.SLASH, RecordKind.STAKE_RELEASE)
            contract = dep.slashing if on_registry else dep.rewards
            word = contract.functions.executionWordOf(records[i].record_id).call()
            send(
                w3, contract.functions.prepareExecutionWords(word, 1), a[8]
            )  # the keeper's gas trick
            proof = BatchProof(
                index, state_root, tree.root, last_hash, records[i], tuple(tree.proof(i))
            )
            fn = {
                RecordKind.SLASH: dep.slashing.functions.executeSlash,
                RecordKind.STAKE_RELEASE: dep.slashing.functions.executeRelease,
            }.get(kind, dep.rewards.functions.claim)
            gas[f"{name} ({size} records)"] = int(
                send(w3, fn(*proof.args()), a[8], gas=400_000)["gasUsed"]
            )
    return gas


def format_gas(gas: dict[str, int]) -> str:
    return "\n".join(f"  {name:36s} {used:>8,}" for name, used in gas.items())


def write_snapshot(gas: dict[str, int]) -> None:
    SNAPSHOT.write_text(json.dumps(gas, indent=2, sort_keys=True) + "\n")


def load_snapshot() -> dict[str, int]:
    data: dict[str, int] = json.loads(SNAPSHOT.read_text())
    return data
