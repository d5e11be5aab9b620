"""Metered work (issue 11): declared costs against limits fixed in genesis. A job whose full
round would exceed the aggregate limit is refused at `propose`; a block's declared bytes are
bounded; a genesis without limits keeps its hash and gets the defaults."""

import json
from pathlib import Path

import numpy as np
import pytest

from rollup.chain import Chain
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf.accounts import Transfer
from stf.actions import Propose, terms_to_tuple
from stf.context import Action
from stf.errors import InvalidAction
from stf.jobs import RevealParams
from stf.metering import (
    ACTION_OVERHEAD_BYTES,
    BlockMeter,
    Cost,
    Limits,
    declared_cost,
    get_limits,
)
from stf.state import DictKV
from tests.fl_harness import CHAIN_ID, PARAMS, Harness, pub, terms, upload


def _harness(tmp: Path, limits: Limits | None) -> Harness:
    genesis = Genesis(CHAIN_ID, 0, {pub(i): 10**21 for i in range(12)}, limits)
    return Harness(Chain(ChainStore(tmp), genesis))


def test_a_job_beyond_the_aggregate_limit_is_refused_at_propose(tmp_path: Path) -> None:
    h = _harness(tmp_path, Limits(max_aggregate_work=10 * PARAMS))
    upload(h, 0)
    too_big = terms_to_tuple(terms(max_participants=11))
    r = h.fails(0, "propose", Propose("train", "digits", 0, 0, too_big), "over_limits")
    assert "aggregate limit" in r.detail
    fits = terms_to_tuple(terms(max_participants=10))
    h.ok(0, "propose", Propose("train", "digits", 0, 0, fits))


def test_a_blocks_declared_bytes_are_bounded(tmp_path: Path) -> None:
    per = ACTION_OVERHEAD_BYTES + 32  # a transfer declares its overhead and its recipient
    h = _harness(tmp_path, Limits(max_block_bytes=3 * per))
    receipts = h.block([(i, "transfer", Transfer(pub(11), 1)) for i in range(4)])
    assert [r.ok for r in receipts] == [True, True, True, False]
    assert receipts[3].error == "block_full"
    assert all(r.ok for r in h.block([(3, "transfer", Transfer(pub(11), 1))]))


def test_declared_costs() -> None:
    state = DictKV()
    params = np.zeros(PARAMS, dtype="<f4").tobytes()
    reveal = Action("reveal", pub(1), 1, RevealParams(1, 1, params, 1, b"s" * 32), b"h" * 32)
    assert declared_cost(state, reveal) == Cost(ACTION_OVERHEAD_BYTES + 4 * PARAMS, 0)
    meter = BlockMeter(Limits(max_aggregate_work=10, max_block_work=15))
    meter.charge(Cost(1, 10))
    with pytest.raises(InvalidAction) as exc:
        meter.charge(Cost(1, 11))
    assert exc.value.code == "over_limits"
    with pytest.raises(InvalidAction) as exc:
        meter.charge(Cost(1, 6))
    assert exc.value.code == "block_full"


def test_genesis_limits_are_optional_and_hashed_only_when_present(tmp_path: Path) -> None:
    plain = Genesis(CHAIN_ID, 0, {pub(0): 1})
    assert "limits" not in plain.to_json()
    again = Genesis.from_json(json.loads(json.dumps(plain.to_json())))
    assert again == plain and again.hash() == plain.hash()
    limited = Genesis(CHAIN_ID, 0, {pub(0): 1}, Limits(max_block_bytes=4096))
    assert Genesis.from_json(json.loads(json.dumps(limited.to_json()))) == limited
    assert limited.hash() != plain.hash()
    with pytest.raises(ValueError):
        Genesis.from_json({**plain.to_json(), "limits": {"max_block_bytes": 0}})
    with pytest.raises(ValueError):
        Genesis.from_json({**plain.to_json(), "limits": {"unknown": 1}})
    h = _harness(tmp_path, None)
    assert get_limits(h.state) == Limits()
