"""The validation pack: every figure of the model-risk report as data, the content of report.json.

Built from the run directory alone (history.json, config.json,
scores/round-NNN.npz, profile.json, reasons.json, baseline.json, and what
report.py reads of model-final.keras), so a deployment's report has the same sections as a
simulation's: ROC, KS, calibration, gains and thresholds come from the
pooled validation histograms the banks sent (`fedcredit.core.binned`),
with the hold-out set's beside them where the run had one. Every figure
says which rows it describes and carries a 95 % interval. In secure mode
the coordinator never saw a bank's own figures, so the per-bank parts say
so instead. No plotting, no HTML: `report_figures` and `report_sections`
read this.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fedcredit.core import binned as bn
from fedcredit.core import fairness, metrics
from fedcredit.core.binned import PSI_STABLE, PSI_UNSTABLE, psi_reading
from fedcredit.federation.scores import RoundScores
from fedcredit.risk import stability
from fedcredit.risk.rundir import Run

SECURE_NOTE = (
    "Secure aggregation was on: the coordinator received only the sums of the banks' histograms and "
    "statistics, never one bank's, so no per-bank figure exists outside the banks (each bank's own figures "
    "are in its log). Only pooled figures are shown."
)
BEST_ROUND_RULE = (
    "model-best.keras is the round with the highest pooled validation AUC, provided it is also the highest "
    "with any one bank's rows left out; otherwise the latest round (one bank's figures must not decide). In "
    "secure mode, where no bank's figures exist, it is the latest round."
)
MODEL_KEYS = (
    "hidden-units",
    "dropout",
    "l2",
    "learning-rate",
    "batch-size",
    "local-epochs",
    "positive-weight",
    "num-server-rounds",
    "strategy.name",
    "privacy.mode",
    "privacy.dp-sgd",
    "privacy.secure-aggregation",
    "min-category-count",
    "histogram-bins",
    "threshold",
    "seed",
)


def secure(run: Run) -> bool:
    return bool(run.history.config.get("privacy.secure-aggregation"))


def records(table: pd.DataFrame) -> list[dict[str, Any]]:
    return [{k: _plain(v) for k, v in row.items()} for row in table.to_dict(orient="records")]


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    return value


def binned_of(pair: tuple[np.ndarray, np.ndarray]) -> bn.Binned:
    return bn.Binned(pair[0], pair[1])


# --- one set of scored loans ---------------------------------------------------


def figures(b: bn.Binned, threshold: float, described: str) -> dict[str, Any]:
    """The whole pack for one set of binned scores (pooled validation rows, or the hold-out set)."""
    auc = bn.delong_auc(b)
    ks_value, ks_at = bn.ks(b)
    thresholds = bn.threshold_table(b, [*bn.CUTOFFS, threshold])
    fpr, tpr = bn.roc(b)
    occupied = np.r_[True, (b.bad + b.good)[::-1] > 0]  # ROC points where the curve moves (and the origin)
    out: dict[str, Any] = {
        "rows": {"loans": b.rows, "defaults": b.n_bad, "described": described},
        "resolution": {
            "bins": b.bins,
            "bin-width": b.width,
            "auc-bounds": list(metrics.histogram_auc_bounds(b.bad, b.good)) if b.both_classes else None,
        },
        "default-rate": bn.rate(b.n_bad, b.rows).to_json(),
        "mean-pd": b.mean_pd(),
        "auc": auc.to_json(),
        "gini": bn.Estimate(2 * auc.value - 1, 2 * auc.low - 1, 2 * auc.high - 1, 2 * auc.se, auc.method).to_json(),
        "ks": {**bn.ks_estimate(b).to_json(), "at-pd": ks_at},
        "calibration-in-the-large": bn.calibration_in_the_large(b).to_json(),
        "calibration": records(bn.calibration(b)) if b.rows else [],
        "bands": records(bn.score_bands(b)) if b.both_classes else [],
        "thresholds": records(thresholds),
        "at-threshold": records(thresholds[thresholds["cutoff"] == threshold])[0],
        "distribution": records(bn.coarse_distribution(b)),
        "roc": {"fpr": fpr[occupied].tolist(), "tpr": tpr[occupied].tolist()},
    }
    if not math.isfinite(ks_value):
        out["ks"]["at-pd"] = None
    return out


# --- the parts -----------------------------------------------------------------


def final_round(run: Run, scores: Mapping[int, RoundScores]) -> int | None:
    """The last round whose global model the banks scored: the model of model-final.keras."""
    evaluated = [r for r, s in scores.items() if s.pooled is not None and r > 0]
    return max(evaluated) if evaluated else None


def _banks_text(names: list[str]) -> str:
    return f"{len(names)} bank{'s' if len(names) != 1 else ''}" + (f" ({', '.join(names)})" if names else "")


def validation(run: Run, scores: Mapping[int, RoundScores], final: int | None) -> dict[str, Any] | None:
    if final is None:
        return None
    entry = run.history.round(final)
    names = entry.evaluate.ok if entry is not None and entry.evaluate is not None else []
    described = (
        f"pooled validation loans of {_banks_text(names)}, scored by the banks with the final global model "
        f"(round {final})"
    )
    out = figures(binned_of(scores[final].pooled), run.cfg.threshold, described)  # type: ignore[arg-type]
    pooled = entry.pooled if entry is not None else None
    out["exact-from-sums"] = {k: (pooled or {}).get(k) for k in ("brier", "logloss", "mean-pd", "default-rate")}
    return out


def holdout(run: Run, scores: Mapping[int, RoundScores], final: int | None) -> dict[str, Any] | None:
    last = final if final is not None else max((r for r in scores if r > 0), default=None)
    if last is None or scores[last].holdout is None:
        return None
    described = (
        f"the coordinator's hold-out loans (test-fraction {run.cfg.test_fraction:g} of the embedded data, never "
        f"trained on), scored with the final global model (round {last})"
    )
    out = figures(binned_of(scores[last].holdout), run.cfg.threshold, described)  # type: ignore[arg-type]
    entry = run.history.round(last)
    exact = entry.holdout if entry is not None else None
    out["exact-from-rows"] = {k: (exact or {}).get(k) for k in ("auc", "ks", "brier", "logloss")}
    return out


def rounds(run: Run, scores: Mapping[int, RoundScores]) -> dict[str, Any]:
    """Round by round: pooled validation and hold-out AUC with intervals; how the best round was chosen."""
    rows = []
    for r in sorted(scores):
        s = scores[r]
        val = bn.delong_auc(binned_of(s.pooled)) if s.pooled is not None else bn.NAN
        hold = bn.delong_auc(binned_of(s.holdout)) if s.holdout is not None else bn.NAN
        rows.append({"round": r, "validation-auc": val.to_json(), "holdout-auc": hold.to_json()})
    by_round = {row["round"]: row for row in rows}
    best, last = run.history.best_round, final_round(run, scores)
    evaluated = [row for row in rows if row["round"] > 0 and math.isfinite(row["validation-auc"]["value"])]
    highest = max(evaluated, key=lambda row: row["validation-auc"]["value"])["round"] if evaluated else None

    def against_final(r: int | None) -> dict[str, Any] | None:
        if r is None or last is None or r == last or r not in by_round:
            return None
        a, b = (bn.Estimate(**by_round[x]["validation-auc"]) for x in (r, last))
        out = bn.difference(a, b)
        out["method"] = "difference of DeLong AUCs, standard errors treated as independent (conservative)"
        return out

    comparison, top = against_final(best), against_final(highest)
    return {
        "rounds": rows,
        "best-round": best,
        "final-round": last,
        "highest-validation-auc-round": highest,
        "rule": BEST_ROUND_RULE,
        "best-vs-final": comparison,
        "highest-vs-final": top,
        "not-meaningful": bool(comparison is not None and not comparison["beyond_se"]),
    }


def _psi_no_shift(n_actual: int, n_reference: int, bands: int) -> float:
    """PSI two samples of these sizes from one distribution exceed only 5 % of the time (chi-square approximation)."""
    from scipy.stats import chi2

    if n_actual == 0 or n_reference == 0 or bands < 2:
        return math.nan
    return float((1 / n_actual + 1 / n_reference) * chi2.ppf(0.95, bands - 1))


def banks(run: Run, scores: Mapping[int, RoundScores], final: int | None) -> dict[str, Any]:
    """Per bank (plain mode): AUC, KS, approval and bad rates at the threshold, score PSI against the other banks."""
    if secure(run):
        return {"hidden": SECURE_NOTE, "banks": []}
    if final is None or not scores[final].banks:
        return {"hidden": "No bank's scores were kept for the final round.", "banks": []}
    per_bank = {name: binned_of(pair) for name, pair in scores[final].banks.items()}
    out = []
    for name, b in per_bank.items():
        others = [o for other, o in per_bank.items() if other != name]
        at = records(bn.threshold_table(b, [run.cfg.threshold]))[0] if b.rows else {}
        row: dict[str, Any] = {
            "bank": name,
            "loans": b.rows,
            "defaults": b.n_bad,
            "default-rate": bn.rate(b.n_bad, b.rows).to_json(),
            "auc": bn.delong_auc(b).to_json(),
            "ks": bn.ks_estimate(b).to_json(),
            "approval-rate": bn.Estimate(
                at.get("approval_rate", math.nan),
                at.get("approval_low95", math.nan),
                at.get("approval_high95", math.nan),
            ).to_json(),
            "bad-rate-approved": bn.Estimate(
                at.get("bad_rate_approved", math.nan),
                at.get("bad_rate_low95", math.nan),
                at.get("bad_rate_high95", math.nan),
                method="Wilson",
            ).to_json(),
            "psi": None,
        }
        if others:
            ref = bn.Binned.total(others)
            counts, ref_counts = b.bad + b.good, ref.bad + ref.good
            psi = bn.psi_estimate(counts, ref_counts)
            n_bands = bn.band_edges(ref_counts).size
            row["psi"] = {
                **psi.to_json(),
                "no-shift-95": _psi_no_shift(b.rows, ref.rows, n_bands),
                "reading": psi_reading(psi.value),
                "against": f"the other {len(others)} bank(s)' validation loans pooled ({ref.rows} loans)",
            }
        out.append(row)
    return {"hidden": None, "banks": out, "rows": f"each bank's validation loans, final model (round {final})"}


def fair_lending(run: Run, scores: Mapping[int, RoundScores], final: int | None) -> dict[str, Any]:
    """Per protected attribute: each group's outcomes on the pooled validation loans (and hold-out, and per bank)."""
    s = scores.get(final) if final is not None else None
    if s is None or s.groups is None or not s.group_labels:
        return {
            "attributes": {},
            "why": "The schema declares no protected attribute (or the run kept no group histograms): no "
            "fair-lending figures. Declare them in the schema's [protected] tables.",
        }
    threshold, min_rows = run.cfg.threshold, run.cfg.fairness_min_group_size
    by_attr: dict[str, list[int]] = {}
    for i, label in enumerate(s.group_labels):
        by_attr.setdefault(label.split("=", 1)[0], []).append(i)
    out: dict[str, Any] = {}
    for attr, rows in by_attr.items():
        names = [s.group_labels[i].split("=", 1)[1] for i in rows]
        part: dict[str, Any] = {
            "pooled": fairness.attribute(fairness.split_groups(s.groups[rows], names), threshold, min_rows)
        }
        if s.holdout_groups is not None:
            part["holdout"] = fairness.attribute(
                fairness.split_groups(s.holdout_groups[rows], names), threshold, min_rows
            )
        if not secure(run):  # each bank's groups of at least fairness.min-group-size loans; the others were never kept
            part["banks"] = {}
            for bank, counts in s.bank_groups.items():
                kept = s.bank_groups_kept[bank][rows]
                own = fairness.split_groups(counts[rows], names)
                part["banks"][bank] = fairness.attribute(
                    {n: g for (n, g), keep in zip(own.items(), kept) if keep}, threshold, min_rows
                )
        out[attr] = part
    return {
        "attributes": out,
        "rows": f"pooled validation loans, final model (round {final}); approved: PD below {threshold:g}",
        "min-group-size": min_rows,
        "why": SECURE_NOTE if secure(run) else None,
    }


def _status(ok_point: bool, ok_interval: bool) -> str:
    return "pass" if ok_point and ok_interval else ("borderline" if ok_point else "fail")


def monotonicity_check(mono: dict[str, Any] | None) -> dict[str, Any] | None:
    """The headline check of `decisions.monotonicity_part`: pass when every declared constraint holds on the grid.

    A property of the model on the grid, not an estimate: it has no interval.
    """
    if mono is None:
        return None
    check: dict[str, Any] = {
        "check": "monotonicity",
        "figure": "declared monotone constraints that hold on the grid",
        "rule": "every one: the PD never moves against its declared direction (by more than 1e-6); a property, "
        "so no interval",
    }
    if "checks" not in mono:
        return {**check, "status": "not judged", "why": mono.get("why") or "not checked"}
    held, total = mono["summary"]["held"], mono["summary"]["constraints"]
    return {
        **check,
        "result": f"{held} of {total} hold",
        "status": "pass" if held == total else "fail",
        "rows": mono["rows"],
    }


def verdict(
    run: Run,
    val: dict[str, Any] | None,
    per_bank: dict[str, Any],
    fair: dict[str, Any] | None = None,
    mono: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The headline: each threshold the consortium set, its figure with interval, pass / borderline / fail.

    Pass: the whole 95 % interval is on the right side; borderline: the
    figure is but its interval is not; fail: the figure is not. The
    monotonicity check is a property (`monotonicity_check`): pass or fail.
    """
    cfg = run.cfg
    checks: list[dict[str, Any]] = []
    if val is None:
        return {"overall": "not judged", "why": "no pooled validation figures in this run", "checks": checks}
    auc = val["auc"]
    checks.append(
        {
            "check": "discrimination",
            "figure": "pooled validation AUC",
            "rule": f"at least {cfg.validation_min_auc:g} (validation.min-auc)",
            **auc,
            "status": _status(auc["value"] >= cfg.validation_min_auc, auc["low"] >= cfg.validation_min_auc),
            "rows": val["rows"]["described"],
        }
    )
    gap, limit = val["calibration-in-the-large"], cfg.validation_max_calibration_gap
    checks.append(
        {
            "check": "calibration",
            "figure": "observed default rate - mean PD, pooled validation loans",
            "rule": f"within +/- {limit:g} (validation.max-calibration-gap)",
            **gap,
            "status": _status(abs(gap["value"]) <= limit, max(abs(gap["low"]), abs(gap["high"])) <= limit),
            "rows": val["rows"]["described"],
        }
    )
    psis = [b["psi"] for b in per_bank["banks"] if b.get("psi")]
    if psis:
        worst_bank = max(per_bank["banks"], key=lambda b: b["psi"]["value"] if b.get("psi") else -1)
        worst = worst_bank["psi"]
        checks.append(
            {
                "check": "stability",
                "figure": f"largest score PSI of a bank against the others ({worst_bank['bank']})",
                "rule": f"at most {cfg.validation_max_psi:g} (validation.max-psi)",
                **{k: worst[k] for k in ("value", "low", "high", "se", "method")},
                "status": _status(worst["value"] <= cfg.validation_max_psi, worst["high"] <= cfg.validation_max_psi),
                "rows": per_bank.get("rows", ""),
            }
        )
    else:
        checks.append(
            {
                "check": "stability",
                "figure": "score PSI of each bank against the others",
                "rule": f"at most {cfg.validation_max_psi:g} (validation.max-psi)",
                "status": "not judged",
                "why": per_bank.get("hidden") or "fewer than two banks",
            }
        )
    worst = [
        (attr, part["pooled"]["worst-group"], part["pooled"]["worst-air"])
        for attr, part in (fair or {}).get("attributes", {}).items()
        if part["pooled"]["worst-air"] is not None
    ]
    if worst:
        attr, group, air = min(worst, key=lambda w: w[2]["value"])
        checks.append(
            {
                "check": "adverse impact",
                "figure": f"lowest adverse impact ratio: {attr} = {group} against the most-approved group",
                "rule": f"at least {fairness.FOUR_FIFTHS:g} (the four-fifths rule)",
                **air,
                "status": _status(air["value"] >= fairness.FOUR_FIFTHS, air["low"] >= fairness.FOUR_FIFTHS),
                "rows": (fair or {}).get("rows", ""),
            }
        )
    mono_check = monotonicity_check(mono)
    if mono_check is not None:
        checks.append(mono_check)
    judged = [c["status"] for c in checks if c["status"] != "not judged"]
    overall = "fail" if "fail" in judged else ("borderline" if "borderline" in judged else "pass")
    return {"overall": overall, "checks": checks}


def data(run: Run, scores: Mapping[int, RoundScores], final: int | None, profile: dict[str, Any] | None) -> dict:
    """Rows and default rates per bank and split, the features, missing rates and the unknown bucket."""
    h = run.history
    preprocessing = _read_json(run.dir / "preprocessing.json") or {}
    vocabulary = preprocessing.get("vocabulary") or {}
    final_scores = scores.get(final) if final is not None else None
    rows = []
    for name, record in h.banks.items():
        val = final_scores.banks.get(name) if final_scores is not None else None
        rows.append(
            {
                "bank": name,
                "training-rows": record.training_rows,
                "validation-rows": int(np.sum(val)) if val is not None else None,
                "validation-defaults": int(np.sum(val[0])) if val is not None else None,
            }
        )
    pooled = final_scores.pooled if final_scores is not None else None
    out: dict[str, Any] = {
        "banks": rows,
        "pooled-validation": {"rows": int(np.sum(pooled)), "defaults": int(np.sum(pooled[0]))} if pooled else None,
        "training-rows": sum(r.training_rows or 0 for r in h.banks.values()),
        "numeric-features": sorted(preprocessing.get("mean") or {}),
        "categorical-features": {col: len(values) for col, values in sorted(vocabulary.items())},
        "min-category-count": run.cfg.min_category_count,
        "statistics-failed": dict(h.statistics_failed),
        "profile": profile,
    }
    if secure(run):
        out["hidden"] = SECURE_NOTE
    return out


def model(run: Run, model_info: dict[str, Any] | None, model_sha256: str | None) -> dict[str, Any]:
    h = run.history
    return {
        "architecture": model_info,
        "config": {k: run.config.get(k) for k in MODEL_KEYS if k in run.config},
        "schema-sha256": h.schema_sha256,
        "roster-sha256": h.roster_sha256,
        "model-final-sha256": h.model_final_sha256,
        "model-file-matches": model_sha256 is not None and model_sha256 == h.model_final_sha256,
        "software": h.software,
        "strategy": h.strategy.to_json() if h.strategy is not None else None,
    }


def baseline(run: Run) -> dict[str, Any] | None:
    return _read_json(run.dir / "baseline.json")


def personalisation(run: Run) -> list[dict[str, Any]]:
    """Per bank: personalised and local-only AUC minus the global model's, against Hanley-McNeil standard errors."""
    record = run.history.personalisation or {}
    out = []
    for bank, r in (record.get("banks") or {}).items():
        val = r.get("validation") or {}
        glob = val.get("global") or {}
        n = glob.get("num-examples") or 0
        n_bad = round((glob.get("default-rate") or 0) * n)
        for candidate in ("personalised", "local-only"):
            other = val.get(candidate) or {}
            if glob.get("auc") is None or other.get("auc") is None:
                continue
            a = bn.Estimate(
                other["auc"], math.nan, math.nan, metrics.auc_standard_error(other["auc"], n_bad, n - n_bad)
            )
            g = bn.Estimate(glob["auc"], math.nan, math.nan, metrics.auc_standard_error(glob["auc"], n_bad, n - n_bad))
            out.append({"bank": bank, "model": candidate, "kept": r.get("kept"), **bn.difference(a, g)})
    return out


def limitations(
    run: Run, val: dict[str, Any] | None, hold: dict[str, Any] | None, mono: dict[str, Any] | None = None
) -> list[str]:
    """What a reader must know before relying on these figures, from the run's own facts."""
    out = []
    if val is not None:
        width = val["resolution"]["bin-width"]
        out.append(
            f"Validation figures come from score histograms of {val['resolution']['bins']} bins (width {width:g}): "
            "exact for PDs rounded down to a bin edge; AUC within the stated bounds of the row-level value, mean PD "
            f"within {width / 2:g}, and cut-offs act at bin edges."
        )
        out.append(
            "The validation loans also chose the best round (model-best.keras), so its validation figures are "
            "slightly optimistic; the final model's are not selected on them beyond the number of rounds."
        )
        if val["rows"]["defaults"] < 100:
            out.append(
                f"Only {val['rows']['defaults']} defaults in the pooled validation loans: every interval is wide; "
                "do not read differences smaller than the intervals."
            )
    if hold is None:
        out.append(
            "No hold-out set: the coordinator holds no loan data (a deployment). The pooled validation loans are "
            "the only out-of-sample evidence; each bank should keep an out-of-time sample of its own."
        )
    if secure(run):
        out.append("Secure aggregation: no per-bank figure, so differences between banks cannot be seen here.")
    if mono is not None and "checks" in mono and not mono.get("holdout-rows"):
        out.append(
            "Monotonicity: the coordinator checks the typical applicant only (it holds no loans); the check over real "
            "loans runs at each bank on up to 100 of its validation loans and is as the banks report it."
        )
    out.append(
        "Intervals assume independent loans and a stable population; they do not cover a change in the economy, "
        "in underwriting or in the data a bank sends."
    )
    return out


def profile_part(run_dir: Path) -> dict[str, Any] | None:
    """The data-section tables and feature stability of profile.json (None: the run has none)."""
    profile = _read_json(Path(run_dir) / "profile.json")
    if profile is None:
        return None
    if "error" in profile or "features" not in profile:
        return {"table": [], "unknown": [], "csi": [], "why": f"profile.json holds no counts: {profile.get('error')}"}
    data = stability.data_section(profile)
    table, unknown = [], []
    for row in data.to_dict(orient="records"):
        missing = {k.split(":", 1)[1]: v for k, v in row.items() if k.startswith("missing:")}
        shares = {k.split(":", 1)[1]: v for k, v in row.items() if k.startswith("unknown:")}
        table.append(
            {k: row[k] for k in ("bank", "split", "rows", "bads")}
            | {"default-rate": row["default_rate"], "missing": missing}
        )
        if row["split"] == "train":
            unknown.append({"bank": row["bank"], "shares": shares})
    notes = [f"{b}: profile refused: {w}" for b, w in (profile.get("refused") or {}).items()]
    notes += [f"{b}: no profile: {w}" for b, w in (profile.get("failed") or {}).items()]
    if profile.get("not-pooled"):
        notes.append(f"no pooled profile: {profile['not-pooled']}")
    if profile.get("mode") == "secure":
        notes.append("Secure mode: only the securely summed profile of all banks; no per-bank counts, so no CSI.")
    csi = records(stability.feature_stability(profile)) if len(profile.get("banks") or {}) > 1 else []
    return {"table": table, "unknown": unknown, "csi": csi, "why": " ".join(notes) or None}


def _read_json(path: Path) -> Any:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None


def build(
    run: Run,
    scores: Mapping[int, RoundScores],
    model_info: dict[str, Any] | None = None,
    model_sha256: str | None = None,
    profile: dict[str, Any] | None = None,
    reasons: dict[str, Any] | None = None,
    monotonicity: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The whole pack (report.json) of a run directory.

    `reasons`, `monotonicity`: the parts of `fedcredit.risk.decisions` (they
    need the final model, which report.py loads).
    """
    final = final_round(run, scores)
    val, hold = validation(run, scores, final), holdout(run, scores, final)
    per_bank = banks(run, scores, final)
    fair = fair_lending(run, scores, final)
    return {
        "run": {
            "run-id": run.history.run_id,
            "status": run.history.status,
            "mode": "secure" if secure(run) else "plain",
            "evaluation": run.history.evaluation,
            "final-round": final,
            "threshold": run.cfg.threshold,
        },
        "thresholds": {
            "validation.min-auc": run.cfg.validation_min_auc,
            "validation.max-psi": run.cfg.validation_max_psi,
            "validation.max-calibration-gap": run.cfg.validation_max_calibration_gap,
            "psi-readings": {"stable-below": PSI_STABLE, "unstable-above": PSI_UNSTABLE},
        },
        "verdict": verdict(run, val, per_bank, fair, monotonicity),
        "fair-lending": fair,
        "reasons": reasons,
        "monotonicity": monotonicity,
        "validation": val,
        "holdout": hold,
        "rounds": rounds(run, scores),
        "banks": per_bank,
        "data": data(run, scores, final, profile),
        "model": model(run, model_info, model_sha256),
        "baseline": baseline(run),
        "personalisation": personalisation(run),
        "limitations": limitations(run, val, hold, monotonicity),
    }
