"""The demo, small: real torch training on digits shards, cheaters, a real node with its
embedded L1; asserts the slashes, the L1 settlement and an accuracy bound."""

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from rich.console import Console

from node.demo import ETH, run_demo


def test_small_demo_slashes_cheaters_on_l1_and_learns(tmp_path: Path) -> None:
    plot = tmp_path / "accuracy.png"
    report = run_demo(
        attack="sign_flip",
        clients=10,
        attackers=2,
        free_riders=1,
        rounds=4,
        out=plot,
        console=Console(quiet=True),
    )
    cheaters = {p.index for p in report.participants if p.behaviour != "honest"}
    assert cheaters == {0, 1, 2}
    assert report.slashed() == cheaters  # every cheater, and no honest participant
    assert all(r == 1 for p in report.participants for r, _ in p.slashed_in)  # caught in round 1
    # L1: each cheater lost half its 2 ETH stake to the SlashTreasury, exactly once
    assert report.slash_treasury_wei == 3 * ETH
    assert {report.l1_stake_wei[i] for i in cheaters} == {ETH}
    assert {
        report.l1_stake_wei[p.index] for p in report.participants if p.index not in cheaters
    } == {2 * ETH}
    # every settlement record executed on L1; honest participants were paid, cheaters not
    assert report.records_total > 0 and report.records_settled == report.records_total
    assert all(report.reward_wei[i] == 0 for i in cheaters)
    assert (
        sum(report.reward_wei[p.index] for p in report.participants if p.index not in cheaters) > 0
    )
    # the model learns despite the attack; plain FedAvg under the same attack does not
    assert report.accuracies[-1] >= 0.6
    assert report.accuracies[-1] > report.fedavg_accuracies[-1] + 0.2
    assert plot.exists() and plot.stat().st_size > 10_000
