"""The comparison command's planning, summary and plot (the runs themselves are `flwr run`s)."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pandas as pd
import pytest

from fedcredit.cli.compare import add_arguments, plan
from fedcredit.core.config import ConfigError
from fedcredit.deploy.compare import plot, summarise_run
from fedcredit.federation.history import History, PhaseRecord, RoundEntry, write_history


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args([*argv, "--out", "/tmp/unused"])


def test_variants_cross_strategies_and_noise_levels():
    todo = plan(
        _args(
            "--strategies",
            "fedavg",
            "fedprox",
            "--privacy",
            "server-fixed",
            "--noise",
            "0.5",
            "1.0",
            "--set",
            "num-server-rounds=2",
        )
    )
    assert [label for label, _ in todo] == [
        "fedavg server-fixed z=0.5",
        "fedavg server-fixed z=1",
        "fedprox server-fixed z=0.5",
        "fedprox server-fixed z=1",
    ]
    assert todo[1][1] == {
        "personalize.epochs": 0,  # compare's defaults: they change no compared figure
        "evaluation": "folded",
        "num-server-rounds": 2,
        "strategy.name": "fedavg",
        "privacy.mode": "server-fixed",
        "privacy.noise-multiplier": 1.0,
    }


def test_a_bad_variant_is_refused_before_any_run():
    with pytest.raises(ConfigError, match="is not a strategy"):
        plan(_args("--strategies", "fedavg", "fedsgd"))
    with pytest.raises(ConfigError, match="--noise needs --privacy"):
        plan(_args("--strategies", "fedavg", "--noise", "0.5"))


def test_plot_skips_failed_runs():
    table = pd.DataFrame(
        [
            {"variant": "fedavg", "auc per round": [0.7, 0.72], "hold-out per round": [0.7, 0.73]},
            {"variant": "krum", "auc per round": float("nan"), "hold-out per round": float("nan")},
        ]
    )
    plot(table, Path(tempfile.mkdtemp()) / "c.png")


def test_summary_and_plot_of_runs(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    rounds = [RoundEntry(0, holdout={"auc": 0.5})] + [
        RoundEntry(r, holdout={"auc": 0.7 + r / 100}, evaluate=PhaseRecord(pooled={"auc": 0.69 + r / 100, "ks": 0.3}))
        for r in (1, 2)
    ]
    write_history(run_dir / "history.json", History(rounds=rounds, seconds=12.5, privacy={"epsilon": 4.2}))
    row = summarise_run(run_dir)
    assert row["hold-out AUC"] == 0.72 and row["rounds"] == 2 and row["epsilon"] == 4.2
    assert row["auc per round"] == [0.7, 0.71]
    table = pd.DataFrame([{"variant": v, **row} for v in ("fedavg", "fedprox")])
    plot(table, tmp_path / "comparison.png")
    assert (tmp_path / "comparison.png").stat().st_size > 10_000


def test_an_unquoted_text_in_set_is_refused_with_how_to_quote_it(tmp_path, capsys):
    from fedcredit.cli import main

    code = main(["compare", "--strategies", "fedavg", "--out", str(tmp_path), "--set", "strategy.name=fedprox"])
    assert code == 2 and "text values need TOML quotes" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing ran


def test_feature_sets_are_variants_and_the_trade_off_front_is_marked():
    todo = plan(_args("--strategies", "fedavg", "--exclude", "", "int_rate", "int_rate+sub_grade"))
    assert [label for label, _ in todo] == [
        "fedavg all features",
        "fedavg without int_rate",
        "fedavg without int_rate+sub_grade",
    ]
    assert [c["excluded-features"] for _, c in todo] == ["", "int_rate", "int_rate+sub_grade"]
    with pytest.raises(ConfigError):
        plan(_args("--strategies", "fedavg", "--exclude", "int_rate,int_rate"))
    from fedcredit.deploy.compare import sweep_text, trade_off_front, worst_air

    assert "; excluded-features=,int_rate,int_rate+sub_grade; seed=42" in sweep_text(todo, [42], {})
    assert worst_air({"SEX": {"worst-air": 0.9}, "AGE": {"worst-air": 0.7}, "X": {"worst-air": None}}) == 0.7
    means = pd.DataFrame(
        {
            "variant": ["a", "b", "c", "d"],
            "pooled val AUC": [0.75, 0.73, 0.70, 0.74],
            "worst AIR": [0.70, 0.85, 0.80, 0.70],
        }
    )
    assert trade_off_front(means).tolist() == [True, True, False, False]  # c and d are beaten in both by b and a
