"""Flower adapter: an existing Flower ``NumPyClient`` trains a fedrollup job unchanged.

    from node.participant.flower import FlowerParticipant
    report = FlowerParticipant(Client(url), key, job_id, MyNumPyClient()).run()

Each round it fetches the job's global model from the node, unflattens it into the shapes
the client's own ``get_parameters`` returns, calls ``fit``, flattens what ``fit`` returns
(float32, in the same order) and submits it through the rollup's commit-reveal actions;
once the round is decided it calls ``evaluate`` on the new global model and reports its
loss and metrics. The rollup, not Flower, aggregates (exact Krum, free-rider checks), so
the client needs no Flower server and no change. ``flwr`` is imported only when an adapter
is made; without the ``flower`` extra that fails with ``MissingFlower``.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from nacl.signing import SigningKey

from node.sdk.client import SUCCESS_STATUSES, ApiError, Client, PendingReveal
from stf.jobs import MAX_SAMPLES

log = logging.getLogger("fedrollup.flower")

Scalar = bool | bytes | float | int | str
Config = dict[str, Scalar]
NDArrays = list[npt.NDArray[Any]]

# Door refusals of a commit: this key takes no further part in the job (stop), or missed
# this round only (too slow, or the round filled up first: try the next one).
NOT_TAKING_PART = frozenset({"not_staked", "unbonding", "slashed_in_job"})
MISSED_THE_ROUND = frozenset({"commits_closed", "round_deadline_passed", "round_full"})


class MissingFlower(RuntimeError):
    """The optional ``flower`` extra (flwr) is not installed."""


def require_flwr() -> ModuleType:
    try:
        return importlib.import_module("flwr.client")
    except ImportError as exc:
        raise MissingFlower(
            "the Flower adapter needs flwr: pip install 'fedrollup[flower]'"
        ) from exc


class NumPyClientLike(Protocol):
    """What the adapter calls: flwr.client.NumPyClient's three methods."""

    def get_parameters(self, config: Config) -> NDArrays: ...

    def fit(self, parameters: NDArrays, config: Config) -> tuple[NDArrays, int, Config]: ...

    def evaluate(self, parameters: NDArrays, config: Config) -> tuple[float, int, Config]: ...


@dataclass(frozen=True)
class ParamLayout:
    """The shapes and dtypes of a client's parameter list, to go to and from the rollup's one
    flat float32 vector (concatenated in list order, each array in C order)."""

    shapes: tuple[tuple[int, ...], ...]
    dtypes: tuple[np.dtype[Any], ...]

    @staticmethod
    def of(arrays: NDArrays) -> ParamLayout:
        return ParamLayout(
            tuple(tuple(int(d) for d in np.shape(a)) for a in arrays),
            tuple(np.asarray(a).dtype for a in arrays),
        )

    @property
    def size(self) -> int:
        return sum(int(np.prod(s, dtype=np.int64)) for s in self.shapes)

    def flatten(self, arrays: NDArrays) -> npt.NDArray[np.float32]:
        """One float32 vector; refuses other shapes and non-finite values (a reveal the rollup
        refuses would leave the commitment unopened, which is slashed)."""
        got = ParamLayout.of(arrays).shapes
        if got != self.shapes:
            raise ValueError(f"fit returned shapes {got}, expected {self.shapes}")
        if not arrays:
            return np.zeros(0, dtype=np.float32)
        flat = np.concatenate([np.asarray(a, dtype=np.float32).reshape(-1) for a in arrays])
        if not np.all(np.isfinite(flat)):
            raise ValueError("fit returned NaN or infinite parameters; nothing submitted")
        return flat

    def unflatten(self, vector: npt.NDArray[np.float32]) -> NDArrays:
        if vector.shape != (self.size,):
            raise ValueError(
                f"the job's model has {vector.size} parameters, the client {self.size}: "
                "not the same architecture"
            )
        out: NDArrays = []
        offset = 0
        for shape, dtype in zip(self.shapes, self.dtypes, strict=True):
            count = int(np.prod(shape, dtype=np.int64))
            out.append(vector[offset : offset + count].reshape(shape).astype(dtype))
            offset += count
        return out


@dataclass(frozen=True)
class FlowerRound:
    """One round as this participant saw it: the rollup's decision on its submission, what
    ``fit`` reported, and ``evaluate`` on the round's new global model."""

    round: int
    outcome: str  # the decision's reason: kept, or why excluded or slashed
    fit_examples: int
    fit_metrics: Config
    loss: float
    eval_examples: int
    eval_metrics: Config


@dataclass
class FlowerParticipant:
    """Drive one ``NumPyClient`` through a job with ``key`` (already staked as the job
    requires) until the job completes or the rollup takes it out (slashed, unstaked)."""

    client: Client
    key: SigningKey
    job_id: int
    numpy_client: NumPyClientLike
    poll_s: float = 0.1
    rounds: list[FlowerRound] = field(default_factory=list)

    def __post_init__(self) -> None:
        flwr_client = require_flwr()
        if not isinstance(self.numpy_client, flwr_client.NumPyClient):
            raise TypeError("numpy_client must be a flwr.client.NumPyClient")
        self.layout = ParamLayout.of(self.numpy_client.get_parameters({}))
        self.me = "0x" + bytes(self.key.verify_key).hex()
        self._pending: PendingReveal | None = None
        self._fitted: tuple[int, int, Config] | None = None  # round, examples, metrics

    def run(self) -> list[FlowerRound]:
        while self.step():
            pass
        return self.rounds

    def step(self) -> bool:
        """Act on the job's current phase, wait for it to change; False once done."""
        job = self.client.job(self.job_id)
        if job["status"] != "active":
            return False
        r = int(job["current_round"])
        rnd = self.client.round(self.job_id, r)
        mine = next((s for s in rnd["submissions"] if s["client"] == self.me), None)
        if rnd["status"] == "open" and mine is None:
            if not self._commit(r, job):
                return False
        elif rnd["status"] == "reveal" and mine is not None and not mine["revealed"]:
            self._reveal(r)
        self._wait_for_change(r, str(rnd["status"]))
        self._note_decision(r)
        return True

    def _commit(self, r: int, job: dict[str, Any]) -> bool:
        current = self.client.global_params(self.job_id, r - 1)
        config: Config = {
            "server_round": r,
            "job_id": self.job_id,
            "local_epochs": int(job["terms"]["local_epochs"]),
        }
        arrays, examples, metrics = self.numpy_client.fit(self.layout.unflatten(current), config)
        flat = self.layout.flatten(arrays)
        samples = min(max(int(examples), 1), MAX_SAMPLES)
        try:
            action, pending = self.client.commit_params(self.key, self.job_id, r, flat, samples)
        except ApiError as exc:
            if exc.code in NOT_TAKING_PART:
                log.warning("job %d round %d: not taking part (%s)", self.job_id, r, exc.code)
                return False
            if exc.code in MISSED_THE_ROUND:
                log.warning("job %d round %d: missed it (%s)", self.job_id, r, exc.code)
                return True
            raise
        _must_succeed(self.client.wait(action), f"round {r} commit")
        self._pending, self._fitted = pending, (r, int(examples), dict(metrics))
        log.info("job %d round %d: committed (%d examples)", self.job_id, r, examples)
        return True

    def _reveal(self, r: int) -> None:
        if self._pending is None or self._pending.round != r:
            raise RuntimeError(f"round {r}: committed, but the parameters to reveal were lost")
        _must_succeed(
            self.client.wait(self.client.reveal_params(self.key, self._pending)),
            f"round {r} reveal",
        )

    def _wait_for_change(self, r: int, status: str) -> None:
        while True:
            job = self.client.job(self.job_id)
            if job["status"] != "active" or int(job["current_round"]) != r:
                return
            if self.client.round(self.job_id, r)["status"] != status:
                return
            time.sleep(self.poll_s)

    def _note_decision(self, r: int) -> None:
        """Once round r is decided (and this client was in it): evaluate the new global."""
        if self._fitted is None or self._fitted[0] != r:
            return
        decided = {d["client"]: d["reason"] for d in self.client.round(self.job_id, r)["decisions"]}
        if self.me not in decided:
            return
        _, fit_examples, fit_metrics = self._fitted
        self._fitted = None
        new_global = self.layout.unflatten(self.client.global_params(self.job_id, r))
        loss, examples, metrics = self.numpy_client.evaluate(
            new_global, {"server_round": r, "job_id": self.job_id}
        )
        self.rounds.append(
            FlowerRound(
                r, decided[self.me], fit_examples, fit_metrics, float(loss), int(examples), metrics
            )
        )
        log.info(
            "job %d round %d: %s; evaluate: loss %.4f %s",
            self.job_id,
            r,
            decided[self.me],
            loss,
            " ".join(f"{k} {v!r}" for k, v in sorted(metrics.items())),
        )


def _must_succeed(status: dict[str, Any], what: str) -> None:
    if status["status"] not in SUCCESS_STATUSES:
        receipt = status["receipt"]
        raise ApiError(200, str(receipt["error"]), f"{what}: {receipt['detail']}")
