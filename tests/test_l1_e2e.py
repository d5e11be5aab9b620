"""The L1 bridge end to end over real HTTP and a real EVM.

* Embedded py-evm (the node's /l1 JSON-RPC): participants stake on L1 from their own L1
  accounts, a job is funded on L1, a round with cheaters is aggregated over HTTP, and once the
  batch holding it is final the keeper has moved the cheaters' L1 stakes to the SlashTreasury
  and paid the honest clients' L1 addresses, each record exactly once.
* A challenged batch never finalizes, its records cannot execute, and the node says so.
* On anvil the same round, plus a deposit and its withdrawal, runs with every L1 account
  signing locally: `fedrollup deploy --keystore --role-keystores` gives each role (admin,
  proposer, guardian, challenger) its own keystore, the node's poster and keeper sign with
  theirs, participants with their own keys; anvil's unlocked accounts send nothing (the
  keystores are funded with anvil_setBalance), which a test checks transaction by
  transaction. There the admin rotates the proposer, `fedrollup verify` challenges a root
  the node never made with the challenger's keystore, and the guardian's keystore discards it.
* anvil: `fedrollup deploy`, deposits credited once, a SIGKILL/restart with no batch gap or
  duplicate and no deposit counted twice, and a reorg below the confirmation depth.
"""

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from eth_account.signers.local import LocalAccount
from web3 import Web3
from web3.exceptions import ContractLogicError, TransactionNotFound

from l1_bridge.contracts import Deployment, decode_error, revert_data
from l1_bridge.keystore import send_signed
from node.sdk.client import SUCCESS_STATUSES, ApiError, Client, event
from rollup.codec import encode_action
from stf.accounts import Transfer
from stf.aggregation import Rules
from stf.jobs import JobTerms, Withdraw
from tests.conftest import ROOT, NodeProcess, free_port
from tests.fl_harness import ARCH, PARAMS, http_submit_round, key, pub
from tests.l1_helpers import (
    ANVIL,
    ETH,
    Anvil,
    KeystoreDeployment,
    balance,
    batches,
    bind_l1,
    call_revert,
    committed_batches,
    deploy_with_keystores,
    deployment_of,
    l2_balance,
    local_account,
    mine,
    pay,
    proof_from_json,
    rpc,
    run_anvil,
    send_fails,
    send_fails_signed,
    set_balance,
    settlement,
    stake_on_l1,
    transact,
    transact_signed,
    transactions_since,
    travel,
    wait_until,
    web3_at,
    write_genesis,
)

GENESIS_BALANCE = 10**21
OWNER = 0
HONEST, TWINS, COPIER, NOISY = list(range(3, 11)), [11, 12], 13, 14
CHEATERS = [*TWINS, COPIER]  # evidence: slashed in one round
CLIENTS = [*HONEST, *CHEATERS, NOISY]  # NOISY: one round's suspicion, only excluded
L2_KEYS = [pub(i) for i in range(16)]
# L1 dev accounts: 0-4 are the node's (proposer, guardian, challenger, protocol, keeper).
CHALLENGER, BYSTANDER, FAUCET = 2, 7, 9
DEPOSITOR = 5
JOB_FUNDING = 4 * ETH
FEE_BPS = 100  # DEV_PROTOCOL_FEE_BPS of the embedded and `fedrollup deploy` deployments
SLASH_BPS = 5000
ROUNDS = 2  # a job that does not complete, so its only records are slashes and rewards


def hex_key(who: int) -> str:
    return "0x" + pub(who).hex()


def l1_stake(who: int) -> int:
    """Each participant stakes a different amount between 1 and 2 ETH."""
    return ETH + (who % 11) * ETH // 10


def terms() -> JobTerms:
    return JobTerms(
        rounds=ROUNDS,
        min_participants=7,
        max_participants=20,
        f=2,
        stake_required=ETH,
        round_blocks=10_000,
        target_accuracy_bp=0,
        aggregator=b"",
        local_epochs=1,
        slash_bps=SLASH_BPS,
        max_samples=10_000,
        krum_m=0,
        rules=Rules(),
    )


def submission(g: np.ndarray, who: int, direction: np.ndarray) -> np.ndarray:  # type: ignore[type-arg]
    """Honest clients move along `direction`; the twins send one vector (colluders); the
    copier sends the global model back; the noisy free-rider sends noise."""
    rng = np.random.default_rng(who)
    if who in HONEST:
        return (g + direction + rng.normal(0, 0.003, PARAMS)).astype(np.float32)
    if who in TWINS:
        return (g + direction + np.random.default_rng(99).normal(0, 0.003, PARAMS)).astype(
            np.float32
        )
    if who == COPIER:
        return g.astype(np.float32)
    return (g + rng.normal(0, 0.012, PARAMS)).astype(np.float32)


def embedded_node(tmp: Path, window_s: int, block_time_ms: int = 50) -> NodeProcess:
    genesis = write_genesis(tmp / "genesis.json", 4343, L2_KEYS, GENESIS_BALANCE)
    args = ["--genesis", str(genesis), "--challenge-window-s", str(window_s)]
    args += ["--batch-interval-ms", "300", "--block-time-ms", str(block_time_ms)]
    return NodeProcess(tmp / "data", free_port(), args).start()


def wait_ok(client: Client, action_hash: str) -> dict[str, Any]:
    status = client.wait(action_hash)
    assert status["status"] in SUCCESS_STATUSES, status
    return status


# =========================================================================== embedded py-evm


@dataclass
class SettledRound:
    w3: Web3
    dep: Deployment
    client: Client
    job_id: int
    net_funding: int
    l2_stakes: dict[int, int]  # credited from the L1 stakes, before the round
    accounts: dict[int, LocalAccount]  # each participant's L1 account
    squatter: LocalAccount  # staked for VICTIM's key from its own address
    bystander: LocalAccount  # an L1 account that only tries to replay executions
    l1_before: dict[int, int]  # L1 balances just before the aggregation
    treasury_before: int
    aggregate_hash: str
    records: list[dict[str, Any]]
    decisions: dict[str, dict[str, Any]]
    withdrawal: "Withdrawal"
    keystores: KeystoreDeployment | None = None  # anvil: every node-side role's keystore
    node: NodeProcess | None = None
    l1_url: str = ""

    def of_kind(self, kind: str) -> dict[str, dict[str, Any]]:
        """This kind's records by rollup key (one per key)."""
        found = [r for r in self.records if r["kind"] == kind]
        by_key = {r["rollup_key"]: r for r in found}
        assert len(by_key) == len(found), found
        return by_key


@dataclass
class Withdrawal:
    """WITHDRAWER deposited on L1 from its bound address, then withdrew as much on L2."""

    account: LocalAccount
    record: dict[str, Any]
    l1_before_payout: int  # its L1 balance after its deposit, before the keeper paid it


Fund = Callable[[str, int], None]


@pytest.fixture(scope="module", params=["py-evm", "anvil"])
def settled_round(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SettledRound]:
    """The same round, settled on the embedded py-evm and on a real anvil node (there with
    keystores only, see the module docstring)."""
    if request.param == "py-evm":
        node = embedded_node(tmp_path_factory.mktemp("embedded"), window_s=2)
        try:
            w3 = web3_at(node.url + "/l1")
            yield run_round(
                node, w3, fund=lambda to, wei: pay(w3, w3.eth.accounts[FAUCET], to, wei)
            )
        finally:
            node.kill()
        return
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL} (run `npm ci` in the project root)")
    tmp = tmp_path_factory.mktemp("anvil-round")
    genesis = write_genesis(tmp / "genesis.json", 4343, L2_KEYS, GENESIS_BALANCE)
    with run_anvil(tmp / "anvil.log") as anvil:
        w3 = anvil.w3
        stores = deploy_with_keystores(anvil.url, w3, tmp / "keys", genesis, 5, 60)
        args = ["--l1-rpc", anvil.url, *stores.node_args(), "--genesis", str(genesis)]
        node = NodeProcess(
            tmp / "data",
            free_port(),
            [*args, "--block-time-ms", "50", "--batch-interval-ms", "300"],
            env=stores.env,
        ).start(timeout=60)
        try:
            # anvil makes blocks only for transactions: move its clock past the window
            settled = run_round(
                node,
                w3,
                fund=lambda to, wei: set_balance(w3, to, wei),
                advance=lambda: travel(w3, 6),
                mine_blocks=lambda: mine(w3),
            )
            settled.keystores, settled.node, settled.l1_url = stores, node, anvil.url
            yield settled
        finally:
            node.kill()


def run_round(
    node: NodeProcess,
    w3: Web3,
    fund: Fund,
    advance: Callable[[], None] | None = None,
    mine_blocks: Callable[[], None] = lambda: None,
) -> SettledRound:
    """`fund` gives an L1 account ether (a dev account pays on py-evm; anvil_setBalance on
    anvil); `mine_blocks` confirms what was just sent where L1 mines only on transactions."""
    client = node.client
    dep = deployment_of(w3, client)
    squatter = squat(w3, dep, fund)
    accounts = stake_from_own_l1_accounts(w3, dep, client, CLIENTS, fund)

    def stakes() -> dict[int, int] | None:
        mine_blocks()  # confirm the last stakes (2 deep)
        return _all_or_none({w: client.stake_of(pub(w)) for w in CLIENTS})

    l2_stakes = wait_until(stakes, "L1 stakes on L2")
    job_id = open_unfunded_job(client)
    net = fund_job_on_l1(w3, dep, client, job_id, fund, mine_blocks)
    withdrawer, withdrawal_record = deposit_then_withdraw(w3, dep, client, fund, mine_blocks)
    withdrawer_before = balance(w3, withdrawer.address)
    l1_before = {w: balance(w3, a.address) for w, a in accounts.items()}
    treasury_before = balance(w3, dep.slash_treasury.address)
    aggregate_hash = train_one_round(client, job_id)
    status = wait_ok(client, aggregate_hash)
    records = status["receipt"]["records"]
    decisions = {d["client"]: d for d in client.round(job_id, 1)["decisions"]}

    def finalized() -> bool:
        if advance is not None:
            advance()
        return bool(client.action(aggregate_hash)["status"] == "finalized")

    wait_until(finalized, "the aggregation's batch to finalize")
    wait_until(
        lambda: all(settlement(client, r["record_id"])["settled"] for r in records),
        "the keeper to settle every record",
    )
    wait_until(
        lambda: settlement(client, withdrawal_record["record_id"])["settled"],
        "the keeper to pay the withdrawal",
    )
    wait_until(
        lambda: stake_on_l1(dep, pub(VICTIM), squatter.address) == 0,
        "the keeper to release the squatter's stake to the squatter",
    )
    bystander = local_account("bystander")
    fund(bystander.address, 2 * ETH)
    return SettledRound(
        w3,
        dep,
        client,
        job_id,
        net,
        l2_stakes,
        accounts,
        squatter,
        bystander,
        l1_before,
        treasury_before,
        aggregate_hash,
        records,
        decisions,
        Withdrawal(withdrawer, withdrawal_record, withdrawer_before),
    )


def _all_or_none(stakes: dict[int, int]) -> dict[int, int] | None:
    return stakes if all(stakes.values()) else None


VICTIM = HONEST[0]
SQUAT = ETH
WITHDRAWER = 15  # an L2 key that is no participant


def squat(w3: Web3, dep: Deployment, fund: Fund) -> LocalAccount:
    """Sequences 1 and 2: a stranger stakes for VICTIM's key first (as if front-running its
    first stake), hoping to own the key's binding and payouts."""
    squatter = local_account("squatter")
    fund(squatter.address, 2 * ETH)
    transact_signed(w3, squatter, dep.registry.functions.stake(pub(VICTIM)), value=SQUAT)
    return squatter


def stake_from_own_l1_accounts(
    w3: Web3, dep: Deployment, client: Client, who: list[int], fund: Fund
) -> dict[int, LocalAccount]:
    """Each participant gets a fresh L1 account, names it on L2 with its key's signed
    `bind_l1`, and stakes from it (signing locally)."""
    accounts = {w: local_account(f"participant {w}") for w in who}
    for w, account in accounts.items():
        bind_l1(client, key(w), account.address)
    for w, account in accounts.items():
        fund(account.address, 3 * ETH)
        transact_signed(w3, account, dep.registry.functions.stake(pub(w)), value=l1_stake(w))
    return accounts


def open_unfunded_job(client: Client) -> int:
    init = np.random.default_rng(0).normal(0, 0.1, PARAMS).astype(np.float32)
    wait_ok(client, client.upload(key(OWNER), "digits", ARCH, init))
    status = wait_ok(client, client.propose_train(key(OWNER), "digits", 0, terms()))
    return int(event(status, "JobCreated")["job_id"])


def fund_job_on_l1(
    w3: Web3,
    dep: Deployment,
    client: Client,
    job_id: int,
    fund: Fund,
    mine_blocks: Callable[[], None],
) -> int:
    """RewardManager.fundJob: the net amount (after the protocol fee) reaches the L2 job."""
    funder = local_account("job funder")
    fund(funder.address, JOB_FUNDING + ETH)
    transact_signed(w3, funder, dep.rewards.functions.fundJob(job_id), JOB_FUNDING)
    net = JOB_FUNDING - JOB_FUNDING * FEE_BPS // 10_000

    def funded() -> bool:
        mine_blocks()  # confirm the funding (2 deep)
        return bool(client.job(job_id)["funded"] == str(net))

    wait_until(funded, "JobFunded on L2")
    return net


def deposit_then_withdraw(
    w3: Web3, dep: Deployment, client: Client, fund: Fund, mine_blocks: Callable[[], None]
) -> tuple[LocalAccount, dict[str, Any]]:
    """WITHDRAWER binds an L1 account, deposits 1 ETH from it, and once L2 credits it
    withdraws 1 ETH to its bound address; returns the account and the withdrawal record."""
    account = local_account("withdrawer")
    fund(account.address, 2 * ETH)
    bind_l1(client, key(WITHDRAWER), account.address)
    before = l2_balance(client, pub(WITHDRAWER))
    transact_signed(w3, account, dep.inbox.functions.deposit(pub(WITHDRAWER)), ETH)

    def credited() -> bool:
        mine_blocks()
        return l2_balance(client, pub(WITHDRAWER)) == before + ETH

    wait_until(credited, "the deposit on L2")
    status = wait_ok(client, client.send(key(WITHDRAWER), "withdraw", Withdraw(ETH, b"")))
    (record,) = status["receipt"]["records"]
    assert record["kind"] == "withdrawal" and record["amount"] == str(ETH), record
    assert l2_balance(client, pub(WITHDRAWER)) == before
    return account, record


def train_one_round(client: Client, job_id: int) -> str:
    g = client.global_params(job_id, 0)
    direction = np.random.default_rng(7).normal(0, 0.01, PARAMS)
    items = [(key(w), submission(g, w, direction), 100 + w) for w in CLIENTS]
    for status in http_submit_round(client, key(OWNER), job_id, 1, items):
        assert status["status"] in SUCCESS_STATUSES, status
    return client.aggregate(key(OWNER), job_id, 1, 9100)


def test_l1_stakes_and_job_funding_are_credited_on_l2(settled_round: SettledRound) -> None:
    r = settled_round
    assert r.l2_stakes == {w: l1_stake(w) for w in CLIENTS}
    job = r.client.job(r.job_id)
    assert job["pool"] == "0" and job["funded"] == str(r.net_funding)


def test_a_squatters_stake_goes_back_to_the_squatter_only(settled_round: SettledRound) -> None:
    """Sequences 1 and 2 end to end: the squatter's stake for VICTIM's key credited nothing
    on L2 (VICTIM's stake is its own), came back to the squatter by a stake-release record the
    keeper executed, and VICTIM's own stake, binding and rewards are untouched."""
    r = settled_round
    assert r.l2_stakes[VICTIM] == l1_stake(VICTIM)
    assert stake_on_l1(r.dep, pub(VICTIM), r.squatter.address) == 0
    assert stake_on_l1(r.dep, pub(VICTIM), r.accounts[VICTIM].address) == l1_stake(VICTIM)
    assert balance(r.w3, r.squatter.address) > ETH  # 2 ETH in, 1 staked, 1 back, less gas


def test_round_slashes_the_cheaters_and_rewards_the_kept(settled_round: SettledRound) -> None:
    r = settled_round
    slashed = {c for c, d in r.decisions.items() if d["slashed"]}
    kept = {c for c, d in r.decisions.items() if d["kept"]}
    assert slashed == {hex_key(w) for w in CHEATERS}
    assert r.decisions[hex_key(NOISY)]["excluded"]
    assert kept and kept <= {hex_key(w) for w in HONEST}
    slashes, rewards = r.of_kind("slash"), r.of_kind("reward")
    assert len(r.records) == len(slashes) + len(rewards)
    assert {k: int(s["amount"]) for k, s in slashes.items()} == {
        hex_key(w): ETH * SLASH_BPS // 10_000
        for w in CHEATERS  # of stake_required
    }
    each = r.net_funding // ROUNDS // len(kept)
    assert {k: int(x["amount"]) for k, x in rewards.items()} == dict.fromkeys(kept, each)


def test_slashes_move_the_cheaters_l1_stake_to_the_treasury(settled_round: SettledRound) -> None:
    r = settled_round
    slashes = r.of_kind("slash")
    for w in CHEATERS:
        amount = int(slashes[hex_key(w)]["amount"])
        assert stake_on_l1(r.dep, pub(w), r.accounts[w].address) == l1_stake(w) - amount
    for w in HONEST:
        assert stake_on_l1(r.dep, pub(w), r.accounts[w].address) == l1_stake(w)
    total = sum(int(s["amount"]) for s in slashes.values())
    assert balance(r.w3, r.dep.slash_treasury.address) == r.treasury_before + total


def test_rewards_pay_the_bound_l1_addresses(settled_round: SettledRound) -> None:
    r = settled_round
    rewards = r.of_kind("reward")
    for w, account in r.accounts.items():
        if hex_key(w) in rewards:  # the payee is in the leaf: the address the key bound on L2
            assert rewards[hex_key(w)]["payee"] == "0x" + account.address[2:].lower()
        paid = int(rewards[hex_key(w)]["amount"]) if hex_key(w) in rewards else 0
        assert balance(r.w3, account.address) == r.l1_before[w] + paid, w
    funded, paid_out = r.dep.rewards.functions.jobPool(r.job_id).call()
    assert (funded, paid_out) == (r.net_funding, sum(int(x["amount"]) for x in rewards.values()))


def test_settled_records_execute_once_only(settled_round: SettledRound) -> None:
    r = settled_round
    proofs = [settlement(r.client, x["record_id"]) for x in r.records]
    assert {(p["batch_status"], p["settled"]) for p in proofs} == {("finalized", "settled")}
    sender = r.bystander.address
    slash = proof_from_json(next(p for p in proofs if p["record"]["kind"] == 1))
    reward = proof_from_json(next(p for p in proofs if p["record"]["kind"] == 2))
    slashed_address = slash.record.payee_address
    stake = stake_on_l1(r.dep, slash.record.rollup_key, slashed_address)
    payee = reward.record.payee_address
    paid = balance(r.w3, payee)
    for contract, name, proof in (
        (r.dep.slashing, "executeSlash", slash),
        (r.dep.rewards, "claim", reward),
    ):
        err = call_revert(r.w3, contract, name, proof.args(), sender)
        assert (err.name, err.args) == ("RecordAlreadyExecuted", (proof.record.record_id,))
        send_fails_signed(r.w3, r.bystander, contract.get_function_by_name(name)(*proof.args()))
    assert stake_on_l1(r.dep, slash.record.rollup_key, slashed_address) == stake
    assert balance(r.w3, payee) == paid


# Regression: /l1 once answered reverts without their data.
def test_embedded_l1_returns_revert_data_like_a_real_node(settled_round: SettledRound) -> None:
    r = settled_round
    record = settlement(r.client, r.records[0]["record_id"])
    proof = proof_from_json(record)
    fn = (
        r.dep.slashing.functions.executeSlash
        if proof.record.kind == 1
        else r.dep.rewards.functions.claim
    )
    with pytest.raises(ContractLogicError) as exc:
        fn(*proof.args()).call({"from": r.bystander.address})
    decoded = decode_error(revert_data(exc.value) or b"")
    assert decoded is not None and decoded.name == "RecordAlreadyExecuted"


def test_a_withdrawal_backed_by_a_deposit_is_paid_once_to_the_bound_address(
    settled_round: SettledRound,
) -> None:
    r, w = settled_round, settled_round.withdrawal
    proof = settlement(r.client, w.record["record_id"])
    assert (proof["batch_status"], proof["settled"]) == ("finalized", "settled")
    assert w.record["payee"] == "0x" + w.account.address[2:].lower()
    assert balance(r.w3, w.account.address) == w.l1_before_payout + ETH  # it sent nothing since
    replay = proof_from_json(proof)
    err = call_revert(r.w3, r.dep.rewards, "claim", replay.args(), r.bystander.address)
    assert err.name == "RecordAlreadyExecuted"
    assert balance(r.w3, w.account.address) == w.l1_before_payout + ETH


def test_anvil_roles_sign_with_keystores_rotate_and_challenge(
    settled_round: SettledRound, tmp_path: Path
) -> None:
    """On anvil: the admin's keystore rotates the proposer to a rogue key, which commits a root
    the node never made; `fedrollup verify --challenge` finds it with the challenger's keystore
    (bounded log windows) and challenges it; the guardian's keystore discards it. Then, over the
    whole chain: anvil's own accounts sent nothing, every transaction is EIP-1559 (type 2) and
    signed by a keystore or a participant's own key, and every node-side role signed its part."""
    r = settled_round
    if r.keystores is None or r.node is None:
        pytest.skip("the embedded L1's roles are its in-process dev accounts; this is anvil's")
    ks, w3, dep = r.keystores, r.w3, r.dep
    inbox = dep.inbox.functions
    rogue = local_account("rogue proposer")
    set_balance(w3, rogue.address, ETH)
    # From here on anvil's clock moves one second a block, not with the wall clock: the
    # verifier's replay takes longer than this deployment's 5 s challenge window.
    rpc(w3, "anvil_setBlockTimestampInterval", [1])
    send_signed(w3, ks.accounts["admin"], inbox.setProposer(rogue.address))
    assert dep.current_proposer() == rogue.address
    index = dep.next_batch_index()  # the node's poster can no longer move it
    prev = dep.committed_output_root(index - 1)
    bogus = Web3.keccak(text="a root no replay supports")
    sent = int(inbox.messageCount().call())
    send_signed(w3, rogue, inbox.commitBatch(index, prev, bogus, bogus, sent))

    deployment = tmp_path / "dep.json"
    deployment.write_text(dep.to_json())
    genesis = ks.deployment.parent.parent / "genesis.json"
    verified = subprocess.run(
        [
            sys.executable,
            "-m",
            "node",
            "verify",
            "--node",
            r.node.url,
            "--l1-rpc",
            r.l1_url,
            "--deployment",
            str(deployment),
            "--genesis",
            str(genesis),
            "--challenge",
            "--challenger-keystore",
            str(ks.stores["challenger"]),
            "--l1-log-window-blocks",
            "7",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**_no_password_env(), **ks.env},
    )
    assert verified.stdout, verified.stderr
    report = json.loads(verified.stdout)
    # The node serves no data for a root it never made: withheld, and challenged all the same.
    assert verified.returncode == 5 and report["challenged"] == [index], verified.stderr
    assert report["verified"] == list(range(index))
    assert inbox.frozenFrom().call() == index
    send_signed(w3, ks.accounts["guardian"], inbox.resolveChallenge(index, False))
    assert dep.next_batch_index() == index
    # As of anvil's `finalized` block (64 behind, so mine past the discard first): the honest
    # batches only, read at that block.
    mine(w3, 70)
    finalized = int(w3.eth.get_block("finalized")["number"])
    at_tag = subprocess.run(
        [
            *(sys.executable, "-m", "node", "verify", "--node", r.node.url, "--l1-rpc", r.l1_url),
            *("--deployment", str(deployment), "--genesis", str(genesis)),
            *("--l1-head-tag", "finalized"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert at_tag.returncode == 0 and at_tag.stdout, at_tag.stderr
    tagged = json.loads(at_tag.stdout)
    head = tagged["l1_head"]["block"]
    assert tagged["l1_head"]["tag"] == "finalized" and finalized <= head
    assert head <= int(w3.eth.get_block("finalized")["number"]) < w3.eth.block_number
    final_batches = (
        int(inbox.nextBatchIndex().call(block_identifier=head)) if head >= dep.block_number else 0
    )
    assert final_batches == index and tagged["verified"] == list(range(index))

    sent_txs = transactions_since(w3, 0)
    senders = {sender for sender, _ in sent_txs}
    assert not senders & set(w3.eth.accounts), "an anvil account sent a transaction"
    assert {kind for _, kind in sent_txs} == {2}
    node_side = {ks.accounts[role].address: role for role in ks.accounts}
    signed_by = {node_side[s] for s in senders if s in node_side}
    assert signed_by == {"deployer", "proposer", "keeper", "admin", "challenger", "guardian"}
    own_keys = {a.address for a in r.accounts.values()} | {
        r.squatter.address,
        r.bystander.address,
        r.withdrawal.account.address,
        local_account("job funder").address,
        rogue.address,
    }
    assert senders <= set(node_side) | own_keys, senders - set(node_side) - own_keys


def _no_password_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("FEDROLLUP_L1_PASSWORD")}


def test_the_aggregation_reaches_finalized_with_its_batch(settled_round: SettledRound) -> None:
    r = settled_round
    status = r.client.action(r.aggregate_hash)
    assert status["status"] == "finalized"
    batch = r.client._get(f"/v1/batches/{status['batch']}")
    assert batch["status"] == "finalized"
    assert batch["first_height"] <= status["height"] <= batch["last_height"]
    # The batch holds the round's records (and whatever else its blocks settled: under load a
    # withdrawal or a refund can share the aggregation's batch).
    assert batch["records"] >= len(r.records)
    for record in r.records:
        assert settlement(r.client, record["record_id"])["batch_index"] == status["batch"]
    assert r.dep.is_finalized(status["batch"])
    assert r.dep.committed_output_root(status["batch"]).hex() == batch["output_root"][2:]


# Regression: the watcher once lost a message seen while an earlier one awaited its block.
def test_a_message_seen_while_an_earlier_one_awaits_its_block_is_not_lost(
    tmp_path: Path,
) -> None:
    # Blocks every 2.5 s, the watcher polls every 0.5 s (l1_poll_ms): a deposit offered by one
    # poll is still unapplied at the next ones.
    node = embedded_node(tmp_path, window_s=2, block_time_ms=2500)
    try:
        client = node.client
        w3 = web3_at(node.url + "/l1")
        deposit = deployment_of(w3, client).inbox.functions.deposit(pub(15))
        bind_l1(client, key(15), w3.eth.accounts[DEPOSITOR])
        client.execute(key(1), "transfer", Transfer(pub(2), 1))  # a block was just cut
        before = l2_balance(client, pub(15))
        transact(w3, deposit, w3.eth.accounts[DEPOSITOR], ETH)
        time.sleep(1.2)  # a poll offered it; its block comes ~1.3 s later
        transact(w3, deposit, w3.eth.accounts[DEPOSITOR], 2 * ETH)
        wait_until(
            lambda: l2_balance(client, pub(15)) == before + 3 * ETH, "both deposits", timeout=10
        )
    finally:
        node.kill()


# =========================================================================== challenge


def test_a_challenged_batch_never_finalizes(tmp_path: Path) -> None:
    window = 60
    node = embedded_node(tmp_path, window_s=window)
    try:
        client = node.client
        w3 = web3_at(node.url + "/l1")
        dep = deployment_of(w3, client)
        transfer = wait_committed(client, client.send(key(1), "transfer", Transfer(pub(2), 5)))
        to = bytes.fromhex(w3.eth.accounts[BYSTANDER][2:])
        withdraw = wait_committed(client, client.send(key(1), "withdraw", Withdraw(ETH, to)))
        earlier, challenged = transfer["batch"], withdraw["batch"]
        assert earlier < challenged
        (record,) = withdraw["receipt"]["records"]
        assert record["kind"] == "withdrawal" and record["amount"] == str(ETH)

        transact(w3, dep.inbox.functions.challenge(challenged), w3.eth.accounts[CHALLENGER])
        travel(w3, 2 * window)

        assert dep.is_finalized(earlier) and not dep.is_finalized(challenged)
        _, _, finalizes_at, frozen, _ = dep.inbox.functions.batchStatus(challenged).call()
        assert frozen and finalizes_at < w3.eth.get_block("latest")["timestamp"]
        wait_until(lambda: batch_status(client, challenged) == "challenged", "node: challenged")
        wait_until(lambda: batch_status(client, earlier) == "finalized", "node: finalized")
        assert client.action(transfer["hash"])["status"] == "finalized"
        assert client.action(withdraw["hash"])["status"] != "finalized"
        doc = settlement(client, record["record_id"])
        assert (doc["batch_status"], doc["settled"]) == ("challenged", None)
        proof = proof_from_json(doc)
        err = call_revert(w3, dep.rewards, "claim", proof.args(), w3.eth.accounts[BYSTANDER])
        assert (err.name, err.args) == ("BatchNotFinalized", (challenged,))
        send_fails(w3, dep.rewards.functions.claim(*proof.args()), w3.eth.accounts[BYSTANDER])
    finally:
        node.kill()


def test_a_rejected_root_is_never_recommitted(tmp_path: Path) -> None:
    """Sequence 8: the guardian rejects a batch; the poster does not commit the same root again
    (nor anything after it): it stops, the node stops sequencing, and says so."""
    node = embedded_node(tmp_path, window_s=60)
    try:
        client = node.client
        w3 = web3_at(node.url + "/l1")
        dep = deployment_of(w3, client)
        status = wait_committed(client, client.send(key(1), "transfer", Transfer(pub(2), 5)))
        index = status["batch"]
        root = dep.committed_output_root(index)
        transact(w3, dep.inbox.functions.challenge(index), w3.eth.accounts[CHALLENGER])
        transact(w3, dep.inbox.functions.resolveChallenge(index, False), w3.eth.accounts[1])
        wait_until(lambda: gauge(node, "fedrollup_sequencer_halted") == 1, "the node to halt")
        assert gauge(node, "fedrollup_poster_rejected_batches") == 1
        time.sleep(2)  # several poster periods
        assert dep.next_batch_index() == index
        commits = [c for c in committed_batches(dep) if c[0] == index]
        assert [c[1] for c in commits] == [root]  # the original commit only
        with pytest.raises(ApiError) as exc:
            client.send(key(1), "transfer", Transfer(pub(2), 5))
        assert exc.value.code == "halted"
        assert batch_status(client, index) == "discarded"
    finally:
        node.kill()


def wait_committed(client: Client, action_hash: str) -> dict[str, Any]:
    return wait_until(
        lambda: _if_committed(client.action(action_hash)), f"{action_hash} committed on L1"
    )


def _if_committed(status: dict[str, Any]) -> dict[str, Any] | None:
    assert status["status"] != "failed", status
    return status if status["status"] == "committed" else None


def batch_status(client: Client, index: int) -> str:
    return str(client._get(f"/v1/batches/{index}")["status"])


# =========================================================================== anvil

DEPOSIT_KEY = pub(15)
SENDER, RECIPIENT = 1, 2


@dataclass
class AnvilL1:
    """anvil with a deployment whose every role is its own keystore; the node signs with the
    proposer's and the keeper's, the depositor and the stakers with their own keys."""

    anvil: Anvil
    genesis: Path
    keys: KeystoreDeployment
    depositor: LocalAccount

    @property
    def w3(self) -> Web3:
        return self.anvil.w3

    @property
    def dep(self) -> Deployment:
        return self.keys.dep

    def node(self, factory: type[NodeProcess], tmp: Path, confirmations: int) -> NodeProcess:
        args = [
            *("--l1-rpc", self.anvil.url, *self.keys.node_args()),
            *("--l1-confirmations", str(confirmations), "--genesis", str(self.genesis)),
            *("--block-time-ms", "50", "--batch-interval-ms", "300"),
        ]
        return factory(tmp / "data", free_port(), args, env=self.keys.env).start(timeout=60)

    def bind_depositor(self, client: Client) -> None:
        """DEPOSIT_KEY names the depositor's address: deposits from it are credited. Waits
        until the poster has committed that block (its commit mines an anvil block)."""
        bind_l1(client, key(15), self.depositor.address)
        wait_until(lambda: caught_up_book(client, self.dep), "the bind's batch on L1")

    def deposit(self, amount: int, w3: Web3 | None = None) -> int:
        """Deposit to DEPOSIT_KEY's L2 balance; returns the L1 block it landed in."""
        w3 = w3 or self.w3
        inbox = w3.eth.contract(address=self.dep.inbox.address, abi=self.dep.inbox.abi)
        fn = inbox.functions.deposit(DEPOSIT_KEY)
        return int(transact_signed(w3, self.depositor, fn, amount)["blockNumber"])

    def as_proposer(self, fn: Any) -> None:
        """The test itself commits, signing with the proposer's keystore (no node running)."""
        send_signed(self.w3, self.keys.accounts["proposer"], fn)


@pytest.fixture
def anvil_l1(tmp_path: Path) -> Iterator[AnvilL1]:
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL} (run `npm ci` in the project root)")
    genesis = write_genesis(tmp_path / "genesis.json", 4344, L2_KEYS, GENESIS_BALANCE)
    with run_anvil(tmp_path / "anvil.log") as anvil:
        keys = deploy_with_keystores(anvil.url, anvil.w3, tmp_path / "keys", genesis, 5, 60)
        depositor = local_account("depositor")
        set_balance(anvil.w3, depositor.address, 1_000 * ETH)
        yield AnvilL1(anvil, genesis, keys, depositor)


def test_anvil_deposit_waits_for_confirmations_and_is_credited_once(
    anvil_l1: AnvilL1, node_factory: type[NodeProcess], tmp_path: Path
) -> None:
    node = anvil_l1.node(node_factory, tmp_path, 2)
    anvil_l1.bind_depositor(node.client)
    before = l2_balance(node.client, DEPOSIT_KEY)
    anvil_l1.deposit(3 * ETH // 2)
    mine(anvil_l1.w3)  # one confirmation of two
    time.sleep(1.2)  # two watcher polls
    assert l2_balance(node.client, DEPOSIT_KEY) == before
    mine(anvil_l1.w3)
    wait_until(lambda: l2_balance(node.client, DEPOSIT_KEY) == before + 3 * ETH // 2, "the deposit")
    mine(anvil_l1.w3, 5)
    time.sleep(1.2)
    assert l2_balance(node.client, DEPOSIT_KEY) == before + 3 * ETH // 2


class Flow(threading.Thread):
    """Deposits on L1 (mining a block after each) and L2 transfers, until stopped. Records
    what was acknowledged: deposits with an L1 receipt, actions the node accepted."""

    def __init__(self, l1: AnvilL1, client: Client) -> None:
        super().__init__(daemon=True)
        self.l1 = l1
        self.w3 = web3_at(l1.anvil.url)  # a thread's own connection
        self.client = Client(client.url, timeout=5)
        self.nonce = int(client.account(pub(SENDER))["next_nonce"])
        self.deposits: list[int] = []
        self.acked: list[str] = []
        self.errors: list[BaseException] = []
        self.node_up = True
        self.stop = threading.Event()

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                amount = (len(self.deposits) + 1) * 10**15
                self.l1.deposit(amount, self.w3)
                self.deposits.append(amount)
                mine(self.w3)
                if self.node_up:
                    self._transfer()
                time.sleep(0.03)
        except BaseException as exc:  # surfaced by the test
            self.errors.append(exc)

    def _transfer(self) -> None:
        wire = encode_action(
            key(SENDER), self.client.chain_id, "transfer", self.nonce, Transfer(pub(RECIPIENT), 1)
        )
        try:
            self.acked.append(self.client.submit(wire))
            self.nonce += 1
        except (OSError, ApiError):
            self.node_up = False  # the node is gone; an unacknowledged action may or may not land


def test_anvil_restart_mid_flow_leaves_no_batch_gap_and_no_double_deposit(
    anvil_l1: AnvilL1, node_factory: type[NodeProcess], tmp_path: Path
) -> None:
    w3, dep = anvil_l1.w3, anvil_l1.dep
    node = anvil_l1.node(node_factory, tmp_path, 2)
    client = node.client
    anvil_l1.bind_depositor(client)
    before = l2_balance(client, DEPOSIT_KEY)
    flow = Flow(anvil_l1, client)
    flow.start()
    wait_until(lambda: committed_batches(dep) and len(flow.acked) > 20, "a committed batch")
    wait_until(lambda: l2_balance(client, DEPOSIT_KEY) > before, "a credited deposit")
    node.kill()
    at_kill = (len(flow.deposits), len(flow.acked), len(committed_batches(dep)))
    time.sleep(0.5)  # deposits go on while the node is down
    node.start()
    time.sleep(0.5)  # ... and while it catches up
    flow.stop.set()
    flow.join(timeout=30)
    assert not flow.errors, flow.errors
    assert len(flow.deposits) > at_kill[0] and at_kill[1] > 0

    mine(w3, 3)  # confirm the last deposits
    total = before + sum(flow.deposits)
    wait_until(lambda: l2_balance(client, DEPOSIT_KEY) == total, "every deposit credited")
    wait_until(lambda: all_included(client, flow.acked), "every acknowledged action executed")
    assert_each_action_once(client, flow.acked)
    book = wait_until(lambda: caught_up_book(client, dep), "the poster to catch up")
    assert len(book) > at_kill[2]  # the restarted poster went on committing

    on_l1 = committed_batches(dep)
    assert [i for i, _, _ in on_l1] == list(range(len(on_l1))) == [b["index"] for b in book]
    assert [root.hex() for _, root, _ in on_l1] == [b["output_root"][2:] for b in book]
    assert [prev.hex() for _, _, prev in on_l1] == [b["prev_output_root"][2:] for b in book]
    assert [b["first_height"] for b in book] == [1] + [b["last_height"] + 1 for b in book[:-1]]

    travel(w3, 10)  # past the 5 s challenge window
    wait_until(lambda: {b["status"] for b in batches(client)} == {"finalized"}, "every batch final")
    mine(w3, 3)
    time.sleep(1.2)
    assert l2_balance(client, DEPOSIT_KEY) == total


def all_included(client: Client, hashes: list[str]) -> bool:
    return all(client.action(h)["status"] in SUCCESS_STATUSES for h in hashes)


def assert_each_action_once(client: Client, hashes: list[str]) -> None:
    head = int(client.health()["head"]["height"])
    included: Counter[str] = Counter()
    for height in range(1, head + 1):
        included.update(client.block(height)["action_hashes"])
    assert [h for h, n in included.items() if n > 1] == []
    assert [h for h in hashes if h not in included] == []


def caught_up_book(client: Client, dep: Deployment) -> list[dict[str, Any]] | None:
    """The node's batches once every L2 block is in one and each is committed on L1."""
    book = batches(client)
    head = int(client.health()["head"]["height"])
    done = (
        book
        and book[-1]["last_height"] == head
        and all(b["status"] in ("committed", "finalized") for b in book)
        and dep.next_batch_index() == len(book)
    )
    return book if done else None


def test_anvil_reorg_below_the_confirmations_credits_the_canonical_deposit_once(
    anvil_l1: AnvilL1, node_factory: type[NodeProcess], tmp_path: Path
) -> None:
    w3, dep = anvil_l1.w3, anvil_l1.dep
    node = anvil_l1.node(node_factory, tmp_path, 3)
    anvil_l1.bind_depositor(node.client)
    mine(w3, 4)
    time.sleep(0.6)  # the watcher has a safe head below what comes next
    before = l2_balance(node.client, DEPOSIT_KEY)
    messages = int(dep.inbox.functions.messageCount().call())

    orphaned = anvil_l1.deposit(3 * ETH)
    assert w3.eth.block_number == orphaned
    orphan_tx = w3.eth.get_block(orphaned)["transactions"][0]
    rpc(w3, "anvil_reorg", [1, []])  # replace that block with an empty one
    with pytest.raises(TransactionNotFound):
        w3.eth.get_transaction_receipt(orphan_tx)
    assert int(dep.inbox.functions.messageCount().call()) == messages

    anvil_l1.deposit(2 * ETH)  # the canonical deposit, same message nonce, another amount
    mine(w3, 3)
    wait_until(lambda: l2_balance(node.client, DEPOSIT_KEY) != before, "the canonical deposit")
    assert l2_balance(node.client, DEPOSIT_KEY) == before + 2 * ETH
    mine(w3, 3)
    time.sleep(1.2)
    assert l2_balance(node.client, DEPOSIT_KEY) == before + 2 * ETH
    assert gauge(node, "fedrollup_l1_deep_reorgs_total") == 0


def gauge(node: NodeProcess, name: str) -> float:
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as resp:
        lines = resp.read().decode().splitlines()
    (value,) = [line.split()[1] for line in lines if line.startswith(name + " ")]
    return float(value)


def test_anvil_refuses_a_commit_that_censors_a_message(anvil_l1: AnvilL1) -> None:
    """Sequence 6 on anvil: a proposer that leaves a deposit unconsumed past the inclusion
    window (one hour, `fedrollup deploy`'s default) cannot commit; consuming it, it can."""
    w3, dep = anvil_l1.w3, anvil_l1.dep
    proposer = dep.params.proposer
    assert proposer == anvil_l1.keys.accounts["proposer"].address
    genesis = bytes.fromhex(dep.params.genesis_output_root[2:])
    assert int(dep.inbox.functions.inclusionWindow().call()) == 3_600
    anvil_l1.deposit(ETH)  # message 0; no node is running to consume it
    roots = [Web3.keccak(text=f"root {i}") for i in range(3)]
    anvil_l1.as_proposer(dep.inbox.functions.commitBatch(0, genesis, roots[0], roots[0], 0))
    travel(w3, 3_601)
    err = call_revert(w3, dep.inbox, "commitBatch", (1, roots[0], roots[1], roots[1], 0), proposer)
    assert err.name == "MessageNotIncluded" and err.args[0] == 0
    err = call_revert(w3, dep.inbox, "commitBatch", (1, roots[0], roots[1], roots[1], 2), proposer)
    assert err.name == "MessagesNotSent"
    anvil_l1.as_proposer(dep.inbox.functions.commitBatch(1, roots[0], roots[1], roots[1], 1))
    assert dep.next_batch_index() == 2


def test_anvil_stake_cannot_leave_while_the_rollup_commits(anvil_l1: AnvilL1) -> None:
    """Sequences 3 and 4 on anvil: no unbond-and-race; the escape hatch (60 s in this
    deployment) stays shut while batches keep coming, however long it has been since the stake."""
    w3, dep = anvil_l1.w3, anvil_l1.dep
    staker = local_account("escape staker")
    set_balance(w3, staker.address, 10 * ETH)
    key_ = pub(3)
    transact_signed(w3, staker, dep.registry.functions.stake(key_), 2 * ETH)
    prev = bytes.fromhex(dep.params.genesis_output_root[2:])
    for i in range(3):
        root = Web3.keccak(text=f"batch {i}")
        sent = int(dep.inbox.functions.messageCount().call())
        anvil_l1.as_proposer(dep.inbox.functions.commitBatch(i, prev, root, root, sent))
        prev = root
        travel(w3, 50)
        err = call_revert(w3, dep.registry, "escapeExit", (key_,), staker.address)
        assert err.name == "RollupLive"
    travel(w3, 11)  # 61 s since the last commit: the rollup has stopped
    transact_signed(w3, staker, dep.registry.functions.escapeExit(key_))
    assert stake_on_l1(dep, key_, staker.address) == 0
