"""The ML half of a federated-learning participant, and an in-process FL simulation.

Pure ML: no rollup, no HTTP. torch is imported here and nowhere else in the project, so
import this module lazily (only on the training path): the node itself runs without torch.

* Data: scikit-learn's bundled 8x8 digits (no download), standardised, a stratified test
  split, and a non-IID Dirichlet(alpha) partition of the train split among clients.
* Model: a small MLP 64-32-10 (or a softmax regression 64-10) whose parameters travel as
  one flat float32 vector in ``state_dict`` order; ``model_arch`` is the rollup's ``arch``.
* Participants: honest local SGD and the attacks / free-riding strategies the rollup must
  catch, all behind ``Behaviour.submit(RoundContext) -> float32 vector``.
* ``simulate``: FedAvg vs the rollup's exact round decision (``stf.aggregation``) on
  quantised vectors, to check the default ``Rules`` without running a chain.

Every random choice is seeded (numpy ``default_rng`` / ``SeedSequence``, a forked torch RNG),
training runs single-threaded with deterministic torch kernels, so a simulation is
reproducible bit for bit on one machine.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from stf.aggregation import (
    SLASHING_REASONS,
    ClientHistory,
    RoundOutcome,
    Rules,
    Submission,
    decide_round,
)
from stf.fixedpoint import dequantize, quantize

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]
Arch = tuple[tuple[str, tuple[int, ...]], ...]

# The rollup clamps to |v| < 16 (frac_bits 16, max_abs 2**20 - 1); every behaviour clips a
# little inside that so a submitted vector is never altered by the clamp.
CLIP = 15.99
MIN_CLIENT_SAMPLES = 10
# Pixels are grey levels 0..16; a pixel almost always blank has a tiny std, and dividing by
# it would turn one stray test pixel into a huge input. Floor the scale at two grey levels.
_STD_FLOOR = 2.0
_PARTITION_TRIES = 1000
MAX_SAMPLES = 10_000  # the rollup's weight cap (JobTerms.max_samples) used in simulations


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class FLData:
    """Per-client train shards and a common test set; ``client_indices`` index the
    (standardised) train split, so shards can be checked for overlap and coverage."""

    clients: tuple[tuple[Float32Array, Int64Array], ...]
    client_indices: tuple[Int64Array, ...]
    test_X: Float32Array
    test_y: Int64Array
    train_size: int
    classes: int = 10

    def class_histograms(self) -> npt.NDArray[np.float64]:
        """Row k: client k's class distribution (the non-IID skew)."""
        counts = np.stack([np.bincount(y, minlength=self.classes) for _, y in self.clients])
        return np.asarray(counts / counts.sum(axis=1, keepdims=True), dtype=np.float64)


def load_digits_split(
    seed: int, clients: int, alpha: float = 0.5, test_fraction: float = 0.25
) -> FLData:
    """Digits, standardised on train statistics, split non-IID among ``clients``."""
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    mean = X_tr.mean(axis=0)
    scale = np.maximum(X_tr.std(axis=0), _STD_FLOOR)
    Z_tr = ((X_tr - mean) / scale).astype(np.float32)
    Z_te = ((X_te - mean) / scale).astype(np.float32)
    y_tr = y_tr.astype(np.int64)
    parts = dirichlet_partition(y_tr, clients, alpha, np.random.default_rng(seed))
    return FLData(
        clients=tuple((Z_tr[p], y_tr[p]) for p in parts),
        client_indices=tuple(parts),
        test_X=Z_te,
        test_y=y_te.astype(np.int64),
        train_size=len(y_tr),
    )


def dirichlet_partition(
    y: Int64Array, clients: int, alpha: float, rng: np.random.Generator
) -> list[Int64Array]:
    """Each client draws its class mix p_k ~ Dirichlet(alpha); every class's samples are then
    dealt out in proportion to the clients' weights for it, so the shards are disjoint and
    cover the set. Redraw until every client holds ``MIN_CLIENT_SAMPLES``."""
    if clients < 1 or alpha <= 0:
        raise ValueError("need clients >= 1 and alpha > 0")
    if len(y) < clients * MIN_CLIENT_SAMPLES:
        raise ValueError(f"{len(y)} samples cannot give {clients} clients 10 each")
    classes = np.unique(y)
    for _ in range(_PARTITION_TRIES):
        mix = rng.dirichlet(np.full(len(classes), alpha), size=clients)
        parts = _deal_classes(y, classes, mix, rng)
        if min(len(p) for p in parts) >= MIN_CLIENT_SAMPLES:
            return parts
    raise RuntimeError("no partition gave every client enough samples; raise alpha")


def _deal_classes(
    y: Int64Array, classes: Int64Array, mix: npt.NDArray[np.float64], rng: np.random.Generator
) -> list[Int64Array]:
    pieces: list[list[Int64Array]] = [[] for _ in range(mix.shape[0])]
    for c_idx, c in enumerate(classes):
        members = rng.permutation(np.flatnonzero(y == c))
        share = mix[:, c_idx] / mix[:, c_idx].sum()
        cuts = np.rint(np.cumsum(share)[:-1] * len(members)).astype(np.int64)
        for k, piece in enumerate(np.split(members, cuts)):
            pieces[k].append(piece)
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in pieces]


# --------------------------------------------------------------------------- model


def make_model(kind: str = "mlp") -> torch.nn.Module:
    """Named layers, so ``model_arch`` reads like the architecture (fc1.weight, ...)."""
    if kind == "mlp":
        layers = OrderedDict(
            [
                ("fc1", torch.nn.Linear(64, 32)),
                ("relu", torch.nn.ReLU()),
                ("fc2", torch.nn.Linear(32, 10)),
            ]
        )
    elif kind == "softmax":
        layers = OrderedDict([("fc", torch.nn.Linear(64, 10))])
    else:
        raise ValueError(f"unknown model kind {kind!r} (mlp or softmax)")
    return torch.nn.Sequential(layers)


def model_arch(model: torch.nn.Module) -> Arch:
    return tuple((name, tuple(int(d) for d in t.shape)) for name, t in model.state_dict().items())


def param_count(kind: str = "mlp") -> int:
    return sum(int(np.prod(shape)) for _, shape in model_arch(make_model(kind)))


def flatten(model: torch.nn.Module) -> Float32Array:
    """All parameters in ``state_dict`` (= arch) order as one float32 vector."""
    parts = [t.detach().reshape(-1).to(torch.float32) for t in model.state_dict().values()]
    return np.asarray(torch.cat(parts).numpy(), dtype=np.float32).copy()


def load_flat(model: torch.nn.Module, vector: npt.NDArray[np.floating]) -> None:
    flat = np.asarray(vector, dtype=np.float32)
    state = model.state_dict()
    total = sum(t.numel() for t in state.values())
    if flat.shape != (total,):
        raise ValueError(f"expected {total} parameters, got shape {flat.shape}")
    offset, new_state = 0, OrderedDict()
    for name, t in state.items():
        chunk = flat[offset : offset + t.numel()].reshape(tuple(t.shape))
        new_state[name] = torch.from_numpy(chunk.copy())
        offset += t.numel()
    model.load_state_dict(new_state)


# torch's RNG, thread count and determinism flag are process-wide: simulations running in
# threads of one process (the Ray backend's driver) take turns with them.
_TORCH_STATE = threading.RLock()


@contextlib.contextmanager
def _seeded_torch(seed: int) -> Iterator[None]:
    """Deterministic, single-threaded torch for one participant's work, leaving the caller's
    RNG, thread count and determinism flag as they were (participants stay independent)."""
    with _TORCH_STATE:
        yield from _seeded_torch_unlocked(seed)


def _seeded_torch_unlocked(seed: int) -> Iterator[None]:
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        torch.set_num_threads(1)
        torch.use_deterministic_algorithms(True)
        try:
            yield
        finally:
            torch.set_num_threads(threads)
            torch.use_deterministic_algorithms(deterministic)


def initial_params(kind: str = "mlp", seed: int = 0) -> Float32Array:
    with _seeded_torch(seed):
        return flatten(make_model(kind))


# --------------------------------------------------------------------------- training


@dataclass(frozen=True)
class TrainConfig:
    """Local training hyper-parameters. Defaults tuned on digits (20 non-IID clients):
    honest FedAvg reaches ~0.95 test accuracy in 30 rounds at a few ms per client-round."""

    epochs: int = 2
    lr: float = 0.1
    batch_size: int = 32
    kind: str = "mlp"


def clip(vector: npt.NDArray[np.floating]) -> Float32Array:
    """Finite float32 strictly inside the rollup's clamp bound."""
    out = np.nan_to_num(np.asarray(vector, dtype=np.float64), nan=0.0, posinf=CLIP, neginf=-CLIP)
    return np.clip(out, -CLIP, CLIP).astype(np.float32)


def train_local(
    global_params: Float32Array,
    X: Float32Array,
    y: Int64Array,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int,
    kind: str = "mlp",
) -> Float32Array:
    """Plain minibatch SGD on cross-entropy from the global parameters; new flat params."""
    with _seeded_torch(seed):
        model = make_model(kind)
        load_flat(model, global_params)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        loss_fn = torch.nn.CrossEntropyLoss()
        inputs = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        labels = torch.from_numpy(np.ascontiguousarray(y, dtype=np.int64))
        order_rng = np.random.default_rng(seed)
        model.train()
        for _ in range(epochs):
            for batch in _minibatches(order_rng, len(y), batch_size):
                idx = torch.from_numpy(batch)
                opt.zero_grad()
                loss_fn(model(inputs[idx]), labels[idx]).backward()
                opt.step()
        return clip(flatten(model))


def _minibatches(rng: np.random.Generator, n: int, batch_size: int) -> list[Int64Array]:
    """A fresh shuffle cut into near-equal batches (no runt last batch to add noise)."""
    count = max(1, -(-n // batch_size))
    return [b.astype(np.int64) for b in np.array_split(rng.permutation(n), count)]


def evaluate(params: Float32Array, X: Float32Array, y: Int64Array, kind: str = "mlp") -> float:
    with _seeded_torch(0), torch.no_grad():
        model = make_model(kind)
        load_flat(model, params)
        model.eval()
        inputs = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        predicted = model(inputs).argmax(dim=1).numpy()
    return float((predicted == y).mean())


# --------------------------------------------------------------------------- behaviours


@dataclass(frozen=True)
class RoundContext:
    """What a participant knows when it submits in round ``round`` (1-based).

    ``honest_updates`` (rows: this round's honest updates) is only for the omniscient attacks
    (ALIE, IPM); ``n_clients`` / ``n_malicious`` give ALIE its n and f."""

    round: int
    global_params: Float32Array
    previous_global: Float32Array | None
    X: Float32Array
    y: Int64Array
    seed: int
    train: TrainConfig = TrainConfig()
    honest_updates: Float32Array | None = None
    n_clients: int = 0
    n_malicious: int = 0

    def honest_params(self, labels: Int64Array | None = None) -> Float32Array:
        c = self.train
        y = self.y if labels is None else labels
        return train_local(
            self.global_params, self.X, y, c.epochs, c.lr, c.batch_size, self.seed, c.kind
        )

    def honest_update(self) -> Float32Array:
        return (self.honest_params() - self.global_params).astype(np.float32)

    def known_honest_updates(self) -> Float32Array:
        """The honest updates the attacker knows; without them it estimates from its own."""
        if self.honest_updates is not None and len(self.honest_updates) > 0:
            return self.honest_updates
        return self.honest_update()[np.newaxis, :]

    def noise(self, sigma: float) -> Float32Array:
        rng = np.random.default_rng(self.seed)
        return rng.normal(0.0, sigma, self.global_params.shape).astype(np.float32)

    def apply(self, update: npt.NDArray[np.floating]) -> Float32Array:
        return clip(self.global_params.astype(np.float64) + update)


class Behaviour(Protocol):
    @property
    def name(self) -> str: ...

    def submit(self, ctx: RoundContext) -> Float32Array: ...


@dataclass(frozen=True)
class Honest:
    name: str = "honest"

    def submit(self, ctx: RoundContext) -> Float32Array:
        return ctx.honest_params()


@dataclass(frozen=True)
class SignFlip:
    """global - s * (own honest update): a scaled step uphill."""

    scale: float = 3.0
    name: str = "sign_flip"

    def submit(self, ctx: RoundContext) -> Float32Array:
        return ctx.apply(-self.scale * ctx.honest_update().astype(np.float64))


@dataclass(frozen=True)
class Gaussian:
    """global + N(0, sigma^2): sigma 0.05 gives an update norm ~2.5, several times an honest
    one, so it drowns the signal when averaged."""

    sigma: float = 0.05
    name: str = "gaussian"

    def submit(self, ctx: RoundContext) -> Float32Array:
        return ctx.apply(ctx.noise(self.sigma))


@dataclass(frozen=True)
class LabelFlip:
    """Honest training on the labels y -> 9 - y (a data-poisoning attacker)."""

    name: str = "label_flip"

    def submit(self, ctx: RoundContext) -> Float32Array:
        return ctx.honest_params(labels=(9 - ctx.y).astype(np.int64))


def alie_z(n: int, f: int) -> float:
    """Baruch et al. 2019: s = floor(n/2 + 1) - f supporters needed, z = Phi^-1((n - s)/n)."""
    if n < 1 or f < 0:
        raise ValueError(f"ALIE needs n >= 1 and f >= 0, got n={n}, f={f}")
    s = n // 2 + 1 - f
    p = (n - s) / n
    return statistics.NormalDist().inv_cdf(min(max(p, 1e-6), 1 - 1e-6))


@dataclass(frozen=True)
class Alie:
    """ "A little is enough": mean - z * std of the honest updates, per coordinate.

    Colluders sending the very same vector would all be caught by the exact ``duplicate``
    check, so each adds its own tiny ``jitter`` (default 1e-4, ~7 fixed-point units: far
    below the honest spread, enough to make the vectors distinct). ``jitter=0`` disables it.
    """

    z: float | None = None
    jitter: float = 1e-4
    name: str = "alie"

    def submit(self, ctx: RoundContext) -> Float32Array:
        ups = ctx.known_honest_updates().astype(np.float64)
        # Without n and f from the context: the known honest clients plus at least this one.
        f = max(ctx.n_malicious, 1)
        n = ctx.n_clients if ctx.n_clients > 0 else len(ups) + f
        z = self.z if self.z is not None else alie_z(n, f)
        update = ups.mean(axis=0) - z * ups.std(axis=0)
        return ctx.apply(update + _jitter(ctx, self.jitter))


@dataclass(frozen=True)
class Ipm:
    """Inner-product manipulation (Xie et al. 2020): -epsilon * mean honest update, so the
    aggregate's inner product with the true gradient turns negative. Jitter as in ALIE."""

    epsilon: float = 0.5
    jitter: float = 1e-4
    name: str = "ipm"

    def submit(self, ctx: RoundContext) -> Float32Array:
        mean = ctx.known_honest_updates().astype(np.float64).mean(axis=0)
        return ctx.apply(-self.epsilon * mean + _jitter(ctx, self.jitter))


def _jitter(ctx: RoundContext, sigma: float) -> Float32Array:
    return ctx.noise(sigma) if sigma > 0 else np.zeros_like(ctx.global_params)


@dataclass(frozen=True)
class FreeRider:
    name: str = "free_rider"

    def submit(self, ctx: RoundContext) -> Float32Array:
        return clip(ctx.global_params)


@dataclass(frozen=True)
class DisguisedFreeRider:
    """Fraboni et al. 2021: global + noise with sigma_r = sigma * r^-gamma, mimicking the
    shrinking updates of a converging model without training."""

    sigma: float = 0.01
    gamma: float = 0.5
    name: str = "disguised_free_rider"

    def submit(self, ctx: RoundContext) -> Float32Array:
        return ctx.apply(ctx.noise(self.sigma * ctx.round**-self.gamma))


@dataclass(frozen=True)
class DeltaReplay:
    """global + (global - previous global): replays the last global step; in round 1 there
    is none, so it is a plain free rider."""

    name: str = "delta_replay"

    def submit(self, ctx: RoundContext) -> Float32Array:
        if ctx.previous_global is None:
            return clip(ctx.global_params)
        step = ctx.global_params.astype(np.float64) - ctx.previous_global
        return ctx.apply(step)


@dataclass(frozen=True)
class AlieJitter:
    """ALIE where every colluder adds its own jitter of ``share`` x the update's norm, so no
    two are near duplicates in one round (only their accumulated updates give them away)."""

    share: float = 0.15
    name: str = "alie_jitter"

    def submit(self, ctx: RoundContext) -> Float32Array:
        base = Alie(jitter=0.0).submit(ctx).astype(np.float64) - ctx.global_params
        sigma = self.share * float(np.linalg.norm(base)) / np.sqrt(base.size)
        return ctx.apply(base + _jitter(ctx, sigma))


@dataclass(frozen=True)
class MinMax:
    """Shejwalkar & Houmansadr 2021 (AGR-agnostic min-max): mean honest update plus gamma
    times the inverse unit vector, gamma as large as keeps the malicious update's largest
    distance to an honest update within the largest distance between two honest ones. A
    tiny per-colluder jitter keeps the colluders from exact duplicates."""

    jitter: float = 1e-4
    name: str = "min_max"

    def submit(self, ctx: RoundContext) -> Float32Array:
        ups = ctx.known_honest_updates().astype(np.float64)
        mean = ups.mean(axis=0)
        direction = -mean / max(float(np.linalg.norm(mean)), 1e-12)
        spread = max((float(np.linalg.norm(a - b)) for a in ups for b in ups), default=0.0)
        lo, hi = 0.0, 10.0 * (spread + float(np.linalg.norm(mean)) + 1e-9)
        for _ in range(40):
            gamma = (lo + hi) / 2
            worst = float(np.max(np.linalg.norm(ups - (mean + gamma * direction), axis=1)))
            lo, hi = (gamma, hi) if worst <= spread else (lo, gamma)
        return ctx.apply(mean + lo * direction + _jitter(ctx, self.jitter))


@dataclass(frozen=True)
class ExtrapolatingFreeRider:
    """Never trains: global + s x (the last global step) + 30 % noise, s in [1.5, 2.5] each
    round; in round 1 (no step yet) the global plus a little noise."""

    noise_share: float = 0.3
    name: str = "extrapolating_free_rider"

    def submit(self, ctx: RoundContext) -> Float32Array:
        rng = np.random.default_rng(ctx.seed)
        if ctx.previous_global is None:
            return ctx.apply(ctx.noise(1e-3))
        step = ctx.global_params.astype(np.float64) - ctx.previous_global
        scaled = rng.uniform(1.5, 2.5) * step
        sigma = self.noise_share * float(np.linalg.norm(scaled)) / np.sqrt(step.size)
        return ctx.apply(scaled + rng.normal(0.0, sigma, step.shape))


@dataclass(frozen=True)
class FBurner:
    """Burns the Byzantine budget with a plain copy in round 1, then label-flips."""

    name: str = "f_burn"

    def submit(self, ctx: RoundContext) -> Float32Array:
        if ctx.round == 1:
            return clip(ctx.global_params)
        return LabelFlip().submit(ctx)


_FACTORIES: dict[str, Callable[[], Behaviour]] = {
    "alie_jitter": AlieJitter,
    "min_max": MinMax,
    "extrapolating_free_rider": ExtrapolatingFreeRider,
    "f_burn": FBurner,
    "honest": Honest,
    "sign_flip": SignFlip,
    "gaussian": Gaussian,
    "label_flip": LabelFlip,
    "alie": Alie,
    "ipm": Ipm,
    "free_rider": FreeRider,
    "disguised_free_rider": DisguisedFreeRider,
    "delta_replay": DeltaReplay,
}
BEHAVIOURS = tuple(_FACTORIES)
ATTACKS = ("sign_flip", "gaussian", "label_flip", "alie", "ipm", "alie_jitter", "min_max")
FREE_RIDERS = ("free_rider", "disguised_free_rider", "delta_replay", "extrapolating_free_rider")
OMNISCIENT = frozenset({"alie", "ipm", "alie_jitter", "min_max"})


def make_behaviour(name: str) -> Behaviour:
    try:
        return _FACTORIES[name]()
    except KeyError:
        raise ValueError(f"unknown behaviour {name!r}; one of {', '.join(BEHAVIOURS)}") from None


# --------------------------------------------------------------------------- simulation

# One participant's submission as a task. Each is a pure function of its behaviour and its
# context (seeded, single-threaded torch), so any backend that runs them, in this process or
# in Ray workers, returns the same vectors bit for bit.
SubmitTask = tuple[Behaviour, RoundContext]
TaskRunner = Callable[[Sequence[SubmitTask]], list[Float32Array]]


def submit_all(tasks: Sequence[SubmitTask]) -> list[Float32Array]:
    """The in-process backend: one submission after another."""
    return [agent.submit(ctx) for agent, ctx in tasks]


Aggregator = Literal["fedavg", "rollup"]
# decide_round's signature: lets a simulation try a revised round decision unchanged.
DecideFn = Callable[
    [
        npt.NDArray[np.int32],
        npt.NDArray[np.int32] | None,
        Sequence[Submission],
        int,
        Rules,
        int,
        dict[bytes, ClientHistory],
    ],
    RoundOutcome,
]


@dataclass
class SimResult:
    """Per round r (index r - 1): the global model's test accuracy after aggregation and,
    for the rollup, every client's decision reason (client index -> reason)."""

    behaviours: tuple[str, ...]
    aggregator: str
    initial_accuracy: float
    accuracies: list[float] = field(default_factory=list)
    decisions: list[dict[int, str]] = field(default_factory=list)
    krum_scores: list[dict[int, int]] = field(default_factory=list)
    strikes: list[set[int]] = field(default_factory=list)  # who struck, per round
    train_seconds: list[float] = field(default_factory=list)
    aggregate_seconds: list[float] = field(default_factory=list)

    @property
    def final_accuracy(self) -> float:
        return self.accuracies[-1] if self.accuracies else self.initial_accuracy

    def first_slash(self, client: int) -> tuple[int, str] | None:
        """(round, reason) of the client's first slashing, or None."""
        for r, decided in enumerate(self.decisions, start=1):
            if decided.get(client) in SLASHING_REASONS:
                return r, decided[client]
        return None

    def slashed_rounds(self, client: int) -> list[int]:
        return [r for r, d in enumerate(self.decisions, 1) if d.get(client) in SLASHING_REASONS]

    def honest_slashes(self) -> list[tuple[int, int, str]]:
        """(round, client, reason) for every slashing of an honest client."""
        return [
            (r, c, reason)
            for r, decided in enumerate(self.decisions, start=1)
            for c, reason in sorted(decided.items())
            if self.behaviours[c] == "honest" and reason in SLASHING_REASONS
        ]


def simulate(
    data: FLData,
    behaviours: Sequence[str],
    rounds: int = 30,
    aggregator: Aggregator = "rollup",
    seed: int = 0,
    kind: str = "mlp",
    local_epochs: int = TrainConfig.epochs,
    lr: float = TrainConfig.lr,
    batch_size: int = TrainConfig.batch_size,
    rules: Rules | None = None,
    f: int | None = None,
    krum_m: int = 0,
    eject_slashed: bool = True,
    decide: DecideFn = decide_round,
    run_tasks: TaskRunner | None = None,
) -> SimResult:
    """Run ``rounds`` FL rounds in process: client k behaves as ``behaviours[k]``.

    "fedavg": the sample-weighted mean of all submissions. "rollup": the rollup's exact
    round decision on the quantised submissions (default ``Rules()``; ``f`` defaults to the
    number of non-honest clients, capped at what n allows; ``krum_m`` as in the job terms),
    the new global being the rollup's fixed-point global, which participants then download
    (dequantised). ``eject_slashed`` (default, as the STF does): a slashed client is out of
    the job and submits no more. ``decide``
    replaces ``stf.aggregation.decide_round`` (to evaluate a revised rule set). ``run_tasks``
    runs each round's local training (default: in process;
    ``node.participant.ray_backend``: on Ray); the round decision always runs here."""
    if len(behaviours) != len(data.clients):
        raise ValueError(f"{len(behaviours)} behaviours for {len(data.clients)} clients")
    if aggregator not in ("fedavg", "rollup"):
        raise ValueError(f"unknown aggregator {aggregator!r}")
    agents = [make_behaviour(b) for b in behaviours]
    cfg = TrainConfig(local_epochs, lr, batch_size, kind)
    state = _SimState.start(initial_params(kind, seed), aggregator == "rollup", decide)
    result = SimResult(
        tuple(behaviours), aggregator, evaluate(state.global_f32, data.test_X, data.test_y, kind)
    )
    bad = sum(b != "honest" for b in behaviours)
    krum_f = min(bad if f is None else f, max(0, (len(behaviours) - 3) // 2))
    active = list(range(len(agents)))
    for r in range(1, rounds + 1):
        t0 = time.perf_counter()
        vectors = round_submissions(
            data, agents, active, state.global_f32, state.previous_f32, r, seed, cfg, bad, run_tasks
        )
        t1 = time.perf_counter()
        samples = {k: len(data.clients[k][1]) for k in active}
        decided, scores, struck = state.aggregate(vectors, samples, krum_f, rules, krum_m)
        if eject_slashed:
            active = [k for k in active if decided.get(k) not in SLASHING_REASONS]
        result.train_seconds.append(t1 - t0)
        result.aggregate_seconds.append(time.perf_counter() - t1)
        result.decisions.append(decided)
        result.krum_scores.append(scores)
        result.strikes.append(struck)
        result.accuracies.append(evaluate(state.global_f32, data.test_X, data.test_y, kind))
    return result


def client_id(index: int) -> bytes:
    """Big-endian, so the rollup's sort by client id is the client index order."""
    return index.to_bytes(4, "big")


def client_seed(seed: int, round_: int, client: int) -> int:
    return int(np.random.SeedSequence([seed, round_, client]).generate_state(1)[0])


@dataclass
class _SimState:
    """The global model as the participants see it, and (rollup) in fixed point."""

    global_f32: Float32Array
    previous_f32: Float32Array | None
    rollup: bool
    decide: DecideFn
    global_q: npt.NDArray[np.int32] | None = None
    previous_q: npt.NDArray[np.int32] | None = None
    history: dict[bytes, ClientHistory] = field(default_factory=dict)

    @staticmethod
    def start(init: Float32Array, rollup: bool, decide: DecideFn) -> _SimState:
        if not rollup:
            return _SimState(init, None, False, decide)
        q = quantize(init)
        return _SimState(dequantize(q), None, True, decide, q)

    def aggregate(
        self,
        vectors: dict[int, Float32Array],
        samples: dict[int, int],
        f: int,
        rules: Rules | None,
        krum_m: int,
    ) -> tuple[dict[int, str], dict[int, int], set[int]]:
        """New global from this round's vectors (by client index); (reason, Krum score) per
        client index, and who struck."""
        if not self.rollup:
            self.previous_f32, self.global_f32 = self.global_f32, _fedavg(vectors, samples)
            return {}, {}, set()
        assert self.global_q is not None
        subs = [
            Submission(client_id(k), quantize(v), 1)  # equal weights: the job default
            for k, v in vectors.items()
        ]
        previous_update = None
        if self.previous_q is not None:
            diff = self.global_q.astype(np.int64) - self.previous_q.astype(np.int64)
            previous_update = diff.astype(np.int32)
        outcome = self.decide(
            self.global_q, previous_update, subs, f, rules or Rules(), krum_m, self.history
        )
        self.history.update(outcome.history)
        self.previous_q, self.global_q = self.global_q, outcome.new_global
        self.previous_f32, self.global_f32 = self.global_f32, dequantize(outcome.new_global)
        index = {client_id(k): k for k in vectors}
        reasons = {index[d.client]: d.reason for d in outcome.decisions}
        scores = {index[d.client]: d.score for d in outcome.decisions if d.score is not None}
        return reasons, scores, {index[d.client] for d in outcome.decisions if d.strike}


def _fedavg(vectors: dict[int, Float32Array], samples: dict[int, int]) -> Float32Array:
    weights = np.asarray([samples[k] for k in vectors], dtype=np.float64)
    stacked = np.stack(list(vectors.values())).astype(np.float64)
    mean = (stacked * weights[:, None]).sum(axis=0) / weights.sum()
    return np.asarray(mean, dtype=np.float32)


def round_submissions(
    data: FLData,
    agents: list[Behaviour],
    active: list[int],
    global_f32: Float32Array,
    previous_f32: Float32Array | None,
    r: int,
    seed: int,
    cfg: TrainConfig,
    malicious: int,
    run_tasks: TaskRunner | None = None,
) -> dict[int, Float32Array]:
    """Honest clients first: the omniscient attackers are then handed their updates. Each
    phase's submissions go to ``run_tasks`` at once (in process by default, or a Ray pool)."""
    run = run_tasks or submit_all

    def ctx(k: int, honest_updates: Float32Array | None = None) -> RoundContext:
        X, y = data.clients[k]
        return RoundContext(
            r,
            global_f32,
            previous_f32,
            X,
            y,
            client_seed(seed, r, k),
            cfg,
            honest_updates,
            len(agents),
            malicious,
        )

    first = [k for k in active if agents[k].name == "honest"]
    out = dict(zip(first, run([(agents[k], ctx(k)) for k in first]), strict=True))
    honest = [out[k] - global_f32 for k in sorted(out)]
    known = np.stack(honest).astype(np.float32) if honest else None
    rest = [k for k in active if k not in out]
    tasks = [(agents[k], ctx(k, known if agents[k].name in OMNISCIENT else None)) for k in rest]
    out.update(zip(rest, run(tasks), strict=True))
    return {k: out[k] for k in active}


# --------------------------------------------------------------------------- report


def scenario(attack: str, clients: int = 20, attackers: int = 4) -> list[str]:
    """Attackers first, then one plain and one disguised free rider, the rest honest."""
    bad = [attack] * attackers + ["free_rider", "disguised_free_rider"]
    return bad + ["honest"] * (clients - len(bad))


def report_line(attack: str, rollup: SimResult, fedavg: SimResult) -> str:
    firsts = []
    for k, b in enumerate(rollup.behaviours):
        if b != "honest":
            hit = rollup.first_slash(k)
            firsts.append(f"{b[:6]}{k}:{'-' if hit is None else f'r{hit[0]} {hit[1]}'}")
    honest = rollup.honest_slashes()
    return (
        f"{attack:11s} rollup {rollup.final_accuracy:.3f} fedavg {fedavg.final_accuracy:.3f} "
        f"| honest slashed: {len(honest)} {honest[:3]} | {'; '.join(firsts)}"
    )


def main(argv: Sequence[str] = ()) -> int:
    """``python -m node.participant.fl [rounds] [seed]``: the attack table the default rules
    are judged by (20 clients, alpha 0.5, 4 attackers + 2 free riders, MLP, default ``Rules()``)."""
    rounds = int(argv[0]) if argv else 30
    seed = int(argv[1]) if len(argv) > 1 else 0
    data = load_digits_split(seed=seed, clients=20, alpha=0.5)
    clean = simulate(data, ["honest"] * 20, rounds, "fedavg", seed=seed)
    per_round = float(np.mean(clean.train_seconds))
    print(f"honest fedavg {clean.final_accuracy:.3f}  local training {per_round:.3f} s/round")
    for attack in ATTACKS:
        who = scenario(attack)
        rollup, fedavg = (
            simulate(data, who, rounds, agg, seed=seed) for agg in ("rollup", "fedavg")
        )
        print(report_line(attack, rollup, fedavg), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
