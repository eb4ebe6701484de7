"""Strategies from the run config, driven through a fake Grid; per-bank tracking at the Grid."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from flwr.app import ArrayRecord, Error, Message, MetricRecord, RecordDict
from flwr.serverapp import strategy as fl
from flwr.supercore.task_identity import TaskIdentity

from fedcredit.core import metrics
from fedcredit.core.config import (
    KEYS,
    PRIVACY_MODES,
    STRATEGIES,
    STRATEGY_PARAMS,
    ConfigError,
    RunConfig,
    app_defaults,
    check_overrides,
    parse_run_config,
)
from fedcredit.federation.strategies import (
    PRIVACY_CLASSES,
    STRATEGY_CLASSES,
    make_strategy,
    pooled_metric_record,
    privacy_summary,
    strategy_table,
)
from fedcredit.federation.tracking import Tracker, TrackingGrid


@pytest.fixture(autouse=True)
def task_identity():
    """Messages can only be built inside a run; pretend to be the ServerApp of run 1."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _summary(rng, n=300):
    y = rng.random(n) < 0.1
    s = np.clip(rng.normal(0.1 + 0.1 * y, 0.05), 0, 1)
    out = metrics.summarise(s, y, 0.1, 200)
    out.update(loss=0.3, auc=metrics.exact_auc(s, y), **{"unit-weight": 1})
    return out, s, y


class FakeGrid:
    """Banks that answer at once: train adds a bank-specific step, evaluate sends a summary.

    `fail` answers with an error, `nan` returns NaN weights: both must be left out.
    """

    def __init__(self, nodes=(11, 12, 13, 14, 15, 16, 17), fail=(), nan=()):
        self.nodes, self.fail, self.nan = list(nodes), set(fail), set(nan)
        self.seen = []

    def get_node_ids(self):
        return self.nodes

    def send_and_receive(self, messages, *, timeout=None):
        replies = []
        for msg in messages:
            node = msg.metadata.dst_node_id
            self.seen.append((msg.metadata.message_type, node, dict(msg.content["config"])))
            if node in self.fail:
                replies.append(
                    Message(Error(code=2, reason=f"bank {node}: missing columns ['int_rate']"), reply_to=msg)
                )
                continue
            if msg.metadata.message_type == "train":
                arrays = [a + 0.01 * (node - 10) for a in msg.content["arrays"].to_numpy_ndarrays()]
                if node in self.nan:
                    arrays[0] = arrays[0] * np.nan
                rec = {"train-loss": 0.2 + 0.01 * node, "num-examples": 100 * (node - 10), "unit-weight": 1}
                content = RecordDict({"arrays": ArrayRecord(arrays), "metrics": MetricRecord(rec)})
            else:
                content = RecordDict({"metrics": MetricRecord(_summary(np.random.default_rng(node))[0])})
            replies.append(Message(content=content, reply_to=msg))
        return replies


def _start(strategy, grid, rounds=2):
    init = ArrayRecord([np.zeros((3, 2)), np.zeros(2)])
    return strategy.start(grid, init, num_rounds=rounds, timeout=10)


@pytest.mark.parametrize("name", list(STRATEGY_PARAMS))
def test_every_strategy_runs_rounds_through_the_tracking_grid(name):
    cfg = parse_run_config({"strategy.name": name})
    strategy, accountant = make_strategy(cfg, 7)
    tracker = Tracker()
    result = _start(strategy, TrackingGrid(FakeGrid(), tracker))
    assert accountant is None and len(result.arrays) == 2
    assert len(tracker.train) == 2 and all(len(p.replies) == 7 and not p.skipped for p in tracker.train.values())
    assert len(tracker.evaluate[2].replies) == 7
    assert np.all(np.isfinite(result.arrays.to_numpy_ndarrays()[0]))
    assert 0.5 < tracker.evaluate[2].pooled()["auc"] < 1.0


def test_failed_and_non_finite_replies_are_recorded_and_left_out():
    tracker = Tracker()
    grid = FakeGrid(nodes=(11, 12, 13, 14), fail=(13,), nan=(14,))
    result = _start(
        fl.FedAvg(min_train_nodes=2, min_evaluate_nodes=2, min_available_nodes=2), TrackingGrid(grid, tracker), 1
    )
    weights = result.arrays.to_numpy_ndarrays()[0]
    assert np.allclose(weights, (100 * 0.01 + 200 * 0.02) / 300)  # weighted by rows; banks 13 and 14 left out
    phase = tracker.train[1]
    assert set(phase.replies) == {11, 12} and "int_rate" in phase.failed[13]
    assert "NaN or infinite" in phase.refused[14]  # a reply that arrived but breaks the protocol
    assert sorted(phase.sampled) == [11, 12, 13, 14] and phase.missing == []


def test_fedprox_sends_mu_and_fedavgm_uses_its_momentum():
    cfg = parse_run_config({"strategy.name": "fedprox", "strategy.proximal-mu": 0.7})
    strategy, _ = make_strategy(cfg, 7)
    grid = FakeGrid()
    _start(strategy, TrackingGrid(grid, Tracker()), 1)
    assert {c["proximal-mu"] for kind, _, c in grid.seen if kind == "train"} == {0.7}
    avgm, _ = make_strategy(parse_run_config({"strategy.name": "fedavgm", "strategy.server-momentum": 0.5}), 7)
    assert isinstance(avgm, fl.FedAvgM) and avgm.server_momentum == 0.5


def test_evaluate_pools_summaries_and_keeps_bank_figures():
    tracker = Tracker()
    pieces = [_summary(np.random.default_rng(node)) for node in (21, 22)]  # what the fake banks send
    grid = FakeGrid(nodes=(21, 22))
    _start(fl.FedAvg(evaluate_metrics_aggr_fn=pooled_metric_record), TrackingGrid(grid, tracker), 1)
    exact = metrics.exact_auc(np.concatenate([p[1] for p in pieces]), np.concatenate([p[2] for p in pieces]))
    assert tracker.evaluate[1].pooled()["auc"] == pytest.approx(exact, abs=2e-3)
    # A bank's figures come from its histograms (within the bins' resolution of its exact AUC), not its claim.
    assert tracker.evaluate[1].replies[21]["auc"] == metrics.pooled([pieces[0][0]])["auc"]
    assert tracker.evaluate[1].replies[21]["auc"] == pytest.approx(
        metrics.exact_auc(pieces[0][1], pieces[0][2]), abs=2e-3
    )


def test_server_side_dp_with_accounting_reports_epsilon():
    cfg = parse_run_config(
        {"privacy.mode": "server-fixed", "privacy.noise-multiplier": 1.0, "privacy.clipping-norm": 0.5}
    )
    strategy, accountant = make_strategy(cfg, 7)
    assert isinstance(strategy, fl.DifferentialPrivacyServerSideFixedClipping) and accountant is not None
    _start(strategy, TrackingGrid(FakeGrid(), Tracker()), 2)
    spent = privacy_summary(cfg, accountant)
    assert spent["releases"] == 2 and 0 < spent["epsilon"] < float("inf") and spent["delta"] == 1e-5
    # More noise, less privacy spent.
    cfg2 = parse_run_config(
        {"privacy.mode": "server-fixed", "privacy.noise-multiplier": 3.0, "privacy.clipping-norm": 0.5}
    )
    strategy2, accountant2 = make_strategy(cfg2, 7)
    _start(strategy2, TrackingGrid(FakeGrid(), Tracker()), 2)
    assert privacy_summary(cfg2, accountant2)["epsilon"] < spent["epsilon"]


def test_adaptive_dp_and_dp_with_other_strategies_say_epsilon_is_not_accounted():
    for raw in ({"privacy.mode": "server-adaptive"}, {"privacy.mode": "server-fixed", "strategy.name": "fedmedian"}):
        cfg = parse_run_config(raw)
        strategy, accountant = make_strategy(cfg, 7)
        _start(strategy, TrackingGrid(FakeGrid(), Tracker()), 1)
        assert accountant is None and "not accounted" in privacy_summary(cfg, None)["accounting"]


@pytest.mark.parametrize(
    "raw,banks,match",
    [
        ({"strategy.name": "krum", "strategy.num-malicious-nodes": 2}, 6, "needs at least 7 banks"),
        ({"strategy.name": "bulyan", "strategy.num-malicious-nodes": 1}, 6, "needs at least 7 banks"),
        ({"strategy.name": "multikrum", "strategy.num-nodes-to-select": 5}, 4, "exceeds banks minus malicious"),
        ({"min-banks": 5}, 4, "min-banks=5 but only 4"),
        (
            {"privacy.mode": "server-adaptive", "privacy.noise-multiplier": 0.4},
            4,
            "needs more than 4 banks per round, this run samples 4: lower privacy.noise-multiplier below 0.4",
        ),
    ],
)
def test_choices_that_depend_on_the_number_of_banks(raw, banks, match):
    with pytest.raises(ConfigError, match=match):
        make_strategy(parse_run_config(raw), banks)


@pytest.mark.parametrize(
    "raw,match",
    [
        ({"strategy.name": "fedsgd"}, "is not a strategy.name value: choose one of \\['fedavg', 'fedprox'"),
        ({"strategy.name": "fedprox", "strategy.proximal-mu": -0.1}, "'strategy.proximal-mu' = -0.1 is out of range"),
        ({"fraction-train": 1.2}, "'fraction-train' = 1.2 is out of range"),
        ({"strategy.name": "fedtrimmedavg", "strategy.trim-beta": 0.6}, "'strategy.trim-beta' = 0.6 is out of range"),
        (
            {"strategy.name": "fedtrimmedavg", "strategy.trim-beta": 0.5},
            "'strategy.trim-beta' = 0.5 is out of range: it must be >= 0 and < 0.5",
        ),
        ({"test-fraction": 1.0}, "'test-fraction' = 1.0 is out of range: it must be > 0 and < 1"),
        ({"strategy.name": "fedadam", "strategy.beta-1": 1.0}, "'strategy.beta-1' = 1.0 is out of range"),
        ({"privacy.mode": "local"}, "choose one of \\['none', 'server-fixed'"),
    ],
)
def test_invalid_strategy_and_privacy_choices(raw, match):
    with pytest.raises(ConfigError, match=match):
        parse_run_config(raw)


@pytest.mark.parametrize(
    "raw,match",
    [
        (
            {"strategy.name": "fedavg", "strategy.proximal-mu": 0.5},
            "'strategy.proximal-mu' = 0.5 is a parameter of \\['fedprox'\\]",
        ),
        ({"strategy.name": "fedprox", "strategy.eta": 0.5}, "parameter of \\['fedadam', 'fedyogi', 'fedadagrad'\\]"),
        ({"privacy.mode": "none", "privacy.noise-multiplier": 1.0}, "parameter of \\['server-fixed'"),
        (
            {"privacy.mode": "client-adaptive", "privacy.clipping-norm": 2.0},
            "parameter of \\['server-fixed', 'client-fixed'\\], but privacy.mode = 'client-adaptive'",
        ),
    ],
)
def test_a_key_for_another_strategy_parses_but_is_refused_as_a_command_line_override(raw, match):
    cfg = parse_run_config(raw)  # a pyproject default never fails the run...
    make_strategy(cfg, 7)  # ...and the strategy builds without it
    with pytest.raises(ConfigError, match=match):  # ...but set on the command line it is a mistake
        check_overrides(raw, app_defaults(Path(__file__).resolve().parents[1]), cfg)


def test_every_name_in_the_config_table_has_a_flower_class():
    assert tuple(STRATEGY_CLASSES) == STRATEGIES == tuple(STRATEGY_PARAMS)
    # "none" wraps nothing; "dp-sgd" is at each bank (fedcredit.core.dpsgd), not a wrapper.
    assert tuple(PRIVACY_CLASSES) == tuple(m for m in PRIVACY_MODES if m not in ("none", "dp-sgd"))


def test_dp_sgd_wraps_no_strategy_and_leaves_accounting_to_the_banks_rows():
    cfg = parse_run_config({"privacy.dp-sgd": True, "personalize.epochs": 0})
    strategy, accountant = make_strategy(cfg, 2)
    assert type(strategy).__name__ == "FedAvg" and accountant is None
    assert privacy_summary(cfg, None) is None  # fedcredit.federation.accounting.summary states its epsilon


@pytest.mark.parametrize("name", STRATEGIES)
def test_strategy_keys_reach_the_flower_constructor(name):
    """Each key the table gives this strategy, set off its default, is what the built strategy holds."""
    raw = {"strategy.name": name}
    for field_name, spec in KEYS.items():
        if spec.flower and spec.strategies and name in spec.strategies:
            value = getattr(RunConfig(), field_name)
            raw[spec.name] = value + 1 if isinstance(value, int) else value / 2
    strategy, _ = make_strategy(parse_run_config(raw), 30)
    assert type(strategy) is STRATEGY_CLASSES[name]
    for spec in KEYS.values():
        if spec.name in raw and spec.flower:
            assert getattr(strategy, spec.flower) == raw[spec.name], spec.name


@pytest.mark.parametrize("mode", tuple(PRIVACY_CLASSES))
def test_every_privacy_mode_wraps_with_its_keys(mode):
    raw = {
        "privacy.mode": mode,
        "privacy.noise-multiplier": 0.3,
        "privacy.clipping-norm": 0.3,
        "privacy.initial-clipping-norm": 0.4,
        "privacy.target-clipped-quantile": 0.6,
        "privacy.clip-norm-lr": 0.1,
    }
    strategy, _ = make_strategy(parse_run_config(raw), 7)
    assert type(strategy) is PRIVACY_CLASSES[mode] and strategy.num_sampled_clients == 7
    if "fixed" in mode:
        assert (strategy.noise_multiplier, strategy.clipping_norm) == (0.3, 0.3)
    else:  # Flower raises the effective noise multiplier to pay for the noisy clipped count
        assert (strategy.clipping_norm, strategy.target_clipped_quantile, strategy.clip_norm_lr) == (0.4, 0.6, 0.1)


def test_the_configuration_guide_strategy_table_is_the_rendered_table():
    guide = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    block = re.search(r"<!-- strategy-table:start -->\n(.*?)<!-- strategy-table:end -->", guide, re.S)
    assert block, "docs/configuration.md lacks the <!-- strategy-table:start --> ... <!-- strategy-table:end --> block"
    assert block.group(1) == strategy_table(), "docs/configuration.md strategy table is stale: paste strategy_table()"


def test_only_the_banks_that_sent_statistics_are_sampled():
    grid = FakeGrid(nodes=(11, 12, 13, 99))  # 99 joined after the statistics
    tracker = Tracker()
    _start(fl.FedAvg(), TrackingGrid(grid, tracker, banks={11, 12, 13}), 1)
    assert {node for _, node, _ in grid.seen} == {11, 12, 13}


def test_a_round_with_fewer_usable_replies_than_min_banks_is_not_aggregated():
    tracker = Tracker()
    grid = FakeGrid(nodes=(11, 12, 13), fail=(12,), nan=(13,))
    result = _start(fl.FedAvg(), TrackingGrid(grid, tracker, min_banks=2), 1)
    assert len(result.arrays) == 0  # bank 11 alone would have become the global model
    assert "only 1 usable reply, min-banks=2" in tracker.train[1].skipped


def test_with_privacy_a_round_with_a_failed_bank_is_not_aggregated():
    cfg = parse_run_config({"privacy.mode": "server-fixed", "privacy.noise-multiplier": 1.0})
    strategy, accountant = make_strategy(cfg, 4)
    tracker = Tracker()
    result = _start(
        strategy, TrackingGrid(FakeGrid(nodes=(11, 12, 13, 14), fail=(14,)), tracker, all_or_nothing=True), 1
    )
    assert len(result.arrays) == 0 and "differential privacy" in tracker.train[1].skipped
    assert accountant.get_privacy_spent().num_releases == 0


def test_too_few_banks_for_too_long_stops_instead_of_waiting_forever():
    from fedcredit.federation.errors import FederationStopped

    grid = TrackingGrid(FakeGrid(nodes=(11,)), Tracker(), banks={11, 12}, min_banks=2, wait_timeout=0.0)
    grid.get_node_ids()  # starts the clock
    with pytest.raises(FederationStopped, match="only 1 of the federation's banks connected"):
        grid.get_node_ids()
