"""Test oracle: the straightforward implementation of the round decision. Every check is
one exact computation straight from the vectors (Python ints in numpy object arrays,
direct dot products, exact fractions), with no shared Gram matrix and none of
stf.aggregation's private helpers. stf.aggregation.decide_round must decide exactly as
this does (reasons, scores, strike flags, new model, Krum's f and the clients' new
history); the rules, their order and the protocol bounds are documented there."""

import hashlib
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import numpy.typing as npt

from stf import robust
from stf.aggregation import (  # the same thresholds and types; the checks below are the oracle
    EXCLUDED,
    HISTORY_ROUNDS,
    HISTORY_SIGNAL,
    HISTORY_WEAK,
    ISOLATION_SIGNAL,
    KEPT,
    KRUM_SELECT_GATE,
    MIN_HISTORY_ROUNDS,
    REPEATED_PREFIX,
    SKETCH_DIM,
    STRIKE_AFFINE,
    STRIKE_COLLUDING,
    STRIKE_KRUM,
    STRIKE_MASK,
    STRIKE_NEAR_COPY,
    STRIKE_NEAR_DUPLICATE,
    STRIKE_OPPOSED,
    STRIKE_OPPOSED_HISTORY,
    STRIKE_STEP,
    STRIKE_UNRELATED,
    STRIKE_WINDOW,
    STRIKES_TO_SLASH,
    ClientHistory,
    Decision,
    RoundOutcome,
    Rules,
    Submission,
)

Int32Array = npt.NDArray[np.int32]
BigArray = npt.NDArray[Any]  # dtype=object: Python ints, exact
Ratio = tuple[int, int]


def decide_round(
    previous_global: Int32Array,
    previous_update: Int32Array | None,
    submissions: Sequence[Submission],
    f: int,
    rules: Rules,
    krum_m: int = 0,
    history: Mapping[bytes, ClientHistory] | None = None,
) -> RoundOutcome:
    subs = sorted(submissions, key=lambda s: s.client)
    if len({s.client for s in subs}) != len(subs):
        raise ValueError("one submission per client")
    if not subs:
        return RoundOutcome((), previous_global.copy(), None)
    past = dict(history or {})
    clients = [s.client for s in subs]
    g = _big(previous_global)
    p = _big(previous_update) if previous_update is not None else None
    x = {s.client: _big(s.params) for s in subs}
    u = {c: x[c] - g for c in clients}

    evidence: dict[bytes, str] = {}
    _flag_duplicates(subs, evidence)
    _flag_copies_and_replays(clients, u, p, rules, evidence)
    reasons = dict(evidence)
    strikes: set[bytes] = set()
    _near_copies(clients, u, rules, reasons, strikes)
    _affine_copies(clients, x, g, u, rules, reasons, strikes)
    _near_duplicates(clients, u, rules, reasons, strikes)
    _opposed(clients, u, rules, reasons, strikes)
    _isolated(clients, u, p, rules, reasons, strikes)
    accumulated = {c: _accumulate(past.get(c), _sketch(u[c])) for c in clients}
    _colluding(clients, accumulated, past, rules, reasons, strikes)
    candidates = [c for c in clients if c not in reasons]
    f_left = max(0, f - len(reasons))
    scores, krum_f = _krum(candidates, x, f_left, krum_m, rules, reasons, strikes)
    _opposed_histories(clients, accumulated, past, evidence, reasons, strikes)

    kept = [s for s in subs if s.client not in reasons]
    new_global = (
        robust.weighted_average(np.stack([s.params for s in kept]), [s.weight for s in kept])
        if kept
        else previous_global.copy()
    )
    decisions = []
    new_history = {}
    for c in clients:
        before = past.get(c, ClientHistory())
        struck = c in strikes
        bits = ((before.strikes << 1) | int(struck)) & STRIKE_MASK
        reason = reasons.get(c, KEPT)
        recent = bin(bits & ((1 << STRIKE_WINDOW) - 1)).count("1")
        if c not in evidence and struck and recent >= STRIKES_TO_SLASH:
            reason = REPEATED_PREFIX + reason
        decisions.append(Decision(c, reason, scores.get(c), struck))
        new_history[c] = ClientHistory(bits, before.rounds + 1, _int32(accumulated[c]))
    return RoundOutcome(tuple(decisions), new_global, krum_f, new_history)


# --------------------------------------------------------------------------- exact helpers


def _big(v: npt.NDArray[Any]) -> BigArray:
    return np.array([int(a) for a in v.tolist()], dtype=object)


def _int32(v: BigArray) -> Int32Array:
    values = [int(a) for a in v.tolist()]
    assert all(-(2**31) <= a < 2**31 for a in values)
    return np.array(values, dtype=np.int32)


def _dot(a: BigArray, b: BigArray) -> int:
    return int(sum(int(i) * int(j) for i, j in zip(a.tolist(), b.tolist(), strict=True)))


def _median(values: Sequence[Any]) -> Any:
    """Lower median (a member of the set)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _frac(r: Ratio) -> Fraction:
    return Fraction(r[0], r[1])


def _root_le(value2: int | Fraction, ratio: Ratio, reference2: int | Fraction) -> bool:
    """sqrt(value2) <= ratio x sqrt(reference2)."""
    return Fraction(value2) <= _frac(ratio) ** 2 * Fraction(reference2)


def _signed_cos2(dot: int, norm2_product: int) -> Fraction:
    """sign(cos) x cos^2, a monotone image of the cosine (exact)."""
    sign = (dot > 0) - (dot < 0)
    return Fraction(sign * dot * dot, norm2_product)


def _signed_sq(t: Fraction) -> Fraction:
    return t * abs(t)


# --------------------------------------------------------------------------- evidence


def _flag_duplicates(subs: Sequence[Submission], reasons: dict[bytes, str]) -> None:
    for s in subs:
        if any(o.client != s.client and np.array_equal(o.params, s.params) for o in subs):
            reasons[s.client] = "duplicate"


def _flag_copies_and_replays(
    clients: list[bytes],
    u: dict[bytes, BigArray],
    p: BigArray | None,
    rules: Rules,
    reasons: dict[bytes, str],
) -> None:
    for c in clients:
        if c in reasons:
            continue
        if all(a == 0 for a in u[c].tolist()):
            reasons[c] = "copy"
        elif p is not None and _dot(p, p) > 0:
            gap = u[c] - p
            if _root_le(_dot(gap, gap), rules.replay_tolerance, _dot(p, p)):
                reasons[c] = "delta_replay"


# --------------------------------------------------------------------------- suspicion


def _suspect(
    c: bytes, reason: str, strike: bool, reasons: dict[bytes, str], strikes: set[bytes]
) -> None:
    reasons[c] = reason
    if strike:
        strikes.add(c)


def _near_copies(
    clients: list[bytes],
    u: dict[bytes, BigArray],
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    live = [c for c in clients if c not in reasons]
    if len(live) < 3:
        return
    norm2 = {c: _dot(u[c], u[c]) for c in live}
    median = _median(list(norm2.values()))
    for c in live:
        if _root_le(norm2[c], rules.near_copy_norm, median):
            strike = _root_le(norm2[c], STRIKE_NEAR_COPY, median)
            _suspect(c, "near_copy", strike, reasons, strikes)


def _affine_copies(
    clients: list[bytes],
    x: dict[bytes, BigArray],
    g: BigArray,
    u: dict[bytes, BigArray],
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    """Least squares of x on (G, 1): slope a = Sxg / Sgg, intercept b = (sum x - a sum G) / d,
    residual vector x - aG - b built explicitly (scaled by d * Sgg to stay integer)."""
    live = [c for c in clients if c not in reasons]
    d = len(g)
    sg = int(sum(g.tolist()))
    s_gg = d * _dot(g, g) - sg * sg
    if len(live) < 3 or s_gg <= 0:
        return
    median = _median([_dot(u[c], u[c]) for c in live])
    for c in live:
        sx = int(sum(x[c].tolist()))
        s_xg = d * _dot(x[c], g) - sx * sg
        # d * s_gg * (x - a G - b) with a = s_xg / s_gg, b = (sx - a sg) / d:
        scaled = d * s_gg * x[c] - d * s_xg * g - (s_gg * sx - s_xg * sg)
        residual2 = Fraction(_dot(scaled, scaled), (d * s_gg) ** 2)
        if _root_le(residual2, rules.affine_residual, median):
            strike = _root_le(residual2, STRIKE_AFFINE, median)
            _suspect(c, "affine_copy", strike, reasons, strikes)


def _close_pairs(
    vectors: dict[bytes, BigArray], live: list[bytes], ratio: Ratio, strike_ratio: Ratio
) -> dict[bytes, bool]:
    """Members of pairs closer than ratio x the lower median nearest-neighbour distance,
    each with whether one of its pairs is within strike_ratio x that median."""
    if len(live) < 3:
        return {}

    def dist2(a: bytes, b: bytes) -> int:
        diff = vectors[a] - vectors[b]
        return _dot(diff, diff)

    median = _median([min(dist2(a, b) for b in live if b != a) for a in live])
    hits: dict[bytes, bool] = {}
    for a in live:
        for b in live:
            if a < b and _root_le(dist2(a, b), ratio, median):
                strike = _root_le(dist2(a, b), strike_ratio, median)
                hits[a] = hits.get(a, False) or strike
                hits[b] = hits.get(b, False) or strike
    return hits


def _near_duplicates(
    clients: list[bytes],
    u: dict[bytes, BigArray],
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    live = [c for c in clients if c not in reasons]
    hits = _close_pairs(u, live, rules.near_duplicate, STRIKE_NEAR_DUPLICATE)
    for c, strike in hits.items():
        _suspect(c, "near_duplicate", strike, reasons, strikes)


def _opposed(
    clients: list[bytes],
    u: dict[bytes, BigArray],
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    live = [c for c in clients if c not in reasons]
    if len(live) < 3:
        return
    median = _big(robust.coordinate_median(np.stack([_int32(u[c]) for c in live])))
    mm = _dot(median, median)
    if mm == 0:
        return
    for c in live:
        cos2 = _signed_cos2(_dot(u[c], median), _dot(u[c], u[c]) * mm)
        if cos2 <= _signed_sq(-_frac(rules.opposed_max)):  # cos <= -opposed_max
            strike = cos2 <= _signed_sq(-_frac(STRIKE_OPPOSED))
            _suspect(c, "opposed", strike, reasons, strikes)


def _isolated(
    clients: list[bytes],
    u: dict[bytes, BigArray],
    p: BigArray | None,
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    """Best cosine of each update with another, after removing the component along the
    previous global step P: r = pp u - (u.P) P (a positive multiple of the residual)."""
    live = [c for c in clients if c not in reasons]
    if len(live) < 3:
        return
    pp = _dot(p, p) if p is not None else 0
    if p is not None and pp > 0:
        r = {c: pp * u[c] - _dot(u[c], p) * p for c in live}
    else:
        r = {c: u[c] for c in live}
    norm2 = {c: _dot(r[c], r[c]) for c in live}
    best: dict[bytes, Fraction] = {}  # signed squared best cosine
    for a in live:
        cands = [
            _signed_cos2(_dot(r[a], r[b]), norm2[a] * norm2[b])
            for b in live
            if b != a and norm2[a] > 0 and norm2[b] > 0
        ]
        best[a] = max(cands) if cands else Fraction(0)
    reference = _median([best[c] for c in live])
    if reference <= _signed_sq(_frac(ISOLATION_SIGNAL)):
        return
    for c in live:
        if best[c] < _frac(rules.isolation_ratio) ** 2 * reference:
            strike = best[c] < _frac(STRIKE_UNRELATED) ** 2 * reference and _mostly_step(u[c], p)
            _suspect(c, "unrelated", strike, reasons, strikes)


def _mostly_step(u: BigArray, p: BigArray | None) -> bool:
    """cos(u, P) >= STRIKE_STEP."""
    if p is None or _dot(p, p) == 0 or _dot(u, u) == 0:
        return False
    return _signed_cos2(_dot(u, p), _dot(u, u) * _dot(p, p)) >= _signed_sq(_frac(STRIKE_STEP))


def _sketch(u: BigArray) -> BigArray:
    """The update itself up to SKETCH_DIM coordinates; above, bucket b sums sign_j u_j over
    j = b (mod SKETCH_DIM), sign_j from bit j of SHAKE-256("fedrollup/sketch-signs/v1")
    (1 -> -1), then floor-divided by 2**s with 2**s >= the number of coordinates per bucket."""
    d = len(u)
    if d <= SKETCH_DIM:
        return u.copy()
    stream = hashlib.shake_256(b"fedrollup/sketch-signs/v1").digest((d + 7) // 8)
    buckets = [0] * SKETCH_DIM
    for j, value in enumerate(u.tolist()):
        sign = -1 if (stream[j // 8] >> (j % 8)) & 1 else 1
        buckets[j % SKETCH_DIM] += sign * value
    per_bucket = -(-d // SKETCH_DIM)
    shift = 0
    while (1 << shift) < per_bucket:
        shift += 1
    return np.array([b // (1 << shift) for b in buckets], dtype=object)


def _accumulate(before: ClientHistory | None, u: BigArray) -> BigArray:
    """c <- c + floor((u - c) / k), k = min(rounds so far + 1, 8); the first update as is."""
    if before is None or before.accumulated is None:
        return u.copy()
    c = _big(before.accumulated)
    k = min(before.rounds + 1, HISTORY_ROUNDS)
    return np.array(
        [a + (b - a) // k for a, b in zip(c.tolist(), u.tolist(), strict=True)], dtype=object
    )


def _colluding(
    clients: list[bytes],
    accumulated: dict[bytes, BigArray],
    past: Mapping[bytes, ClientHistory],
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    live = [
        c
        for c in clients
        if c not in reasons and c in past and past[c].rounds + 1 >= MIN_HISTORY_ROUNDS
    ]
    hits = _close_pairs(accumulated, live, rules.near_duplicate, STRIKE_COLLUDING)
    for c, strike in hits.items():
        _suspect(c, "colluding", strike, reasons, strikes)


def _opposed_histories(
    clients: list[bytes],
    accumulated: dict[bytes, BigArray],
    past: Mapping[bytes, ClientHistory],
    evidence: dict[bytes, str],
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> None:
    """cos(c, K - c) against the sum K of the kept clients' accumulated updates (all with
    history), compared as signed squares; only when the kept clients' median cosine is
    above the signal bound: a strike at the strike bound; a kept client below 1/4 of that
    median against the kept sum, or below 0 against the sum of the kept clients that are
    not, excluded."""
    with_history = [c for c in clients if c in past and past[c].rounds + 1 >= MIN_HISTORY_ROUNDS]
    kept = [c for c in with_history if c not in reasons]
    if len(kept) < 3:
        return

    def signed_cos2(c: bytes, members: list[bytes]) -> Fraction:
        total = sum((accumulated[m] for m in members[1:]), accumulated[members[0]])
        rest = total - accumulated[c] if c in members else total
        norms = _dot(accumulated[c], accumulated[c]) * _dot(rest, rest)
        return _signed_cos2(_dot(accumulated[c], rest), norms) if norms > 0 else Fraction(0)

    cos2 = {c: signed_cos2(c, kept) for c in with_history}
    reference = _median([cos2[c] for c in kept])
    if reference <= _signed_sq(_frac(HISTORY_SIGNAL)):
        return
    # cos < reference / 4, as signed squares (reference > 0)
    weak = {c for c in kept if cos2[c] < reference * _signed_sq(_frac(HISTORY_WEAK))}
    # the course of the kept clients that are not weak (if at least 3)
    along = [c for c in kept if c not in weak]
    use_along = len(along) < len(kept) and len(along) >= 3
    cos2_along = {c: signed_cos2(c, along) for c in with_history} if use_along else cos2
    bound = _signed_sq(-_frac(STRIKE_OPPOSED_HISTORY))
    for c in with_history:
        if c in evidence or c in strikes:
            continue
        if cos2[c] <= bound:
            _suspect(c, "opposed_history", True, reasons, strikes)
        elif c in weak or (c in kept and cos2_along[c] < 0):  # short of a strike
            _suspect(c, "opposed_history", False, reasons, strikes)


def _krum(
    candidates: list[bytes],
    x: dict[bytes, BigArray],
    f: int,
    krum_m: int,
    rules: Rules,
    reasons: dict[bytes, str],
    strikes: set[bytes],
) -> tuple[dict[bytes, int], int | None]:
    """Multi-Krum with the round's f, or the largest f the remaining count allows; distances
    between the parameters themselves (equal to those between the updates)."""
    n = len(candidates)
    if n < 3:
        return {}, None
    f_used = min(f, (n - 3) // 2)
    dists = [[_dot(x[a] - x[b], x[a] - x[b]) for b in candidates] for a in candidates]
    scores = robust.krum_scores(dists, f_used)
    median = _median(scores)
    for c, score in zip(candidates, scores, strict=True):
        if Fraction(score) > _frac(rules.krum_outlier) * median:
            strike = Fraction(score) > _frac(STRIKE_KRUM) * median
            _suspect(c, "krum_outlier", strike, reasons, strikes)
    m = krum_m if krum_m > 0 else n - f_used
    selected = set(robust.multi_krum_select(scores, candidates, min(m, n)))
    # Multi-Krum leaves out only unselected updates scoring above the gate x the median.
    for i, c in enumerate(candidates):
        above_gate = Fraction(scores[i]) > _frac(KRUM_SELECT_GATE) * median
        if i not in selected and c not in reasons and above_gate:
            _suspect(c, EXCLUDED, False, reasons, strikes)
    return dict(zip(candidates, scores, strict=True)), f_used
