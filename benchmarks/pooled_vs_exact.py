"""Check a simulation run's pooled validation AUC (from bank histograms) against the exact one.

    python benchmarks/pooled_vs_exact.py RUN_DIR [RUN_DIR ...]

Scores every bank's validation rows with the run's final model in one place
(possible only in simulation, where the rows are the embedded data set) and
compares AUC and KS with the last round of history.json.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import load_bank, schema_of
from fedcredit.core.config import parse_run_config
from fedcredit.federation.history import read_history


def main(run_dirs: list[str]) -> int:
    for run_dir in map(Path, run_dirs):
        history = read_history(run_dir / "history.json")
        cfg = parse_run_config(history.config)
        n = len(history.banks)
        val = pd.concat([load_bank(cfg, {"partition-id": i, "num-partitions": n}).val for i in range(n)])
        exact = metrics.exact(
            mdl.score(mdl.load(str(run_dir / "model-final.keras")), val),
            val[schema_of(cfg).target].to_numpy(),
            cfg.threshold,
        )
        pooled = history.last_pooled()
        print(
            f"{run_dir.name}: pooled AUC {pooled['auc']:.5f} exact {exact['auc']:.5f} "
            f"|diff| {abs(pooled['auc'] - exact['auc']):.5f}; KS {pooled['ks']:.4f} exact {exact['ks']:.4f}"
        )
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "run_dirs", nargs="+", metavar="RUN_DIR", help="a simulation run's directory (has history.json)"
    )
    raise SystemExit(main(parser.parse_args().run_dirs))
