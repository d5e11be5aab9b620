"""Exact robust-aggregation math over fixed-point int32 parameter vectors.

Everything here is part of the pure state transition function: no I/O, no clock,
no randomness, and no floating-point value ever *decides* anything.  Every
function returns exact integers (or booleans derived from exact integers), so
results are bit-identical on every machine, BLAS, SIMD width and thread count.

Floating point appears in exactly one place, :func:`_exact_cross_gram`, where
float64 BLAS matrix products are used as a fast *integer* multiply-accumulate.
Exactness proof (the "exact chunk" argument):

1. Every int32 value converts to float64 exactly (|x| <= 2**31 < 2**53).
2. Let ``P`` bound every elementwise product, ``|a_k * b_k| <= P`` (we use
   ``P = max|A| * max|B|`` measured on the actual data).  A chunk of ``L``
   columns with ``L * P <= 2**53`` is multiplied with one BLAS call.  Whatever
   blocking, summation order, FMA use or thread split the BLAS chooses, each
   intermediate value of a classic (non-Strassen) dot product is the exact sum
   of some subset of the chunk's products, hence an integer of magnitude
   ``<= L * P <= 2**53``.  Every such integer is representable in float64, and a
   correctly rounded IEEE operation whose exact result is representable returns
   it unchanged.  By induction over the operations every intermediate, and the
   chunk result, is exact.  (OpenBLAS, MKL, BLIS, Accelerate and numpy's own
   fallback loops all compute dgemm/dsyrk classically.)
3. Chunk results are converted to int64 (exact, |g| <= 2**53) and accumulated in
   int64 when ``d * P <= 2**63 - 1`` (every partial sum over chunks is bounded by
   ``d * P``), otherwise in Python ints (object arrays), which cannot overflow.
4. If the data are so large that ``2**53 // P`` would give chunks shorter than
   ``_MIN_DIRECT_CHUNK`` columns (|x| above ~2**21.5), each value is split into
   16-bit limbs ``x = hi * 2**16 + lo`` (|hi| <= 2**15, 0 <= lo < 2**16), limb
   products are bounded by ``2**32``, the four limb Gram matrices are computed
   exactly as above and recombined with Python ints.

Chunks are converted into a preallocated float64 buffer (bounded by
``_BUFFER_BYTES``), so an n x d float64 copy of the input is never materialised.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

Int32Array = npt.NDArray[np.int32]
_Float64Array = npt.NDArray[np.float64]

_EXACT_LIMIT = 2**53  # every integer of magnitude <= 2**53 is exact in float64
_INT64_MAX = 2**63 - 1
_BUFFER_BYTES = 16 * 2**20  # float64 scratch per Gram computation
_MIN_DIRECT_CHUNK = 1024
_LIMB_SHIFT = 16
_LIMB_MASK = (1 << _LIMB_SHIFT) - 1
_LIMB_PRODUCT_BOUND = 2**32  # |hi| <= 2**15, 0 <= lo < 2**16


# --------------------------------------------------------------------------- validation


def _check_int32(arr: object, ndim: int, name: str) -> Int32Array:
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{name} must be a numpy array")
    if arr.dtype.kind != "i" or arr.dtype.itemsize != 4:
        raise ValueError(f"{name} must be int32, got {arr.dtype}")
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {arr.shape}")
    return arr


def _check_same_len(u: object, v: object) -> tuple[Int32Array, Int32Array]:
    cu = _check_int32(u, 1, "u")
    cv = _check_int32(v, 1, "v")
    if cu.shape != cv.shape:
        raise ValueError(f"length mismatch: {cu.shape[0]} != {cv.shape[0]}")
    return cu, cv


def _max_abs(arr: Int32Array) -> int:
    if arr.size == 0:
        return 0
    return max(-int(arr.min()), int(arr.max()))


# --------------------------------------------------------------------------- exact Gram


def _chunk_len(rows: int, product_bound: int, d: int) -> int:
    """Columns per chunk: exact (L * P <= 2**53) and within the scratch budget."""
    exact = _EXACT_LIMIT // max(product_bound, 1)
    memory = max(1, _BUFFER_BYTES // (8 * max(rows, 1)))
    return max(1, min(exact, memory, max(d, 1)))


def _fill_limbs(chunk: Int32Array, views: list[_Float64Array]) -> None:
    """Write the chunk (one view) or its hi/lo 16-bit limbs (two views) as float64."""
    if len(views) == 1:
        np.copyto(views[0], chunk)
        return
    np.copyto(views[0], np.right_shift(chunk, _LIMB_SHIFT))
    np.copyto(views[1], np.bitwise_and(chunk, _LIMB_MASK))


def _chunk_product(x: _Float64Array, y: _Float64Array, acc_dtype: type) -> npt.NDArray[Any]:
    """One exact chunk product x @ y.T (all partial sums are integers <= 2**53)."""
    exact = (x @ y.T).astype(np.int64)
    return exact if acc_dtype is np.int64 else exact.astype(object)


def _recombine(accs: dict[tuple[int, int], npt.NDArray[Any]], k: int) -> list[list[int]]:
    """Sum limb Gram matrices with weights 2**(16 * (#hi limbs)) in Python ints."""
    if k == 1:
        single: list[list[int]] = accs[(0, 0)].tolist()
        return single
    weights = [1 << _LIMB_SHIFT, 1]
    lists = {key: acc.tolist() for key, acc in accs.items()}
    rows, cols = accs[(0, 0)].shape
    return [
        [
            sum(weights[p] * weights[q] * lists[(p, q)][i][j] for p in range(k) for q in range(k))
            for j in range(cols)
        ]
        for i in range(rows)
    ]


def _exact_cross_gram(a: Int32Array, b: Int32Array) -> list[list[int]]:
    """Exact ``a @ b.T`` as Python ints for int32 matrices (see module docstring)."""
    same = a is b
    bound = _max_abs(a) * _max_abs(b)
    k = 2 if _EXACT_LIMIT // max(bound, 1) < _MIN_DIRECT_CHUNK else 1
    limb_bound = _LIMB_PRODUCT_BOUND if k == 2 else bound
    (na, d), nb = a.shape, b.shape[0]
    width = _chunk_len(k * (na if same else na + nb), limb_bound, d)
    acc_dtype: type = np.int64 if d * limb_bound <= _INT64_MAX else object
    accs: dict[tuple[int, int], npt.NDArray[Any]] = {
        (p, q): np.zeros((na, nb), dtype=acc_dtype) for p in range(k) for q in range(k)
    }
    bufs_a = [np.empty((na, width), dtype=np.float64) for _ in range(k)]
    bufs_b = bufs_a if same else [np.empty((nb, width), dtype=np.float64) for _ in range(k)]
    for start in range(0, d, width):
        stop = min(start + width, d)
        views_a = [buf[:, : stop - start] for buf in bufs_a]
        _fill_limbs(a[:, start:stop], views_a)
        views_b = views_a
        if not same:
            views_b = [buf[:, : stop - start] for buf in bufs_b]
            _fill_limbs(b[:, start:stop], views_b)
        for (p, q), acc in accs.items():
            acc += _chunk_product(views_a[p], views_b[q], acc_dtype)
    return _recombine(accs, k)


def cross_gram(a: Int32Array, b: Int32Array) -> list[list[int]]:
    """Exact ``a @ b.T`` of an (n, d) and an (m, d) int32 matrix, as Python ints."""
    left, right = _check_int32(a, 2, "a"), _check_int32(b, 2, "b")
    if left.shape[1] != right.shape[1]:
        raise ValueError("a and b need the same number of columns")
    return _exact_cross_gram(left, right)


def gram(X: Int32Array) -> list[list[int]]:
    """Exact Gram matrix ``X @ X.T`` of an (n, d) int32 matrix, as Python ints."""
    mat = _check_int32(X, 2, "X")
    return _exact_cross_gram(mat, mat)


def pairwise_sq_distances(X: Int32Array) -> list[list[int]]:
    """Exact squared Euclidean distances between the rows of an (n, d) int32 matrix.

    ``dist[i][j] = G[i][i] + G[j][j] - 2 G[i][j]`` with the exact Gram matrix ``G``
    (Python ints, so no overflow).  Symmetric with a zero diagonal.
    """
    g = gram(X)
    n = len(g)
    return [[0 if i == j else g[i][i] + g[j][j] - 2 * g[i][j] for j in range(n)] for i in range(n)]


def dot(u: Int32Array, v: Int32Array) -> int:
    """Exact inner product of two equal-length 1-D int32 vectors."""
    cu, cv = _check_same_len(u, v)
    if cu is cv:
        return sq_norm(cu)
    return _exact_cross_gram(cu[np.newaxis, :], cv[np.newaxis, :])[0][0]


def sq_norm(v: Int32Array) -> int:
    """Exact squared Euclidean norm of a 1-D int32 vector."""
    row = _check_int32(v, 1, "v")[np.newaxis, :]
    return _exact_cross_gram(row, row)[0][0]


# --------------------------------------------------------------------------- Krum


def krum_scores(dists: Sequence[Sequence[int]], f: int) -> list[int]:
    """Krum score of each client: the sum of its ``n - f - 2`` smallest distances to others.

    Requires ``n > 2f + 2`` (Blanchard et al.), else ``ValueError``.  Exact ints.
    """
    n = len(dists)
    if f < 0 or n <= 2 * f + 2:
        raise ValueError(f"Krum needs n > 2f + 2 and f >= 0, got n={n}, f={f}")
    if any(len(row) != n for row in dists):
        raise ValueError("distance matrix must be square")
    k = n - f - 2
    return [sum(sorted(dists[i][j] for j in range(n) if j != i)[:k]) for i in range(n)]


def multi_krum_select(scores: Sequence[int], client_ids: Sequence[bytes], m: int) -> list[int]:
    """Indices of the ``m`` best clients, best first: lowest score, ties by id bytes ascending."""
    n = len(scores)
    if len(client_ids) != n:
        raise ValueError("scores and client_ids differ in length")
    if len(set(client_ids)) != n:
        raise ValueError("client ids must be unique")
    if not 1 <= m <= n:
        raise ValueError(f"m must be in [1, {n}], got {m}")
    order = sorted(range(n), key=lambda i: (scores[i], bytes(client_ids[i])))
    return order[:m]


# --------------------------------------------------------------------------- rational tests


def _normalise_fraction(num: int, den: int) -> tuple[int, int]:
    num, den = operator.index(num), operator.index(den)
    if den == 0:
        raise ValueError("zero denominator")
    return (-num, -den) if den < 0 else (num, den)


def ratio_ge(num1: int, den1: int, num2: int, den2: int) -> bool:
    """Exactly decide ``num1/den1 >= num2/den2`` by cross-multiplication (Python ints)."""
    n1, d1 = _normalise_fraction(num1, den1)
    n2, d2 = _normalise_fraction(num2, den2)
    return n1 * d2 >= n2 * d1


def ratio_over_sqrt_ge(c: int, v: int, num: int, den: int) -> bool:
    """Exactly decide ``c / sqrt(v) >= num / den`` for ``v > 0``, ``den > 0``."""
    if c >= 0 and num <= 0:
        return True
    if c < 0 and num >= 0:
        return False
    if num > 0:  # here c >= 0 too: both sides non-negative, squaring is monotone
        return c * c * den * den >= num * num * v
    return c * c * den * den <= num * num * v  # both negative: squaring flips


def _moments(x: Int32Array, y: Int32Array) -> tuple[int, int, int]:
    """Exact (sum x^2, sum y^2, sum x*y) from one exact 2 x 2 Gram computation."""
    xy = np.stack([x, y])
    g = _exact_cross_gram(xy, xy)
    return g[0][0], g[1][1], g[0][1]


def pearson_at_least(x: Int32Array, y: Int32Array, rho_num: int, rho_den: int) -> bool:
    """Exactly decide ``corr(x, y) >= rho_num / rho_den`` (Pearson, population form).

    With ``n`` samples, ``cov = n*Sxy - Sx*Sy`` and ``var_x = n*Sxx - Sx**2`` (all
    scaled by n**2, which cancels), so ``corr = cov / sqrt(var_x * var_y)``.  If
    either vector is constant the correlation is undefined and the answer is
    ``False`` (a constant update never passes a similarity test).
    """
    cx, cy = _check_same_len(x, y)
    num, den = _normalise_fraction(rho_num, rho_den)
    n = cx.shape[0]
    sx, sy = int(cx.sum(dtype=np.int64)), int(cy.sum(dtype=np.int64))  # |sum| < d * 2**31
    sxx, syy, sxy = _moments(cx, cy)
    var_x, var_y = n * sxx - sx * sx, n * syy - sy * sy
    if var_x == 0 or var_y == 0:
        return False
    return ratio_over_sqrt_ge(n * sxy - sx * sy, var_x * var_y, num, den)


def cosine_at_least(u: Int32Array, v: Int32Array, num: int, den: int) -> bool:
    """Exactly decide ``cos(u, v) >= num / den``; ``False`` if either vector is zero."""
    cu, cv = _check_same_len(u, v)
    n, d = _normalise_fraction(num, den)
    uu, vv, uv = _moments(cu, cv)
    if uu == 0 or vv == 0:
        return False
    return ratio_over_sqrt_ge(uv, uu * vv, n, d)


# --------------------------------------------------------------------------- aggregation


def _round_half_even_div(num: npt.NDArray[Any], den: int) -> npt.NDArray[Any]:
    """Elementwise ``round_half_even(num / den)`` for den > 0 (int64 or object arrays).

    int64 use requires ``2 * den <= 2**63 - 1`` (``2 * r < 2 * den``).
    """
    q = num // den  # floor
    twice_r = 2 * (num - q * den)  # 0 <= twice_r < 2 * den
    up = (twice_r > den) | ((twice_r == den) & ((q & 1) == 1))
    result: npt.NDArray[Any] = q + up.astype(q.dtype)
    return result


def _column_step(n: int, itemsize: int) -> int:
    return max(1, _BUFFER_BYTES // (itemsize * max(n, 1)))


def weighted_average(X: Int32Array, weights: Sequence[int]) -> Int32Array:
    """Exact ``round_half_even(sum_i w_i x_i / sum_i w_i)`` per coordinate, as int32.

    Weights are non-negative ints with a positive sum; they are first divided by
    their gcd (the quotient is unchanged).  With ``W = sum w`` and ``m = max|x|``,
    every partial sum of ``w_i x_i`` in any order is bounded by ``W * m``, so the
    int64 path is exact whenever ``W * max(m, 2) <= 2**63 - 1``; otherwise Python
    ints (object arrays) are used.  Exact integers make the result independent of
    client order.  The result lies in ``[min x, max x]`` so it fits int32.
    """
    mat = _check_int32(X, 2, "X")
    ws = [operator.index(w) for w in weights]
    if len(ws) != mat.shape[0]:
        raise ValueError("one weight per row required")
    if any(w < 0 for w in ws) or sum(ws) <= 0:
        raise ValueError("weights must be non-negative with a positive sum")
    g = math.gcd(*ws)
    ws = [w // g for w in ws]
    total = sum(ws)
    use_int64 = total * max(_max_abs(mat), 2) <= _INT64_MAX
    dtype: type = np.int64 if use_int64 else object
    w_arr: npt.NDArray[Any] = np.array(ws, dtype=dtype)
    out = np.empty(mat.shape[1], dtype=np.int32)
    step = _column_step(mat.shape[0], 8)
    for start in range(0, mat.shape[1], step):
        block: npt.NDArray[Any] = mat[:, start : start + step].astype(dtype)
        out[start : start + step] = _round_half_even_div(w_arr @ block, total)
    return out


def coordinate_median(X: Int32Array) -> Int32Array:
    """Exact coordinate-wise median of the rows of an (n, d) int32 matrix.

    For even n the two middle values are averaged with round-half-even (computed
    in int64, where ``a + b`` cannot overflow).
    """
    mat = _check_int32(X, 2, "X")
    n, d = mat.shape
    if n == 0:
        raise ValueError("median of zero rows")
    lo, hi = (n - 1) // 2, n // 2
    out = np.empty(d, dtype=np.int32)
    step = _column_step(n, 4)
    for start in range(0, d, step):
        block = np.ascontiguousarray(mat[:, start : start + step].T)
        part = np.partition(block, sorted({lo, hi}), axis=1)
        total = part[:, lo].astype(np.int64) + part[:, hi].astype(np.int64)
        out[start : start + step] = _round_half_even_div(total, 2)
    return out


def coordinate_median_of_updates(X: Int32Array, rows: Sequence[int], g: Int32Array) -> Int32Array:
    """Exactly ``coordinate_median(X[rows] - g)``, read in column chunks so that no copy of
    the selected rows is ever made (|x|, |g| < 2**30, so x - g fits int32)."""
    mat = _check_int32(X, 2, "X")
    offset = _check_int32(g, 1, "g")
    if not rows:
        raise ValueError("median of zero rows")
    index = np.asarray(rows, dtype=np.intp)
    n, d = len(index), mat.shape[1]
    lo, hi = (n - 1) // 2, n // 2
    out = np.empty(d, dtype=np.int32)
    step = _column_step(n, 4)
    for start in range(0, d, step):
        chunk = mat[index, start : start + step] - offset[start : start + step]
        part = np.partition(np.ascontiguousarray(chunk.T), sorted({lo, hi}), axis=1)
        total = part[:, lo].astype(np.int64) + part[:, hi].astype(np.int64)
        out[start : start + step] = _round_half_even_div(total, 2)
    return out
