"""Gas of every L1 entry point against the committed snapshot: a regression of more than 5%
fails, and so does missing a target (commitBatch <= 65,000 whatever the batch size, with the
forced-inclusion check; each proof execution <= 80,000 with a 10,000-record tree)."""

from l1_bridge.gasbench import load_snapshot, measure

TOLERANCE = 1.05


def test_gas_matches_the_snapshot_and_the_targets() -> None:
    gas = measure()
    snapshot = load_snapshot()
    assert set(gas) == set(snapshot), (
        "entry points changed: rerun `fedrollup bench gas --write-snapshot`"
    )
    regressions = {k: (snapshot[k], gas[k]) for k in gas if gas[k] > snapshot[k] * TOLERANCE}
    assert regressions == {}
    assert max(v for k, v in gas.items() if k.startswith("commitBatch")) <= 65_000
    for name in (
        "executeSlash",
        "executeRelease",
        "claim reward",
        "claim withdrawal",
        "claim refund",
    ):
        assert gas[f"{name} (10000 records)"] <= 80_000, name
