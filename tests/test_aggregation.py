"""The round decision (stf.aggregation) against a straightforward oracle, on random rounds
mixing honest clients, poisoners and every kind of free-rider, with random client history
(strike bits, rounds, accumulated updates) so the colluding and repeated_* paths run."""

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stf import aggregation
from stf.aggregation import ClientHistory, RoundOutcome, Rules, Submission
from tests import reference_aggregation as oracle

KINDS = (
    "honest",
    "flip",
    "copy",
    "noise",
    "replay",
    "twin",
    "scaled",
    "tiny",  # near copy: G plus a few units
    "jitter",  # the twin plus a few units: near duplicate
    "stale",  # an extrapolated replay of the previous step plus noise
)

# What a round draws from: mostly honest clients, so enough of them are left with history
# for the colluding check (it needs three) after the free-riders are out.
DRAWN = KINDS + ("honest",) * 6

Vector = npt.NDArray[Any]


def _noise(rng: np.random.Generator, d: int, amplitudes: tuple[int, ...]) -> Vector:
    """Noise of one of a few amplitudes, so margins land on both sides of the protocol's
    strike bounds (e.g. cos(2P + noise, P) from about 1 down to about 0.85)."""
    a = int(rng.choice(amplitudes))
    return rng.integers(-a, a + 1, size=d)


def _round(seed: int, kinds: list[str], d: int) -> tuple[Vector, Vector, list[Submission]]:
    rng = np.random.default_rng(seed)
    g = rng.integers(-(2**14), 2**14, d).astype(np.int32)
    prev = rng.integers(-(2**8), 2**8, d).astype(np.int32)
    direction = rng.integers(-(2**9), 2**9, d)
    twin = g + direction + rng.integers(-50, 50, d)
    subs = []
    for i, kind in enumerate(kinds):
        makers: dict[str, Callable[[], Vector]] = {
            "honest": lambda: g + direction + rng.integers(-(2**7), 2**7, d),
            "flip": lambda: g - 3 * direction + rng.integers(-20, 20, d),
            "copy": lambda: g,
            "noise": lambda: g + rng.integers(-(2**9), 2**9, d),
            "replay": lambda: g + prev,
            "twin": lambda: twin,
            "scaled": lambda: (g.astype(np.int64) * 101) // 100 + _noise(rng, d, (0, 3, 6)),
            "tiny": lambda: g + rng.integers(-2, 3, d),
            "jitter": lambda: twin + rng.integers(-3, 4, d),
            "stale": lambda: g + 2 * prev.astype(np.int64) + _noise(rng, d, (5, 200, 300)),
        }
        x = makers[kind]()
        subs.append(
            Submission(
                bytes([i]) * 32,
                np.clip(x, -(2**20), 2**20).astype(np.int32),
                int(rng.integers(1, 500)),
            )
        )
    return g, prev, subs


def _history(
    seed: int, subs: list[Submission], spread: int, aligned: bool = False
) -> dict[bytes, ClientHistory]:  # random prior history for some of the clients
    """Random histories; `aligned`: most along one direction, some against it (a job
    that has been moving one way, and clients pulling against it)."""
    rng = np.random.default_rng(seed ^ 0x5EED)
    d = aggregation.sketch_dim(subs[0].params.shape[0])
    shared = rng.integers(-spread, spread + 1, size=d)  # the colluders' accumulated direction
    course = rng.integers(-spread, spread + 1, size=d)  # the job's direction, when aligned
    out = {}
    for s in subs:
        pick = int(rng.integers(0, 10))
        if pick == 0:
            continue  # a first-time submitter
        if pick == 1:
            accumulated = None
        elif pick <= 4:  # a minority of colluders (a majority would set the median)
            accumulated = shared + _noise(rng, d, (3, 30, 100))
        elif aligned:
            sign = -1 if pick == 9 else 1
            accumulated = sign * course + _noise(rng, d, (spread // 4, spread, 2 * spread))
        else:
            accumulated = np.asarray(rng.integers(-spread, spread + 1, size=d))
        out[s.client] = ClientHistory(
            strikes=int(rng.choice([0, 0b1, 0b11, 0b101, 0b11000, int(rng.integers(0, 256))])),
            rounds=int(rng.choice([0, 1, 2, 2, 3, 5])),
            accumulated=None if accumulated is None else accumulated.astype(np.int32),
        )
    return out


def _assert_same(got: aggregation.RoundOutcome, want: aggregation.RoundOutcome) -> None:
    assert [(x.client, x.reason, x.score, x.strike) for x in got.decisions] == [
        (x.client, x.reason, x.score, x.strike) for x in want.decisions
    ]
    assert np.array_equal(got.new_global, want.new_global)
    assert got.new_global.dtype == want.new_global.dtype == np.int32
    assert got.krum_f == want.krum_f
    assert got.history.keys() == want.history.keys()
    for client, h in got.history.items():
        w = want.history[client]
        assert (h.strikes, h.rounds) == (w.strikes, w.rounds), client
        assert h.accumulated is not None and w.accumulated is not None
        assert h.accumulated.dtype == np.int32
        assert np.array_equal(h.accumulated, w.accumulated), client


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    kinds=st.lists(st.sampled_from(DRAWN), min_size=1, max_size=12),
    d=st.integers(1, 300),
    f=st.integers(0, 4),
    krum_m=st.integers(0, 6),
    with_prev=st.booleans(),
    with_history=st.sampled_from(["none", "random", "aligned"]),
    spread=st.sampled_from([2**6, 2**12, 2**20]),
)
def test_decisions_model_and_history_equal_the_oracle(
    seed: int,
    kinds: list[str],
    d: int,
    f: int,
    krum_m: int,
    with_prev: bool,
    with_history: str,
    spread: int,
) -> None:
    g, prev, subs = _round(seed, kinds, d)
    p = prev if with_prev else None
    aligned = with_history == "aligned"
    history = None if with_history == "none" else _history(seed, subs, spread, aligned)
    got = aggregation.decide_round(g, p, subs, f, Rules(), krum_m, history)
    want = oracle.decide_round(g, p, subs, f, Rules(), krum_m, history)
    _assert_same(got, want)


def test_typical_round_flags_each_kind() -> None:
    kinds = ["honest"] * 8 + ["flip", "copy", "noise", "replay", "twin", "twin", "scaled"]
    g, prev, subs = _round(7, kinds, 2000)
    outcome = aggregation.decide_round(g, prev, subs, 2, Rules())
    got = [(d.reason, d.outcome) for d in outcome.decisions]
    assert got[8:] == [
        ("opposed", "excluded"),
        ("copy", "slashed"),
        ("unrelated", "excluded"),
        ("delta_replay", "slashed"),
        ("duplicate", "slashed"),
        ("duplicate", "slashed"),
        ("affine_copy", "excluded"),
    ]
    assert {d.reason for d in outcome.decisions[:8]} <= {"kept", "krum_excluded"}
    assert any(d.kept for d in outcome.decisions[:8])
    _assert_same(outcome, oracle.decide_round(g, prev, subs, 2, Rules()))


def test_typical_round_with_history_equals_the_oracle() -> None:
    kinds = ["honest"] * 6 + ["tiny", "jitter", "twin", "stale", "scaled", "flip", "noise"]
    g, prev, subs = _round(11, kinds, 500)
    history = _history(11, subs, 2**12)
    got = aggregation.decide_round(g, prev, subs, 2, Rules(), 0, history)
    _assert_same(got, oracle.decide_round(g, prev, subs, 2, Rules(), 0, history))


def test_round_of_a_large_model_with_history_equals_the_oracle() -> None:
    """Above SKETCH_DIM parameters the history is a sketch: the oracle computes it directly."""
    kinds = ["honest"] * 5 + ["jitter", "twin", "flip", "noise"]
    g, prev, subs = _round(13, kinds, aggregation.SKETCH_DIM + 905)
    history = _history(13, subs, 2**12)
    got = aggregation.decide_round(g, prev, subs, 1, Rules(), 0, history)
    _assert_same(got, oracle.decide_round(g, prev, subs, 1, Rules(), 0, history))


def _collusion_rounds(d: int, rounds: int) -> list[list[str]]:
    """Seven honest clients, each with its own direction plus fresh noise, and three
    colluders sharing one direction with fresh jitter each round; the reasons per round."""
    rng = np.random.default_rng(21)
    g = rng.integers(-(2**14), 2**14, d).astype(np.int32)
    common = rng.integers(-(2**8), 2**8, d)
    own = [rng.integers(-(2**8), 2**8, d) for _ in range(7)]
    shared = rng.integers(-(2**8), 2**8, d)
    history: dict[bytes, ClientHistory] = {}
    out = []
    for _ in range(rounds):
        subs = []
        for i in range(10):
            direction = own[i] if i < 7 else shared + rng.integers(-(2**5), 2**5, d)
            x = g + common + direction + rng.integers(-(2**5), 2**5, d)
            subs.append(Submission(bytes([i]) * 32, x.astype(np.int32), 1))
        outcome = aggregation.decide_round(g, None, subs, 0, Rules(), 0, history)
        history = dict(outcome.history)
        out.append([d.reason for d in outcome.decisions])
    return out


def test_a_sketched_history_catches_colluders_like_the_full_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Colluders who jitter every round are flagged as colluding, and only they, whether the
    history is the full accumulated update or its sketch (which may cross the threshold a
    round later or earlier: its distances are the full ones up to a small error)."""
    d = 3 * aggregation.SKETCH_DIM
    sketched = _collusion_rounds(d, 12)
    monkeypatch.setattr(aggregation, "SKETCH_DIM", d)  # the full history at this size
    full = _collusion_rounds(d, 12)
    firsts = []
    for run in (sketched, full):
        flagged = [r for r, reasons in enumerate(run) if reasons[7:] == ["colluding"] * 3]
        assert flagged and flagged == list(range(flagged[0], len(run)))
        assert flagged[0] >= aggregation.MIN_HISTORY_ROUNDS - 1
        assert all(reasons[:7] == ["kept"] * 7 for reasons in run)
        firsts.append(flagged[0])
    assert abs(firsts[0] - firsts[1]) <= 1


def _flip_round(d: int = 400) -> tuple[Vector, list[Submission]]:
    """Eight honest clients and two independent sign-flippers (ids 8 and 9)."""
    rng = np.random.default_rng(3)
    g = rng.integers(-(2**14), 2**14, d).astype(np.int32)
    direction = rng.integers(-(2**9), 2**9, d)
    subs = []
    for i in range(10):
        step = direction if i < 8 else -3 * direction
        x = g + step + rng.integers(-(2**7), 2**7, d)
        subs.append(Submission(bytes([i]) * 32, x.astype(np.int32), 1))
    return g, subs


def test_repeated_strikes_slash_but_a_first_strike_only_excludes() -> None:
    g, subs = _flip_round()
    repeat, first = subs[8].client, subs[9].client
    history = {repeat: ClientHistory(strikes=0b11, rounds=2)}
    outcome = aggregation.decide_round(g, None, subs, 2, Rules(), 0, history)
    by_client = {d.client: d for d in outcome.decisions}
    assert by_client[repeat].reason == "repeated_opposed"
    assert by_client[repeat].strike and by_client[repeat].outcome == "slashed"
    assert by_client[first].reason == "opposed"
    assert by_client[first].strike and by_client[first].outcome == "excluded"
    assert outcome.history[repeat].strikes == 0b111
    assert outcome.history[repeat].rounds == 3
    assert outcome.history[first].strikes == 0b1
    assert outcome.history[first].rounds == 1
    # Strikes older than the window do not count: 0b11000 shifts to 0b110001, two in the last 5.
    old = aggregation.decide_round(
        g, None, subs, 2, Rules(), 0, {repeat: ClientHistory(strikes=0b11000, rounds=5)}
    )
    assert {d.client: d.reason for d in old.decisions}[repeat] == "opposed"
    _assert_same(outcome, oracle.decide_round(g, None, subs, 2, Rules(), 0, history))


def test_colluders_with_one_accumulated_direction_are_flagged() -> None:
    """Honest-looking updates each round, but a shared accumulated update: colluding."""
    g, subs = _flip_round()
    subs = subs[:8]
    rng = np.random.default_rng(5)
    d = g.shape[0]
    shared = rng.integers(-(2**9), 2**9, size=d)
    history = {
        s.client: ClientHistory(
            0,
            4,
            np.asarray(shared if i < 2 else rng.integers(-(2**12), 2**12, size=d), np.int32),
        )
        for i, s in enumerate(subs)
    }
    outcome = aggregation.decide_round(g, None, subs, 1, Rules(), 0, history)
    reasons = [d.reason for d in outcome.decisions]
    assert reasons[:2] == ["colluding", "colluding"]
    assert "colluding" not in reasons[2:]
    _assert_same(outcome, oracle.decide_round(g, None, subs, 1, Rules(), 0, history))


def _course_histories(
    subs: list[Submission], against: int, converged: bool
) -> dict[bytes, ClientHistory]:
    """Four rounds of history each: along one course (or, converged, spread around 0 with
    no shared direction), except client `against`, whose history points against it."""
    rng = np.random.default_rng(8)
    d = subs[0].params.shape[0]
    course = rng.integers(-(2**9), 2**9, size=d)
    out = {}
    for i, s in enumerate(subs):
        noise = rng.integers(-(2**8), 2**8, size=d)
        if converged:
            c = rng.integers(-(2**9), 2**9, size=d)
        else:
            c = -course + noise if i == against else course + noise
        out[s.client] = ClientHistory(0, 4, c.astype(np.int32))
    return out


def test_a_history_against_the_kept_clients_strikes_only_while_they_share_a_course() -> None:
    """Client 7 submits an honest-looking update, but its accumulated update points against
    the course the kept clients have been on: excluded with a strike, slashed on the third.
    When the kept histories share no direction (near convergence), nobody is."""
    g, subs = _flip_round()
    subs = subs[:8]  # eight honest-looking updates this round
    against = subs[7].client
    history = _course_histories(subs, 7, converged=False)
    outcome = aggregation.decide_round(g, None, subs, 1, Rules(), 0, history)
    by_client = {d.client: d for d in outcome.decisions}
    assert by_client[against].reason == "opposed_history"
    assert by_client[against].strike and by_client[against].outcome == "excluded"
    assert all(by_client[s.client].reason != "opposed_history" for s in subs[:7])
    _assert_same(outcome, oracle.decide_round(g, None, subs, 1, Rules(), 0, history))

    repeat = {**history, against: ClientHistory(0b11, 4, history[against].accumulated)}
    slashed = aggregation.decide_round(g, None, subs, 1, Rules(), 0, repeat)
    assert {d.client: d.reason for d in slashed.decisions}[against] == "repeated_opposed_history"

    calm = _course_histories(subs, 7, converged=True)
    quiet = aggregation.decide_round(g, None, subs, 1, Rules(), 0, calm)
    assert all(d.reason != "opposed_history" for d in quiet.decisions)
    _assert_same(quiet, oracle.decide_round(g, None, subs, 1, Rules(), 0, calm))


def _cos_to_rest(outcome: RoundOutcome, client: bytes, others: list[bytes]) -> float:
    """cos(c, K - c) in floats, from the clients' new accumulated updates."""
    c = outcome.history[client].accumulated
    assert c is not None
    rest = sum(np.asarray(outcome.history[o].accumulated, dtype=np.float64) for o in others)
    c64 = c.astype(np.float64)
    return float(c64 @ rest / (np.linalg.norm(c64) * np.linalg.norm(rest)))


def test_a_history_mildly_against_or_barely_along_the_course_is_excluded_without_a_strike() -> None:
    """Client 7's accumulated update points against the kept clients' course, but less than
    the strike bound (-1/5 < cos < 0), or along it but below 1/4 of the kept clients'
    median cosine: not paid, no strike, so never slashed for it, even with two strikes
    already in its window. Clearly along the course it is kept."""
    g, subs = _flip_round()
    subs = subs[:8]
    against = subs[7].client
    history = _course_histories(subs, 7, converged=False)
    rng = np.random.default_rng(11)
    course = np.asarray(history[subs[0].client].accumulated, dtype=np.int64)
    d = course.shape[0]
    cases = ((-1, 2**11, -0.2, 0.0), (1, 2**11, 0.0, 0.2), (2, 2**9, 0.5, 1.0))
    for sign, spread, low, high in cases:
        wide = rng.integers(-spread, spread, size=d)  # its own direction
        mild = (sign * course // 2 + wide).astype(np.int32)
        hist = {**history, against: ClientHistory(0b11, 4, mild)}
        outcome = aggregation.decide_round(g, None, subs, 1, Rules(), 0, hist)
        cos = _cos_to_rest(outcome, against, [s.client for s in subs[:7]])
        assert low < cos < high, cos  # the band this case is about
        decision = {d.client: d for d in outcome.decisions}[against]
        if high <= 0.2:
            assert decision.reason == "opposed_history" and decision.outcome == "excluded"
            assert not decision.strike and outcome.history[against].strikes == 0b110
        else:
            assert decision.reason == "kept"
        _assert_same(outcome, oracle.decide_round(g, None, subs, 1, Rules(), 0, hist))


def test_a_history_held_up_by_an_opposed_one_is_measured_against_the_rest() -> None:
    """Clients 6 and 7 point against the honest clients' course and share a large direction
    of their own. Client 7 is against the sum of all kept histories; client 6, held up by
    7's share, is along it, but against the course of the kept clients that point along the
    sum (7 left out): excluded too, without a strike (one round's suspicion)."""
    g, subs = _flip_round()
    subs = subs[:8]
    history = _course_histories(subs, 8, converged=False)  # all eight along the course
    course = np.asarray(history[subs[0].client].accumulated, dtype=np.int64)
    d = course.shape[0]
    rng = np.random.default_rng(12)
    shared = rng.integers(-1254, 1254, size=d)
    held, holder = subs[6].client, subs[7].client
    own = rng.integers(-(2**8), 2**8, size=(2, d))
    history[held] = ClientHistory(0, 4, (-3 * course // 10 + shared + own[0]).astype(np.int32))
    history[holder] = ClientHistory(0, 4, (-course + shared // 2 + own[1]).astype(np.int32))
    outcome = aggregation.decide_round(g, None, subs, 1, Rules(), 0, history)
    honest = [s.client for s in subs[:6]]
    assert _cos_to_rest(outcome, holder, [*honest, held]) < 0
    assert _cos_to_rest(outcome, held, [*honest, holder]) > 0  # along the whole kept sum
    assert _cos_to_rest(outcome, held, honest) < 0  # against the others' course
    by_client = {d.client: d for d in outcome.decisions}
    assert by_client[holder].reason == "opposed_history"
    assert by_client[held].reason == "opposed_history" and not by_client[held].strike
    assert all(by_client[c].reason == "kept" for c in honest)
    _assert_same(outcome, oracle.decide_round(g, None, subs, 1, Rules(), 0, history))
