"""Test oracle: the first, straightforward implementation of the round decision (one exact
computation per check, no shared Gram matrix). stf.aggregation must decide exactly as this
does; the rules and their order are documented there."""

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stf import robust
from stf.aggregation import (  # the same thresholds and types; the checks below are the oracle
    EXCLUDED,
    KEPT,
    Decision,
    RoundOutcome,
    Rules,
    Submission,
)

Int32Array = npt.NDArray[np.int32]
Ratio = tuple[int, int]


# The data types are shared with the implementation; only the decision logic is the oracle's.
def decide_round(
    previous_global: Int32Array,
    previous_update: Int32Array | None,
    submissions: Sequence[Submission],
    f: int,
    rules: Rules,
    krum_m: int = 0,
) -> RoundOutcome:
    subs = sorted(submissions, key=lambda s: s.client)
    if len({s.client for s in subs}) != len(subs):
        raise ValueError("one submission per client")
    reasons: dict[bytes, str] = {}
    updates = {s.client: _update(s.params, previous_global) for s in subs}
    _flag_duplicates(subs, reasons)
    _flag_copies_and_replays(subs, updates, previous_update, rules, reasons)
    _flag_near_copies(subs, updates, rules, reasons)
    _flag_correlated(subs, previous_global, rules, reasons)
    _flag_near_duplicates(subs, updates, rules, reasons)
    _flag_opposed(subs, updates, rules, reasons)
    _flag_isolated(subs, updates, rules, reasons)
    candidates = [s for s in subs if s.client not in reasons]
    scores, krum_f = _krum(candidates, max(0, f - len(reasons)), krum_m, rules, reasons)
    kept = [s for s in candidates if s.client not in reasons]
    new_global = (
        robust.weighted_average(np.stack([s.params for s in kept]), [s.weight for s in kept])
        if kept
        else previous_global.copy()
    )
    decisions = tuple(
        Decision(s.client, reasons.get(s.client, KEPT), scores.get(s.client)) for s in subs
    )
    return RoundOutcome(decisions, new_global, krum_f)


def _update(params: Int32Array, base: Int32Array) -> Int32Array:
    # |params|, |base| <= max_abs < 2**31 / 2, so the difference fits int32 exactly.
    return (params.astype(np.int64) - base.astype(np.int64)).astype(np.int32)


def _flag_duplicates(subs: Sequence[Submission], reasons: dict[bytes, str]) -> None:
    by_bytes: dict[bytes, list[bytes]] = {}
    for s in subs:
        by_bytes.setdefault(s.params.tobytes(), []).append(s.client)
    for clients in by_bytes.values():
        if len(clients) > 1:
            for c in clients:
                reasons[c] = "duplicate"


def _flag_copies_and_replays(
    subs: Sequence[Submission],
    updates: dict[bytes, Int32Array],
    previous_update: Int32Array | None,
    rules: Rules,
    reasons: dict[bytes, str],
) -> None:
    prev_norm = robust.sq_norm(previous_update) if previous_update is not None else 0
    num, den = rules.replay_tolerance
    for s in subs:
        if s.client in reasons:
            continue
        u = updates[s.client]
        if not u.any():
            reasons[s.client] = "copy"
        elif previous_update is not None and prev_norm > 0:
            gap = robust.sq_norm(_update(u, previous_update))
            if gap * den * den <= num * num * prev_norm:
                reasons[s.client] = "delta_replay"


def _median_int(values: Sequence[int]) -> int:
    """Lower median: an actual member of the set, so it is exact without division."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _flag_near_copies(
    subs: Sequence[Submission],
    updates: dict[bytes, Int32Array],
    rules: Rules,
    reasons: dict[bytes, str],
) -> None:
    live = [s for s in subs if s.client not in reasons]
    if len(live) < 3:
        return
    norms = {s.client: robust.sq_norm(updates[s.client]) for s in live}
    median = _median_int(list(norms.values()))
    num, den = rules.near_copy_norm
    for s in live:
        if norms[s.client] * den * den <= num * num * median:
            reasons[s.client] = "near_copy"


def _flag_correlated(
    subs: Sequence[Submission], previous_global: Int32Array, rules: Rules, reasons: dict[bytes, str]
) -> None:
    if not previous_global.any():
        return  # correlation with a constant vector is undefined
    num, den = rules.pearson_max
    for s in subs:
        if s.client not in reasons and robust.pearson_at_least(s.params, previous_global, num, den):
            reasons[s.client] = "correlated"


def _flag_near_duplicates(
    subs: Sequence[Submission],
    updates: dict[bytes, Int32Array],
    rules: Rules,
    reasons: dict[bytes, str],
) -> None:
    live = [s.client for s in subs if s.client not in reasons]
    twins = set()
    for a in live:
        for b in live:
            if a < b and robust.cosine_at_least(updates[a], updates[b], *rules.near_duplicate):
                twins.update((a, b))
    for c in twins:
        reasons[c] = "duplicate"


def _flag_opposed(
    subs: Sequence[Submission],
    updates: dict[bytes, Int32Array],
    rules: Rules,
    reasons: dict[bytes, str],
) -> None:
    live = [s for s in subs if s.client not in reasons]
    if len(live) < 3:
        return
    median = robust.coordinate_median(np.stack([updates[s.client] for s in live]))
    if not median.any():
        return
    for s in live:
        negated = (-updates[s.client].astype(np.int64)).astype(np.int32)
        if robust.cosine_at_least(negated, median, *rules.opposed_max):
            reasons[s.client] = "opposed"


def _flag_isolated(
    subs: Sequence[Submission],
    updates: dict[bytes, Int32Array],
    rules: Rules,
    reasons: dict[bytes, str],
) -> None:
    live = [s.client for s in subs if s.client not in reasons]
    if len(live) < 3:
        return
    for a in live:
        if not any(
            robust.cosine_at_least(updates[a], updates[b], *rules.isolation_min)
            for b in live
            if b != a
        ):
            reasons[a] = "unrelated"


def _krum(
    candidates: Sequence[Submission], f: int, krum_m: int, rules: Rules, reasons: dict[bytes, str]
) -> tuple[dict[bytes, int], int | None]:
    """Multi-Krum with the job's f, or the largest f the remaining count allows."""
    n = len(candidates)
    if n < 3:
        return {}, None
    f_used = min(f, (n - 3) // 2)
    dists = robust.pairwise_sq_distances(np.stack([s.params for s in candidates]))
    scores = robust.krum_scores(dists, f_used)
    by_client = {s.client: score for s, score in zip(candidates, scores, strict=True)}
    median = _median_int(scores)
    num, den = rules.krum_outlier
    for s, score in zip(candidates, scores, strict=True):
        if score * den > num * median:
            reasons[s.client] = "krum_outlier"
    m = krum_m if krum_m > 0 else n - f_used
    selected = set(robust.multi_krum_select(scores, [s.client for s in candidates], min(m, n)))
    for i, s in enumerate(candidates):
        if i not in selected and s.client not in reasons:
            reasons[s.client] = EXCLUDED
    return by_client, f_used
