"""resume-from: a run cut short by the coordinator's crash continues, and FedAvg ends exactly where it would have."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import server
from fedcredit.federation.outputs import load_checkpoint
from fedcredit.federation.resume import ResumeError

CONFIG = {
    "partitioning": "iid",
    "num-server-rounds": 4,
    "local-epochs": 1,
    "hidden-units": "8",
    "learning-rate": 0.01,
    "histogram-bins": 200,
    "personalize.epochs": 0,
    "seed": 11,
}


class Crash(Exception):
    """The coordinator's host going down."""


class CrashingGrid(InProcessGrid):
    """Banks that answer until the coordinator crashes at the start of round `at`."""

    def __init__(self, *args, at: int, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.at = at

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        if messages and messages[0].metadata.message_type == "train":
            if int(messages[0].content["config"]["server-round"]) == self.at:
                raise Crash("the coordinator's host went down")
        return super().send_and_receive(messages, timeout=timeout)


def _final(history: dict) -> list[np.ndarray]:
    return load_checkpoint(max(Path(history["output-dir"]).glob("checkpoints/round-*.npz")))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    config = {**CONFIG, "output-dir": str(out)}
    with serverapp_identity():
        whole = server.run(InProcessGrid(config, 3), config, "whole", APP_DIR).to_json()
        with pytest.raises(Crash):
            server.run(CrashingGrid(config, 3, at=3), config, "crash", APP_DIR)
        (crashed,) = [d for d in out.iterdir() if d.name.endswith("runcrash")]
        resumed = server.run(
            InProcessGrid(config, 3), {**config, "resume-from": str(crashed)}, "again", APP_DIR
        ).to_json()
    return whole, crashed, resumed


def test_a_resumed_fedavg_run_ends_with_exactly_the_uninterrupted_runs_weights(runs):
    whole, crashed, resumed = runs
    assert json.loads((crashed / "history.json").read_text())["status"] == "failed"
    assert resumed["status"] == "completed" and resumed["resumed-from"] == {"run-dir": str(crashed), "rounds": 2}
    # Same seeds, same global weights in, replies aggregated in node order: exactly the same weights.
    assert all(np.array_equal(a, b) for a, b in zip(_final(whole), _final(resumed), strict=True))
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in Path(resumed["output-dir"]).glob("checkpoints/*.npz")) == [
        f"round-00{i}.npz" for i in range(1, 5)
    ]
    for entry, again in zip(whole["rounds"], resumed["rounds"], strict=True):  # same figures, round by round
        assert entry["holdout"]["auc"] == again["holdout"]["auc"]
    # The resumed run asks the banks' profiles again: the same banks and preprocessing give the same counts.
    profiles = [json.loads((Path(h["output-dir"]) / "profile.json").read_text()) for h in (whole, resumed)]
    assert profiles[0] == profiles[1] and len(profiles[1]["banks"]) == 3


@pytest.mark.parametrize(
    "change,reason",
    [
        ({"strategy.name": "fedadam"}, "keeps server state"),
        ({"privacy.mode": "server-fixed"}, "privacy accountant"),
        ({"hidden-units": "16"}, "differs in \\['hidden-units'\\]"),
        ({"num-server-rounds": 2}, "already has 2 rounds"),
    ],
)
def test_a_resume_that_would_not_continue_the_same_run_is_refused(runs, tmp_path, change, reason):
    _, crashed, _ = runs
    config = {**CONFIG, "output-dir": str(tmp_path), "resume-from": str(crashed), **change}
    with serverapp_identity(), pytest.raises(ResumeError, match=reason):
        server.run(InProcessGrid(config, 3), config, "refused", APP_DIR)
    (run_dir,) = tmp_path.iterdir()
    assert json.loads((run_dir / "history.json").read_text())["status"] == "failed"


def test_changed_bank_data_or_a_finished_run_are_refused(runs, tmp_path):
    whole, crashed, _ = runs
    config = {**CONFIG, "output-dir": str(tmp_path), "resume-from": whole["output-dir"]}
    with serverapp_identity(), pytest.raises(ResumeError, match="that run completed"):
        server.run(InProcessGrid(config, 3), config, "done", APP_DIR)
    changed = tmp_path / "changed"
    import shutil

    shutil.copytree(crashed, changed)
    prep = json.loads((changed / "preprocessing.json").read_text())
    prep["mean"]["int_rate"] += 1.0  # as if a bank's loans had changed since
    (changed / "preprocessing.json").write_text(json.dumps(prep))
    config = {**config, "resume-from": str(changed)}
    with serverapp_identity(), pytest.raises(ResumeError, match="no longer give the run's preprocessing"):
        server.run(InProcessGrid(config, 3), config, "data", APP_DIR)


def test_a_checkpoint_the_history_never_recorded_is_trained_again(runs, tmp_path):
    """A crash between writing round 2's checkpoint and its history entry: the run resumes after round 1."""
    import shutil

    whole, crashed, _ = runs
    cut = tmp_path / "cut"
    shutil.copytree(crashed, cut)
    raw = json.loads((cut / "history.json").read_text())
    raw["rounds"] = [entry for entry in raw["rounds"] if entry["round"] < 2]
    (cut / "history.json").write_text(json.dumps(raw))
    config = {**CONFIG, "output-dir": str(tmp_path / "out"), "resume-from": str(cut)}
    with serverapp_identity():
        resumed = server.run(InProcessGrid(config, 3), config, "cut", APP_DIR).to_json()
    assert resumed["resumed-from"] == {"run-dir": str(cut), "rounds": 1}
    assert [r["round"] for r in resumed["rounds"]] == [0, 1, 2, 3, 4]
    assert all(np.array_equal(a, b) for a, b in zip(_final(whole), _final(resumed), strict=True))


def _copy_of(crashed: Path, tmp_path: Path) -> Path:
    import shutil

    copy = tmp_path / "crashed-copy"
    shutil.copytree(crashed, copy)
    return copy


def _rewrite(path: Path, weights: list[np.ndarray]) -> None:
    with path.open("wb") as f:
        np.savez(f, *weights)


def _record_digest(run_dir: Path, last: int) -> None:
    """A tamperer who also rewrites the history: the digest then matches, the other checks must hold."""
    from fedcredit.federation.outputs import sha256_of

    history = json.loads((run_dir / "history.json").read_text())
    entry = next(e for e in history["rounds"] if e["round"] == last)
    entry["checkpoint-sha256"] = sha256_of(run_dir / "checkpoints" / f"round-{last:03d}.npz")
    (run_dir / "history.json").write_text(json.dumps(history))


@pytest.mark.parametrize(
    "damage,reason",
    [
        ("scaled x50", "is not the checkpoint the run wrote"),
        ("truncated", "is not the checkpoint the run wrote"),
        ("NaN weights, digest rewritten", "not finite"),
        ("not a zip, digest rewritten", "cannot be read as a checkpoint"),
        ("another model's shapes, digest rewritten", "does not fit the model"),
        ("no preprocessing.json", "preprocessing.json is missing"),
        ("no digest recorded", "records no SHA-256"),
    ],
)
def test_resume_refuses_a_damaged_run_directory_naming_the_file(runs, tmp_path, damage, reason):
    _, crashed, _ = runs
    run_dir = _copy_of(crashed, tmp_path)
    checkpoint = run_dir / "checkpoints" / "round-002.npz"
    weights = load_checkpoint(checkpoint)
    if damage == "scaled x50":
        _rewrite(checkpoint, [w * 50 for w in weights])
    elif damage == "truncated":
        checkpoint.write_bytes(checkpoint.read_bytes()[:100])
    elif damage.startswith("NaN"):
        _rewrite(checkpoint, [w * np.nan for w in weights])
    elif damage.startswith("not a zip"):
        checkpoint.write_bytes(b"not a checkpoint")
    elif damage.startswith("another model"):
        _rewrite(checkpoint, [w[..., :1] if w.ndim else w for w in weights])
    elif damage == "no preprocessing.json":
        (run_dir / "preprocessing.json").unlink()
    elif damage == "no digest recorded":
        history = json.loads((run_dir / "history.json").read_text())
        for entry in history["rounds"]:
            entry.pop("checkpoint-sha256", None)
        (run_dir / "history.json").write_text(json.dumps(history))
    if "digest rewritten" in damage:
        _record_digest(run_dir, 2)
    config = {**CONFIG, "output-dir": str(tmp_path / "out"), "resume-from": str(run_dir)}
    with serverapp_identity(), pytest.raises(ResumeError, match=reason):
        server.run(InProcessGrid(config, 3), config, "damaged", APP_DIR)
