"""Closing a training round: who is kept, who is excluded, who is slashed, and the new model.

Pure and exact: inputs are fixed-point int32 vectors, every threshold is a rational
compared by cross-multiplication, every tie breaks by client id, and the result does not
depend on the order submissions arrive in (they are sorted by client id first).

Three outcomes, kept apart:
  * kept      the update is averaged into the new global model and paid;
  * excluded  not averaged, not paid, not slashed: one round's statistical suspicion;
  * slashed   evidence (below), or a suspicion repeated with an overwhelming margin.

Evidence (anyone can check it from the chain alone; the job's full slash):
  0. unrevealed     a commitment never opened (decided by the STF, stf.jobs);
  1. duplicate      parameters identical to another participant's in the same round;
  2. copy           parameters equal to the previous global model (update = 0);
  3. delta_replay   the update repeats the previous round's global step (within 1 %).

Suspicion (exclusion; thresholds are the job's `Rules`, each relative to the round's own
distribution, so small noisy honest updates near convergence are not flagged):
  4. near_copy      update norm <= r x the round's median update norm;
  5. affine_copy    the parameters are an affine map a*G + b of the global up to a residual
                    <= r x the median update norm (scaled copies; Pearson, made relative);
  6. near_duplicate two updates closer to each other than r x the round's median
                    nearest-neighbour distance (colluders' jittered copies);
  7. opposed        cos(update, coordinate-median update) <= -r (sign-flip, IPM, min-max);
  8. unrelated      in the space orthogonal to the previous global step (so an extrapolated
                    replay of that step does not look related), the update's best cosine with
                    any other update is below r x the round's median best cosine: noise;
  9. colluding      as 6, on each client's accumulated update across rounds (the history,
                    as FoolsGold): colluders who jitter each round converge to one direction;
 10. Krum / Multi-Krum on the rest (f per round, less those already out this round):
                    krum_outlier (score > r x median score) and krum_excluded (not among
                    the n - f selected, and scoring above KRUM_SELECT_GATE x the median).
 11. opposed_history  a protocol check, no job rule: a client's accumulated update against
                    the sum of the kept clients' accumulated updates, while those share a
                    direction (their median cos with the rest above 3/10): excluded when it
                    barely follows it (cos below 1/4 of that median, or below 0 against the
                    kept clients that do follow it), with a strike from cos <= -1/5:
                    sign and label flippers whose single rounds look like non-IID ones.

A suspicion is a *strike* when its margin passes a protocol bound (STRIKE_*, not the job's:
a job cannot tune a strike). A client with STRIKES_TO_SLASH strikes among its last
STRIKE_WINDOW rounds is slashed ("repeated_<reason>", the smaller repeated-statistics
slash). The bounds come from the honest sweep in the README: no honest participant reached
them in any setting run there.

The kept updates are averaged with the submissions' weights (equal unless the job opts in).

Speed: every check reads one exact Gram matrix of the updates u_i = x_i - G (plus their
products with the previous update P, with G and with the median update) and two of the
accumulated updates (at most SKETCH_DIM long each): BLAS-speed exact products, of which only
the first reads vectors of the model's length.
"""

import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from stf import robust

Int32Array = npt.NDArray[np.int32]
Ratio = tuple[int, int]

KEPT_OUTCOME, EXCLUDED_OUTCOME, SLASHED_OUTCOME = "kept", "excluded", "slashed"
KEPT = "kept"
EXCLUDED = "krum_excluded"
UNREVEALED = "unrevealed"  # committed, never revealed (decided by the STF, not here)
EVIDENCE_REASONS = frozenset({UNREVEALED, "duplicate", "copy", "delta_replay"})
SUSPICION_REASONS = frozenset(
    {
        "near_copy",
        "affine_copy",
        "near_duplicate",
        "opposed",
        "unrelated",
        "colluding",
        "krum_outlier",
        "opposed_history",
    }
)
REPEATED_PREFIX = "repeated_"
SLASHING_REASONS = EVIDENCE_REASONS | frozenset(REPEATED_PREFIX + r for r in SUSPICION_REASONS)
EXCLUDING_REASONS = SUSPICION_REASONS | {EXCLUDED}

# Strikes: protocol bounds, not job terms. A strike needs the statistic this far past the
# point where an honest update was ever seen in the published sweep.
STRIKE_NEAR_COPY: Ratio = (1, 100)  # ||u|| <= this x median ||u||
STRIKE_AFFINE: Ratio = (1, 100)  # affine residual <= this x median ||u||
STRIKE_NEAR_DUPLICATE: Ratio = (1, 50)  # ||u_i - u_j|| <= this x median nearest distance
# cos(u, median update) <= -this. Not lower: in the honest sweep (alpha 0.05, 100 rounds)
# honest clients alone with their classes point against the median at cos -0.2, some with
# 3 x the median norm, round after round; a scaled sign flip of such an update is
# indistinguishable from it in one round, so it is excluded, and slashed only past this.
STRIKE_OPPOSED: Ratio = (1, 4)
# An isolated update strikes only when it is also mostly the previous global step (cos with
# P at least STRIKE_STEP): fresh noise on a replayed step. An honest client alone with its
# data (extreme non-IID) is isolated too, but its update is its own direction, not P's.
STRIKE_UNRELATED: Ratio = (1, 10)  # best cos <= this x median best cos
STRIKE_STEP: Ratio = (9, 10)  # cos(u, P) >= this
STRIKE_COLLUDING: Ratio = (1, 50)  # as near duplicate, on the accumulated updates
STRIKE_KRUM: Ratio = (100, 1)  # score > this x median score
# cos(c, K) <= -this, c a client's accumulated update and K the sum of the other kept
# clients' accumulated updates: pulling against where the job has been going, round after
# round. One round's non-IID pull against the median (an honest client alone with its
# classes) averages out of c; a sign flip's or a label flip's does not. Excludes and
# strikes at once, and only while the round's kept histories share a direction (below).
# Above this bound, a kept client whose cos is below HISTORY_WEAK x the kept clients'
# median is only excluded: one round's suspicion is no evidence.
STRIKE_OPPOSED_HISTORY: Ratio = (1, 5)
# The opposed-history check runs only when the median over kept clients of cos(c_j, K - c_j)
# is above this. Near convergence the kept updates sum to about 0 (each then points against
# the rest), and in extreme non-IID data they never share one direction: there "opposed to
# the others" says nothing about a client.
HISTORY_SIGNAL: Ratio = (3, 10)
# A kept client whose cos(c, K - c) is below this x the kept clients' median (the gate's
# reference) is excluded, without a strike: it barely follows the course the others share
# (the same 1/4 as the isolation test's default, relative to the round's own distribution).
HISTORY_WEAK: Ratio = (1, 4)
# The isolation test runs only when the round's median best cosine is above this: below it
# every update is mostly noise and "isolated" would flag honest clients at random.
ISOLATION_SIGNAL: Ratio = (3, 20)
# Multi-Krum leaves out (up to f) only updates scoring above this x the median score: in a
# round with no attacker left, dropping f honest non-IID updates every round costs accuracy.
# At 3/2 honest-only jobs with f = 6 of 20 lost up to 0.02 accuracy and 20 % of honest
# rounds' pay (alpha 0.5); at 2 the history checks, not Krum, keep label flippers out.
KRUM_SELECT_GATE: Ratio = (2, 1)
STRIKES_TO_SLASH = 3
STRIKE_WINDOW = 5  # among the client's last 5 rounds in the job
STRIKE_MASK = (1 << 8) - 1  # the history keeps the last 8 rounds' strike bits
# Accumulated update: c <- c + (u - c) / k, k = min(rounds so far + 1, 8) (floor division:
# exact, bounded by max |u|): the plain mean of a client's first 8 updates, then an average
# that forgets with weight 1/8. Not 1/8 from the start: the first update would weigh
# (7/8)^r in round r (half of round 6's history), so one round's jitter or a flipper's
# early shared progress would linger in the history for many rounds.
HISTORY_ROUNDS = 8  # the mean's length, then the weight 1/8 of each new update
MIN_HISTORY_ROUNDS = 3  # accumulated updates compared only after this many rounds each
# Histories of models above this many parameters are kept as sketches of this length.
SKETCH_DIM = 4096


@dataclass(frozen=True)
class Rules:
    """The job's exclusion thresholds, all rationals (numerator, denominator), each relative
    to the round's own distribution. They only decide exclusions (who is paid): strikes and
    slashes use the protocol's bounds. `RULE_BOUNDS` is the envelope a job must stay in."""

    near_copy_norm: Ratio = (1, 20)  # ||u|| <= this x median ||u||
    affine_residual: Ratio = (1, 20)  # ||x - (aG + b)|| <= this x median ||u||
    isolation_ratio: Ratio = (1, 4)  # best cos < this x the round's median best cos
    opposed_max: Ratio = (1, 5)  # cos(u, median update) <= -this
    near_duplicate: Ratio = (1, 10)  # ||u_i - u_j|| <= this x median nearest distance
    replay_tolerance: Ratio = (1, 100)  # ||u - P|| <= this x ||P||  (evidence)
    krum_outlier: Ratio = (10, 1)  # Krum score > this x median score

    def as_list(self) -> list[list[int]]:
        return [list(getattr(self, name)) for name in RULE_NAMES]

    @staticmethod
    def from_list(raw: Sequence[Sequence[int]]) -> "Rules":
        return Rules(*[(int(r[0]), int(r[1])) for r in raw])


RULE_NAMES = (
    "near_copy_norm",
    "affine_residual",
    "isolation_ratio",
    "opposed_max",
    "near_duplicate",
    "replay_tolerance",
    "krum_outlier",
)
# (lowest, highest) each rule may take in a job: past these bounds a rule would exclude
# ordinary honest updates (or, for the replay tolerance, make near replays "evidence").
RULE_BOUNDS: dict[str, tuple[Ratio, Ratio]] = {
    "near_copy_norm": ((1, 1000), (1, 10)),
    "affine_residual": ((1, 1000), (1, 10)),
    "isolation_ratio": ((1, 1000), (1, 2)),
    "opposed_max": ((1, 10), (1, 1)),
    "near_duplicate": ((1, 1000), (1, 5)),
    "replay_tolerance": ((1, 10_000), (1, 20)),
    "krum_outlier": ((4, 1), (1000, 1)),
}


def rules_outside_envelope(rules: Rules) -> list[str]:
    """The names of the rules outside `RULE_BOUNDS` (empty: the rules are acceptable)."""
    bad = []
    for name in RULE_NAMES:
        num, den = getattr(rules, name)
        (lo_n, lo_d), (hi_n, hi_d) = RULE_BOUNDS[name]
        if den <= 0 or num < 0 or num * lo_d < lo_n * den or num * hi_d > hi_n * den:
            bad.append(name)
    return bad


@dataclass(frozen=True)
class Submission:
    client: bytes
    params: Int32Array
    weight: int


@dataclass(frozen=True)
class ClientHistory:
    """What a job remembers of a client between rounds: its strike bits (bit 0 = its last
    round) and its accumulated update (None before its first round)."""

    strikes: int = 0
    rounds: int = 0
    accumulated: Int32Array | None = None


@dataclass(frozen=True)
class Decision:
    client: bytes
    reason: str  # KEPT, an excluding reason, or a slashing reason
    score: int | None = None
    strike: bool = False

    @property
    def outcome(self) -> str:
        if self.reason == KEPT:
            return KEPT_OUTCOME
        return SLASHED_OUTCOME if self.reason in SLASHING_REASONS else EXCLUDED_OUTCOME

    @property
    def kept(self) -> bool:
        return self.reason == KEPT

    @property
    def slashed(self) -> bool:
        return self.reason in SLASHING_REASONS

    @property
    def evidence(self) -> bool:
        return self.reason in EVIDENCE_REASONS


@dataclass(frozen=True)
class RoundOutcome:
    decisions: tuple[Decision, ...]  # sorted by client id
    new_global: Int32Array
    krum_f: int | None  # the f Krum ran with, None if it did not run
    history: dict[bytes, ClientHistory] = field(default_factory=dict)  # the submitters' new

    def with_decisions(self, extra: Sequence[Decision]) -> "RoundOutcome":
        """The outcome with decisions made outside the round decision (unrevealed commits)."""
        merged = tuple(sorted((*self.decisions, *extra), key=lambda d: d.client))
        return RoundOutcome(merged, self.new_global, self.krum_f, self.history)


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
    if not subs:
        return RoundOutcome((), previous_global.copy(), None)
    rows = RoundRows(
        tuple(s.client for s in subs),
        tuple(s.weight for s in subs),
        np.stack([s.params for s in subs]),
    )
    return decide_round_rows(previous_global, previous_update, rows, f, rules, krum_m, history)


@dataclass(frozen=True)
class RoundRows:
    """A round's submissions as one matrix: row i holds the parameters of clients[i], the
    clients in increasing order. The round decision reads it in column chunks and copies
    no row, so a whole aggregation stays close to the size of its submissions."""

    clients: tuple[bytes, ...]
    weights: tuple[int, ...]
    params: Int32Array

    def __post_init__(self) -> None:
        if any(a >= b for a, b in zip(self.clients, self.clients[1:], strict=False)):
            raise ValueError("one submission per client, in increasing client order")
        if self.params.shape[0] != len(self.clients) or len(self.weights) != len(self.clients):
            raise ValueError("one row and one weight per client")


def decide_round_rows(
    previous_global: Int32Array,
    previous_update: Int32Array | None,
    rows: RoundRows,
    f: int,
    rules: Rules,
    krum_m: int = 0,
    history: Mapping[bytes, ClientHistory] | None = None,
) -> RoundOutcome:
    """The round decision on a round's rows (see the module docstring)."""
    n = len(rows.clients)
    if n == 0:
        return RoundOutcome((), previous_global.copy(), None)
    past = history or {}
    before = [past.get(c) for c in rows.clients]
    stats = _RoundStats.compute(rows.params, previous_global, previous_update)
    evidence: dict[int, str] = {}
    _flag_duplicates(stats, evidence)
    _flag_copies_and_replays(stats, rules, evidence)
    flags = _Flags(dict(evidence))
    _suspect_near_copies(stats, rules, flags)
    _suspect_affine_copies(stats, rules, flags)
    _suspect_near_duplicates(stats, rules, flags)
    _suspect_opposed(stats, rules, flags)
    _suspect_isolated(stats, rules, flags)
    accumulated = _accumulate(stats, before)
    _suspect_colluding(accumulated, before, rules, flags)
    candidates = flags.live(n)
    f_left = max(0, f - (n - len(candidates)))  # those out already used up part of f
    scores, krum_f = _krum(stats, candidates, list(rows.clients), f_left, krum_m, rules, flags)
    _suspect_opposed_histories(accumulated, before, evidence, flags)
    kept = set(flags.live(n))
    new_global = (
        # Zero weights leave the others' exact average unchanged and copy no row.
        robust.weighted_average(
            rows.params, [w if i in kept else 0 for i, w in enumerate(rows.weights)]
        )
        if kept
        else previous_global.copy()
    )
    decisions, new_history = _decide(rows.clients, flags, evidence, scores, accumulated, past)
    return RoundOutcome(decisions, new_global, krum_f, new_history)


@dataclass
class _Flags:
    """Per submission index: its reason (evidence or suspicion) and whether it struck."""

    reasons: dict[int, str]
    strikes: set[int] = field(default_factory=set)

    def live(self, n: int) -> list[int]:
        return [i for i in range(n) if i not in self.reasons]

    def suspect(self, i: int, reason: str, strike: bool) -> None:
        self.reasons[i] = reason
        if strike:
            self.strikes.add(i)


def _decide(
    clients: Sequence[bytes],
    flags: _Flags,
    evidence: dict[int, str],
    scores: dict[int, int],
    accumulated: list[Int32Array],
    past: Mapping[bytes, ClientHistory],
) -> tuple[tuple[Decision, ...], dict[bytes, ClientHistory]]:
    decisions = []
    new_history = {}
    for i, client in enumerate(clients):
        before = past.get(client, ClientHistory())
        struck = i in flags.strikes
        bits = ((before.strikes << 1) | int(struck)) & STRIKE_MASK
        reason = flags.reasons.get(i, KEPT)
        if i not in evidence and struck and is_repeat_offender(bits):
            reason = REPEATED_PREFIX + reason
        decisions.append(Decision(client, reason, scores.get(i), struck))
        new_history[client] = ClientHistory(bits, before.rounds + 1, accumulated[i])
    return tuple(decisions), new_history


def is_repeat_offender(strike_bits: int) -> bool:
    recent = strike_bits & ((1 << STRIKE_WINDOW) - 1)
    return recent.bit_count() >= STRIKES_TO_SLASH


@dataclass(frozen=True)
class _RoundStats:
    """Exact inner products of the round's updates u_i = x_i - G (never materialised: they
    follow from the products of the parameters x_i with each other, with P and with G)."""

    params: Int32Array  # the submissions x_i (rows)
    g: Int32Array  # the previous global model G
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
        prev = np.zeros_like(g) if p is None else p
        pg = np.stack([prev, g])
        xx = robust.gram(params)
        cross = robust.cross_gram(params, pg)  # x_i . P, x_i . G
        pg_gram = robust.gram(pg)
        gp, gg = pg_gram[0][1], pg_gram[1][1]
        xg = [row[1] for row in cross]
        n = len(xx)
        sg = int(g.sum(dtype=np.int64))
        return _RoundStats(
            params=params,
            g=g,
            uu=[[xx[i][j] - xg[i] - xg[j] + gg for j in range(n)] for i in range(n)],
            up=[row[0] - gp for row in cross],
            ug=[v - gg for v in xg],
            pp=pg_gram[0][0],
            gg=gg,
            su=[int(v) - sg for v in params.sum(axis=1, dtype=np.int64)],
            sg=sg,
            d=int(g.shape[0]),
        )

    def norm2(self, i: int) -> int:
        return self.uu[i][i]

    def dist2(self, i: int, j: int) -> int:
        return self.uu[i][i] + self.uu[j][j] - 2 * self.uu[i][j]

    def residual_dot(self, i: int, j: int) -> int:
        """pp x (r_i . r_j), r = u with its component along P removed (exact integers)."""
        if self.pp == 0:
            return self.uu[i][j]
        return self.pp * self.uu[i][j] - self.up[i] * self.up[j]


def _flag_duplicates(stats: _RoundStats, reasons: dict[int, str]) -> None:
    """Identical parameters: exactly the pairs at distance 0 (the Gram matrix is exact)."""
    n = len(stats.uu)
    for i in range(n):
        for j in range(i + 1, n):
            if stats.dist2(i, j) == 0:
                reasons[i] = reasons[j] = "duplicate"


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


def median_int(values: Sequence[int]) -> int:
    """Lower median: an actual member of the set, so it is exact without division."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def _sq_le(value2: int, ratio: Ratio, reference2: int) -> bool:
    """sqrt(value2) <= ratio x sqrt(reference2), exactly (all arguments >= 0)."""
    num, den = ratio
    return value2 * den * den <= num * num * reference2


def _suspect_near_copies(stats: _RoundStats, rules: Rules, flags: _Flags) -> None:
    live = flags.live(len(stats.uu))
    if len(live) < 3:
        return
    median = median_int([stats.norm2(i) for i in live])
    for i in live:
        if _sq_le(stats.norm2(i), rules.near_copy_norm, median):
            flags.suspect(i, "near_copy", _sq_le(stats.norm2(i), STRIKE_NEAR_COPY, median))


def _suspect_affine_copies(stats: _RoundStats, rules: Rules, flags: _Flags) -> None:
    """x ~ a*G + b: the least-squares residual of x on (G, 1), from the stats. With
    centred sums Sxx = d*sum(x^2) - (sum x)^2 (and Sgg, Sxg alike), d * ||residual||^2 =
    Sxx - Sxg^2 / Sgg; compared with ratio^2 x median ||u||^2, times d * Sgg (exact)."""
    live = flags.live(len(stats.uu))
    d, gg, sg = stats.d, stats.gg, stats.sg
    s_gg = d * gg - sg * sg
    if len(live) < 3 or s_gg <= 0:
        return
    median = median_int([stats.norm2(i) for i in live])
    for i in live:
        sx = stats.su[i] + sg
        sxx = stats.norm2(i) + 2 * stats.ug[i] + gg
        s_xx = d * sxx - sx * sx
        s_xg = d * (stats.ug[i] + gg) - sx * sg
        residual = s_xx * s_gg - s_xg * s_xg  # = d * Sgg * ||residual||^2
        reference = d * s_gg * median
        if _sq_le(residual, rules.affine_residual, reference):
            flags.suspect(i, "affine_copy", _sq_le(residual, STRIKE_AFFINE, reference))


def _nearest_dist2(dist2: list[list[int]], i: int) -> int:
    return min(dist2[i][j] for j in range(len(dist2)) if j != i)


def _suspect_close_pairs(
    dist2: list[list[int]],
    live: list[int],
    ratio: Ratio,
    strike_ratio: Ratio,
    reason: str,
    flags: _Flags,
) -> None:
    """Pairs of `live` closer than ratio x the median nearest-neighbour distance."""
    if len(live) < 3:
        return
    sub = [[dist2[i][j] for j in live] for i in live]
    median = median_int([_nearest_dist2(sub, a) for a in range(len(live))])
    hits: dict[int, bool] = {}
    for a, i in enumerate(live):
        for b in range(a + 1, len(live)):
            if _sq_le(sub[a][b], ratio, median):
                strike = _sq_le(sub[a][b], strike_ratio, median)
                for k in (i, live[b]):
                    hits[k] = hits.get(k, False) or strike
    for i, strike in hits.items():
        flags.suspect(i, reason, strike)


def _suspect_near_duplicates(stats: _RoundStats, rules: Rules, flags: _Flags) -> None:
    n = len(stats.uu)
    dist2 = [[stats.dist2(i, j) for j in range(n)] for i in range(n)]
    _suspect_close_pairs(
        dist2,
        flags.live(n),
        rules.near_duplicate,
        STRIKE_NEAR_DUPLICATE,
        "near_duplicate",
        flags,
    )


def _suspect_opposed(stats: _RoundStats, rules: Rules, flags: _Flags) -> None:
    """Updates pointing against the coordinate median of the remaining updates (robust to a
    minority of attackers, unlike the mean): cos(u, median) <= -opposed_max."""
    live = flags.live(len(stats.uu))
    if len(live) < 3:
        return
    median = robust.coordinate_median_of_updates(stats.params, live, stats.g)
    if not median.any():
        return
    # u_i . m = x_i . m - G . m, for every row in one pass (a subset would copy rows)
    xm = [row[0] for row in robust.cross_gram(stats.params, median[np.newaxis, :])]
    gm = robust.dot(stats.g, median)
    um = [xm[i] - gm for i in live]
    mm = robust.sq_norm(median)
    for i, dot in zip(live, um, strict=True):
        v = stats.norm2(i) * mm
        if robust.ratio_over_sqrt_ge(-dot, v, *rules.opposed_max):
            flags.suspect(i, "opposed", robust.ratio_over_sqrt_ge(-dot, v, *STRIKE_OPPOSED))


def _best_cos_at_most(
    best: tuple[int, int], ratio: Ratio, reference: tuple[int, int], strict: bool
) -> bool:
    """best cos <= ratio x reference cos, for cosines given as (c, v) = c / sqrt(v), v > 0.
    Compares signed squares exactly: cos1 <= k cos2 with k >= 0."""
    c1, v1 = best
    c2, v2 = reference
    num, den = ratio
    # cos1 * den vs num * cos2, each side sign(c) * c^2 / v
    left = (1 if c1 > 0 else -1 if c1 < 0 else 0) * c1 * c1 * den * den * v2
    right = (1 if c2 > 0 else -1 if c2 < 0 else 0) * c2 * c2 * num * num * v1
    return left < right if strict else left <= right


def _best_cosines(stats: _RoundStats, live: list[int]) -> dict[int, tuple[int, int]]:
    """Each live update's largest cosine with another live update, in the space orthogonal
    to the previous global step, as (c, v) with cos = c / sqrt(v); (0, 1) for a zero
    residual."""
    norms = {i: stats.residual_dot(i, i) for i in live}
    best: dict[int, tuple[int, int]] = {}
    for i in live:
        top: tuple[int, int] | None = None
        for j in live:
            if j == i or norms[i] <= 0 or norms[j] <= 0:
                continue
            cand = (stats.residual_dot(i, j), norms[i] * norms[j])
            if top is None or _cos_gt(cand, top):
                top = cand
        best[i] = top if top is not None else (0, 1)
    return best


def _cos_gt(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return not _best_cos_at_most(a, (1, 1), b, strict=False)


def _median_cos(values: list[tuple[int, int]]) -> tuple[int, int]:
    """Lower median of cosines given as (c, v), by exact comparisons."""

    def cmp(a: tuple[int, int], b: tuple[int, int]) -> int:
        return 1 if _cos_gt(a, b) else -1 if _cos_gt(b, a) else 0

    ordered = sorted(values, key=functools.cmp_to_key(cmp))
    return ordered[(len(ordered) - 1) // 2]


def _suspect_isolated(stats: _RoundStats, rules: Rules, flags: _Flags) -> None:
    """An update that no other remaining update points along, measured against how much the
    round's updates point along one another: noise, not training. Honest non-IID updates
    still share directions with some peers; near convergence every update is small and
    noisy, the median best cosine falls with them and nobody is flagged for it."""
    live = flags.live(len(stats.uu))
    if len(live) < 3:
        return
    best = _best_cosines(stats, live)
    reference = _median_cos([best[i] for i in live])
    if not _cos_gt(reference, (ISOLATION_SIGNAL[0], ISOLATION_SIGNAL[1] ** 2)):
        return  # the round's updates share no clear direction (noise near convergence)
    for i in live:
        if _best_cos_at_most(best[i], rules.isolation_ratio, reference, strict=True):
            strike = _best_cos_at_most(
                best[i], STRIKE_UNRELATED, reference, strict=True
            ) and _is_mostly_previous_step(stats, i)
            flags.suspect(i, "unrelated", strike)


def _is_mostly_previous_step(stats: _RoundStats, i: int) -> bool:
    if stats.pp == 0 or stats.norm2(i) == 0:
        return False
    return robust.ratio_over_sqrt_ge(stats.up[i], stats.norm2(i) * stats.pp, *STRIKE_STEP)


def _accumulate(stats: _RoundStats, past: list[ClientHistory | None]) -> list[Int32Array]:
    """Each submitter's accumulated update after this round, in sketch space (see
    `sketch_updates`): its first sketch, then c + (s - c) // k with k = min(rounds so far +
    1, 8) (floor division, so c stays between min and max of s and every replica
    agrees)."""
    sketches = sketch_updates(stats.params, stats.g)
    out = []
    for i, h in enumerate(past):
        s = sketches[i]
        if h is None or h.accumulated is None:
            out.append(s)
        else:
            c = h.accumulated.astype(np.int64)
            k = min(h.rounds + 1, HISTORY_ROUNDS)
            out.append((c + (s.astype(np.int64) - c) // k).astype(np.int32))
    return out


def sketch_dim(d: int) -> int:
    """Length of the history a job keeps per client for models of d parameters."""
    return min(d, SKETCH_DIM)


@functools.lru_cache(maxsize=4)
def _sketch_signs(d: int) -> npt.NDArray[np.int8]:
    """A fixed +-1 per coordinate, from SHAKE-256 (the same on every replica and version)."""
    stream = hashlib.shake_256(b"fedrollup/sketch-signs/v1").digest((d + 7) // 8)
    bits = np.unpackbits(np.frombuffer(stream, dtype=np.uint8), bitorder="little")[:d]
    signs: npt.NDArray[np.int8] = (1 - 2 * bits.astype(np.int8)).astype(np.int8)
    signs.setflags(write=False)
    return signs


def _sketch_rows(x: Int32Array, k: int) -> npt.NDArray[np.int64]:
    """sum over coordinates j = b (mod k) of sign_j x_j, per row (exact int64)."""
    n, d = x.shape
    signs = _sketch_signs(d)
    acc = np.zeros((n, k), dtype=np.int64)
    for start in range(0, d, k):
        stop = min(start + k, d)
        acc[:, : stop - start] += x[:, start:stop] * signs[start:stop]
    return acc


def sketch_updates(params: Int32Array, g: Int32Array) -> list[Int32Array]:
    """The updates' sketches: the update itself when d <= SKETCH_DIM; above, a signed
    count sketch (coordinate j adds sign_j u_j to bucket j mod SKETCH_DIM) shifted right
    so it fits int32. Linear before the shift, so distances between accumulated updates keep
    their proportions (up to the sketch's small error) while the history stays a few KiB
    per client whatever the model size."""
    n, d = params.shape
    if d <= SKETCH_DIM:
        return [(params[i] - g).astype(np.int32) for i in range(n)]
    buckets = -(-d // SKETCH_DIM)
    shift = (buckets - 1).bit_length()  # |sum| <= buckets x 2**31 <= 2**(31 + shift)
    sx = _sketch_rows(params, SKETCH_DIM)
    sg = _sketch_rows(g[np.newaxis, :], SKETCH_DIM)[0]
    return [((sx[i] - sg) >> shift).astype(np.int32) for i in range(n)]


def _has_history(before: ClientHistory | None) -> bool:
    """At least MIN_HISTORY_ROUNDS rounds, this one included."""
    return before is not None and before.rounds + 1 >= MIN_HISTORY_ROUNDS


def _suspect_colluding(
    accumulated: list[Int32Array],
    past: list[ClientHistory | None],
    rules: Rules,
    flags: _Flags,
) -> None:
    """Pairs of live clients, each with MIN_HISTORY_ROUNDS of history, whose accumulated
    updates are much closer to each other than accumulated updates are to their nearest
    neighbours in the round: per-round jitter averages out, a shared direction stays."""
    live = [i for i in flags.live(len(accumulated)) if _has_history(past[i])]
    if len(live) < 3:
        return
    rows = np.stack([accumulated[i] for i in live])
    g = robust.gram(rows)
    m = len(live)
    dist2 = [[g[a][a] + g[b][b] - 2 * g[a][b] for b in range(m)] for a in range(m)]
    local = _Flags({})
    _suspect_close_pairs(
        dist2, list(range(m)), rules.near_duplicate, STRIKE_COLLUDING, "colluding", local
    )
    for a, reason in local.reasons.items():
        flags.suspect(live[a], reason, a in local.strikes)


def _suspect_opposed_histories(
    accumulated: list[Int32Array],
    past: list[ClientHistory | None],
    evidence: dict[int, str],
    flags: _Flags,
) -> None:
    """Clients with MIN_HISTORY_ROUNDS of history (kept or suspected, not on evidence) whose
    accumulated update points against the sum K of the other kept clients' accumulated
    updates, cos(c_i, K - c_i) <= -STRIKE_OPPOSED_HISTORY, in a round whose kept histories
    share a direction (median cos(c_j, K - c_j) over kept j above HISTORY_SIGNAL): excluded,
    with a strike. A kept client whose history barely follows K (cos below HISTORY_WEAK x
    the median) but is not that far against it is excluded without a strike: not paid for
    not following the job's course, not slashed for it (a label flipper's history sits
    there for rounds before it passes the strike bound). So is a kept client against the
    course K' of the kept clients that do follow K (cos(c_i, K' - c_i) < 0, when at least
    3 remain): a flipper held up in K by the others' shared direction. A strike made this
    round already stands with its own reason. K and K' are read before this check excludes
    anyone, so the order of clients does not matter."""
    with_history = [i for i in range(len(accumulated)) if _has_history(past[i])]
    kept = [i for i in with_history if i not in flags.reasons]
    if len(kept) < 3:
        return
    rows = np.stack([accumulated[i] for i in with_history])
    gram = robust.gram(rows)
    cosines = _cosines_to_kept_sum(gram, with_history, kept)
    reference = _median_cos([cosines[i] for i in kept])
    if not _cos_gt(reference, (HISTORY_SIGNAL[0], HISTORY_SIGNAL[1] ** 2)):
        return  # the kept histories share no direction: no client is opposed to it
    weak = {i for i in kept if _best_cos_at_most(cosines[i], HISTORY_WEAK, reference, strict=True)}
    along = [i for i in kept if i not in weak]  # K' sums these
    if len(along) < len(kept) and len(along) >= 3:
        cosines_along = _cosines_to_kept_sum(gram, with_history, along)
    else:
        cosines_along = cosines
    for i in with_history:
        if i in evidence or i in flags.strikes:
            continue
        dot, v = cosines[i]
        if robust.ratio_over_sqrt_ge(-dot, v, *STRIKE_OPPOSED_HISTORY):
            flags.suspect(i, "opposed_history", True)
        elif i in weak or (i in kept and cosines_along[i][0] < 0):
            flags.suspect(i, "opposed_history", False)


def _cosines_to_kept_sum(
    gram: list[list[int]], clients: list[int], kept: list[int]
) -> dict[int, tuple[int, int]]:
    """cos(c_i, K - c_i) for each client i (gram: the exact Gram matrix of the clients'
    accumulated updates, in that order), K the sum over `kept`; as (c, v) with
    cos = c / sqrt(v), (0, 1) when either vector is 0."""
    at = {i: a for a, i in enumerate(clients)}
    to_kept = {i: sum(gram[at[i]][at[j]] for j in kept) for i in clients}  # c_i . K
    kk = sum(to_kept[j] for j in kept)  # K . K
    out = {}
    for i in clients:
        own = gram[at[i]][at[i]]
        if i in kept:  # c_i . (K - c_i) and ||K - c_i||^2
            dot, rest2 = to_kept[i] - own, kk - 2 * to_kept[i] + own
        else:
            dot, rest2 = to_kept[i], kk
        out[i] = (dot, own * rest2) if own > 0 and rest2 > 0 else (0, 1)
    return out


def _krum(
    stats: _RoundStats,
    candidates: list[int],
    clients: list[bytes],
    f: int,
    krum_m: int,
    rules: Rules,
    flags: _Flags,
) -> tuple[dict[int, int], int | None]:
    """Multi-Krum with the round's f, or the largest f the remaining count allows."""
    n = len(candidates)
    if n < 3:
        return {}, None
    f_used = min(f, (n - 3) // 2)
    dists = [[stats.dist2(i, j) for j in candidates] for i in candidates]
    scores = robust.krum_scores(dists, f_used)
    by_index = dict(zip(candidates, scores, strict=True))
    median = median_int(scores)
    num, den = rules.krum_outlier
    for i, score in by_index.items():
        if score * den > num * median:
            flags.suspect(i, "krum_outlier", score * STRIKE_KRUM[1] > STRIKE_KRUM[0] * median)
    m = krum_m if krum_m > 0 else n - f_used
    selected = set(robust.multi_krum_select(scores, [clients[i] for i in candidates], min(m, n)))
    gate_num, gate_den = KRUM_SELECT_GATE
    for pos, i in enumerate(candidates):
        above_gate = scores[pos] * gate_den > gate_num * median
        if pos not in selected and i not in flags.reasons and above_gate:
            flags.suspect(i, EXCLUDED, False)
    return by_index, f_used
