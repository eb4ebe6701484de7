"""A big bank's rows streamed a chunk at a time (`model.FrameRows`, `Trainer.stream`) instead of held as features.

`CHUNK_ROWS` and `HELD_FEATURES_BYTES` are shrunk so that a few hundred rows
take the paths a bank of millions takes.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.config import parse_run_config
from fedcredit.core.loading import load_csv
from fedcredit.core.partition import stratified_split
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
from fedcredit.federation import client

S = LENDING_CLUB
SPEC = mdl.ModelSpec(
    numeric=S.numeric, categorical=S.categorical, hidden_units=(16,), dropout=0.0, l2=1e-4, learning_rate=1e-3, seed=42
)


@pytest.fixture(scope="module")
def data():
    pool, test = stratified_split(load_csv("", S), "Class", 0.2, 42)
    return pool, test, preprocessing_from_stats(compute_stats(pool, S), 10)


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(mdl, "CHUNK_ROWS", 100)
    monkeypatch.setattr(mdl, "HELD_FEATURES_BYTES", 0)


def _trainer(prep) -> mdl.Trainer:
    return mdl.Trainer(mdl.build_model(prep, SPEC), SPEC.learning_rate)


def test_each_epoch_streams_every_row_once_in_its_own_order(data, small_chunks):
    pool, _, prep = data
    rows = mdl.FrameRows(pool.head(450))
    trainer = _trainer(prep)
    held = trainer.features(mdl.to_inputs(rows.frame, trainer.model)).numpy()
    labels = rows.frame["Class"].to_numpy()
    stream = trainer.stream(rows, labels, 64, seed=3)
    epochs = []
    for _ in range(2):
        batches = list(stream)
        assert [len(y) for _, y in batches] == [64] * 7 + [2]  # 450 rows; chunks of 64 rows, not 100
        features = np.concatenate([f.numpy() for f, _ in batches])
        found = np.concatenate([y.numpy() for _, y in batches])
        # Each streamed row is one of the bank's rows, with its own label, and each row comes once.
        order = [int(np.flatnonzero(np.all(held == f, axis=1))[0]) for f in features]
        assert sorted(order) == list(range(450))
        assert np.array_equal(found, labels[order].astype(np.float32))
        epochs.append(order)
    assert epochs[0] != epochs[1]
    assert [list(trainer.stream(rows, labels, 64, seed=3))[0][1].numpy().tolist()] == [
        labels[epochs[0][:64]].astype(np.float32).tolist()
    ]


def test_streamed_training_runs_every_epoch_reproducibly_and_learns(data, small_chunks):
    pool, test, prep = data
    trainer = _trainer(prep)
    w0 = trainer.model.get_weights()
    options = mdl.FitOptions(epochs=3, batch_size=64, seed=5)
    labels = pool["Class"].to_numpy()
    trainer.fit(w0, mdl.FrameRows(pool), labels, options)
    assert int(trainer.head.optimizer.iterations.numpy()) == 3 * -(-len(pool) // 64)
    first = trainer.model.get_weights()
    trainer.fit(w0, mdl.FrameRows(pool), labels, options)
    assert all(np.array_equal(a, b) for a, b in zip(first, trainer.model.get_weights(), strict=True))
    weighted = dataclasses.replace(options, positive_weight=5.0)
    trainer.fit(w0, mdl.FrameRows(pool), labels, weighted)
    assert not all(np.array_equal(a, b) for a, b in zip(first, trainer.model.get_weights(), strict=True))
    trainer.fit(w0, mdl.FrameRows(pool), labels, options)
    assert metrics.exact_auc(mdl.score(trainer.model, test), test["Class"].to_numpy()) > 0.68


def test_chunked_scores_and_features_are_those_of_the_whole_frame(data, monkeypatch):
    pool, _, prep = data
    trainer = _trainer(prep)
    inputs = mdl.to_inputs(pool, trainer.model)
    whole = mdl.predict(trainer.model, inputs)
    assert np.array_equal(mdl.score(trainer.model, pool), whole)  # the same chunks as `predict`'s
    monkeypatch.setattr(mdl, "CHUNK_ROWS", 333)
    # Other chunk sizes change only the matrix kernels' rounding.
    assert np.allclose(mdl.score(trainer.model, pool), whole, rtol=0, atol=1e-6)
    assert np.array_equal(trainer.features(mdl.FrameRows(pool)), trainer.features(inputs))


def test_a_bank_too_big_to_hold_its_features_streams_them_and_reports_the_same_evaluation(tmp_path, raw_frame):
    path = tmp_path / "bank.csv"
    raw_frame.sample(900, random_state=2).to_csv(path, index=False)
    cfg = parse_run_config({"local-epochs": 1, "hidden-units": "8", "batch-size": 32})
    node = {"data-path": str(path), "bank-name": "big", "cache-dir": str(tmp_path / "cache")}
    prep = preprocessing_from_stats(client.statistics(cfg, node)[3], 10).to_json()
    key, model, trainer = client._model(cfg, prep)
    w0 = model.get_weights()
    held = client.evaluate(cfg, node, w0, prep)
    assert (key, "big", "val") in client._INPUTS
    client._INPUTS.clear()
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(mdl, "HELD_FEATURES_BYTES", 0)
        streamed = client.evaluate(cfg, node, w0, prep)
        weights, loss, rows = client.train(cfg, node, w0, prep, 1)
        assert not client._INPUTS  # nothing of the bank's rows kept between messages
    assert streamed == held
    assert rows == 900 - round(0.2 * 900) and np.isfinite(loss)
    assert not all(np.array_equal(a, b) for a, b in zip(w0, weights, strict=True))
