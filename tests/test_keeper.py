"""The keeper never gives a record up on an L1 error (issue 9): a claim that reverts is noted
and tried again later, and pays once L1 can pay it."""

from pathlib import Path
from typing import Any

from web3 import EthereumTesterProvider, Web3

from l1_bridge.batches import FINALIZED, Batch
from l1_bridge.book import BatchBook
from l1_bridge.contracts import send
from l1_bridge.keeper import Keeper
from l1_bridge.link import L1Link, deploy_dev
from l1_bridge.settlement import RecordKind, SettlementRecord, SettlementTree, make_record_id
from l1_bridge.settlement import output_root as make_output_root
from rollup.store import ChainStore

ETH = 10**18
JOB = 7


def test_a_reverted_claim_is_retried_not_dropped(tmp_path: Path) -> None:
    provider = EthereumTesterProvider()
    w3 = Web3(provider)
    a = list(w3.eth.accounts)
    genesis = b"\x01" * 32
    dep = deploy_dev(w3, genesis, challenge_window_s=5, unbonding_s=60, max_pending_batches=16)
    link = L1Link(w3, dep, proposer=a[0], keeper=a[4], challenger=a[2], provider=provider)
    payee = a[6]
    record = SettlementRecord(
        int(RecordKind.REWARD),
        JOB,
        1,
        b"\xb0" * 32,
        bytes.fromhex(payee[2:]),
        ETH,
        make_record_id(1),
    )
    tree = SettlementTree([record])
    state_root, last_hash = b"\x02" * 32, b"\x03" * 32
    root = make_output_root(state_root, tree.root, last_hash, dep.chain_id, dep.inbox.address)
    dep.commit_batch(0, genesis, root, b"\x04" * 32, sender=a[0])
    tester: Any = provider.ethereum_tester
    tester.time_travel(int(w3.eth.get_block("latest")["timestamp"]) + 10)
    tester.mine_blocks(1)
    store = ChainStore(tmp_path / "chain")
    try:
        book = BatchBook(store)
        batch = Batch(
            0, 1, 1, state_root, tree.root, last_hash, root, genesis, b"\x04" * 32, (record,)
        )
        book.put(batch.with_status(FINALIZED), index_records=True)
        keeper = Keeper(link, book)
        keeper.retry_s = 0.0
        keeper.settle()  # job 7 was never funded on L1: the claim reverts
        assert book.settled(record.record_id) == "failed:UnknownJob" and keeper.failed == 1
        send(w3, dep.rewards.functions.fundJob(JOB), a[7], value=2 * ETH)
        before = int(w3.eth.get_balance(payee))
        keeper.settle()  # tried again: now it pays
        assert book.settled(record.record_id) == "settled" and keeper.executed == 1
        assert int(w3.eth.get_balance(payee)) == before + ETH
        keeper.settle()  # and never twice
        assert keeper.executed == 1 and int(w3.eth.get_balance(payee)) == before + ETH
    finally:
        store.close()
