"""`fedcredit compare`: several strategies (and seeds, and DP noise levels) through the real Flower engine.

Every variant runs inside one `flwr run` on a private local SuperLink (a
`sweep`: the banks stay warm, statistics are gathered once per split), each
exactly as a run of its own would, on the same partitions for the same seed, and the table compares what a
consortium would look at: pooled validation AUC and KS, hold-out AUC,
rounds, wall time, epsilon when differential privacy is on, and with
protected attributes in the schema the worst adverse impact ratio, with
the variants on the AUC / fairness trade-off front marked. Writes
comparison.md, comparison.csv and comparison.png (AUC per round). The
command line is `fedcredit.cli.compare`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from fedcredit.core.config import ConfigError, parse_run_config
from fedcredit.deploy.localrun import LocalFlower
from fedcredit.federation.history import metric, read_history

COMPLETED = "completed"


def variants(
    strategies: Sequence[str],
    privacy: str = "none",
    noise: Sequence[float] = (),
    extra: Mapping[str, Any] | None = None,
    exclude: Sequence[str] = (),
) -> list[tuple[str, dict[str, Any]]]:
    """(label, run config) for every strategy x noise level x feature set, checked before anything runs.

    `exclude`: values of `excluded-features` to compare ("" keeps every
    feature; "a+b" drops two), for less discriminatory alternatives.
    """
    if noise and privacy == "none":
        raise ConfigError(
            "--noise needs --privacy (e.g. --privacy server-fixed): without it every noise level would be the same run"
        )
    out = []
    for name in strategies:
        for level in noise or [None]:
            for dropped in exclude or [None]:
                config = {**(extra or {}), "strategy.name": name}
                label = name
                if privacy != "none":
                    config["privacy.mode"] = privacy
                    label = f"{name} {privacy}"
                    if level is not None:
                        config["privacy.noise-multiplier"] = level
                        label = f"{name} {privacy} z={level:g}"
                if dropped is not None:
                    config["excluded-features"] = dropped
                    label += f" without {dropped}" if dropped else " all features"
                parse_run_config(config)  # a typo fails now, not after an hour of runs
                out.append((label, config))
    return out


def summarise_run(run_dir: Path) -> dict[str, Any]:
    """One row of the table from a run's history.json: final figures, and AUC per round for the plot."""
    history = read_history(run_dir / "history.json")
    rounds = history.trained_rounds
    last = rounds[-1] if rounds else None
    return {
        "pooled val AUC": last.pooled_auc if last else None,
        "pooled val KS": metric(last.pooled, "ks") if last else None,
        "hold-out AUC": last.holdout_auc if last else None,
        "rounds": len(rounds),
        "strategy s": history.seconds,
        "epsilon": history.epsilon,
        "worst AIR": worst_air(last.fairness) if last else None,
        "auc per round": [r.pooled_auc for r in rounds],
        "hold-out per round": [r.holdout_auc for r in rounds],
    }


def worst_air(fairness: Mapping[str, Any] | None) -> float | None:
    """The lowest adverse impact ratio over the protected attributes of a round (None: none judged)."""
    values = [f["worst-air"] for f in (fairness or {}).values() if f.get("worst-air") is not None]
    return min(values) if values else None


def trade_off_front(means: pd.DataFrame) -> pd.Series:
    """Whether each variant is on the front of pooled AUC against worst AIR: no other is as good in both and better in one."""
    if "worst AIR" not in means or means["worst AIR"].isna().all():
        return pd.Series([None] * len(means), index=means.index, dtype=object)
    auc, air = means["pooled val AUC"], means["worst AIR"]
    on = []
    for i in means.index:
        others = means.index != i
        dominated = (
            (auc[others] >= auc[i]) & (air[others] >= air[i]) & ((auc[others] > auc[i]) | (air[others] > air[i]))
        ).any()
        on.append(bool(pd.notna(auc[i]) and pd.notna(air[i]) and not dominated))
    return pd.Series(on, index=means.index)


def plot(table: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = plt.get_cmap("tab10")
    for i, (label, rows) in enumerate(table.groupby("variant", sort=False)):
        for ax, column in zip(axes, ("auc per round", "hold-out per round")):
            curves = [c for c in rows[column] if isinstance(c, list) and c and all(v is not None for v in c)]
            if not curves:
                continue
            for curve in curves:
                ax.plot(range(1, len(curve) + 1), curve, color=colours(i % 10), alpha=0.25, linewidth=1)
            mean = pd.DataFrame(curves).mean()
            ax.plot(range(1, len(mean) + 1), mean, color=colours(i % 10), linewidth=2, marker="o", label=label)
    axes[0].set_title("Pooled validation AUC per round")
    axes[1].set_title("Hold-out AUC per round")
    for ax in axes:
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ROC AUC")
    fig.suptitle("thick lines: mean over seeds; thin lines: each seed", fontsize=9, y=0.995)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(len(labels), 4), frameon=False)
    fig.tight_layout(rect=(0, 0.1, 1, 0.97))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_dir_name(label: str, seed: int) -> str:
    """Where one variant's run goes under `runs/`: the label without spaces or '='."""
    return f"{label.replace(' ', '_').replace('=', '')}/seed{seed}"


def sweep_text(todo: list[tuple[str, dict[str, Any]]], seeds: Sequence[int], extra: Mapping[str, Any]) -> str:
    """The `sweep` run-config value that runs every variant x seed (variants are a product of their keys)."""
    keys = [k for k in todo[0][1] if k not in extra]
    values = {k: list(dict.fromkeys(config[k] for _, config in todo)) for k in keys}
    parts = [f"{k}={','.join(_text(v) for v in vals)}" for k, vals in values.items()]
    return "; ".join([*parts, f"seed={','.join(str(s) for s in seeds)}"])


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def run_all(
    todo: list[tuple[str, dict[str, Any]]],
    seeds: Sequence[int],
    federation_config: str,
    out: Path,
    say: Callable[[str], None] = print,
    extra: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Every variant x seed inside one `flwr run` (a sweep over the same warm banks); one row per variant run."""
    extra = dict(extra or {})
    runs = out / "runs"
    config = {**extra, "output-dir": str(runs), "sweep": sweep_text(todo, seeds, extra)}
    with LocalFlower(out / "flwr") as flower:
        result = flower.run(config, federation_config, timeout=6 * 3600)
    say(f"one flwr run with {len(todo) * len(seeds)} variants: {result.status} in {result.seconds:.0f} s")
    rows = []
    for run_dir in sorted(runs.iterdir()) if runs.is_dir() else []:
        history = read_history(run_dir / "history.json")
        overrides = (history.sweep or {}).get("overrides", {})
        label = next(
            (lbl for lbl, cfg in todo if all(overrides.get(k) == v for k, v in cfg.items() if k not in extra)), None
        )
        if label is None:
            continue
        row: dict[str, Any] = {
            "variant": label,
            "seed": overrides.get("seed"),
            "status": history.status,
            "run": run_dir.name,
        }
        if history.status == "completed":
            row.update(summarise_run(run_dir))
        else:
            row["error"] = history.reason
        rows.append(row)
        say(
            f"{label} seed {row['seed']}: {row['status']} hold-out AUC {row.get('hold-out AUC')} pooled val AUC {row.get('pooled val AUC')}"
        )
    expected = len(todo) * len(seeds)
    if len(rows) < expected:
        say(f"only {len(rows)} of {expected} variants left a run directory: {result.status}: {result.details}")
    table = pd.DataFrame(rows)
    table.attrs["flwr run s"] = round(result.seconds, 1)
    return table


def write(table: pd.DataFrame, out: Path, federation_config: str, seeds: Sequence[int]) -> pd.DataFrame:
    """comparison.csv, comparison.md and comparison.png in `out`; returns the mean over seeds per variant."""
    columns = [
        c
        for c in (
            "variant",
            "seed",
            "status",
            "pooled val AUC",
            "pooled val KS",
            "hold-out AUC",
            "rounds",
            "epsilon",
            "worst AIR",
            "strategy s",
            "run",
        )
        if c in table
    ]
    table[columns].to_csv(out / "comparison.csv", index=False)
    numeric = [
        c
        for c in ("pooled val AUC", "pooled val KS", "hold-out AUC", "worst AIR", "epsilon", "strategy s")
        if c in table
    ]
    means = table.groupby("variant", sort=False)[numeric].mean().round(4).reset_index()
    if "worst AIR" in means and means["worst AIR"].notna().any():
        means["on AUC-AIR front"] = trade_off_front(means)
    (out / "comparison.md").write_text(
        "# Strategy comparison\n\nEvery variant ran inside one `flwr run` of the app (a sweep over the same "
        f"banks; {table.attrs.get('flwr run s', '?')} s in all), federation `{federation_config}`, "
        f"seeds {list(seeds)}.\n\n## Per run\n\n"
        + table[columns].round(4).to_markdown(index=False)
        + "\n\n## Mean over seeds\n\n"
        + means.to_markdown(index=False)
        + (
            "\n\nworst AIR: the lowest adverse impact ratio of any protected group against the most-approved group "
            "of its attribute (pooled validation loans, final round; below 0.8 the four-fifths rule flags it). On the "
            "front: no other variant has both a higher pooled AUC and a higher worst AIR.\n"
            if "on AUC-AIR front" in means
            else "\n"
        )
    )
    if "auc per round" in table:
        plot(table, out / "comparison.png")
    return means
