"""The watcher reads L1 logs in bounded windows (hosted RPCs cap eth_getLogs ranges): with a
window much smaller than the history it still offers every message, and a node crediting
what it is offered credits each deposit exactly once — across polls, after a restart of the
watcher from the deployment block, and end to end through a node. With the `finalized` tag
(anvil) a message waits until the chain finalizes its block."""

import time
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
from web3 import Web3

from l1_bridge.contracts import send
from l1_bridge.link import L1Link, deploy_to_rpc, embedded_link, rpc_link
from l1_bridge.watcher import Watcher
from node.cli_util import free_port
from node.sdk.devkeys import dev_key
from stf.l1 import L1Message
from tests.conftest import NodeProcess
from tests.l1_helpers import (
    ANVIL,
    bind_l1,
    deployment_of,
    l2_balance,
    mine,
    run_anvil,
    transact,
    wait_until,
    web3_at,
)

ETH = 10**18
WINDOW = 3


class RecordingWatcher(Watcher):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.ranges: list[tuple[int, int]] = []

    def get_logs(self, first: int, last: int) -> list[Any]:
        self.ranges.append((first, last))
        return super().get_logs(first, last)


def _deposit(link: L1Link, who: int, amount: int) -> None:
    key = bytes(dev_key(who).verify_key)
    sender = link.w3.eth.accounts[5]
    send(link.w3, link.deployment.inbox.functions.deposit(key), sender, value=amount)


def _credit(watcher: Watcher, credited: dict[int, L1Message], next_nonce: int) -> int:
    """What the node does with a poll: apply the messages whose turn it is, in nonce order."""
    polled = watcher.poll(next_nonce)
    if polled is None:
        return next_nonce
    for message in polled[0]:
        if message.nonce == next_nonce:
            assert message.nonce not in credited, "a message credited twice"
            credited[message.nonce] = message
            next_nonce += 1
    return next_nonce


def _assert_windows(ranges: list[tuple[int, int]], start: int, end: int) -> None:
    """Each call spans at most WINDOW blocks, and the calls tile start..end without a gap."""
    assert all(last - first + 1 <= WINDOW for first, last in ranges), ranges
    assert ranges[0][0] == start and ranges[-1][1] == end
    for (_, last), (first, _) in pairwise(ranges):
        assert first == last + 1, ranges


@pytest.fixture(scope="module")
def link() -> L1Link:
    return embedded_link(b"\x01" * 32)


def test_a_window_smaller_than_the_history_credits_every_message_once(link: L1Link) -> None:
    start = link.deployment.block_number
    amounts = [(i + 1) * ETH // 100 for i in range(12)]
    watcher = RecordingWatcher(link, 0, start, log_window=WINDOW)
    credited: dict[int, L1Message] = {}
    next_nonce = 0
    for i, amount in enumerate(amounts):
        _deposit(link, 3, amount)
        for _ in range(i % 3):  # empty blocks between deposits
            link.mine()
        if i % 4 == 3:  # the watcher polls now and then, so most polls span many windows
            next_nonce = _credit(watcher, credited, next_nonce)
    head = link.w3.eth.block_number
    assert head - start + 1 > 5 * WINDOW, "the history must be several windows long"
    next_nonce = _credit(watcher, credited, next_nonce)
    next_nonce = _credit(watcher, credited, next_nonce)  # nothing new: nothing again
    assert sorted(credited) == list(range(len(amounts)))
    assert [credited[n].amount for n in sorted(credited)] == amounts
    _assert_windows(watcher.ranges, start, head)

    # a restart rescans from the deployment block in windows: nothing is offered again to a
    # node that applied it all, and everything, once, to one that applied nothing
    again = RecordingWatcher(link, 0, start, log_window=WINDOW)
    polled = again.poll(next_nonce)
    assert polled is not None and polled[0] == []
    _assert_windows(again.ranges, start, head)
    fresh: dict[int, L1Message] = {}
    assert _credit(RecordingWatcher(link, 0, start, log_window=WINDOW), fresh, 0) == len(amounts)
    assert [fresh[n].amount for n in sorted(fresh)] == amounts


def test_window_must_be_positive(link: L1Link) -> None:
    with pytest.raises(ValueError, match="at least one block"):
        Watcher(link, 0, link.deployment.block_number, log_window=0)


def test_node_with_a_two_block_window_credits_every_deposit_once(
    tmp_path: Path, node_factory: type[NodeProcess]
) -> None:
    node = node_factory(
        tmp_path / "data",
        free_port(),
        ["--block-time-ms", "50"],
        # polls far apart: each one reads many more L1 blocks than the window
        env={"FEDROLLUP_L1_LOG_WINDOW_BLOCKS": "2", "FEDROLLUP_L1_POLL_MS": "1500"},
    ).start()
    w3: Web3 = web3_at(node.url + "/l1")
    key = bytes(dev_key(9).verify_key)
    bind_l1(node.client, dev_key(9), w3.eth.accounts[5])  # deposits count only from it
    deposit = deployment_of(w3, node.client).inbox.functions.deposit(key)
    before = l2_balance(node.client, key)
    amounts = [(i + 1) * ETH // 1000 for i in range(10)]
    for amount in amounts:
        transact(w3, deposit, w3.eth.accounts[5], amount)
    total = before + sum(amounts)
    wait_until(lambda: l2_balance(node.client, key) == total, "every deposit credited", 30)
    wait_until(lambda: node.client.health()["pending_actions"] == 0, "idle", 10)
    time.sleep(3.2)  # two more polls: nothing is credited twice
    assert l2_balance(node.client, key) == total


def test_finalized_tag_holds_messages_until_the_chain_finalizes_them(tmp_path: Path) -> None:
    """anvil finalizes a block 64 blocks deep: a deposit waits for that, with 0 confirmations,
    and is then offered once."""
    if not ANVIL.exists():
        pytest.skip(f"anvil is not installed at {ANVIL}")
    with run_anvil(tmp_path / "anvil.log") as anvil:
        deploy_to_rpc(anvil.url, b"\x01" * 32, tmp_path / "dep.json", 5, 60)
        link = rpc_link(anvil.url, tmp_path / "dep.json")
        watcher = Watcher(link, 0, link.deployment.block_number, head_tag="finalized")
        _deposit(link, 3, ETH)
        deposit_block = link.w3.eth.block_number
        mine(link.w3, 40)
        assert watcher.safe_head() < deposit_block
        assert _credit(watcher, {}, 0) == 0  # not final yet: nothing offered
        mine(link.w3, 30)
        assert watcher.safe_head() >= deposit_block
        credited: dict[int, L1Message] = {}
        assert _credit(watcher, credited, 0) == 1
        assert credited[0].amount == ETH
        assert _credit(watcher, credited, 1) == 1 and len(credited) == 1  # offered once
    with pytest.raises(ValueError, match="head_tag"):
        Watcher(link, 0, 0, head_tag="pending")
