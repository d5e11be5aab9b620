"""The demo, small: real torch training on digits shards, cheaters, a real node with its
embedded L1; asserts the slashes, the L1 settlement and an accuracy bound."""

from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

from rich.console import Console

from node.participant.demo import ETH, run_demo


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
    rounds = {p.index: [r for r, _ in p.slashed_in] for p in report.participants}
    reasons = {p.index: [why for _, why in p.slashed_in] for p in report.participants}
    # the free-rider's copy is evidence (round 1); the sign-flippers' updates are one round's
    # suspicion, slashed when repeated: their third strike in five rounds
    assert (rounds[2], reasons[2]) == ([1], ["copy"])
    assert {i: reasons[i] for i in (0, 1)} == {0: ["repeated_opposed"], 1: ["repeated_opposed"]}
    assert {rounds[0][0], rounds[1][0]} <= {3, 4}
    # L1: evidence took half the 2 ETH stake_required, repeated suspicion a quarter
    assert report.slash_treasury_wei == ETH + 2 * (ETH // 2)
    assert (report.l1_stake_wei[2], report.l1_stake_wei[0], report.l1_stake_wei[1]) == (
        ETH,
        3 * ETH // 2,
        3 * ETH // 2,
    )
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
