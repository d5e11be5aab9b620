"""Tests for stf.fixedpoint and stf.robust: exactness against pure-Python references."""

from __future__ import annotations

import decimal
import hashlib
import itertools
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stf import robust
from stf.fixedpoint import (
    DEFAULT_MAX_ABS,
    FIXED_POINT_VERSION,
    dequantize,
    pack_int32,
    quantize,
    unpack_int32,
)
from stf.robust import (
    coordinate_median,
    cosine_at_least,
    dot,
    krum_scores,
    multi_krum_select,
    pairwise_sq_distances,
    pearson_at_least,
    ratio_ge,
    sq_norm,
    weighted_average,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
INT32_MAX = 2**31 - 1
M = DEFAULT_MAX_ABS

# --------------------------------------------------------------------------- strategies

small_values = st.integers(-20, 20)
clamp_values = st.one_of(st.sampled_from([-M, M, 0, 1, -1, M - 1]), st.integers(-M, M))
huge_values = st.one_of(
    st.sampled_from([-INT32_MAX, INT32_MAX, 0]), st.integers(-INT32_MAX, INT32_MAX)
)
value_kinds = st.sampled_from([small_values, clamp_values, huge_values])


@st.composite
def int_matrices(draw: st.DrawFn, min_n: int = 1, max_n: int = 6, max_d: int = 23) -> np.ndarray:
    n = draw(st.integers(min_n, max_n))
    d = draw(st.integers(0, max_d))
    elems = draw(value_kinds)
    rows = draw(st.lists(st.lists(elems, min_size=d, max_size=d), min_size=n, max_size=n))
    return np.array(rows, dtype=np.int32).reshape(n, d)


@contextmanager
def tiny_chunks(enabled: bool = True, object_acc: bool = False) -> Iterator[None]:
    """Force 3-column Gram chunks (d not a multiple) and optionally Python-int accumulation."""
    with pytest.MonkeyPatch.context() as mp:
        if enabled:
            mp.setattr(robust, "_BUFFER_BYTES", 8 * 3)
        if object_acc:
            mp.setattr(robust, "_INT64_MAX", 1)
        yield


def brute_dists(x: np.ndarray) -> list[list[int]]:
    rows = [[int(v) for v in r] for r in x]
    return [[sum((a - b) ** 2 for a, b in zip(r, s, strict=True)) for s in rows] for r in rows]


# --------------------------------------------------------------------------- fixedpoint


def test_version() -> None:
    assert FIXED_POINT_VERSION == 1


def test_quantize_half_even_ties() -> None:
    ulp = 2.0**-16
    vals = np.array([0.5, 1.5, 2.5, 3.5, -0.5, -1.5, -2.5, 0.49, 0.51], dtype=np.float64) * ulp
    got = quantize(vals.astype(np.float32))
    assert got.dtype == np.int32
    assert got.tolist() == [0, 2, 2, 4, 0, -2, -2, 0, 1]
    assert quantize(np.array([2.5 / 256, -0.0], dtype=np.float32), frac_bits=8).tolist() == [2, 0]


def test_quantize_clamp() -> None:
    vals = np.array([16.0, -16.0, 1e30, -1e30, 15.9999, 3.4e38], dtype=np.float32)
    got = quantize(vals)
    assert got.tolist()[:4] == [M, -M, M, -M]
    assert got[4] == round(Fraction(float(np.float32(15.9999))) * 2**16)
    assert got[5] == M
    assert quantize(np.array([1.0, -1.0], dtype=np.float32), 16, 1000).tolist() == [1000, -1000]


@given(
    st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=30),
    st.integers(8, 24),
    st.integers(1, INT32_MAX),
)
def test_quantize_matches_fraction_reference(vals: list[float], fb: int, max_abs: int) -> None:
    arr = np.array(vals, dtype=np.float32)
    expected = [max(-max_abs, min(max_abs, round(Fraction(float(v)) * 2**fb))) for v in arr]
    assert quantize(arr, fb, max_abs).tolist() == expected


@pytest.mark.parametrize(
    "bad",
    [
        np.array([1.0, np.nan], dtype=np.float32),
        np.array([np.inf], dtype=np.float32),
        np.array([-np.inf], dtype=np.float32),
        np.array([1.0], dtype=np.float64),
        np.array([1], dtype=np.int32),
        np.zeros((2, 2), dtype=np.float32),
        np.float32(1.0),
        [1.0, 2.0],
    ],
)
def test_quantize_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        quantize(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("fb", "ma"), [(7, M), (25, M), (16, 0), (16, 2**31), (True, M)])
def test_quantize_rejects_params(fb: int, ma: int) -> None:
    with pytest.raises(ValueError):
        quantize(np.zeros(3, dtype=np.float32), fb, ma)


def test_quantize_big_endian_input() -> None:
    arr = np.array([1.25, -3.0], dtype=">f4")
    assert quantize(arr).tolist() == [81920, -196608]


def test_dequantize_and_pack_roundtrip() -> None:
    vals = np.array([0.0, 1.5, -2.25, 2.0**-16, -15.0], dtype=np.float32)
    q = quantize(vals)
    back = dequantize(q)
    assert back.dtype == np.float32
    assert back.tolist() == vals.tolist()
    packed = pack_int32(q)
    assert len(packed) == 4 * len(q)
    assert np.array_equal(unpack_int32(packed, len(q)), q)
    assert pack_int32(np.array([1, -1], dtype=np.int32)) == b"\x01\x00\x00\x00\xff\xff\xff\xff"
    out = unpack_int32(b"\x01\x00\x00\x00")
    assert out.dtype == np.int32 and out.flags.writeable and out.tolist() == [1]
    with pytest.raises(ValueError):
        unpack_int32(b"\x00" * 5)
    with pytest.raises(ValueError):
        unpack_int32(b"\x00" * 8, 3)
    with pytest.raises(ValueError):
        pack_int32(np.zeros(2, dtype=np.int64))


# --------------------------------------------------------------------------- distances / Krum


@settings(max_examples=80, deadline=None)
@given(int_matrices(), st.booleans(), st.booleans())
def test_pairwise_matches_brute_force(x: np.ndarray, tiny: bool, obj: bool) -> None:
    with tiny_chunks(tiny, obj):
        got = pairwise_sq_distances(x)
    assert got == brute_dists(x)
    assert all(type(v) is int for row in got for v in row)


def test_pairwise_extremes_many_chunks() -> None:
    x = np.array([[M] * 37, [-M] * 37, [0] * 37, [M, -M] * 18 + [M]], dtype=np.int32)
    with tiny_chunks():
        assert pairwise_sq_distances(x) == brute_dists(x)
    assert pairwise_sq_distances(x) == brute_dists(x)
    assert pairwise_sq_distances(x)[0][1] == 37 * (2 * M) ** 2
    # full int32 range exercises the 16-bit limb split
    y = np.array([[INT32_MAX] * 5, [-INT32_MAX] * 5], dtype=np.int32)
    assert pairwise_sq_distances(y)[0][1] == 5 * (2 * INT32_MAX) ** 2


def test_pairwise_default_chunking_non_multiple() -> None:
    rng = np.random.default_rng(7)
    x = rng.integers(-M, M + 1, size=(3, 8192 * 2 + 5), dtype=np.int32)
    x64 = x.astype(np.int64)
    expected = [[int(((x64[i] - x64[j]) ** 2).sum()) for j in range(3)] for i in range(3)]
    assert pairwise_sq_distances(x) == expected


def test_gram_sums_beyond_2_pow_53_stay_exact() -> None:
    # One float64 dot over all d columns would exceed 2**53 and round; chunking must not.
    d = 3 * 8192 + 7
    x = np.array([[M] * d, [M - 1, -M] * (d // 2) + [M]], dtype=np.int32)
    r0, r1 = [M] * d, [int(v) for v in x[1]]
    g = robust.gram(x)
    assert g[0][0] == d * M * M > 2**53
    assert g[1][1] == sum(v * v for v in r1)
    assert g[0][1] == g[1][0] == sum(a * b for a, b in zip(r0, r1, strict=True))
    assert pairwise_sq_distances(x)[0][1] == sum((a - b) ** 2 for a, b in zip(r0, r1, strict=True))


@given(
    st.lists(st.one_of(small_values, huge_values), max_size=40).flatmap(
        lambda u: st.tuples(
            st.just(u),
            st.lists(st.integers(-INT32_MAX, INT32_MAX), min_size=len(u), max_size=len(u)),
        )
    ),
    st.booleans(),
)
@settings(deadline=None)
def test_dot_and_norm_exact(uv: tuple[list[int], list[int]], tiny: bool) -> None:
    u, v = (np.array(a, dtype=np.int32) for a in uv)
    with tiny_chunks(tiny):
        assert dot(u, v) == sum(a * b for a, b in zip(uv[0], uv[1], strict=True))
        assert sq_norm(u) == sum(a * a for a in uv[0])
        assert dot(u, u) == sq_norm(u)


def brute_krum(dists: list[list[int]], f: int) -> list[int]:
    n = len(dists)
    k = n - f - 2
    return [
        min(sum(c) for c in itertools.combinations([dists[i][j] for j in range(n) if j != i], k))
        for i in range(n)
    ]


@settings(max_examples=60, deadline=None)
@given(int_matrices(min_n=3, max_n=8, max_d=6), st.data())
def test_krum_matches_brute_force_and_permutation(x: np.ndarray, data: st.DataObject) -> None:
    n = x.shape[0]
    f = data.draw(st.integers(0, (n - 3) // 2))
    dists = pairwise_sq_distances(x)
    scores = krum_scores(dists, f)
    assert scores == brute_krum(dists, f)
    perm = data.draw(st.permutations(range(n)))
    ids = [bytes([i]) * 4 for i in range(n)]
    dists_p = pairwise_sq_distances(x[list(perm)])
    assert dists_p == [[dists[a][b] for b in perm] for a in perm]
    scores_p = krum_scores(dists_p, f)
    assert scores_p == [scores[a] for a in perm]
    m = data.draw(st.integers(1, n))
    chosen = [ids[i] for i in multi_krum_select(scores, ids, m)]
    chosen_p = [ids[perm[i]] for i in multi_krum_select(scores_p, [ids[a] for a in perm], m)]
    assert chosen == chosen_p


def test_krum_ties_broken_by_client_id() -> None:
    x = np.array([[5, 5], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]], dtype=np.int32)
    ids = [b"\x09", b"\x05", b"\x03", b"\x04", b"\x01\xff", b"\x02"]
    scores = krum_scores(pairwise_sq_distances(x), 1)
    assert scores == [150, 0, 0, 0, 0, 0]
    assert multi_krum_select(scores, ids, 6) == [4, 5, 2, 3, 1, 0]
    assert multi_krum_select(scores, ids, 1) == [4]


def test_krum_argument_errors() -> None:
    d = [[0] * 4 for _ in range(4)]
    with pytest.raises(ValueError):
        krum_scores(d, 1)  # n=4 is not > 4
    with pytest.raises(ValueError):
        krum_scores(d, -1)
    with pytest.raises(ValueError):
        krum_scores([[0, 1], [1]], 0)
    assert krum_scores(d, 0) == [0, 0, 0, 0]
    with pytest.raises(ValueError):
        multi_krum_select([1, 2], [b"a", b"a"], 1)
    with pytest.raises(ValueError):
        multi_krum_select([1, 2], [b"a", b"b"], 3)
    with pytest.raises(ValueError):
        multi_krum_select([1, 2], [b"a"], 1)
    with pytest.raises(ValueError):
        pairwise_sq_distances(np.zeros((2, 2), dtype=np.int64))
    with pytest.raises(ValueError):
        dot(np.zeros(2, dtype=np.int32), np.zeros(3, dtype=np.int32))


# --------------------------------------------------------------------------- determinism

_DIGEST_SCRIPT = """
import hashlib, numpy as np
from stf.robust import pairwise_sq_distances, weighted_average
rng = np.random.default_rng(12345)
x = rng.integers(-(2**20 - 1), 2**20, size=(20, 50_000), dtype=np.int32)
d = np.array(pairwise_sq_distances(x), dtype=np.int64)
w = weighted_average(x, list(range(1, 21)))
print(hashlib.blake2b(d.tobytes() + w.astype('<i4').tobytes()).hexdigest())
"""


def _digest_in_subprocess(threads: int) -> str:
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    env["PYTHONPATH"] = str(REPO_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    res = subprocess.run(
        [sys.executable, "-c", _DIGEST_SCRIPT],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return res.stdout.strip()


def test_determinism_across_thread_counts() -> None:
    rng = np.random.default_rng(12345)
    x = rng.integers(-(2**20 - 1), 2**20, size=(20, 50_000), dtype=np.int32)
    dists = pairwise_sq_distances(x)
    x64 = x.astype(np.int64)
    for i, j in [(0, 1), (3, 17), (19, 4)]:
        assert dists[i][j] == int(((x64[i] - x64[j]) ** 2).sum())
    d = np.array(dists, dtype=np.int64)
    w = weighted_average(x, list(range(1, 21)))
    local = hashlib.blake2b(d.tobytes() + w.astype("<i4").tobytes()).hexdigest()
    one, two = _digest_in_subprocess(1), _digest_in_subprocess(2)
    assert one == two == local


# --------------------------------------------------------------------------- aggregation


def frac_round(q: Fraction) -> int:
    return round(q)  # Fraction.__round__ is round-half-even


@settings(max_examples=80, deadline=None)
@given(int_matrices(max_d=12), st.data(), st.booleans())
def test_weighted_average_matches_fractions(x: np.ndarray, data: st.DataObject, big: bool) -> None:
    n, d = x.shape
    hi = 2**70 if big else 10
    ws = data.draw(
        st.lists(st.integers(0, hi), min_size=n, max_size=n).filter(lambda w: sum(w) > 0)
    )
    got = weighted_average(x, ws)
    total = sum(ws)
    expected = [
        frac_round(Fraction(sum(w * int(x[i, j]) for i, w in enumerate(ws)), total))
        for j in range(d)
    ]
    assert got.dtype == np.int32
    assert got.tolist() == expected
    perm = data.draw(st.permutations(range(n)))
    assert weighted_average(x[list(perm)], [ws[p] for p in perm]).tolist() == expected


def test_weighted_average_half_even_and_errors() -> None:
    x = np.array([[0, 1, -1, 3], [1, 2, -2, 4]], dtype=np.int32)
    assert weighted_average(x, [1, 1]).tolist() == [0, 2, -2, 4]
    assert weighted_average(x, [6, 2]).tolist() == [0, 1, -1, 3]  # 0.25 -> 0, 1.25 -> 1
    assert weighted_average(x, [0, 3]).tolist() == [1, 2, -2, 4]
    with pytest.raises(ValueError):
        weighted_average(x, [0, 0])
    with pytest.raises(ValueError):
        weighted_average(x, [1, -1])
    with pytest.raises(ValueError):
        weighted_average(x, [1])


@settings(max_examples=60, deadline=None)
@given(int_matrices(max_n=7, max_d=10))
def test_coordinate_median_matches_reference(x: np.ndarray) -> None:
    n, d = x.shape
    expected = []
    for j in range(d):
        col = sorted(int(v) for v in x[:, j])
        expected.append(frac_round(Fraction(col[(n - 1) // 2] + col[n // 2], 2)))
    assert coordinate_median(x).tolist() == expected


def test_coordinate_median_even_half_even() -> None:
    x = np.array(
        [[1, -1, INT32_MAX], [2, -2, INT32_MAX - 1], [5, 0, 0], [-9, 9, INT32_MAX]], dtype=np.int32
    )
    # middles: (1,2)->1.5->2, (-1,0)->-0.5->0, (MAX-1,MAX)->MAX-0.5->MAX-1 (even)
    assert coordinate_median(x).tolist() == [2, 0, INT32_MAX - 1]


# --------------------------------------------------------------------------- rational tests


@given(
    st.integers(-(10**30), 10**30),
    st.integers(-50, 50),
    st.integers(-(10**30), 10**30),
    st.integers(-50, 50),
)
def test_ratio_ge_matches_fractions(a: int, b: int, c: int, d: int) -> None:
    if b == 0 or d == 0:
        with pytest.raises(ValueError):
            ratio_ge(a, b, c, d)
    else:
        assert ratio_ge(a, b, c, d) == (Fraction(a, b) >= Fraction(c, d))


def _ref_at_least(cov: Fraction, vx: Fraction, vy: Fraction, num: int, den: int) -> bool:
    """corr = cov / sqrt(vx * vy) >= num/den, via Fractions plus a 150-digit sqrt."""
    if vx == 0 or vy == 0:
        return False
    rho = Fraction(num, den)
    corr_sq = cov * cov / (vx * vy)
    if corr_sq == rho * rho and (cov > 0) == (rho > 0) and (cov < 0) == (rho < 0):
        return True  # exact tie
    with decimal.localcontext() as ctx:
        ctx.prec = 150
        mag = (decimal.Decimal(corr_sq.numerator) / decimal.Decimal(corr_sq.denominator)).sqrt()
        corr = mag if cov >= 0 else -mag
        return corr >= decimal.Decimal(num) / decimal.Decimal(den)


def ref_pearson(x: list[int], y: list[int], num: int, den: int) -> bool:
    n = len(x)
    mx, my = Fraction(sum(x), n), Fraction(sum(y), n)
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True))
    vx = sum((a - mx) ** 2 for a in x)
    vy = sum((b - my) ** 2 for b in y)
    return _ref_at_least(Fraction(cov), Fraction(vx), Fraction(vy), num, den)


def ref_cosine(x: list[int], y: list[int], num: int, den: int) -> bool:
    uv = sum(a * b for a, b in zip(x, y, strict=True))
    return _ref_at_least(
        Fraction(uv), Fraction(sum(a * a for a in x)), Fraction(sum(b * b for b in y)), num, den
    )


rho_strategy = st.tuples(st.integers(-12, 12), st.integers(1, 10))


@settings(max_examples=300, deadline=None)
@given(
    st.tuples(
        st.integers(1, 15), st.sampled_from([st.integers(-1, 1), st.integers(-3, 3) | clamp_values])
    ).flatmap(
        lambda ne: st.tuples(
            st.lists(ne[1], min_size=ne[0], max_size=ne[0]),
            st.lists(ne[1], min_size=ne[0], max_size=ne[0]),
        )
    ),
    rho_strategy,
    st.booleans(),
    st.integers(-2, 2),
)
def test_pearson_cosine_match_reference(
    xy: tuple[list[int], list[int]], rho: tuple[int, int], neg_den: bool, link: int
) -> None:
    x, y = xy
    if link:  # make y an exact affine image of x sometimes, to hit ties at +/-1
        y = [link * a + 3 for a in x]
    num, den = rho
    sgn = -1 if neg_den else 1
    xa, ya = np.array(x, dtype=np.int32), np.array(y, dtype=np.int32)
    assert pearson_at_least(xa, ya, sgn * num, sgn * den) == ref_pearson(x, y, num, den)
    assert cosine_at_least(xa, ya, sgn * num, sgn * den) == ref_cosine(x, y, num, den)


def test_pearson_cosine_edge_cases() -> None:
    x = np.array([1, 2, 3, 4], dtype=np.int32)
    assert pearson_at_least(x, x, 1, 1)
    assert pearson_at_least(x, -x, -1, 1)
    assert not pearson_at_least(x, -x, -99, 100)
    assert not pearson_at_least(x, np.full(4, 7, dtype=np.int32), -1, 1)  # constant -> undefined
    assert cosine_at_least(x, 2 * x, 1, 1)
    assert not cosine_at_least(x, np.zeros(4, dtype=np.int32), -1, 1)
    # orthogonal: cos = 0 >= 0 holds, >= 1/1000 does not
    u, v = np.array([1, 0], dtype=np.int32), np.array([0, 5], dtype=np.int32)
    assert cosine_at_least(u, v, 0, 1) and not cosine_at_least(u, v, 1, 1000)
    assert cosine_at_least(u, v, -1, 1000)
    with pytest.raises(ValueError):
        cosine_at_least(u, v, 1, 0)
