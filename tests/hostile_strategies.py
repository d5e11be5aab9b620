"""Hypothesis strategies for hostile actions: every action type, every integer field drawn
from the edges of its wire range (and beyond the bounds the codec enforces), aimed at a world
with a known model, job and keys so that many of them reach deep into the rules."""

from typing import Any

import numpy as np
from hypothesis import strategies as st

from stf.accounts import Transfer
from stf.actions import Propose, terms_to_tuple
from stf.fields import MAX_U64, MAX_U256
from stf.jobs import AggregateRound, Amount, CommitParams, RevealParams, Withdraw
from stf.models import Approve, PostMessage, ProposalRef, SetPrice, Upload
from tests.fl_harness import ARCH, PARAMS, pub, terms

EDGES = [
    0,
    1,
    2,
    3,
    7,
    255,
    10_000,
    2**16,
    2**31 - 1,
    2**31,
    2**32 - 1,
    2**32,
    2**32 + 1,
    2**53,
    2**63 - 1,
    2**63,
    MAX_U64,
]
WEI_EDGES = [0, 1, 10**18, 2 * 10**18, 10**21, 2**128, 2**255, MAX_U256]


def u64s() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(EDGES), st.integers(0, MAX_U64))


def wei() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from(WEI_EDGES), st.integers(0, MAX_U256))


def ids(known: int) -> st.SearchStrategy[int]:
    """Mostly the id that exists, so that actions reach the rules behind the lookup."""
    return st.one_of(st.just(known), st.just(known), st.sampled_from([known + 1, 0]), u64s())


def rounds() -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([1, 2]), st.sampled_from([0, 3, 4]), u64s())


def _vectors() -> st.SearchStrategy[bytes]:
    rng = np.random.default_rng(7)
    good = [(rng.normal(0, 0.1, PARAMS) * s).astype("<f4").tobytes() for s in (0.0, 1.0, 1e6, 1e38)]
    return st.one_of(
        st.sampled_from(good),
        st.binary(max_size=64).map(lambda b: b[: len(b) - len(b) % 4]),
    )


def model_ids() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(["digits", "other", ""]), st.text(max_size=8))


def _terms() -> st.SearchStrategy[tuple[Any, ...]]:
    base = terms_to_tuple(terms(rounds=2, round_blocks=5))

    @st.composite
    def build(draw: st.DrawFn) -> tuple[Any, ...]:
        out = list(base)
        for i in draw(st.sets(st.integers(0, 11), max_size=3)):
            if i == 4:
                out[i] = draw(wei())
            elif i == 7:
                out[i] = draw(st.sampled_from([b"", pub(0), b"\x01" * 31]))
            else:
                out[i] = draw(u64s())
        if draw(st.booleans()):
            ratios = [list(r) for r in out[12]]
            ratios[draw(st.integers(0, len(ratios) - 1))] = [draw(u64s()), draw(u64s())]
            out[12] = tuple(tuple(r) for r in ratios)
        return tuple(out)

    return build()


def payloads(job_id: int, keys: int) -> st.SearchStrategy[tuple[str, Any]]:
    """(action type, payload) for every action type."""
    shapes = st.lists(
        st.tuples(st.text(max_size=4), st.lists(u64s(), max_size=3).map(tuple)), max_size=3
    ).map(tuple)
    params = np.zeros(PARAMS, dtype="<f4").tobytes()
    return st.one_of(
        st.builds(
            lambda to, a: ("transfer", Transfer(to, a)),
            st.one_of(
                st.sampled_from([pub(i) for i in range(keys)]), st.binary(min_size=32, max_size=32)
            ),
            wei(),
        ),
        st.builds(
            lambda m, arch, p, fb, price: ("upload", Upload(m, arch, p, fb, price, b"a")),
            model_ids(),
            st.one_of(st.just(ARCH), shapes),
            st.one_of(st.just(params), _vectors()),
            st.one_of(st.just(16), u64s()),
            wei(),
        ),
        st.builds(lambda m, p: ("set_price", SetPrice(m, p)), model_ids(), wei()),
        st.builds(
            lambda kind, m, a, e, t: ("propose", Propose(kind, m, a, e, t)),
            st.sampled_from(["access", "train", "other"]),
            model_ids(),
            wei(),
            u64s(),
            st.one_of(st.none(), _terms()),
        ),
        st.builds(lambda p, k: ("approve", Approve(p, k)), ids(job_id), st.binary(max_size=16)),
        st.builds(lambda p: ("reject", ProposalRef(p)), ids(job_id)),
        st.builds(lambda p: ("cancel", ProposalRef(p)), ids(job_id)),
        st.builds(lambda p, t: ("message", PostMessage(p, t)), ids(job_id), st.text(max_size=16)),
        st.builds(lambda a: ("stake", Amount(a)), wei()),
        st.builds(lambda a, r: ("withdraw", Withdraw(a, r)), wei(), st.binary(max_size=21)),
        st.builds(
            lambda j, r, c: ("commit", CommitParams(j, r, c)),
            ids(job_id),
            rounds(),
            st.binary(min_size=32, max_size=32),
        ),
        st.builds(
            lambda j, r, p, s, salt: ("reveal", RevealParams(j, r, p, s, salt)),
            ids(job_id),
            rounds(),
            _vectors(),
            u64s(),
            st.binary(min_size=32, max_size=32),
        ),
        st.builds(
            lambda j, r, a: ("aggregate", AggregateRound(j, r, a)), ids(job_id), rounds(), u64s()
        ),
    )
