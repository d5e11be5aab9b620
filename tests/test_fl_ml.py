"""The ML half of the trainer (node/participant/fl.py): data split, model vectors, local
training, the participant behaviours, and a short in-process simulation against the rollup's
round decision.
"""

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

# imported after the importorskip calls: node.fl imports torch at module level
from node.participant import fl
from stf.aggregation import EXCLUDING_REASONS, SLASHING_REASONS

MLP_PARAMS = 64 * 32 + 32 + 32 * 10 + 10


@pytest.fixture(scope="module")
def data() -> fl.FLData:
    return fl.load_digits_split(seed=0, clients=10, alpha=0.5)


def _mean_tv_from_pooled(d: fl.FLData) -> float:
    """Mean total-variation distance of the clients' class mixes from the pooled mix."""
    hist = d.class_histograms()
    pooled = np.bincount(np.concatenate([y for _, y in d.clients]), minlength=10)
    pooled = pooled / pooled.sum()
    return float(0.5 * np.abs(hist - pooled).sum(axis=1).mean())


# --------------------------------------------------------------------------- data


def test_split_is_a_disjoint_cover_of_the_train_set(data: fl.FLData) -> None:
    joined = np.concatenate(data.client_indices)
    assert len(joined) == len(set(joined.tolist())) == data.train_size
    assert set(joined.tolist()) == set(range(data.train_size))
    assert all(len(y) >= fl.MIN_CLIENT_SAMPLES for _, y in data.clients)
    assert data.train_size + len(data.test_y) == 1797
    for (X, y), idx in zip(data.clients, data.client_indices, strict=True):
        assert X.dtype == np.float32 and y.dtype == np.int64
        assert X.shape == (len(idx), 64) and y.shape == (len(idx),)


def test_features_standardised_on_train(data: fl.FLData) -> None:
    train = np.concatenate([X for X, _ in data.clients])
    assert np.abs(train.mean(axis=0)).max() < 1e-4
    assert train.std(axis=0).max() <= 1.0 + 1e-4  # std floored: never above unit scale
    assert np.abs(data.test_X).max() < 20


def test_test_split_is_stratified(data: fl.FLData) -> None:
    share = np.bincount(data.test_y, minlength=10) / len(data.test_y)
    assert np.abs(share - 0.1).max() < 0.01


def test_non_iid_skew_is_measurable() -> None:
    skewed = fl.load_digits_split(seed=0, clients=20, alpha=0.5)
    near_iid = fl.load_digits_split(seed=0, clients=20, alpha=100.0)
    assert _mean_tv_from_pooled(skewed) > 0.3
    assert _mean_tv_from_pooled(near_iid) < 0.15
    # with alpha 0.5 some client lacks a class outright
    assert (skewed.class_histograms() == 0).any()


def test_split_is_deterministic_per_seed(data: fl.FLData) -> None:
    again = fl.load_digits_split(seed=0, clients=10, alpha=0.5)
    other = fl.load_digits_split(seed=1, clients=10, alpha=0.5)
    for a, b in zip(data.client_indices, again.client_indices, strict=True):
        assert np.array_equal(a, b)
    assert np.array_equal(data.test_X, again.test_X)
    assert any(
        not np.array_equal(a, b)
        for a, b in zip(data.client_indices, other.client_indices, strict=True)
    )


def test_split_rejects_impossible_requests() -> None:
    with pytest.raises(ValueError):
        fl.load_digits_split(seed=0, clients=200)
    with pytest.raises(ValueError):
        fl.load_digits_split(seed=0, clients=5, alpha=0.0)


# --------------------------------------------------------------------------- model


def test_arch_and_flat_round_trip() -> None:
    model = fl.make_model("mlp")
    arch = fl.model_arch(model)
    assert arch == (
        ("fc1.weight", (32, 64)),
        ("fc1.bias", (32,)),
        ("fc2.weight", (10, 32)),
        ("fc2.bias", (10,)),
    )
    assert fl.param_count("mlp") == MLP_PARAMS
    assert fl.param_count("softmax") == 650
    vector = np.random.default_rng(0).normal(0, 1, MLP_PARAMS).astype(np.float32)
    fl.load_flat(model, vector)
    out = fl.flatten(model)
    assert out.dtype == np.float32 and np.array_equal(out, vector)
    # arch order: the first block is fc1.weight row-major
    assert np.array_equal(model.state_dict()["fc1.weight"].numpy().ravel(), vector[: 32 * 64])
    with pytest.raises(ValueError):
        fl.load_flat(model, vector[:-1])
    with pytest.raises(ValueError):
        fl.make_model("cnn")


def test_initial_params_deterministic_per_seed() -> None:
    a, b, c = fl.initial_params("mlp", 3), fl.initial_params("mlp", 3), fl.initial_params("mlp", 4)
    assert a.dtype == np.float32 and a.shape == (MLP_PARAMS,)
    assert np.array_equal(a, b) and not np.array_equal(a, c)


# --------------------------------------------------------------------------- training


def test_training_improves_accuracy_on_a_shard(data: fl.FLData) -> None:
    X, y = data.clients[0]
    start = fl.initial_params("mlp", 0)
    trained = fl.train_local(start, X, y, epochs=10, lr=0.1, batch_size=16, seed=1)
    assert trained.dtype == np.float32 and trained.shape == start.shape
    before, after = fl.evaluate(start, X, y), fl.evaluate(trained, X, y)
    assert after > before + 0.3 and after > 0.8
    again = fl.train_local(start, X, y, epochs=10, lr=0.1, batch_size=16, seed=1)
    assert np.array_equal(trained, again)  # deterministic given the seed


def test_softmax_model_trains(data: fl.FLData) -> None:
    X, y = data.clients[1]
    start = fl.initial_params("softmax", 0)
    trained = fl.train_local(start, X, y, 5, 0.1, 16, 0, kind="softmax")
    assert trained.shape == (650,)
    assert fl.evaluate(trained, X, y, "softmax") > fl.evaluate(start, X, y, "softmax")


# --------------------------------------------------------------------------- behaviours


def _context(data: fl.FLData, round_: int = 2) -> fl.RoundContext:
    previous = fl.initial_params("mlp", 0)
    X0, y0 = data.clients[0]
    current = fl.train_local(previous, X0, y0, 1, 0.1, 32, 7)
    honest = np.stack(
        [
            fl.train_local(current, X, y, 1, 0.1, 32, k) - current
            for k, (X, y) in enumerate(data.clients[1:4])
        ]
    ).astype(np.float32)
    X, y = data.clients[4]
    return fl.RoundContext(
        round=round_,
        global_params=current,
        previous_global=previous if round_ > 1 else None,
        X=X,
        y=y,
        seed=11,
        train=fl.TrainConfig(epochs=1),
        honest_updates=honest,
        n_clients=10,
        n_malicious=3,
    )


@pytest.mark.parametrize("name", fl.BEHAVIOURS)
def test_every_behaviour_submits_a_valid_vector(data: fl.FLData, name: str) -> None:
    ctx = _context(data)
    out = fl.make_behaviour(name).submit(ctx)
    assert out.dtype == np.float32 and out.shape == (MLP_PARAMS,)
    assert np.isfinite(out).all() and np.abs(out).max() < 16.0
    assert np.array_equal(out, fl.make_behaviour(name).submit(ctx))  # seeded


def test_outputs_clipped_inside_the_rollup_bound(data: fl.FLData) -> None:
    ctx = _context(data)
    huge = np.full(MLP_PARAMS, 15.9, dtype=np.float32)
    near_edge = fl.RoundContext(2, huge, huge - 1, ctx.X, ctx.y, 3, ctx.train)
    for name in ("sign_flip", "gaussian", "delta_replay", "disguised_free_rider"):
        out = fl.make_behaviour(name).submit(near_edge)
        assert np.abs(out).max() <= fl.CLIP < 16.0
    assert np.abs(fl.clip(np.array([np.nan, np.inf, -np.inf, 99.0]))).max() <= fl.CLIP


def test_unknown_behaviour_rejected() -> None:
    with pytest.raises(ValueError):
        fl.make_behaviour("nice_try")


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_sign_flip_is_a_scaled_reversed_honest_update(data: fl.FLData) -> None:
    ctx = _context(data)
    g = ctx.global_params.astype(np.float64)
    honest = fl.make_behaviour("honest").submit(ctx) - g
    flipped = fl.make_behaviour("sign_flip").submit(ctx) - g
    assert _cos(honest, flipped) < -0.999
    assert np.linalg.norm(flipped) == pytest.approx(3 * np.linalg.norm(honest), rel=1e-3)


def test_free_riders_and_replay(data: fl.FLData) -> None:
    ctx = _context(data)
    g = ctx.global_params
    assert np.array_equal(fl.make_behaviour("free_rider").submit(ctx), g)
    replay = fl.make_behaviour("delta_replay").submit(ctx).astype(np.float64)
    assert ctx.previous_global is not None
    step = g.astype(np.float64) - ctx.previous_global
    assert np.allclose(replay - g, step, atol=1e-6)
    first = _context(data, round_=1)
    assert np.array_equal(fl.make_behaviour("delta_replay").submit(first), first.global_params)


def test_disguised_free_rider_noise_decays_with_the_round(data: fl.FLData) -> None:
    ctx = _context(data)
    rider = fl.make_behaviour("disguised_free_rider")
    norms = []
    for r in (1, 4, 16):
        c = fl.RoundContext(r, ctx.global_params, None, ctx.X, ctx.y, 5, ctx.train)
        norms.append(float(np.linalg.norm(rider.submit(c) - ctx.global_params)))
    expected = 0.01 * np.sqrt(MLP_PARAMS)
    assert norms[0] == pytest.approx(expected, rel=0.1)
    assert norms[1] == pytest.approx(norms[0] / 2, rel=0.1)
    assert norms[2] == pytest.approx(norms[0] / 4, rel=0.1)


def test_label_flip_trains_on_reversed_labels(data: fl.FLData) -> None:
    ctx = _context(data)
    flipped = fl.make_behaviour("label_flip").submit(ctx)
    assert np.array_equal(flipped, ctx.honest_params(labels=(9 - ctx.y).astype(np.int64)))
    assert not np.array_equal(flipped, fl.make_behaviour("honest").submit(ctx))


def test_alie_and_ipm_follow_their_formulas(data: fl.FLData) -> None:
    assert fl.alie_z(20, 6) == pytest.approx(0.6745, abs=1e-3)  # Phi^-1(15/20)
    ctx = _context(data)
    ups = ctx.known_honest_updates().astype(np.float64)
    g = ctx.global_params.astype(np.float64)
    alie = fl.Alie(jitter=0.0).submit(ctx) - g
    z = fl.alie_z(10, 3)
    assert np.allclose(alie, ups.mean(axis=0) - z * ups.std(axis=0), atol=1e-6)
    ipm = fl.Ipm(jitter=0.0).submit(ctx) - g
    assert np.allclose(ipm, -0.5 * ups.mean(axis=0), atol=1e-6)
    # the default jitter keeps colluders distinct, yet tiny next to the update
    jittered = fl.make_behaviour("ipm").submit(ctx) - g
    assert not np.allclose(jittered, ipm, atol=0) and _cos(jittered, ipm) > 0.99


# --------------------------------------------------------------------------- simulation


def test_short_simulation_rollup_beats_fedavg_and_slashes_cheaters(data: fl.FLData) -> None:
    who = ["sign_flip", "sign_flip", "free_rider"] + ["honest"] * 7
    rollup = fl.simulate(data, who, rounds=5, aggregator="rollup", seed=0)
    fedavg = fl.simulate(data, who, rounds=5, aggregator="fedavg", seed=0)
    assert len(rollup.accuracies) == len(rollup.decisions) == 5
    assert fedavg.decisions == [{} for _ in range(5)]
    assert rollup.final_accuracy > fedavg.final_accuracy + 0.2
    assert rollup.final_accuracy > 0.6
    for k in (0, 1):  # one round's suspicion excludes; repeated strikes slash
        assert rollup.decisions[0][k] == "opposed"
        hit = rollup.first_slash(k)
        assert hit is not None and hit[1] == "repeated_opposed" and 3 <= hit[0] <= 5
    assert rollup.first_slash(2) == (1, "copy")  # evidence: at once
    assert rollup.honest_slashes() == []
    assert set(rollup.decisions[0]) == set(range(10))
    assert set(rollup.decisions[3]) == set(range(3, 10))  # the slashed are out of the job
    assert all(
        reason in SLASHING_REASONS | EXCLUDING_REASONS | {"kept"}
        for reason in rollup.decisions[0].values()
    )


def test_simulation_is_reproducible_and_ejects(data: fl.FLData) -> None:
    who = ["free_rider"] + ["honest"] * 9
    a = fl.simulate(data, who, rounds=2, seed=3, eject_slashed=True)
    b = fl.simulate(data, who, rounds=2, seed=3, eject_slashed=True)
    assert a.accuracies == b.accuracies and a.decisions == b.decisions
    assert a.decisions[0][0] == "copy" and 0 not in a.decisions[1]
    with pytest.raises(ValueError):
        fl.simulate(data, who[:-1], rounds=1)


def test_honest_fedavg_learns(data: fl.FLData) -> None:
    result = fl.simulate(data, ["honest"] * 10, rounds=8, aggregator="fedavg", seed=0)
    assert result.final_accuracy > result.initial_accuracy + 0.5
    assert result.final_accuracy > 0.8


def test_delta_replay_caught_as_copy_then_replay(data: fl.FLData) -> None:
    who = ["delta_replay"] + ["honest"] * 9
    result = fl.simulate(data, who, rounds=3, seed=0, eject_slashed=False)
    assert [d[0] for d in result.decisions] == ["copy", "delta_replay", "delta_replay"]
    assert result.honest_slashes() == []
