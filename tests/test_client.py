"""A bank's side: statistics, train and evaluate, as the ClientApp calls them."""

from __future__ import annotations

import numpy as np
import pytest

from fedcredit.core.banks import holdout_set, load_bank
from fedcredit.core.config import parse_run_config
from fedcredit.core.loading import DataValidationError
from fedcredit.core.stats import merge_stats, preprocessing_from_stats
from fedcredit.federation import client

CFG = parse_run_config({"partitioning": "iid", "local-epochs": 1, "hidden-units": "8"})
NODES = [{"partition-id": i, "num-partitions": 3} for i in range(3)]


@pytest.fixture(scope="module")
def prep_json():
    stats = [client.statistics(CFG, n)[3] for n in NODES]
    return preprocessing_from_stats(merge_stats(stats), CFG.min_category_count).to_json()


def test_simulated_banks_are_disjoint_and_exclude_the_holdout():
    banks = [load_bank(CFG, n) for n in NODES]
    sizes = [len(b.train) + len(b.val) for b in banks]
    assert sum(sizes) + len(holdout_set(CFG)) == 9857
    assert len({b.name for b in banks}) == 3


def test_train_returns_new_weights_and_plain_metrics(prep_json):
    global_weights = client._model(CFG, prep_json)[1].get_weights()
    weights, loss, rows = client.train(CFG, NODES[0], global_weights, prep_json, server_round=1)
    assert rows == len(load_bank(CFG, NODES[0]).train)
    assert type(loss) is float and np.isfinite(loss)
    assert any(not np.array_equal(a, b) for a, b in zip(weights, global_weights))
    again, _, _ = client.train(CFG, NODES[0], global_weights, prep_json, server_round=1)
    assert all(np.array_equal(a, b) for a, b in zip(weights, again))  # same message, same result


def test_evaluate_summary_has_fixed_keys_and_bins(prep_json):
    weights = client._model(CFG, prep_json)[1].get_weights()
    a = client.evaluate(CFG, NODES[1], weights, prep_json)
    b = client.evaluate(CFG, NODES[2], weights, prep_json)
    assert set(a) == set(b)  # Flower rejects a round whose replies differ in keys
    assert len(a["hist-bad"]) == CFG.histogram_bins
    assert sum(a["hist-bad"]) + sum(a["hist-good"]) == a["num-examples"] == len(load_bank(CFG, NODES[1]).val)


def test_deployment_bank_reads_its_csv(raw_frame, write_csv):
    path = write_csv(raw_frame.sample(400, random_state=0))
    bank = load_bank(CFG, {"data-path": str(path), "bank-name": "acme"})
    assert bank.name == "acme" and len(bank.train) + len(bank.val) == 400


def test_broken_bank_csv_and_missing_node_config_raise_clear_errors(raw_frame, write_csv):
    path = write_csv(raw_frame.head(100).drop(columns=["term"]))
    with pytest.raises(DataValidationError, match="missing columns \\['term'\\]"):
        client.statistics(CFG, {"data-path": str(path)})
    with pytest.raises(ValueError, match="--node-config 'data-path="):
        load_bank(CFG, {})
