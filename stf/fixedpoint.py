"""Fixed-point encoding of model parameters (pure, exact, deterministic).

Participants submit parameters as little-endian float32 on the wire.  On entry to
the state transition function every value is mapped to a signed fixed-point
integer::

    q = clamp(round_half_even(value * 2**frac_bits), -max_abs, +max_abs)

* ``frac_bits`` is the scale: the number of fractional bits, i.e. one integer
  unit is ``2**-frac_bits``.  Default 16 (resolution ~1.5e-5), allowed 8..24.
* ``max_abs`` is the clamp bound, expressed in fixed-point units (not in float
  units).  Default ``2**20 - 1``; at ``frac_bits=16`` that means every stored
  value satisfies ``|value| < 16.0``.  Allowed ``1 .. 2**31 - 1`` so that every
  clamped value fits an int32 and ``-2**31`` never occurs (its negation would not).

Exactness / determinism argument for :func:`quantize`:

* A float32 has a 24-bit significand and an exponent range well inside float64's,
  so converting to float64 is exact, and multiplying by the power of two
  ``2**frac_bits`` (frac_bits <= 24) only changes the exponent: exact, no
  rounding, no overflow (|float32| < 2**128, times 2**24 < 2**152 << float64 max).
* ``np.rint`` implements IEEE-754 roundTiesToEven on float64, a correctly rounded
  elementwise operation: identical on every conforming platform, independent of
  threads/SIMD width.  Clamping integer-valued float64s to integer bounds below
  2**31 and casting to int32 is then exact.

Consequently the result depends only on the input bit pattern and the two
parameters.  All later consensus math operates on these integers.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

FIXED_POINT_VERSION = 1

DEFAULT_FRAC_BITS = 16
MIN_FRAC_BITS = 8
MAX_FRAC_BITS = 24

DEFAULT_MAX_ABS = 2**20 - 1
MAX_MAX_ABS = 2**31 - 1

_LE_INT32 = np.dtype("<i4")


def validate_params(frac_bits: int, max_abs: int) -> None:
    """Raise ``ValueError`` unless ``frac_bits`` and ``max_abs`` are in range."""
    if isinstance(frac_bits, bool) or not isinstance(frac_bits, int):
        raise ValueError("frac_bits must be an int")
    if isinstance(max_abs, bool) or not isinstance(max_abs, int):
        raise ValueError("max_abs must be an int")
    if not MIN_FRAC_BITS <= frac_bits <= MAX_FRAC_BITS:
        raise ValueError(f"frac_bits must be in [{MIN_FRAC_BITS}, {MAX_FRAC_BITS}]")
    if not 1 <= max_abs <= MAX_MAX_ABS:
        raise ValueError(f"max_abs must be in [1, {MAX_MAX_ABS}]")


def _check_float32_vector(values: object) -> npt.NDArray[np.float32]:
    if not isinstance(values, np.ndarray):
        raise ValueError("values must be a numpy array")
    if values.dtype.kind != "f" or values.dtype.itemsize != 4:
        raise ValueError(f"values must be float32, got {values.dtype}")
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if not bool(np.isfinite(values).all()):
        raise ValueError("values contain NaN or infinity")
    return values


def quantize(
    values: npt.NDArray[np.float32],
    frac_bits: int = DEFAULT_FRAC_BITS,
    max_abs: int = DEFAULT_MAX_ABS,
) -> npt.NDArray[np.int32]:
    """Map a 1-D float32 vector to clamped fixed-point int32 (exact, deterministic).

    Rounds ``value * 2**frac_bits`` half-to-even and clamps to ``[-max_abs, max_abs]``.
    Raises ``ValueError`` on NaN/inf, a non-float32 dtype, a non-1-D array or
    out-of-range parameters (the STF maps it to InvalidAction).
    """
    validate_params(frac_bits, max_abs)
    checked = _check_float32_vector(values)
    scaled = checked.astype(np.float64) * float(2**frac_bits)  # exact (see module doc)
    rounded = np.rint(scaled)  # IEEE round-half-even
    np.clip(rounded, -max_abs, max_abs, out=rounded)
    return rounded.astype(np.int32)


def dequantize(
    ints: npt.NDArray[np.int32], frac_bits: int = DEFAULT_FRAC_BITS
) -> npt.NDArray[np.float32]:
    """Fixed-point int32 to float32 (for model downloads only, never for consensus)."""
    validate_params(frac_bits, 1)
    if not isinstance(ints, np.ndarray) or ints.dtype.kind != "i":
        raise ValueError("ints must be an integer numpy array")
    scaled = ints.astype(np.float64) / float(2**frac_bits)
    return scaled.astype(np.float32)


def pack_int32(vector: npt.NDArray[np.int32]) -> bytes:
    """Serialise a 1-D int32 vector as little-endian 4-byte integers."""
    if not isinstance(vector, np.ndarray) or vector.ndim != 1:
        raise ValueError("vector must be a 1-D numpy array")
    if vector.dtype.kind != "i" or vector.dtype.itemsize != 4:
        raise ValueError(f"vector must be int32, got {vector.dtype}")
    return vector.astype(_LE_INT32, copy=False).tobytes()


def unpack_int32(data: bytes, expected_len: int | None = None) -> npt.NDArray[np.int32]:
    """Inverse of :func:`pack_int32`; returns a fresh native-endian writable array.

    Raises ``ValueError`` if the byte length is not a multiple of 4 or does not
    match ``expected_len`` (number of elements) when given.
    """
    if len(data) % 4 != 0:
        raise ValueError("int32 payload length must be a multiple of 4")
    if expected_len is not None and len(data) != 4 * expected_len:
        raise ValueError(f"expected {expected_len} int32 values, got {len(data) // 4}")
    return np.frombuffer(data, dtype=_LE_INT32).astype(np.int32)
