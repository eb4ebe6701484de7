"""The Keras model: built from merged statistics, scores raw columns, trains reproducibly."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from fedcredit.core import metrics
from fedcredit.core import model as mdl
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


def _build(prep, seed=42):
    return mdl.build_model(prep, S.numeric, S.categorical, (16,), 0.2, 1e-4, 1e-3, seed)


def test_identical_statistics_give_identical_models(prep):
    a, b = _build(prep), _build(prep)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_training_on_cached_features_equals_training_on_raw_inputs(split, prep):
    pool, _ = split
    bank = pool.head(500)
    a, b = _build(prep), _build(prep)
    w0 = a.get_weights()
    raw = mdl.to_inputs(bank, a)
    mdl.fit(a, w0, raw, bank["Class"].to_numpy(), 2, 64, 1.0, seed=4)
    mdl.fit(b, w0, mdl.features(b, raw), bank["Class"].to_numpy(), 2, 64, 1.0, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))


def test_training_learns_the_signal(split, prep):
    """Catches rows and labels going out of step (Keras shuffles mixed numpy/TF inputs apart)."""
    pool, test = split
    m = _build(prep)
    mdl.fit(m, m.get_weights(), mdl.to_inputs(pool, m), pool["Class"].to_numpy(), 4, 64, 1.0, seed=1)
    assert metrics.exact_auc(mdl.score(m, test), test["Class"].to_numpy()) > 0.68


def test_optimizer_and_random_state_reset_between_messages(split, prep):
    """A bank's result must not depend on what the reused model trained before."""
    pool, _ = split
    banks = partition(pool, "region", 4, 0, "Class", "addr_state")
    a, b = (pool.iloc[bk.rows].head(600) for bk in banks[:2])
    reused = _build(prep)
    w0 = reused.get_weights()
    mdl.fit(reused, w0, mdl.to_inputs(a, reused), a["Class"].to_numpy(), 2, 64, 1.0, seed=5)
    mdl.fit(reused, w0, mdl.to_inputs(b, reused), b["Class"].to_numpy(), 2, 64, 1.0, seed=9)
    after_a = reused.get_weights()
    fresh = _build(prep)
    mdl.fit(fresh, w0, mdl.to_inputs(b, fresh), b["Class"].to_numpy(), 2, 64, 1.0, seed=9)
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(after_a, fresh.get_weights()))
    # Without the reset the optimizer's step count and moments carry over:
    optimizer = mdl._training(reused).head.optimizer
    assert int(optimizer.iterations.numpy()) > 0
    mdl.reset_training_state(reused, 9)
    assert int(optimizer.iterations.numpy()) == 0
    assert float(optimizer.learning_rate.numpy()) == pytest.approx(1e-3)


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


def test_fedprox_proximal_term_keeps_weights_near_the_global_ones(split, prep):
    pool, _ = split
    bank = pool.head(800)
    m = _build(prep)
    w0 = m.get_weights()
    inputs, labels = mdl.to_inputs(bank, m), bank["Class"].to_numpy()
    distance = {}
    for mu in (0.0, 0.1, 10.0):
        mdl.fit(m, w0, inputs, labels, 2, 64, 1.0, seed=3, proximal_mu=mu)
        distance[mu] = sum(float(np.sum((a - b) ** 2)) for a, b in zip(m.get_weights(), w0))
    assert distance[0.0] > distance[0.1] > distance[10.0] > 0
    # The proximal state is not part of the model's weights or its saved file.
    assert len(m.get_weights()) == len(w0)
