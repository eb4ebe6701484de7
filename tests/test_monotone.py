"""Monotone by construction: the model's PD moves only the schema's way, for any weights; the check proves it."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import pandas as pd
import pytest

from fedcredit.core import model as mdl
from fedcredit.core.config import parse_run_config
from fedcredit.core.loading import load_csv
from fedcredit.core.partition import stratified_split
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
from fedcredit.risk import explain, monotone
from fedcredit.risk.monotone_figures import plot_partial_dependence

S = LENDING_CLUB


@pytest.fixture(scope="module")
def split():
    pool, test = stratified_split(load_csv("", S), "Class", 0.2, 42)
    return pool, test


@pytest.fixture(scope="module")
def prep(split):
    return preprocessing_from_stats(compute_stats(split[0], S), 10)


@pytest.fixture(scope="module")
def rows(split):
    return split[1][list(S.features)].head(60).reset_index(drop=True)


SPEC = mdl.ModelSpec.of(parse_run_config({"hidden-units": "16,8", "seed": 3}), S)


def _noisy(weights: list[np.ndarray], seed: int, scale: float) -> list[np.ndarray]:
    """Weights as a DP-noised aggregate could leave them: many of every layer's entries turned negative."""
    rng = np.random.default_rng(seed)
    return [(w + rng.normal(0.0, scale, w.shape)).astype(w.dtype) for w in weights]


def _violations(model, rows) -> dict[str, int]:
    table = monotone.check_monotone(model, rows, S, points=15)
    return dict(zip(table["feature"], table["violations"], strict=True))


def test_the_model_holds_every_declared_constraint_and_order(prep):
    model = mdl.build_model(prep, SPEC)
    assert mdl.monotone_directions(model) == S.directions
    assert mdl.ordered_levels(model) == {c: list(v) for c, v in S.orders.items()}
    dense = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == ["hidden_0", "hidden_1", "pd"]
    assert all(isinstance(model.get_layer(name), mdl.MonotoneDense) for name in dense)
    plain = mdl.build_model(prep, dataclasses.replace(SPEC, order=(), monotone=()))
    assert mdl.monotone_directions(plain) == {} and not any(isinstance(x, mdl.MonotoneDense) for x in plain.layers)


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_pd_is_monotone_for_random_weights(prep, rows, seed):
    """A property of the construction, not of training: any initialisation, and weights far from it."""
    model = mdl.build_model(prep, dataclasses.replace(SPEC, seed=seed))
    assert set(_violations(model, rows).values()) == {0}
    model.set_weights(_noisy(model.get_weights(), seed, scale=1.0))  # large random weights of both signs
    assert set(_violations(model, rows).values()) == {0}


def test_weights_turned_negative_by_noise_still_give_a_monotone_model_and_without_the_abs_they_would_not(
    prep, rows, monkeypatch
):
    """As an aggregate with DP noise could: the absolute value is taken on every call, so nothing needs projecting."""
    model = mdl.build_model(prep, SPEC)
    noisy = _noisy(model.get_weights(), 7, scale=0.5)
    hidden = model.get_layer("hidden_1")
    model.set_weights(noisy)
    assert (hidden.kernel.numpy() < 0).mean() > 0.3  # the stored weights violate "non-negative" ...
    assert set(_violations(model, rows).values()) == {0}  # ... and the model is still monotone
    # The same weights computed as they are stored (a plain Dense layer) break monotonicity: the test can fail.
    monkeypatch.setattr(mdl.MonotoneDense, "effective_kernel", lambda self: self.kernel)
    broken = mdl.build_model(prep, SPEC)
    broken.set_weights(noisy)
    assert sum(_violations(broken, rows).values()) > 0


def test_a_saved_monotone_model_loads_with_its_constraints_and_scores_the_same(prep, rows, tmp_path):
    model = mdl.build_model(prep, SPEC)
    model.set_weights(_noisy(model.get_weights(), 3, scale=0.3))
    model.save(tmp_path / "m.keras")
    loaded = mdl.load(tmp_path / "m.keras")
    assert mdl.monotone_directions(loaded) == S.directions
    np.testing.assert_array_equal(mdl.score(loaded, rows), mdl.score(model, rows))
    assert set(_violations(loaded, rows).values()) == {0}


def test_fine_tuning_the_head_or_all_layers_keeps_the_model_monotone(split, prep, rows):
    """Personalisation trains the output layer (or every layer) of the same construction."""
    pool, _ = split
    bank = pool.head(400)
    for layers in ("head", "all"):
        model = mdl.build_model(prep, SPEC)
        trainer = mdl.Trainer(model, 0.05, layers=layers)  # a large rate: weights move far, signs flip
        trainer.fit(
            model.get_weights(), mdl.to_inputs(bank, model), bank["Class"].to_numpy(), mdl.FitOptions(3, 32, seed=1)
        )
        assert set(_violations(model, rows).values()) == {0}, layers


def test_ordered_levels_too_rare_to_learn_score_as_their_lower_neighbour_and_unknown_values_score(prep, rows):
    model = mdl.build_model(prep, SPEC)
    model.set_weights(_noisy(model.get_weights(), 5, scale=0.3))
    kept = set(prep.vocabulary["sub_grade"])
    rare = [g for g in S.orders["sub_grade"] if g not in kept]
    assert rare, "the built-in data has sub-grades too rare for the vocabulary (G3..G5)"
    levels = list(S.orders["sub_grade"])
    row = rows.head(1)
    for level in rare:
        lower = next(g for g in reversed(levels[: levels.index(level)]) if g in kept)
        assert mdl.score(model, row.assign(sub_grade=level))[0] == mdl.score(model, row.assign(sub_grade=lower))[0]
    unknown = mdl.score(model, pd.concat([row.assign(sub_grade="Z9"), row.assign(sub_grade="")]))
    assert np.isfinite(unknown).all() and unknown[0] == unknown[1]


def test_the_check_reports_every_declared_constraint_and_finds_violations_of_an_unconstrained_model(prep, split, rows):
    pool, _ = split
    plain = mdl.build_model(prep, dataclasses.replace(SPEC, order=(), monotone=()))
    mdl.Trainer(plain, 0.01).fit(
        plain.get_weights(), mdl.to_inputs(pool, plain), pool["Class"].to_numpy(), mdl.FitOptions(4, 64, seed=2)
    )
    table = monotone.check_monotone(plain, rows, S, points=15)
    assert table.columns.tolist() == monotone.CHECK_COLUMNS
    assert table["feature"].tolist() == list(S.directions)
    assert (table["rows_checked"] == len(rows) + 1).all()  # the typical row, then every real one
    assert table.set_index("feature").loc["sub_grade", "grid_points"] == len(S.orders["sub_grade"])
    assert table.set_index("feature").loc["annual_inc", "direction"] == "decreasing"
    assert table["violations"].sum() > 0 and table["largest_violation"].max() > 1e-4
    verdict = monotone.summary(table)
    assert verdict["constraints"] == len(S.directions) and verdict["held"] < verdict["constraints"]


def test_partial_dependence_gives_the_strongest_features_curves_and_their_figure(prep, rows, tmp_path):
    model = mdl.build_model(prep, SPEC)
    model.set_weights(_noisy(model.get_weights(), 2, scale=0.3))
    table = monotone.partial_dependence(model, rows, top=3, schema=S)
    features = list(dict.fromkeys(table["feature"]))
    assert len(features) == 3
    swing = table.groupby("feature")["pd"].agg(np.ptp)
    everything = monotone.partial_dependence(model, rows, top=100, schema=S).groupby("feature")["pd"].agg(np.ptp)
    assert swing.min() >= everything.drop(features).max()  # the three widest swings
    refs = explain.references(model, S)
    for col in features:
        curve = table[table["feature"] == col]
        assert curve["position"].tolist() == list(range(len(refs.grid(col))))
        sign = refs.direction.get(col)
        if sign:  # a mean of monotone curves is monotone
            assert (sign * np.diff(curve["pd"].to_numpy()) >= -1e-6).all()
    png = plot_partial_dependence(table, tmp_path, refs.direction)
    assert png.name == "partial_dependence.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "variant",
    [
        {},  # the default config, shortened
        {"privacy.mode": "client-fixed", "privacy.noise-multiplier": 2.0},  # each bank's update heavily noised
        {"strategy.name": "fedadam", "strategy.eta": 0.1},  # server optimiser steps, not a mean of the banks'
        {"strategy.name": "fedmedian"},
    ],
    ids=["default", "client-dp", "fedadam", "fedmedian"],
)
def test_a_federation_trains_models_monotone_in_every_declared_feature(tmp_path, variant):
    """The released, best and kept (personalised) models of a short in-process run: dense grid and real rows."""
    from fedcredit.core.banks import holdout_set
    from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
    from fedcredit.federation import server

    config = {
        "num-server-rounds": 2,
        "local-epochs": 1,
        "personalize.epochs": 1,
        "personalize.layers": "all",
        "output-dir": str(tmp_path),
        **variant,
    }
    with serverapp_identity():
        history = server.run(InProcessGrid(config, 2), config, "mono", APP_DIR)
    assert history.status == "completed"
    run_dir = next(tmp_path.iterdir())
    models = [run_dir / "model-final.keras", run_dir / "model-best.keras", *sorted(run_dir.glob("banks/*/*.keras"))]
    assert len(models) >= 3
    real = holdout_set(parse_run_config(config))[list(S.features)].head(200)
    for path in models:
        model = mdl.load(path)
        assert mdl.monotone_directions(model) == S.directions, path.name
        table = monotone.check_monotone(model, real, S)
        assert table["feature"].tolist() == list(S.directions)
        assert (table["grid_points"] >= 2).all() and (table["rows_checked"] == len(real) + 1).all()
        assert table["violations"].sum() == 0, table.to_string()
