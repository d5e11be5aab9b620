"""Closing a training round: who free-rode, who poisoned, who counts, and the new model.

Pure and exact: inputs are fixed-point int32 vectors, every threshold is a rational
compared by cross-multiplication, every tie breaks by client id, and the result does not
depend on the order submissions arrive in (they are sorted by client id first).

Order of the checks (free-riders first: identical copies of one another or of the previous
global model would otherwise win Krum, since they sit at the centre of the honest cloud):
  1. duplicate      identical parameters from different clients (all copies);
  2. copy           parameters equal to the previous global model (update = 0);
  3. delta_replay   the update repeats the previous round's global update;
  4. near_copy      update norm tiny next to the round's median update norm;
  5. correlated     parameters Pearson-correlated with the previous global above a bound
                    (the FLockChain test; scale-invariant, so it catches a*G + b copies);
  6. near duplicate  two updates pointing the same way (cos >= 0.99): colluders' copies;
  7. opposed        the update points against the robust (coordinate-median) update:
                    sign-flip and inner-product-manipulation poisoners;
  8. unrelated      no other update points its way (cos < 3/20 with all): noise senders,
                    disguised free-riders (honest non-IID updates still share directions);
  9. Krum / Multi-Krum on the rest, with f reduced by the clients already flagged; a score
     above `krum_outlier` x the median score is an outlier and is slashed; clients Krum
     merely leaves out are neither paid nor slashed.
The kept updates are averaged with weights = min(samples, max_samples).

Speed: every check reads one exact Gram matrix of the updates u_i = x_i - G (plus their
products with the previous update P and with G, and with the median update), so a round
costs one pass of BLAS-speed exact products over the n x d submissions, not one per check.
Krum's distances come from the same Gram: ||x_i - x_j||^2 = ||u_i - u_j||^2.
"""

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stf import robust

Int32Array = npt.NDArray[np.int32]
Ratio = tuple[int, int]

KEPT = "kept"
EXCLUDED = "krum_excluded"
SLASHING_REASONS = frozenset(
    {
        "duplicate",
        "copy",
        "delta_replay",
        "near_copy",
        "correlated",
        "opposed",
        "unrelated",
        "krum_outlier",
    }
)


@dataclass(frozen=True)
class Rules:
    """The job's thresholds, all rationals (numerator, denominator). The defaults come from
    simulations of 20 non-IID digits clients under every attack (see the README)."""

    near_copy_norm: Ratio = (1, 20)  # ||u|| <= this x median ||u||  -> near copy
    pearson_max: Ratio = (9_999_999, 10_000_000)  # corr(x, G) >= this -> correlated copy
    isolation_min: Ratio = (3, 20)  # no other update with cos >= this -> unrelated (noise)
    opposed_max: Ratio = (1, 5)  # cos(u, median update) <= -this -> opposed (poisoning)
    near_duplicate: Ratio = (99, 100)  # cos(u_i, u_j) >= this -> both duplicates (collusion)
    replay_tolerance: Ratio = (1, 100)  # ||u - previous update|| <= this x ||previous update||
    krum_outlier: Ratio = (10, 1)  # Krum score > this x median score -> outlier

    def as_list(self) -> list[list[int]]:
        return [list(getattr(self, name)) for name in RULE_NAMES]

    @staticmethod
    def from_list(raw: Sequence[Sequence[int]]) -> "Rules":
        return Rules(*[(int(r[0]), int(r[1])) for r in raw])


RULE_NAMES = (
    "near_copy_norm",
    "pearson_max",
    "isolation_min",
    "opposed_max",
    "near_duplicate",
    "replay_tolerance",
    "krum_outlier",
)


@dataclass(frozen=True)
class Submission:
    client: bytes
    params: Int32Array
    weight: int


@dataclass(frozen=True)
class Decision:
    client: bytes
    reason: str  # KEPT, EXCLUDED, or one of SLASHING_REASONS
    score: int | None = None

    @property
    def kept(self) -> bool:
        return self.reason == KEPT

    @property
    def slashed(self) -> bool:
        return self.reason in SLASHING_REASONS


@dataclass(frozen=True)
class RoundOutcome:
    decisions: tuple[Decision, ...]  # sorted by client id
    new_global: Int32Array
    krum_f: int | None  # the f Krum ran with, None if it did not run


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
    if not subs:
        return RoundOutcome((), previous_global.copy(), None)
    params = np.stack([s.params for s in subs])
    stats = _RoundStats.compute(params, previous_global, previous_update)
    reasons: dict[int, str] = {}
    _flag_duplicates(subs, reasons)
    _flag_copies_and_replays(stats, rules, reasons)
    _flag_near_copies(stats, rules, reasons)
    _flag_correlated(stats, rules, reasons)
    _flag_near_duplicates(stats, rules, reasons)
    _flag_opposed(stats, rules, reasons)
    _flag_isolated(stats, rules, reasons)
    candidates = [i for i in range(len(subs)) if i not in reasons]
    f_left = max(0, f - len(reasons))  # the flagged ones already used up part of f
    scores, krum_f = _krum(
        stats, candidates, [s.client for s in subs], f_left, krum_m, rules, reasons
    )
    kept = [i for i in candidates if i not in reasons]
    new_global = (
        robust.weighted_average(params[kept], [subs[i].weight for i in kept])
        if kept
        else previous_global.copy()
    )
    decisions = tuple(
        Decision(s.client, reasons.get(i, KEPT), scores.get(i)) for i, s in enumerate(subs)
    )
    return RoundOutcome(decisions, new_global, krum_f)


@dataclass(frozen=True)
class _RoundStats:
    """Exact inner products of the round: updates U (rows), previous update P, global G."""

    updates: Int32Array
    uu: list[list[int]]  # u_i . u_j
    up: list[int]  # u_i . P
    ug: list[int]  # u_i . G
    pp: int
    gg: int
    su: list[int]  # sum of u_i
    sg: int  # sum of G
    d: int

    @staticmethod
    def compute(params: Int32Array, g: Int32Array, p: Int32Array | None) -> "_RoundStats":
        # |x|, |g| <= max_abs < 2**30, so x - g fits int32 exactly.
        updates = np.subtract(params, g, dtype=np.int32)
        prev = np.zeros_like(g) if p is None else p
        pg = np.stack([prev, g])
        cross = robust.cross_gram(updates, pg)
        pg_gram = robust.gram(pg)
        return _RoundStats(
            updates=updates,
            uu=robust.gram(updates),
            up=[row[0] for row in cross],
            ug=[row[1] for row in cross],
            pp=pg_gram[0][0],
            gg=pg_gram[1][1],
            su=[int(v) for v in updates.sum(axis=1, dtype=np.int64)],
            sg=int(g.sum(dtype=np.int64)),
            d=int(g.shape[0]),
        )

    def norm2(self, i: int) -> int:
        return self.uu[i][i]

    def dist2(self, i: int, j: int) -> int:
        return self.uu[i][i] + self.uu[j][j] - 2 * self.uu[i][j]


def _flag_duplicates(subs: Sequence[Submission], reasons: dict[int, str]) -> None:
    by_digest: dict[bytes, list[int]] = {}
    for i, s in enumerate(subs):
        digest = hashlib.blake2b(np.ascontiguousarray(s.params).data, digest_size=32).digest()
        by_digest.setdefault(digest, []).append(i)
    for members in by_digest.values():
        if len(members) > 1:
            for i in members:
                reasons[i] = "duplicate"


def _flag_copies_and_replays(stats: _RoundStats, rules: Rules, reasons: dict[int, str]) -> None:
    num, den = rules.replay_tolerance
    for i in range(len(stats.uu)):
        if i in reasons:
            continue
        if stats.norm2(i) == 0:
            reasons[i] = "copy"
        elif stats.pp > 0:
            gap = stats.norm2(i) + stats.pp - 2 * stats.up[i]  # ||u_i - P||^2
            if gap * den * den <= num * num * stats.pp:
                reasons[i] = "delta_replay"


def _median_int(values: Sequence[int]) -> int:
    """Lower median: an actual member of the set, so it is exact without division."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _live(stats: _RoundStats, reasons: dict[int, str]) -> list[int]:
    return [i for i in range(len(stats.uu)) if i not in reasons]


def _flag_near_copies(stats: _RoundStats, rules: Rules, reasons: dict[int, str]) -> None:
    live = _live(stats, reasons)
    if len(live) < 3:
        return
    median = _median_int([stats.norm2(i) for i in live])
    num, den = rules.near_copy_norm
    for i in live:
        if stats.norm2(i) * den * den <= num * num * median:
            reasons[i] = "near_copy"


def _flag_correlated(stats: _RoundStats, rules: Rules, reasons: dict[int, str]) -> None:
    """Pearson corr(x_i, G) from the stats: x = G + u, so every moment is a sum of known
    products. A constant G or x leaves the correlation undefined: never flagged."""
    d, gg, sg = stats.d, stats.gg, stats.sg
    var_g = d * gg - sg * sg
    if var_g <= 0:
        return
    num, den = rules.pearson_max
    for i in _live(stats, reasons):
        sx = stats.su[i] + sg
        sxx = stats.norm2(i) + 2 * stats.ug[i] + gg
        sxy = stats.ug[i] + gg
        var_x = d * sxx - sx * sx
        if var_x > 0 and robust.ratio_over_sqrt_ge(d * sxy - sx * sg, var_x * var_g, num, den):
            reasons[i] = "correlated"


def _cos_at_least(stats: _RoundStats, i: int, j: int, ratio: Ratio) -> bool:
    return robust.ratio_over_sqrt_ge(stats.uu[i][j], stats.norm2(i) * stats.norm2(j), *ratio)


def _flag_near_duplicates(stats: _RoundStats, rules: Rules, reasons: dict[int, str]) -> None:
    """Colluders sending slightly jittered copies of one update: pairs pointing the same way."""
    live = _live(stats, reasons)
    twins: set[int] = set()
    for a, i in enumerate(live):
        for j in live[a + 1 :]:
            if _cos_at_least(stats, i, j, rules.near_duplicate):
                twins.update((i, j))
    for i in twins:
        reasons[i] = "duplicate"


def _flag_opposed(stats: _RoundStats, rules: Rules, reasons: dict[int, str]) -> None:
    """Updates pointing against the coordinate median of the remaining updates (robust to a
    minority of attackers, unlike the mean): cos(u, median) <= -opposed_max."""
    live = _live(stats, reasons)
    if len(live) < 3:
        return
    # Fancy indexing copies n x d values: only when some rows are out already.
    rows = stats.updates if len(live) == len(stats.uu) else stats.updates[live]
    median = robust.coordinate_median(rows)
    if not median.any():
        return
    um = [row[0] for row in robust.cross_gram(rows, median[np.newaxis, :])]
    mm = robust.sq_norm(median)
    for i, dot in zip(live, um, strict=True):
        if robust.ratio_over_sqrt_ge(-dot, stats.norm2(i) * mm, *rules.opposed_max):
            reasons[i] = "opposed"


def _flag_isolated(stats: _RoundStats, rules: Rules, reasons: dict[int, str]) -> None:
    """An update no other remaining update points along: noise, not training. Honest
    non-IID updates still share directions with some peers; random vectors share none."""
    live = _live(stats, reasons)
    if len(live) < 3:
        return
    for i in live:
        if not any(_cos_at_least(stats, i, j, rules.isolation_min) for j in live if j != i):
            reasons[i] = "unrelated"


def _krum(
    stats: _RoundStats,
    candidates: list[int],
    clients: list[bytes],
    f: int,
    krum_m: int,
    rules: Rules,
    reasons: dict[int, str],
) -> tuple[dict[int, int], int | None]:
    """Multi-Krum with the job's f, or the largest f the remaining count allows."""
    n = len(candidates)
    if n < 3:
        return {}, None
    f_used = min(f, (n - 3) // 2)
    dists = [[stats.dist2(i, j) for j in candidates] for i in candidates]
    scores = robust.krum_scores(dists, f_used)
    by_index = dict(zip(candidates, scores, strict=True))
    median = _median_int(scores)
    num, den = rules.krum_outlier
    for i, score in by_index.items():
        if score * den > num * median:
            reasons[i] = "krum_outlier"
    m = krum_m if krum_m > 0 else n - f_used
    selected = set(robust.multi_krum_select(scores, [clients[i] for i in candidates], min(m, n)))
    for pos, i in enumerate(candidates):
        if pos not in selected and i not in reasons:
            reasons[i] = EXCLUDED
    return by_index, f_used
