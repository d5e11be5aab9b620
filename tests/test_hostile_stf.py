"""Hostile actions against the STF itself (issue 11): every integer field is bounded at
decode; any action that decodes is executed to a receipt (ok or an InvalidAction code) and
never stops the chain; anything else the STF raises is a halt, never a receipt."""

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollup.chain import StfHalt
from rollup.codec import CodecError, decode_action, encode_action
from stf import actions
from stf.errors import StfInternalError, check_internal
from stf.fields import MAX_U32
from stf.jobs import AggregateRound, CommitParams, RevealParams
from stf.settlement import SettlementRecord
from tests.fl_harness import (
    CHAIN_ID,
    PARAMS,
    Harness,
    f32,
    key,
    open_job,
    pub,
    stake,
    submit_round,
    upload,
)
from tests.hostile_strategies import payloads

OWNER = 0
CLIENTS = list(range(1, 10))
_WORLD: dict[str, tuple[Harness, int]] = {}


def _world(tmp: Path) -> tuple[Harness, int]:
    h = Harness.create(tmp, accounts=12)
    upload(h, OWNER)
    job_id = open_job(h, OWNER, rounds=3, round_blocks=50)
    stake(h, CLIENTS)
    rng = np.random.default_rng(1)
    # Round 1 nearly full, so that a drawn `aggregate` runs the whole round decision.
    submit_round(h, job_id, 1, [(c, f32(rng.normal(0, 0.1, PARAMS)), 10) for c in CLIENTS[:7]])
    return h, job_id


def test_round_numbers_beyond_u32_are_refused_at_decode() -> None:
    """The issue's poisoned submit (round 2^32) no longer decodes: it cannot enter a block."""
    for kind, payload in (
        ("commit", CommitParams(1, MAX_U32 + 1, b"\x00" * 32)),
        ("reveal", RevealParams(1, MAX_U32 + 1, b"", 1, b"\x00" * 32)),
        ("aggregate", AggregateRound(1, 2**32, 0)),
    ):
        wire = encode_action(key(1), CHAIN_ID, kind, 1, payload)
        with pytest.raises(CodecError) as exc:
            decode_action(wire, CHAIN_ID)
        assert exc.value.code == "bad_payload" and "32-bit" in exc.value.detail
    ok = encode_action(key(1), CHAIN_ID, "commit", 1, CommitParams(1, MAX_U32, b"\x00" * 32))
    assert decode_action(ok, CHAIN_ID).action.payload.round == MAX_U32


@settings(
    max_examples=250,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_decodable_action_gets_a_receipt_never_a_halt(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    """For any action of any type with any field values: it either fails to decode (a 4xx at
    the door) or executes to a receipt; the STF never raises anything but InvalidAction."""
    if "world" not in _WORLD:  # one world for all examples: state builds up across them
        _WORLD["world"] = _world(tmp_path_factory.mktemp("hostile-stf"))
    h, job_id = _WORLD["world"]
    batch = data.draw(
        st.lists(
            st.tuples(st.sampled_from([0, 0, *range(1, 12)]), payloads(job_id, 12)),
            min_size=1,
            max_size=3,
        )
    )
    signed = []
    for who, (kind, payload) in batch:
        n = h.nonces.get(pub(who), 0) + 1
        try:
            sa = decode_action(encode_action(key(who), CHAIN_ID, kind, n, payload), CHAIN_ID)
        except CodecError:
            continue
        h.nonces[pub(who)] = n
        signed.append(sa)
    if not signed:
        return
    h.time_ms += 1000
    try:
        executed = h.chain.execute(signed, h.time_ms)
    except StfHalt as exc:  # pragma: no cover - what this test exists to catch
        pytest.fail(f"a decodable action stopped the STF: {exc}")
    h.chain.commit(executed, 0)
    assert len(executed.record.receipts) == len(signed)


def test_an_unexpected_error_in_a_rule_halts_instead_of_a_receipt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only InvalidAction is a verdict: any other exception (a bug, MemoryError) makes the
    block fail to build, naming the action, and nothing of the block is written."""
    h = Harness.create(tmp_path, accounts=3)
    spec = actions.ACTIONS["transfer"]

    def poisoned(state, action, block, effects):  # type: ignore[no-untyped-def]
        if action.payload.amount == 13:
            raise MemoryError("simulated exhaustion")
        spec.process(state, action, block, effects)

    monkeypatch.setitem(
        actions.ACTIONS,
        "transfer",
        actions.ActionSpec(
            spec.name, spec.fields, spec.payload_type, poisoned, spec.max_body_bytes
        ),
    )
    from stf.accounts import Transfer

    h.ok(0, "transfer", Transfer(pub(1), 5))
    head = h.chain.head
    good = decode_action(
        encode_action(key(0), CHAIN_ID, "transfer", 2, Transfer(pub(1), 6)), CHAIN_ID
    )
    bad = decode_action(
        encode_action(key(1), CHAIN_ID, "transfer", 1, Transfer(pub(2), 13)), CHAIN_ID
    )
    with pytest.raises(StfHalt) as exc:
        h.chain.execute([good, bad], h.time_ms + 1000)
    assert exc.value.subject == bad.action.hash and isinstance(exc.value.cause, MemoryError)
    assert h.chain.head == head and h.chain.store.live.head_height() == head.height


def test_internal_checks_are_not_invalid_actions() -> None:
    """The STF's replacement for assert survives `python -O` and is never a receipt code."""
    from stf.errors import InvalidAction

    assert not issubclass(StfInternalError, InvalidAction)
    check_internal(True, "fine")
    with pytest.raises(StfInternalError):
        check_internal(False, "broken")
    with pytest.raises(StfInternalError):
        SettlementRecord.from_list([2, "slash", 0, 0, b"k", b"p" * 20, 1, b"r"])
