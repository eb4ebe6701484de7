"""The partial-dependence figure: mean PD as each of the strongest features moves over its known range.

One PNG (`PNG_NAME`), one small panel per feature, from the table of
`fedcredit.risk.monotone.partial_dependence`; a panel's title names the
feature's monotone direction when the model holds one. Kept apart from
`report_figures` so that the report can take it up without this module
changing that one (`report_figures.PNG_NAMES` lists its name for the report's cleanup).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

PNG_NAME = "partial_dependence.png"


TITLE = "Mean probability of default as one feature moves, the others as each loan has them"


def plot_partial_dependence(
    table: pd.DataFrame, out_dir: Path, directions: Mapping[str, int] | None = None, title: str = TITLE
) -> Path:
    """Save the figure of a partial-dependence table in `out_dir`; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import PercentFormatter

    features = list(dict.fromkeys(table["feature"]))
    if not features:
        raise ValueError("the partial-dependence table is empty: nothing to plot")
    directions = directions or {}
    cols = min(3, len(features))
    rows = math.ceil(len(features) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.9 * rows), squeeze=False, layout="constrained")
    for ax, col in zip(axes.ravel(), features, strict=False):
        curve = table[table["feature"] == col].sort_values("position")
        numeric = all(isinstance(v, (int, float)) for v in curve["value"])  # the table mixes numbers and levels
        x = curve["value"].to_numpy(dtype=float) if numeric else curve["position"].to_numpy()
        ax.plot(x, curve["pd"].to_numpy(), color="#c0392b", marker="" if numeric else "o", markersize=3)
        if not numeric:
            labels = curve["value"].astype(str).tolist()
            step = max(1, len(labels) // 8)
            ax.set_xticks(x[::step], labels[::step], rotation=45, fontsize=7)
        sign = directions.get(col)
        ax.set_title(col + ("" if not sign else f" ({'increasing' if sign > 0 else 'decreasing'})"), fontsize=9)
        ax.yaxis.set_major_formatter(PercentFormatter(1.0, decimals=1))
        ax.grid(alpha=0.3)
    for ax in axes.ravel()[len(features) :]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=9)
    path = Path(out_dir) / PNG_NAME
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
