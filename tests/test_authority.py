"""Authority: every privileged action and call tried by the wrong key or address, and
signatures and proofs replayed across chain ids and contract deployments — all refused."""

from typing import Any

import numpy as np
import pytest
from web3 import EthereumTesterProvider, Web3

from l1_bridge.contracts import BatchProof, Deployment, decode_error, revert_data, send
from l1_bridge.link import deploy_dev
from l1_bridge.settlement import (
    RecordKind,
    SettlementRecord,
    SettlementTree,
    make_record_id,
    output_root,
)
from node.sdk.client import ApiError
from node.sdk.devkeys import dev_key
from rollup.codec import CodecError, decode_action, encode_action, signing_message
from stf.accounts import Transfer
from stf.actions import Propose, terms_to_tuple
from stf.jobs import AggregateRound
from stf.models import Approve, ProposalRef, SetPrice, Upload
from tests.conftest import NodeProcess
from tests.fl_harness import terms

ETH = 10**18
OWNER, BUYER, STRANGER = dev_key(0), dev_key(1), dev_key(2)


# -- L2: the wrong key, at the door and in the STF --------------------------------------


def _refused(
    node: NodeProcess, key: Any, action: str, payload: Any, status: int, code: str
) -> None:
    client = node.client
    before = client.health()["head"]
    with pytest.raises(ApiError) as exc:
        client.send(key, action, payload)
    assert (exc.value.status, exc.value.code) == (status, code)
    assert client.health()["head"] == before


def test_privileged_actions_by_the_wrong_key_are_refused(node: NodeProcess) -> None:
    client = node.client
    params = np.zeros(2000, dtype="<f4").tobytes()
    client.execute(OWNER, "upload", Upload("m", (("w", (40, 50)),), params, 16, 10, b""))
    pid = int(
        next(
            e
            for e in client.wait(client.propose_access(BUYER, "m", 10))["receipt"]["events"]
            if e["name"] == "ProposalCreated"
        )["data"]["proposal_id"]
    )
    status = client.execute(
        OWNER, "propose", Propose("train", "m", ETH, 0, terms_to_tuple(terms()))
    )
    job = int(
        next(e for e in status["receipt"]["events"] if e["name"] == "JobCreated")["data"]["job_id"]
    )
    _refused(
        node,
        STRANGER,
        "upload",
        Upload("m", (("w", (40, 50)),), params, 16, 0, b""),
        403,
        "not_owner",
    )
    _refused(node, STRANGER, "set_price", SetPrice("m", 0), 403, "not_owner")
    _refused(node, STRANGER, "approve", Approve(pid, b"k"), 403, "not_owner")
    _refused(node, BUYER, "approve", Approve(pid, b"k"), 403, "not_owner")
    _refused(node, STRANGER, "reject", ProposalRef(pid), 403, "not_owner")
    _refused(node, STRANGER, "cancel", ProposalRef(pid), 403, "not_proposer")
    # An aggregate is never simulated at the door (it is the costly action): the STF refuses it.
    status = client.wait(client.send(STRANGER, "aggregate", AggregateRound(job, 1, 0)))
    assert status["status"] == "failed" and status["receipt"]["error"] == "not_aggregator"
    _refused(
        node,
        STRANGER,
        "propose",
        Propose("train", "m", ETH, 0, terms_to_tuple(terms())),
        403,
        "no_access",
    )


def test_signatures_do_not_cross_chain_ids() -> None:
    wire = encode_action(OWNER, 1, "transfer", 1, Transfer(bytes(32), 1))
    with pytest.raises(CodecError) as exc:
        decode_action(wire, 2)
    assert exc.value.code == "wrong_chain"
    # the same body and signature, relabelled for chain 2: the signature covers the chain id
    relabelled = wire.replace(b"\x97\x01\x01", b"\x97\x01\x02", 1)
    assert relabelled != wire
    with pytest.raises(CodecError) as exc:
        decode_action(relabelled, 2)
    assert exc.value.code == "bad_signature"
    assert signing_message(1, b"x") != signing_message(2, b"x")


# -- L1: the wrong address, and proofs replayed across deployments -----------------------


def _reverts(fn: Any, sender: str, name: str) -> None:
    with pytest.raises(Exception) as exc:
        fn.call({"from": sender})
    err = decode_error(revert_data(exc.value) or b"")
    assert err is not None and err.name == name, err


def _deploy(w3: Web3, genesis: bytes) -> Deployment:
    """The dev roles: 0 proposer, 1 guardian, 2 challenger, 3 protocol."""
    return deploy_dev(w3, genesis, challenge_window_s=5, unbonding_s=60, max_pending_batches=16)


def test_l1_privileged_calls_by_the_wrong_address_and_cross_deployment_proofs() -> None:
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    a = list(w3.eth.accounts)
    stranger = a[9]
    genesis = b"\x01" * 32
    first, second = _deploy(w3, genesis), _deploy(w3, genesis)
    key = b"\xa1" * 32
    for dep in (first, second):
        send(w3, dep.registry.functions.stake(key), a[5], value=2 * ETH)
        send(w3, dep.rewards.functions.fundJob(7), a[6], value=3 * ETH)
    # wrong callers
    root = b"\x02" * 32
    _reverts(first.inbox.functions.commitBatch(0, genesis, root, root, 0), stranger, "NotProposer")
    _reverts(first.inbox.functions.challenge(0), stranger, "AccessControlUnauthorizedAccount")
    _reverts(
        first.inbox.functions.resolveChallenge(0, True), a[2], "AccessControlUnauthorizedAccount"
    )
    _reverts(first.registry.functions.slash(key, a[5], 1), stranger, "NotSlashingManager")
    _reverts(first.registry.functions.release(key, stranger, 1), stranger, "NotSlashingManager")
    _reverts(first.slash_treasury.functions.sweep(stranger, 1), stranger, "NotAdmin")
    _reverts(first.reward_treasury.functions.pay(stranger, 1), stranger, "NotManager")
    # Sequence 7 (no domain): a second inbox following the same L2 commits the very same
    # output root; the root names the first inbox (and the chain), so the second pays nothing.
    payee = bytes.fromhex(a[5][2:])
    record = SettlementRecord(int(RecordKind.REWARD), 7, 1, key, payee, ETH, make_record_id(1))
    tree = SettlementTree([record])
    state_root, last_hash = b"\x03" * 32, b"\x04" * 32
    committed = output_root(state_root, tree.root, last_hash, first.chain_id, first.inbox.address)
    assert committed != output_root(
        state_root, tree.root, last_hash, second.chain_id, second.inbox.address
    )
    assert committed != output_root(state_root, tree.root, last_hash, 1, first.inbox.address)
    first.commit_batch(0, genesis, committed, b"\x05" * 32, sender=a[0])
    second.commit_batch(0, genesis, committed, b"\x05" * 32, sender=a[0])
    provider.ethereum_tester.time_travel(int(w3.eth.get_block("latest")["timestamp"]) + 10)
    provider.ethereum_tester.mine_blocks(1)
    proof = BatchProof(0, state_root, tree.root, last_hash, record, tuple(tree.proof(0)))
    _reverts(second.rewards.functions.claim(*proof.args()), a[8], "OutputRootMismatch")
    send(w3, first.rewards.functions.claim(*proof.args()), a[8])
    _reverts(first.rewards.functions.claim(*proof.args()), a[8], "RecordAlreadyExecuted")
