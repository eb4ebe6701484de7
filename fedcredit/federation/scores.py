"""The score histograms of every evaluation, kept in the run directory (`scores/round-NNN.npz`).

What the banks send each round (per class, how many validation loans scored
in each PD bin) is everything the model-risk report needs about the pooled
validation rows: keeping it lets `fedcredit report` draw ROC, KS,
calibration, gains and threshold tables for any run, a deployment's
included, from the run directory alone. One file per evaluated round,
written once (NumPy's compressed `.npz`; read with `allow_pickle=False`):

* `round`: the run's round whose global model was scored (0: the initial model);
* `bins`: the histogram's number of equal-width PD bins on [0, 1];
* `pooled`: int64 (2, bins), the summed histograms of the banks that
  replied: row 0 defaulted loans, row 1 repaid loans;
* `banks`: int64 (k, 2, bins), each bank's own (plain mode; k = 0 in
  secure mode, where the coordinator sees only the sum); `bank_names`: (k,)
  their names as in history.json;
* `holdout`: int64 (2, bins) of the coordinator's hold-out set (simulation
  only; (0, bins) otherwise);
* with protected attributes in the schema: `group_labels` (g,) as
  "attribute=group", `groups` int64 (g, 2, bins) the pooled histograms of
  each group, `bank_groups` (k, g, 2, bins) each bank's (plain mode) with
  `bank_groups_kept` (k, g) bool: a group below `fairness.min-group-size`
  loans at that bank is not kept (zeros), `holdout_groups` (g, 2, bins).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DIR = "scores"
_NAME = re.compile(r"round-(\d+)\.npz")
MAX_BINS = 1_000_000
GROUP_ARRAYS = ("group_labels", "groups", "group_bank_names", "bank_groups", "bank_groups_kept", "holdout_groups")


class ScoresError(ValueError):
    """A scores file is unreadable or not in the documented layout; the message names the file."""


@dataclass(frozen=True)
class RoundScores:
    """One evaluated round's class histograms: (defaulted, repaid) count arrays per bin."""

    round: int
    pooled: tuple[np.ndarray, np.ndarray] | None
    banks: Mapping[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    holdout: tuple[np.ndarray, np.ndarray] | None = None
    group_labels: tuple[str, ...] = ()  # "attribute=group"
    groups: np.ndarray | None = None  # (g, 2, bins) pooled
    bank_groups: Mapping[str, np.ndarray] = field(default_factory=dict)  # bank -> (g, 2, bins), zeros where not kept
    bank_groups_kept: Mapping[str, np.ndarray] = field(default_factory=dict)  # bank -> (g,) bool
    holdout_groups: np.ndarray | None = None

    @property
    def bins(self) -> int:
        for pair in (self.pooled, self.holdout, *self.banks.values()):
            if pair is not None:
                return int(np.asarray(pair[0]).size)
        return 0


def path_of(run_dir: Path, server_round: int) -> Path:
    return Path(run_dir) / DIR / f"round-{server_round:03d}.npz"


def _pair(pair: tuple[np.ndarray, np.ndarray] | None, bins: int) -> np.ndarray:
    if pair is None:
        return np.zeros((0, bins), dtype=np.int64)
    return np.asarray([np.asarray(pair[0]), np.asarray(pair[1])], dtype=np.int64)


def write_scores(run_dir: Path, scores: RoundScores) -> Path:
    """scores/round-NNN.npz, replacing an earlier file of the same round (atomically)."""
    from fedcredit.federation.outputs import write_atomically

    bins = scores.bins
    if not bins:
        raise ValueError(f"round {scores.round}: no histogram to keep")
    names = sorted(scores.banks)
    arrays = {
        "round": np.int64(scores.round),
        "bins": np.int64(bins),
        "pooled": _pair(scores.pooled, bins),
        "banks": np.asarray([_pair(scores.banks[n], bins) for n in names], dtype=np.int64).reshape(len(names), 2, bins),
        "bank_names": np.asarray(names, dtype=np.str_),
        "holdout": _pair(scores.holdout, bins),
    }
    g = len(scores.group_labels)
    if g:
        banked = sorted(scores.bank_groups)
        arrays.update(
            {
                "group_labels": np.asarray(scores.group_labels, dtype=np.str_),
                "groups": _grouped(scores.groups, g, bins),
                "group_bank_names": np.asarray(banked, dtype=np.str_),
                "bank_groups": np.asarray(
                    [_grouped(scores.bank_groups[b], g, bins) for b in banked], dtype=np.int64
                ).reshape(len(banked), g, 2, bins),
                "bank_groups_kept": np.asarray([scores.bank_groups_kept[b] for b in banked], dtype=bool).reshape(
                    len(banked), g
                ),
                "holdout_groups": _grouped(scores.holdout_groups, g, bins),
            }
        )
    path = path_of(run_dir, scores.round)
    path.parent.mkdir(parents=True, exist_ok=True)

    def save(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.savez_compressed(f, **arrays)

    return write_atomically(path, save)


def _grouped(value: np.ndarray | None, g: int, bins: int) -> np.ndarray:
    return (
        np.zeros((0, 2, bins), dtype=np.int64)
        if value is None
        else np.asarray(value, dtype=np.int64).reshape(g, 2, bins)
    )


def _counts(value: np.ndarray, shape: tuple[int, ...], what: str, path: Path) -> np.ndarray:
    if value.dtype.kind not in "iu" or value.shape != shape:
        raise ScoresError(f"{path}: '{what}' is {value.dtype} {value.shape}, expected int64 {shape}")
    if (value < 0).any():
        raise ScoresError(f"{path}: '{what}' has negative counts")
    return value.astype(np.int64)


def read_scores_file(path: Path) -> RoundScores:
    try:
        with np.load(path, allow_pickle=False) as data:
            parts = {k: data[k] for k in ("round", "bins", "pooled", "banks", "bank_names", "holdout")}
            grouped = {k: data[k] for k in GROUP_ARRAYS if k in data.files}
    except KeyError as err:
        raise ScoresError(f"{path}: missing array {err}; is it a fedcredit scores file?") from err
    except (OSError, ValueError, EOFError) as err:
        raise ScoresError(f"{path}: not a readable .npz file ({err}); rerun or remove it") from err
    bins = int(parts["bins"])
    if not 0 < bins <= MAX_BINS:
        raise ScoresError(f"{path}: bins = {bins}, expected 1 .. {MAX_BINS}")
    pooled = parts["pooled"]
    pooled = None if pooled.size == 0 else _counts(pooled, (2, bins), "pooled", path)
    names = [str(n) for n in parts["bank_names"]]
    banks = _counts(parts["banks"], (len(names), 2, bins), "banks", path)
    holdout = parts["holdout"]
    holdout = None if holdout.size == 0 else _counts(holdout, (2, bins), "holdout", path)
    scores = RoundScores(
        int(parts["round"]),
        None if pooled is None else (pooled[0], pooled[1]),
        {n: (banks[i, 0], banks[i, 1]) for i, n in enumerate(names)},
        None if holdout is None else (holdout[0], holdout[1]),
    )
    if not grouped:
        return scores
    if set(grouped) != set(GROUP_ARRAYS):
        raise ScoresError(f"{path}: group arrays {sorted(grouped)}, expected all of {list(GROUP_ARRAYS)}")
    labels = tuple(str(x) for x in grouped["group_labels"])
    g, banked = len(labels), [str(n) for n in grouped["group_bank_names"]]
    pooled_groups = grouped["groups"]
    holdout_groups = grouped["holdout_groups"]
    kept = grouped["bank_groups_kept"]
    if kept.dtype != bool or kept.shape != (len(banked), g):
        raise ScoresError(f"{path}: 'bank_groups_kept' is {kept.dtype} {kept.shape}, expected bool {(len(banked), g)}")
    bank_groups = _counts(grouped["bank_groups"], (len(banked), g, 2, bins), "bank_groups", path)
    return dataclasses.replace(
        scores,
        group_labels=labels,
        groups=None if pooled_groups.size == 0 else _counts(pooled_groups, (g, 2, bins), "groups", path),
        bank_groups={b: bank_groups[i] for i, b in enumerate(banked)},
        bank_groups_kept={b: kept[i] for i, b in enumerate(banked)},
        holdout_groups=None
        if holdout_groups.size == 0
        else _counts(holdout_groups, (g, 2, bins), "holdout_groups", path),
    )


def read_scores(run_dir: Path) -> dict[int, RoundScores]:
    """Every round's histograms of a run directory, by round ({} when the run kept none)."""
    out = {}
    for path in sorted((Path(run_dir) / DIR).glob("round-*.npz")):
        if _NAME.fullmatch(path.name):
            scores = read_scores_file(path)
            out[scores.round] = scores
    return out
