"""The validation pack of a real in-process run: what the banks sent, kept, equals their rows' figures.

The real ServerApp logic drives the real ClientApp (`InProcessGrid`), in
plain and in secure mode. The run directory's score histograms must be
exactly the banks' validation scores binned, the pack's pooled figures those
of the rows within the stated bin resolution, and in secure mode no bank's
figures may exist anywhere.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fedcredit.cli import main
from fedcredit.core import binned as bn
from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set, load_bank, schema_of
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import server
from fedcredit.federation.scores import read_scores
from fedcredit.risk import curves, explain, stability
from fedcredit.risk.rundir import load_run

BANKS = 4
CONFIG = {
    "partitioning": "iid",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "hidden-units": "8",
    "learning-rate": 0.01,
    "seed": 3,
    "personalize.epochs": 0,
}


def _run(tmp: Path, **extra) -> Path:
    config = {**CONFIG, "output-dir": str(tmp), **extra}
    with serverapp_identity():
        history = server.run(InProcessGrid(config, BANKS), config, "pack", APP_DIR)
    assert history.status == "completed"
    return Path(history.output_dir)


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    run_dir = _run(tmp_path_factory.mktemp("plain"))
    assert main(["report", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Path:
    run_dir = _run(tmp_path_factory.mktemp("secure"), **{"privacy.secure-aggregation": True})
    assert main(["report", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def rows(plain) -> dict:
    """The final model's scores of every simulated bank's validation rows, and of the hold-out set."""
    run = load_run(plain)
    model = mdl.load(plain / "model-final.keras")
    target = schema_of(run.cfg).target
    out = {}
    for i in range(BANKS):
        bank = load_bank(run.cfg, {"partition-id": i, "num-partitions": BANKS})
        out[bank.name] = (mdl.score(model, bank.val), bank.val[target].to_numpy().astype(bool))
    test = holdout_set(run.cfg)
    out["holdout"] = (mdl.score(model, test), test[target].to_numpy().astype(bool))
    return out


def test_every_evaluated_round_keeps_the_banks_histograms(plain):
    scores = read_scores(plain)
    history = load_run(plain).history
    assert sorted(scores) == [0, 1, 2]
    assert scores[0].pooled is None and scores[0].holdout is not None  # the initial model: hold-out only
    for r in (1, 2):
        assert sorted(scores[r].banks) == sorted(history.banks)
        pooled = bn.Binned(*scores[r].pooled)
        assert pooled == bn.Binned.total([bn.Binned(*p) for p in scores[r].banks.values()])
        assert bn.delong_auc(pooled).value == pytest.approx(history.round(r).pooled_auc, abs=1e-12)


def test_kept_histograms_are_the_banks_validation_scores_binned(plain, rows):
    final = read_scores(plain)[2]
    bins = load_run(plain).cfg.histogram_bins
    for name, (s, y) in rows.items():
        kept = final.holdout if name == "holdout" else final.banks[name]
        assert bn.Binned(*kept) == bn.Binned.of_scores(s, y, bins), name


def test_pooled_figures_equal_the_row_level_ones_within_the_bin_resolution(plain, rows):
    pack = json.loads((plain / "report.json").read_text())
    val = pack["validation"]
    s = np.concatenate([rows[b][0] for b in rows if b != "holdout"])
    y = np.concatenate([rows[b][1] for b in rows if b != "holdout"])
    width = val["resolution"]["bin-width"]
    assert val["rows"]["loans"] == s.size and val["rows"]["defaults"] == y.sum()
    # AUC: the row-level value lies within the histogram's bounds; DeLong's SE within 2 % of the row-level one
    low, high = val["resolution"]["auc-bounds"]
    exact_auc = metrics.exact_auc(s, y)
    assert low <= exact_auc <= high and high - low < 0.01  # 0.0036 wide on this run
    aucs, cov = metrics.delong([s], y)
    assert val["auc"]["se"] == pytest.approx(math.sqrt(cov[0, 0]), rel=0.02)
    # KS: at most one bin's share of each class below the row-level KS
    b = bn.Binned(*read_scores(plain)[2].pooled)
    exact_ks = metrics.auc_ks(s, y)[1]
    assert -1e-12 <= exact_ks - val["ks"]["value"] <= float(np.max(b.bad / b.n_bad + b.good / b.n_good)) + 1e-12
    # calibration bands and gains: the same counts between the same PD edges; mean PD within half a bin
    for band in val["calibration"]:
        inside = (s >= band["pd_low"] - 1e-12) & (s < band["pd_high"] - 1e-12)
        assert inside.sum() == band["rows"] and y[inside].sum() == band["bads"]
        assert abs(s[inside].mean() - band["mean_pd"]) <= width / 2 + 1e-12
    for band in val["bands"]:
        riskier = s >= band["pd_low"] - 1e-12
        assert band["capture"] == pytest.approx(y[riskier].sum() / y.sum())
    at = val["at-threshold"]
    assert at["approved"] == int((s < at["applied"]).sum())
    # the row-level reliability curve of `curves` agrees on the overall calibration
    assert val["mean-pd"] == pytest.approx(s.mean(), abs=width / 2)
    assert curves.expected_calibration_error(s, y) >= 0


def test_hold_out_pack_beside_describes_its_own_rows(plain, rows):
    pack = json.loads((plain / "report.json").read_text())
    s, y = rows["holdout"]
    assert pack["holdout"]["rows"]["loans"] == s.size and "hold-out" in pack["holdout"]["rows"]["described"]
    low, high = pack["holdout"]["resolution"]["auc-bounds"]
    assert low <= metrics.exact_auc(s, y) <= high


def test_per_bank_figures_and_psi_against_the_other_banks(plain, rows):
    pack = json.loads((plain / "report.json").read_text())
    per_bank = {b["bank"]: b for b in pack["banks"]["banks"]}
    bins = load_run(plain).cfg.histogram_bins
    for name, row in per_bank.items():
        s, y = rows[name]
        assert row["loans"] == s.size and row["auc"]["value"] == pytest.approx(
            bn.delong_auc(bn.Binned.of_scores(s, y, bins)).value
        )
        others = np.concatenate([rows[o][0] for o in per_bank if o != name])
        ref = bn.Binned.of_scores(others, np.zeros(others.size, bool), bins)
        own = bn.Binned.of_scores(s, y, bins)
        assert row["psi"]["value"] == pytest.approx(bn.psi_estimate(own.bad + own.good, ref.good).value)
        assert row["approval-rate"]["value"] == pytest.approx((s < 0.1).mean())


def test_data_section_and_feature_stability_from_the_banks_profiles(plain, rows):
    pack = json.loads((plain / "report.json").read_text())
    profile = pack["data"]["profile"]
    val = {r["bank"]: r for r in profile["table"] if r["split"] == "validation"}
    for name, (s, y) in rows.items():
        if name != "holdout":
            assert val[name]["rows"] == s.size and val[name]["bads"] == y.sum()
    assert {c["bank"] for c in profile["csi"]} == set(load_run(plain).history.banks)
    assert all(c["low"] <= c["csi"] <= c["high"] for c in profile["csi"])
    page = (plain / "report.html").read_text()
    assert "Feature stability (CSI)" in page and "Rows, defaults and missing values per bank and split" in page


def test_report_json_of_a_rebuilt_report_is_byte_identical(plain):
    first = (plain / "report.json").read_bytes()
    assert main(["report", str(plain)]) == 0
    assert (plain / "report.json").read_bytes() == first


def test_secure_mode_has_the_pooled_pack_and_no_bank_figure_anywhere(secure):
    history = load_run(secure).history
    for scores in read_scores(secure).values():
        assert not scores.banks  # never kept: the coordinator never had them
    pack = json.loads((secure / "report.json").read_text())
    assert pack["run"]["mode"] == "secure" and pack["validation"]["rows"]["loans"] > 0
    assert pack["banks"]["banks"] == [] and "Secure aggregation" in pack["banks"]["hidden"]
    check = next(c for c in pack["verdict"]["checks"] if c["check"] == "stability")
    assert check["status"] == "not judged"
    page = (secure / "report.html").read_text()
    banks = page[page.index('<section id="banks">') : page.index('<section id="fairness">')]
    assert "Secure aggregation was on" in banks and "<table" not in banks
    for name in history.banks:
        assert name not in banks
    # a bank's name may appear (it names who took part), never beside a figure of its own
    rows = [r for r in _bank_rows(pack) if r["bank"] != stability.POOLED]
    assert rows and all(v is None for row in rows for k, v in row.items() if k != "bank"), rows
    assert pack["data"]["profile"]["table"] and not pack["data"]["profile"]["csi"]  # pooled data only
    assert pack["reasons"]["validation"]["rows"]["declined"] and pack["reasons"]["banks"] == []
    assert pack["monotonicity"]["banks"]["per-bank"] == {} and pack["monotonicity"]["banks"]["rows"] == 4 * 100
    decisions = page[page.index('<section id="reasons">') : page.index('<section id="baseline">')]
    assert "Secure mode: only the securely summed counts" in decisions
    for name in history.banks:
        assert name not in decisions


def _bank_rows(value):
    """Every object of the pack that is about one bank."""
    if isinstance(value, dict):
        if "bank" in value:
            yield value
        for v in value.values():
            yield from _bank_rows(v)
    elif isinstance(value, list):
        for v in value:
            yield from _bank_rows(v)


def _explained(run_dir: Path) -> dict[str, dict]:
    """Each simulated bank's reason counts computed here: its validation rows explained with the final model."""
    run = load_run(run_dir)
    model = mdl.load(run_dir / "model-final.keras")
    schema = schema_of(run.cfg)
    refs = explain.references(model, schema)
    out = {}
    for i in range(BANKS):
        bank = load_bank(run.cfg, {"partition-id": i, "num-partitions": BANKS})
        scores, reasons = explain.explain(model, bank.val[refs.features], refs)
        declined = [why for s, why in zip(scores, reasons, strict=True) if s >= run.cfg.threshold]
        out[bank.name] = {
            "rows": len(bank.val),
            "declined": len(declined),
            "no-reason": sum(not why for why in declined),
            "first": {f: sum(bool(why) and why[0].feature == f for why in declined) for f in schema.features},
            "any": {f: sum(f in {r.feature for r in why} for why in declined) for f in schema.features},
        }
    return out


def _total(parts: list[dict]) -> dict:
    return {
        k: {f: sum(p[k][f] for p in parts) for f in parts[0][k]}
        if isinstance(parts[0][k], dict)
        else sum(p[k] for p in parts)
        for k in parts[0]
    }


def test_reason_counts_are_the_banks_validation_loans_explained_with_the_final_model(plain):
    record = json.loads((plain / "reasons.json").read_text())
    direct = _explained(plain)
    assert record["mode"] == "plain" and record["refused"] == {} and record["failed"] == {}
    assert sorted(record["banks"]) == sorted(record["pooled-over"]) == sorted(direct)
    for name, counts in direct.items():
        assert {k: record["banks"][name][k] for k in counts} == counts, name
        assert record["banks"][name]["monotone-rows"] == min(100, counts["rows"])
        assert set(record["banks"][name]["monotone-violations"].values()) == {0}  # monotone by construction
    pooled = record["pooled"]
    assert {k: pooled[k] for k in direct["bank-0"]} == _total(list(direct.values()))
    assert pooled["declined"] > 50 and sum(pooled["any"].values()) > sum(pooled["first"].values())
    assert record["features"] == list(schema_of(load_run(plain).cfg).features)
    assert record["constraints"]["int_rate"] == "increasing" and record["monotone-rows-per-bank"] == 100


def test_secure_mode_keeps_only_the_pooled_reason_counts(secure):
    record = json.loads((secure / "reasons.json").read_text())
    assert record["mode"] == "secure" and record["banks"] == {} and record["refused"] == {}
    assert sorted(record["pooled-over"]) == sorted(load_run(secure).history.banks)
    direct = _explained(secure)
    assert {k: record["pooled"][k] for k in direct["bank-0"]} == _total(list(direct.values()))


def test_the_report_shows_the_pooled_reason_frequencies_and_the_banks_monotonicity_checks(plain):
    pack = json.loads((plain / "report.json").read_text())
    direct = _total(list(_explained(plain).values()))
    part = pack["reasons"]["validation"]
    assert part["rows"] == {"loans": direct["rows"], "declined": direct["declined"], "no-reason": direct["no-reason"]}
    for row in part["table"]:
        assert row["first"] == direct["first"][row["feature"]] and row["any"] == direct["any"][row["feature"]]
        assert row["first-share"]["value"] == pytest.approx(row["first"] / direct["declined"])
        assert row["any-share"]["low"] <= row["any-share"]["value"] <= row["any-share"]["high"]
    assert "pooled validation loans of 4 banks" in part["described"] and pack["reasons"]["holdout"]["rows"]["loans"]
    assert [b["bank"] for b in pack["reasons"]["banks"]] == sorted(load_run(plain).history.banks)
    mono = pack["monotonicity"]
    assert mono["banks"]["rows"] == 4 * 100 and set(mono["banks"]["violations"].values()) == {0}
    assert "profile.json" in mono["rows"] and mono["holdout-rows"] == 500
    page = (plain / "report.html").read_text()
    for ident in ("reasons", "monotonicity"):
        assert f'<section id="{ident}">' in page
    assert (plain / "report" / "partial_dependence.png").is_file()
    statements = {r["feature"]: r["statement"] for r in part["table"]}
    assert statements["int_rate"] == "Interest rate on the loan is high"  # the schema's [reasons]
    top = part["table"][0]
    assert top["statement"] in page and f"{100 * top['first-share']['value']:.1f} %" in page
