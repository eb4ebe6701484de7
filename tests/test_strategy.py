"""Per-bank tracking: failures recorded, non-finite weights kept out of the global model."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import ArrayRecord, ConfigRecord, Error, Message, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from fedcredit import metrics
from fedcredit.strategy import Tracker, TrackedFedAvg, pooled_metric_record


@pytest.fixture(autouse=True)
def task_identity():
    """Messages can only be built inside a run; pretend to be the ServerApp of run 1."""
    saved = (TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id)
    TaskIdentity.run_id, TaskIdentity.node_id, TaskIdentity.task_id = 1, 1, 1
    yield
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = saved


def _ask(node: int, kind: str) -> Message:
    return Message(content=RecordDict({"config": ConfigRecord({"x": 1})}), dst_node_id=node, message_type=kind)


def _train_reply(node: int, weights: list[np.ndarray], n: int) -> Message:
    content = RecordDict({"arrays": ArrayRecord(weights), "metrics": MetricRecord({"train-loss": 0.2, "num-examples": n})})
    return Message(content=content, reply_to=_ask(node, "train"))


def test_failed_and_non_finite_replies_are_recorded_and_excluded():
    tracker = Tracker()
    strategy = TrackedFedAvg(tracker)
    good_a = _train_reply(11, [np.full(3, 1.0)], 100)
    good_b = _train_reply(12, [np.full(3, 3.0)], 300)
    nan = _train_reply(13, [np.array([np.nan, 1.0, 1.0])], 10_000)
    failed = Message(Error(code=2, reason="bank.csv: missing columns ['int_rate']"), reply_to=_ask(14, "train"))
    arrays, agg = strategy.aggregate_train(1, [good_a, good_b, nan, failed])
    assert np.allclose(arrays.to_numpy_ndarrays()[0], 2.5)  # weighted by examples, NaN bank left out
    phase = tracker.train[1]
    assert set(phase.replies) == {11, 12}
    assert "non-finite" in phase.failed[13] and "int_rate" in phase.failed[14]
    assert tracker.rounds_trained() == 1


def test_all_replies_failing_leaves_no_aggregate():
    tracker = Tracker()
    failed = Message(Error(code=2, reason="boom"), reply_to=_ask(5, "train"))
    arrays, agg = TrackedFedAvg(tracker).aggregate_train(1, [failed])
    assert arrays is None and agg is None and tracker.rounds_trained() == 0


def test_evaluate_pools_summaries_and_keeps_bank_figures():
    rng = np.random.default_rng(0)
    replies, all_s, all_y = [], [], []
    for node in (21, 22):
        y = rng.random(400) < 0.1
        s = np.clip(rng.normal(0.1 + 0.1 * y, 0.05), 0, 1)
        summary = metrics.summarise(s, y, 0.1, 2000)
        summary["loss"] = 0.3
        summary["auc"] = metrics.exact_auc(s, y)
        replies.append(Message(content=RecordDict({"metrics": MetricRecord(summary)}), reply_to=_ask(node, "evaluate")))
        all_s.append(s)
        all_y.append(y)
    tracker = Tracker()
    agg = TrackedFedAvg(tracker).aggregate_evaluate(2, replies)
    exact = metrics.exact_auc(np.concatenate(all_s), np.concatenate(all_y))
    assert agg["auc"] == pytest.approx(exact, abs=1e-3)
    assert tracker.evaluate[2].replies[21]["auc"] == pytest.approx(metrics.exact_auc(all_s[0], all_y[0]))


def test_pooled_metric_record_is_a_valid_metric_record():
    summary = metrics.summarise(np.array([0.2, 0.8]), np.array([0, 1]), 0.5, 10)
    record = pooled_metric_record([RecordDict({"m": MetricRecord(summary)})], "num-examples")
    assert record["auc"] == 1.0 and record["num-examples"] == 2
