"""The Keras model: built from merged statistics, scores raw columns, trains reproducibly."""

from __future__ import annotations

import dataclasses
import io
import zipfile

import h5py
import keras
import numpy as np
import pandas as pd
import pytest

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.config import parse_run_config
from fedcredit.core.loading import load_csv
from fedcredit.core.partition import partition, stratified_split
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats

S = LENDING_CLUB


@pytest.fixture(scope="module")
def split():
    frame = load_csv("", S)
    pool, test = stratified_split(frame, "Class", 0.2, 42)
    return pool, test


@pytest.fixture(scope="module")
def prep(split):
    return preprocessing_from_stats(compute_stats(split[0], S), 10)


SPEC = mdl.ModelSpec(
    numeric=S.numeric, categorical=S.categorical, hidden_units=(16,), dropout=0.2, l2=1e-4, learning_rate=1e-3, seed=42
)


def _build(prep, seed=42):
    return mdl.build_model(prep, dataclasses.replace(SPEC, seed=seed))


def _trainer(model):
    return mdl.Trainer(model, SPEC.learning_rate)


def _options(epochs, seed, proximal_mu=0.0):
    return mdl.FitOptions(epochs=epochs, batch_size=64, positive_weight=1.0, seed=seed, proximal_mu=proximal_mu)


def test_spec_follows_the_run_config_and_schema():
    cfg = parse_run_config({"hidden-units": "8,4", "dropout": 0.1, "l2": 0.0, "learning-rate": 0.01, "seed": 3})
    spec = mdl.ModelSpec.of(cfg, S)
    assert spec == mdl.ModelSpec(
        S.numeric, S.categorical, (8, 4), 0.1, 0.0, 0.01, 3, order=S.order, monotone=tuple(S.directions.items())
    )
    plain = mdl.ModelSpec.of(parse_run_config({"monotone-constraints": False}), S)
    assert plain.order == () and plain.monotone == ()


def test_identical_statistics_give_identical_models(prep):
    a, b = _build(prep), _build(prep)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_training_on_cached_features_equals_training_on_raw_inputs(split, prep):
    pool, _ = split
    bank = pool.head(500)
    a, b = _build(prep), _build(prep)
    ta, tb = _trainer(a), _trainer(b)
    w0 = a.get_weights()
    raw = mdl.to_inputs(bank, a)
    ta.fit(w0, raw, bank["Class"].to_numpy(), _options(2, seed=4))
    tb.fit(w0, tb.features(raw), bank["Class"].to_numpy(), _options(2, seed=4))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_training_learns_the_signal(split, prep):
    """Catches rows and labels going out of step (Keras shuffles mixed numpy/TF inputs apart)."""
    pool, test = split
    m = _build(prep)
    _trainer(m).fit(m.get_weights(), mdl.to_inputs(pool, m), pool["Class"].to_numpy(), _options(4, seed=1))
    assert metrics.exact_auc(mdl.score(m, test), test["Class"].to_numpy()) > 0.68


def test_optimizer_and_random_state_reset_between_messages(split, prep):
    """A bank's result must not depend on what the reused model trained before."""
    pool, _ = split
    banks = partition(pool, "region", 4, 0, "Class", "addr_state")
    a, b = (pool.iloc[bk.rows].head(600) for bk in banks[:2])
    reused = _build(prep)
    trainer = _trainer(reused)
    w0 = reused.get_weights()
    trainer.fit(w0, mdl.to_inputs(a, reused), a["Class"].to_numpy(), _options(2, seed=5))
    trainer.fit(w0, mdl.to_inputs(b, reused), b["Class"].to_numpy(), _options(2, seed=9))
    after_a = reused.get_weights()
    fresh = _build(prep)
    _trainer(fresh).fit(w0, mdl.to_inputs(b, fresh), b["Class"].to_numpy(), _options(2, seed=9))
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(after_a, fresh.get_weights()))
    # Without the reset the optimizer's step count and moments carry over:
    optimizer = trainer.head.optimizer
    assert int(optimizer.iterations.numpy()) > 0
    trainer.reset(9)
    assert int(optimizer.iterations.numpy()) == 0
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


def test_a_reloaded_model_trains_again_exactly_like_the_original(split, prep, tmp_path):
    """Personalisation fine-tunes the saved global model: its Trainer must not depend on the built one."""
    pool, _ = split
    bank = pool.head(600)
    original = _build(prep)
    trainer = _trainer(original)
    inputs, labels = mdl.to_inputs(bank, original), bank["Class"].to_numpy()
    trainer.fit(original.get_weights(), inputs, labels, _options(1, seed=2))  # leaves optimizer state behind
    trained = original.get_weights()
    original.save(tmp_path / "global.keras")
    loaded = mdl.load(str(tmp_path / "global.keras"))
    options = mdl.FitOptions(epochs=2, batch_size=64, positive_weight=3.0, seed=7, proximal_mu=0.1)
    _trainer(loaded).fit(trained, mdl.to_inputs(bank, loaded), labels, options)
    trainer.fit(trained, inputs, labels, options)
    assert any(not np.array_equal(x, y) for x, y in zip(loaded.get_weights(), trained))
    assert all(np.array_equal(x, y) for x, y in zip(loaded.get_weights(), original.get_weights()))


def test_a_model_without_a_features_layer_is_refused():
    inputs = keras.Input(shape=(2,), name="x")
    other = keras.Model(inputs, keras.layers.Dense(1, name="out")(inputs), name="other")
    with pytest.raises(ValueError, match="model 'other' has no layer named 'features'"):
        mdl.Trainer(other, 1e-3)


@pytest.fixture(scope="module")
def saved(prep, tmp_path_factory):
    """A real saved model's bytes (the project's own model, as a run writes it)."""
    path = tmp_path_factory.mktemp("saved") / "model-final.keras"
    _build(prep).save(path)
    return path.read_bytes()


def _flip_middle(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF
    return bytes(damaged)


def _foreign_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", "not a model")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "damage, why",
    [
        (lambda b: b[: len(b) // 2], "not a complete zip archive"),  # an interrupted copy
        (lambda b: b[:-1], "not a complete zip archive"),
        (lambda b: b"", "not a complete zip archive"),
        (_flip_middle, "fails its CRC check"),
        (lambda b: _foreign_zip(), "Keras cannot load it"),
    ],
    ids=["half", "last-byte-cut", "empty", "flipped-byte", "foreign-zip"],
)
def test_a_damaged_model_file_is_named_as_not_a_valid_model_not_as_missing(saved, tmp_path, damage, why):
    path = tmp_path / "model-final.keras"
    path.write_bytes(damage(saved))
    with pytest.raises(mdl.ModelFileError) as err:
        mdl.load(path)
    message = str(err.value)
    assert message.startswith(f"{path} is not a valid Keras model file (") and why in message
    assert "may be truncated or corrupt" in message and "copy it again from the run directory" in message
    assert "not found" not in message.lower() and "does not exist" not in message


def test_a_missing_model_file_is_named_as_missing(tmp_path):
    with pytest.raises(mdl.ModelFileError, match=r"model file .*nope\.keras does not exist") as err:
        mdl.load(tmp_path / "nope.keras")
    assert "valid Keras" not in str(err.value)
    with pytest.raises(mdl.ModelFileError, match="is not a file"):
        mdl.load(tmp_path)
    (tmp_path / "model.h5").write_bytes(b"x")
    with pytest.raises(mdl.ModelFileError, match=r"model\.h5 is not a \.keras file"):
        mdl.load(tmp_path / "model.h5")


def test_saved_model_scores_raw_applicants_with_missing_and_unknown_values(split, prep, tmp_path):
    _, test = split
    m = _build(prep)
    path = tmp_path / "m.keras"
    m.save(path)
    loaded = mdl.load(str(path))
    applicants = test.drop(columns=["Class", "addr_state"]).head(5).copy()
    applicants.loc[applicants.index[0], "annual_inc"] = np.nan
    applicants.loc[applicants.index[1], "sub_grade"] = "Z9"  # never seen: unknown bucket
    applicants = applicants.astype({c: "str" for c in S.categorical})
    scores = mdl.score(loaded, applicants)
    assert scores.shape == (5,) and np.all((scores > 0) & (scores < 1))
    assert np.allclose(scores, mdl.score(m, applicants), atol=1e-6)


def test_missing_numeric_is_scored_as_the_global_mean(split, prep):
    _, test = split
    m = _build(prep)
    row = test.head(1).copy()
    at_mean = row.copy()
    at_mean["annual_inc"] = prep.mean["annual_inc"]
    missing = row.copy()
    missing["annual_inc"] = np.nan
    assert mdl.score(m, missing)[0] == pytest.approx(mdl.score(m, at_mean)[0], abs=1e-6)


def test_scoring_names_missing_columns(prep):
    m = _build(prep)
    with pytest.raises(KeyError, match="int_rate"):
        mdl.score(m, pd.DataFrame({"term": ["term_36"]}))


def _saved_contents(path):
    """The saved file's architecture and weight names, without its save date."""
    with zipfile.ZipFile(path) as archive:
        config = archive.read("config.json")
        with h5py.File(io.BytesIO(archive.read("model.weights.h5"))) as weights:
            names = []
            weights.visit(names.append)
    return config, names


def test_fedprox_proximal_term_keeps_weights_near_the_global_ones(split, prep, tmp_path):
    pool, _ = split
    bank = pool.head(800)
    m = _build(prep)
    m.save(tmp_path / "untrained.keras")
    trainer = _trainer(m)
    w0 = m.get_weights()
    inputs, labels = mdl.to_inputs(bank, m), bank["Class"].to_numpy()
    distance = {}
    for mu in (0.0, 0.1, 10.0):
        trainer.fit(w0, inputs, labels, _options(2, seed=3, proximal_mu=mu))
        distance[mu] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(m.get_weights(), w0))
    assert distance[0.0] > distance[0.1] > distance[10.0] > 0
    # The training state (proximal anchor, optimizer) is not part of the model's weights or its saved file.
    assert len(m.get_weights()) == len(w0)
    m.save(tmp_path / "trained.keras")
    assert _saved_contents(tmp_path / "trained.keras") == _saved_contents(tmp_path / "untrained.keras")
