"""privacy.dp-sgd = true: per-example clipping, the noise's scale, the accounting and the budget, end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import dp_accounting
import keras
import numpy as np
import pytest
import tensorflow as tf
from dp_accounting import rdp

from fedcredit.core.config import ConfigError, parse_run_config
from fedcredit.core.dpsgd import DpSgd, DpSgdLoop, clipped_sum, per_example_gradients
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import accounting, server

DP = {
    "partitioning": "iid",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "hidden-units": "8",
    "histogram-bins": 100,
    "personalize.epochs": 0,
    "batch-size": 128,
    "seed": 7,
    "privacy.dp-sgd": True,
    "privacy.example-noise-multiplier": 1.1,
}


def _linear(inputs: int, bias: bool = True) -> keras.Model:
    x = keras.Input((inputs,))
    return keras.Model(x, keras.layers.Dense(1, activation="sigmoid", use_bias=bias)(x))


def test_each_rows_gradient_is_its_own_and_is_clipped_to_the_norm():
    # Logistic regression: row i's gradient of its log-loss is (p_i - y_i) * [x_i, 1], by hand.
    rng = np.random.default_rng(0)
    x = rng.normal(scale=3.0, size=(16, 4)).astype(np.float32)
    y = (rng.random(16) < 0.5).astype(np.float32)
    model = _linear(4)
    model.set_weights([rng.normal(size=(4, 1)).astype(np.float32), np.array([0.3], np.float32)])  # whatever ran before
    grads, _ = per_example_gradients(model, tf.constant(x), tf.constant(y), tf.ones(16), model.trainable_variables)
    p = np.asarray(model(x)).ravel()
    by_hand = np.concatenate([(p - y)[:, None] * x, (p - y)[:, None]], axis=1)
    ours = np.concatenate([grads[0].numpy()[:, :, 0], grads[1].numpy()], axis=1)
    np.testing.assert_allclose(ours, by_hand, rtol=1e-5, atol=1e-6)
    clip = 0.5
    summed, norms = clipped_sum(grads, clip)
    np.testing.assert_allclose(norms.numpy(), np.linalg.norm(by_hand, axis=1), rtol=1e-5)
    assert (np.linalg.norm(by_hand, axis=1) > clip).sum() >= 8  # most rows are really clipped
    factor = np.minimum(1.0, clip / np.linalg.norm(by_hand, axis=1))
    clipped = by_hand * factor[:, None]
    assert np.linalg.norm(clipped, axis=1).max() <= clip * (1 + 1e-5)
    np.testing.assert_allclose(
        np.concatenate([summed[0].numpy()[:, 0], summed[1].numpy()]), clipped.sum(axis=0), rtol=1e-5, atol=1e-6
    )


def test_the_noise_has_std_multiplier_times_norm_divided_by_the_expected_batch():
    # All-zero inputs and no bias: every row's gradient is 0, so one step's update is pure noise.
    dims, rows, clip, sigma = 40_000, 50, 2.0, 1.5
    model = _linear(dims, bias=False)
    model.compile(optimizer=keras.optimizers.SGD(1.0), loss="binary_crossentropy")
    model.optimizer.build(model.trainable_variables)
    before = model.get_weights()[0].copy()
    loop = DpSgdLoop(model, lambda: tf.constant(0.0))
    features = tf.zeros((rows, dims))
    # batch-size = rows: q = 1, one step, every row in the batch, expected batch size = rows.
    loop.fit(features, np.ones(rows), 1, rows, DpSgd(clip, sigma), 1.0, seed=3)
    update = (model.get_weights()[0] - before).ravel() * rows  # SGD(1): minus the noise / expected batch size
    assert abs(update.mean()) < 0.05 * sigma * clip
    # 40,000 coordinates: the sample std is within 1 % of the true one with overwhelming probability.
    assert np.std(update) == pytest.approx(sigma * clip, rel=0.05)


def test_the_reported_epsilon_is_dp_accounting_on_the_same_events():
    cfg = parse_run_config({"privacy.dp-sgd": True, "personalize.epochs": 0, "batch-size": 64, "local-epochs": 3})
    rows, rounds = 3000, 5
    event = dp_accounting.SelfComposedDpEvent(
        dp_accounting.PoissonSampledDpEvent(64 / 3000, dp_accounting.GaussianDpEvent(1.0)), rounds * 3 * 47
    )
    direct = rdp.RdpAccountant()
    direct.compose(event)
    delta = min(1e-5, 1 / (10 * rows))
    assert accounting.bank_epsilon(cfg, rows, rounds) == pytest.approx(direct.get_epsilon(delta), rel=1e-12)
    # The smaller bank spends more; the summary reports the largest, with each bank's own delta.
    summary = accounting.summary(cfg, {"big": 30_000, "small": rows}, rounds)
    assert summary["bank"] == "small" and summary["epsilon"] == pytest.approx(direct.get_epsilon(delta), abs=1e-6)
    assert summary["banks"]["big"]["delta"] == 1 / 300_000 and summary["banks"]["small"]["delta"] == delta == 1e-5
    assert accounting.bank_epsilon(cfg, rows, 0) == 0.0
    assert accounting.bank_epsilon(cfg, rows, 2) < accounting.bank_epsilon(cfg, rows, 3)


def test_dp_sgd_refuses_personalisation_and_runs_with_secure_mode():
    with pytest.raises(ConfigError, match="personalize.epochs = 0"):
        parse_run_config({"privacy.dp-sgd": True})
    cfg = parse_run_config({"privacy.dp-sgd": True, "personalize.epochs": 0, "privacy.secure-aggregation": True})
    assert cfg.privacy_secure_aggregation


def test_a_budget_the_run_would_exceed_stops_it_before_round_1(tmp_path):
    cfg = parse_run_config({**DP, "privacy.target-epsilon": 0.5})
    with pytest.raises(ConfigError, match=r"would reach epsilon .* beyond privacy.target-epsilon = 0.5"):
        accounting.check_budget(cfg, {"a": 2000, "b": 500})
    accounting.check_budget(dataclasses.replace(cfg, privacy_target_epsilon=0.0), {"a": 500})  # no budget

    config = {**DP, "privacy.target-epsilon": 0.5, "output-dir": str(tmp_path)}
    with serverapp_identity(), pytest.raises(ConfigError, match="beyond privacy.target-epsilon = 0.5"):
        server.run(InProcessGrid(config, 2), config, "over-budget", APP_DIR)
    history = json.loads(next(tmp_path.glob("*/history.json")).read_text())
    assert history["status"] == "failed" and "target-epsilon" in history["reason"]
    assert not history["rounds"] and not list(tmp_path.glob("*/checkpoints/*"))


def _run(config: dict, out: Path, name: str) -> dict:
    config = {**config, "output-dir": str(out)}
    with serverapp_identity():
        return server.run(InProcessGrid(config, 3), config, name, APP_DIR).to_json()


def test_secure_and_plain_dp_sgd_complete_with_the_same_epsilon(tmp_path):
    plain = _run(DP, tmp_path, "plain")
    secure = _run({**DP, "privacy.secure-aggregation": True, "privacy.target-epsilon": 50.0}, tmp_path, "secure")
    for history in (plain, secure):
        assert history["status"] == "completed", history.get("reason")
        assert [r["privacy"]["rounds"] for r in history["rounds"] if r.get("privacy")] == [1, 2]
    eps = [[r["privacy"]["epsilon"] for r in h["rounds"] if r.get("privacy")] for h in (plain, secure)]
    assert eps[0] == eps[1] and 0 < eps[0][0] < eps[0][1]
    assert plain["privacy"]["epsilon"] == eps[0][1] == secure["privacy"]["epsilon"]
    # The coordinator's epsilon is dp-accounting's at the smallest bank's rows and delta.
    rows = plain["privacy"]["banks"]
    cfg = parse_run_config(DP)
    assert eps[0][1] == pytest.approx(max(accounting.bank_epsilon(cfg, b["rows"], 2) for b in rows.values()), abs=1e-6)
    assert {b: v["rows"] for b, v in secure["privacy"]["banks"].items()} == {b: v["rows"] for b, v in rows.items()}


def test_dp_sgd_trains_the_monotone_model_reproducibly_and_fedprox_still_pulls_it_back():
    from fedcredit.core import model as mdl
    from fedcredit.core.loading import load_csv
    from fedcredit.core.schema import LENDING_CLUB
    from fedcredit.core.stats import compute_stats, preprocessing_from_stats

    bank = load_csv("", LENDING_CLUB).head(600)
    cfg = parse_run_config({**DP, "hidden-units": "8"})
    spec = mdl.ModelSpec.of(cfg, LENDING_CLUB)
    assert spec.monotone  # the monotone head: per-example gradients flow through |w|
    model = mdl.build_model(preprocessing_from_stats(compute_stats(bank, LENDING_CLUB), 10), spec)
    trainer = mdl.Trainer(model, 1e-2)
    w0 = model.get_weights()
    inputs, labels = mdl.to_inputs(bank, model), bank["Class"].to_numpy()

    def fit(seed: int, mu: float = 0.0) -> list[np.ndarray]:
        dp = DpSgd(cfg.privacy_example_clipping_norm, cfg.privacy_example_noise_multiplier)
        trainer.fit(w0, inputs, labels, mdl.FitOptions(2, 64, 1.0, seed, mu, dp=dp))
        return model.get_weights()

    first, again, other = fit(1), fit(1), fit(2)
    assert all(np.isfinite(w).all() for w in first)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))  # same seed, same noise and batches
    assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))

    def distance(weights: list[np.ndarray]) -> float:
        return sum(float(np.sum((a - b) ** 2)) for a, b in zip(weights, w0, strict=True))

    assert distance(fit(1, mu=100.0)) < distance(first)


def test_the_old_mode_value_says_which_key_replaced_it():
    with pytest.raises(ConfigError, match=r"privacy.dp-sgd = true"):
        parse_run_config({"privacy.mode": "dp-sgd", "personalize.epochs": 0})


@pytest.mark.parametrize("mode", ["server-fixed", "client-fixed"])
def test_client_level_dp_and_dp_sgd_combine_and_each_guarantee_states_its_unit(tmp_path, mode):
    both = _run({**DP, "privacy.mode": mode, "privacy.noise-multiplier": 0.5}, tmp_path, mode)
    assert both["status"] == "completed", both.get("reason")
    cfg = parse_run_config({**DP, "privacy.mode": mode})
    assert "privacy.example-noise-multiplier" not in both["ignored-keys"] and cfg.privacy_mechanisms == (mode, "dp-sgd")
    privacy = both["privacy"]
    assert privacy["mode"] == mode and privacy["unit"] == "one bank (all its rows)"
    assert privacy["epsilon"] > 0  # Flower's accountant: fixed clipping, FedAvg, noise 0.5
    borrower = privacy[accounting.BORROWER_LEVEL]
    assert borrower["unit"].startswith("one borrower")
    # The borrower-level epsilon is dp-accounting's at each bank's rows, whatever the client-level mode adds on top.
    rows = {b: v["rows"] for b, v in borrower["banks"].items()}
    assert borrower["epsilon"] == pytest.approx(
        max(accounting.bank_epsilon(cfg, n, 2) for n in rows.values()), abs=1e-6
    )
    per_round = [r["privacy"][accounting.BORROWER_LEVEL]["rounds"] for r in both["rounds"] if r.get("privacy")]
    assert per_round == [1, 2]


def test_a_real_bank_draws_its_dp_sgd_seed_from_the_os_a_simulated_one_from_the_message():
    from fedcredit.federation.client import dp_sgd_seed

    assert dp_sgd_seed({"partition-id": 0, "num-partitions": 2}, 123) == 123  # reproducible simulation
    assert dp_sgd_seed({"data-path": "x.csv", "dp-sgd-reproducible": True}, 123) == 123  # a bank's own choice
    drawn = {dp_sgd_seed({"data-path": "x.csv"}, 123) for _ in range(8)}
    assert 123 not in drawn and len(drawn) == 8  # fresh each message, never the public seed
