"""The round decision (stf.aggregation) against a straightforward oracle, on random rounds
mixing honest clients, poisoners and every kind of free-rider."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from stf import aggregation
from stf.aggregation import Rules, Submission
from tests import reference_aggregation as oracle

KINDS = ("honest", "flip", "copy", "noise", "replay", "twin", "scaled")


def _round(
    seed: int, kinds: list[str], d: int
) -> tuple[np.ndarray, np.ndarray | None, list[Submission]]:  # type: ignore[type-arg]
    rng = np.random.default_rng(seed)
    g = rng.integers(-(2**14), 2**14, d).astype(np.int32)
    prev = rng.integers(-(2**8), 2**8, d).astype(np.int32)
    direction = rng.integers(-(2**9), 2**9, d)
    twin = g + direction + rng.integers(-50, 50, d)
    subs = []
    for i, kind in enumerate(kinds):
        x = {
            "honest": g + direction + rng.integers(-(2**7), 2**7, d),
            "flip": g - 3 * direction + rng.integers(-20, 20, d),
            "copy": g,
            "noise": g + rng.integers(-(2**9), 2**9, d),
            "replay": g + prev,
            "twin": twin,
            "scaled": (g.astype(np.int64) * 101) // 100,
        }[kind]
        subs.append(
            Submission(
                bytes([i]) * 32,
                np.clip(x, -(2**20), 2**20).astype(np.int32),
                int(rng.integers(1, 500)),
            )
        )
    return g, prev, subs


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=12),
    d=st.integers(1, 300),
    f=st.integers(0, 4),
    with_prev=st.booleans(),
)
def test_decisions_and_model_equal_the_oracle(
    seed: int, kinds: list[str], d: int, f: int, with_prev: bool
) -> None:
    g, prev, subs = _round(seed, kinds, d)
    p = prev if with_prev else None
    got = aggregation.decide_round(g, p, subs, f, Rules())
    want = oracle.decide_round(g, p, subs, f, oracle.Rules())
    assert [(x.client, x.reason, x.score) for x in got.decisions] == [
        (x.client, x.reason, x.score) for x in want.decisions
    ]
    assert np.array_equal(got.new_global, want.new_global)
    assert got.krum_f == want.krum_f


def test_typical_round_flags_each_kind() -> None:
    kinds = ["honest"] * 8 + ["flip", "copy", "noise", "replay", "twin", "twin", "scaled"]
    g, prev, subs = _round(7, kinds, 2000)
    outcome = aggregation.decide_round(g, prev, subs, 2, Rules())
    reasons = [d.reason for d in outcome.decisions]
    assert reasons[8:] == [
        "opposed",
        "copy",
        "unrelated",
        "delta_replay",
        "duplicate",
        "duplicate",
        "correlated",
    ]
    assert set(reasons[:8]) <= {"kept", "krum_excluded"}
