"""The chain in-process: journaled execution, atomic blocks, deterministic roots."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from nacl.signing import SigningKey

from rollup.chain import Chain, GenesisMismatch
from rollup.codec import decode_action, encode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf.accounts import Transfer, account_key, decode_account
from tests.conftest import ROOT

CHAIN = 77
ALICE, BOB, CAROL = (SigningKey(bytes([i]) * 32) for i in (1, 2, 3))
A, B, C = (bytes(k.verify_key) for k in (ALICE, BOB, CAROL))
GENESIS = Genesis(CHAIN, 1_000, {A: 1_000, B: 50})


def transfer(key: SigningKey, nonce: int, to: bytes, amount: int):  # type: ignore[no-untyped-def]
    return decode_action(encode_action(key, CHAIN, "transfer", nonce, Transfer(to, amount)), CHAIN)


def balance(chain: Chain, who: bytes) -> tuple[int, int]:
    raw = chain.store.live.state(account_key(who))
    acct = decode_account(raw) if raw else None
    return (acct.nonce, acct.balance) if acct else (0, 0)


@pytest.fixture
def chain(tmp_path: Path) -> Chain:
    return Chain(ChainStore(tmp_path / "db"), GENESIS)


def test_genesis_state_root_is_deterministic(tmp_path: Path) -> None:
    one = Chain(ChainStore(tmp_path / "one"), GENESIS)
    two = Chain(ChainStore(tmp_path / "two"), GENESIS)
    assert one.head.state_root == two.head.state_root
    assert one.head.hash() == two.head.hash()
    assert one.head.height == 0


def test_reopening_with_another_genesis_is_refused(tmp_path: Path) -> None:
    store = ChainStore(tmp_path / "db")
    Chain(store, GENESIS)
    with pytest.raises(GenesisMismatch):
        Chain(store, Genesis(CHAIN, 1_000, {A: 999}))


def test_failing_action_reverts_only_its_own_writes(chain: Chain) -> None:
    actions = [
        transfer(ALICE, 1, C, 100),  # ok
        transfer(BOB, 1, C, 51),  # fails: insufficient balance, nonce still used
        transfer(ALICE, 2, B, 10),  # ok
        transfer(BOB, 1, C, 1),  # fails at the nonce: replayed, nothing changes
    ]
    executed = chain.execute(actions, 2_000)
    chain.commit(executed, 4)
    receipts = executed.record.receipts
    assert [r.ok for r in receipts] == [True, False, True, False]
    assert receipts[1].error == "insufficient_balance"
    assert receipts[3].error == "nonce_replayed"
    assert balance(chain, A) == (2, 890)
    assert balance(chain, B) == (1, 60)
    assert balance(chain, C) == (0, 100)
    assert receipts[0].events[0][0] == "Transfer"
    assert receipts[1].events == ()


def test_execute_writes_nothing_until_commit(chain: Chain) -> None:
    root_before = chain.head.state_root
    executed = chain.execute([transfer(ALICE, 1, C, 5)], 2_000)
    assert executed.record.header.state_root != root_before
    assert balance(chain, C) == (0, 0)
    assert chain.store.live.head_height() == 0


def test_block_links_and_roots(chain: Chain) -> None:
    genesis_hash = chain.head.hash()
    executed = chain.execute([transfer(ALICE, 1, C, 5)], 500)  # clock behind genesis time
    chain.commit(executed, 1)
    header = chain.store.live.header(1)
    assert header is not None
    assert header.parent_hash == genesis_hash
    assert chain.next_timestamp(0) == header.timestamp_ms == 500
    record = chain.store.live.block(1)
    assert record is not None and record.actions == [executed.record.actions[0]]
    loc = chain.store.live.locate_action(record.receipts[0].action_hash)
    assert loc is not None and (loc.height, loc.index) == (1, 0)


def _replay_digest_in_subprocess(threads: str) -> str:
    code = """
import sys
from pathlib import Path
import tempfile
from tests.test_chain import GENESIS, ALICE, BOB, C, A, transfer
from rollup.chain import Chain
from rollup.store import ChainStore
with tempfile.TemporaryDirectory() as tmp:
    chain = Chain(ChainStore(Path(tmp)), GENESIS)
    for h in range(1, 6):
        acts = [transfer(ALICE, 2 * h - 1, C, h), transfer(BOB, h, A, 100 * h),
                transfer(ALICE, 2 * h, BOB.verify_key.encode(), 1)]
        chain.commit(chain.execute(acts, 10_000 + h), h)
    print(chain.head.hash().hex())
"""
    env = {"OMP_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_same_actions_give_identical_heads_in_other_processes_and_thread_counts() -> None:
    assert _replay_digest_in_subprocess("1") == _replay_digest_in_subprocess("2")


def test_genesis_file_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "g.json"
    path.write_text(json.dumps(GENESIS.to_json()))
    assert Genesis.load(path) == GENESIS
    with pytest.raises(ValueError):
        Genesis.from_json({"chain_id": 0, "alloc": {}})
    with pytest.raises(ValueError):
        Genesis.from_json({"chain_id": 1, "alloc": {"0x" + "00" * 31: "1"}})
    with pytest.raises(ValueError):
        Genesis.from_json({"chain_id": 1, "alloc": {"0x" + "00" * 32: str(2**256)}})


def test_a_block_with_l1_messages_reads_back_whole(chain: Chain) -> None:
    from stf.l1 import DEPOSIT, L1Message

    msg = L1Message(0, DEPOSIT, C, b"\x11" * 20, 9, b"", 5)
    executed = chain.execute([transfer(ALICE, 1, C, 5)], 2_000, [msg], (5, b"\x07" * 32))
    chain.commit(executed, 1)
    record = chain.store.live.block(1)
    assert record is not None and record == executed.record
    assert record.l1_messages == [msg.encode()] and len(record.receipts) == 2
    # C bound no L1 address: the deposit goes back to its sender (a refund record), not to C
    assert balance(chain, C) == (0, 5)
    (refund,) = record.receipts[0].records
    assert (refund.kind, refund.payee, refund.amount) == (5, b"\x11" * 20, 9)
