"""`fedcredit report`: one self-contained HTML file with every section, and the PNGs beside it."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
import shutil

import pytest
from runfixture import as_deployment, copy_run, tiny_run  # noqa: F401  (fixture)

from fedcredit.cli import main
from fedcredit.federation.history import StrategyRecord, read_history, write_history
from fedcredit.risk.report import PNG_NAMES

SECTIONS = (
    "verdict",
    "summary",
    "data",
    "model",
    "performance",
    "calibration",
    "distributions",
    "gains",
    "rounds",
    "banks",
    "fairness",
    "reasons",
    "monotonicity",
    "baseline",
    "personalisation",
    "privacy",
    "config",
    "limitations",
    "signoff",
)
PACK_SECTIONS = ("performance", "calibration", "distributions", "gains")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _sections(page: str) -> dict[str, str]:
    return dict(re.findall(r'<section id="([a-z]+)">(.*?)</section>', page, flags=re.DOTALL))


@pytest.fixture(scope="module")
def simulation(tiny_run, tmp_path_factory):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path_factory.mktemp("report") / "run")
    history = read_history(run_dir / "history.json")
    history.privacy = {"mechanism": "central DP (test)", "epsilon": 3.25, "delta": 1e-5}
    history.strategy = StrategyRecord("fedprox", "DifferentialPrivacyServerSideFixedClipping", "server-fixed")
    write_history(run_dir / "history.json", history)
    assert main(["report", str(run_dir)]) == 0
    return run_dir, (run_dir / "report.html").read_text(), history


def test_every_section_is_present_and_images_are_embedded(simulation):
    run_dir, page, _ = simulation
    sections = _sections(page)
    assert list(sections) == list(SECTIONS)
    assert all(f'href="#{s}"' in page for s in SECTIONS)
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    files = sorted((run_dir / "report").glob("*.png"))
    assert sorted(p.name for p in files) == sorted(PNG_NAMES)
    assert len(embedded) == len(files)
    assert all(base64.b64decode(data).startswith(PNG_MAGIC) for data in embedded)
    assert {base64.b64decode(data) for data in embedded} == {p.read_bytes() for p in files}
    assert "<script" not in page and not re.search(r'(src|href)="(https?:|file:)', page)  # self-contained


def test_figures_match_the_run(simulation):
    run_dir, page, history = simulation
    s = _sections(page)
    pack = json.loads((run_dir / "report.json").read_text())
    assert history.model_final_sha256 in s["summary"] and "matches model-final.keras" in s["summary"]
    assert "fedprox" in s["summary"] and "differential privacy: server-fixed" in s["summary"]
    assert "epsilon" in s["privacy"] and "3.25" in s["privacy"]
    last = history.last_round()
    assert f"{last.pooled_auc:.4f}" in s["verdict"] and f"{last.pooled_auc:.4f}" in s["performance"]
    assert pack["validation"]["auc"]["value"] == pytest.approx(last.pooled_auc, abs=1e-12)  # the same histograms
    hold = pack["holdout"]
    low, high = hold["resolution"]["auc-bounds"]
    assert low <= last.holdout_auc <= high  # row-level hold-out AUC within the bins' bounds
    assert f"{hold['auc']['value']:.4f}" in s["performance"]
    for bank in history.banks:
        assert bank in s["rounds"] and bank in s["banks"] and bank in s["data"]
    assert len(pack["banks"]["banks"]) == len(history.banks)
    assert s["gains"].count("<h3>") == 4  # gains and thresholds, for validation and hold-out
    assert "(threshold)" in s["gains"] and "Within" in s["calibration"]
    assert f"{last.pooled['brier']:.4f}" in s["performance"]
    assert "num-server-rounds" in s["config"] and "hidden-units" in s["config"]
    assert "Not computed" in s["baseline"] and "fedcredit baseline" in s["baseline"]
    assert pack["verdict"]["overall"] in ("pass", "borderline", "fail")
    assert "Verdict:" in s["verdict"] and "validation.min-auc" in s["verdict"]
    assert "Sign-off" in s["signoff"] and "Independent model validator" in s["signoff"]
    assert "Intended use" in s["limitations"] and (run_dir / "intended-use.md").is_file() is False


def test_reasons_and_monotonicity_sections_say_which_rows_they_describe(simulation):
    run_dir, page, _ = simulation
    s = _sections(page)
    pack = json.loads((run_dir / "report.json").read_text())
    # This run directory was built without Flower: no reasons.json, so no bank counts; the hold-out loans' reasons.
    reasons = pack["reasons"]
    assert reasons["validation"] is None and "no reasons.json" in reasons["why"] and "no reasons.json" in s["reasons"]
    hold = reasons["holdout"]
    assert hold["rows"]["loans"] == pack["holdout"]["rows"]["loans"] and hold["rows"]["declined"] > 0
    assert sum(r["first"] for r in hold["table"]) + hold["rows"]["no-reason"] == hold["rows"]["declined"]
    assert "Hold-out set" in s["reasons"] and "lowest-risk value" in s["reasons"]
    mono = pack["monotonicity"]
    assert mono["summary"] == {"constraints": 17, "held": 17, "violations": 0, "largest_violation": 0.0}
    assert {c["rows_checked"] for c in mono["checks"]} == {mono["holdout-rows"] + 1} and mono["holdout-rows"] == 500
    assert "PASS" in s["monotonicity"] and "partial_dependence.png" in s["monotonicity"]
    check = next(c for c in pack["verdict"]["checks"] if c["check"] == "monotonicity")
    assert check["status"] == "pass" and check["result"] == "17 of 17 hold" and "17 of 17 hold" in s["verdict"]


def test_a_model_that_breaks_its_declared_constraints_fails_the_monotonicity_check(tiny_run, tmp_path):  # noqa: F811
    from fedcredit.core import model as mdl
    from fedcredit.core.banks import schema_of
    from fedcredit.core.config import parse_run_config
    from fedcredit.core.stats import Preprocessing

    run_dir = copy_run(tiny_run, tmp_path / "run")
    cfg = parse_run_config(json.loads((run_dir / "config.json").read_text()))
    prep = json.loads((run_dir / "preprocessing.json").read_text())
    plain = dataclasses.replace(cfg, monotone_constraints=False)  # an MLP with no constraint held by construction
    model = mdl.build_model(Preprocessing(**prep), mdl.ModelSpec.of(plain, schema_of(plain)))
    model.save(run_dir / "model-final.keras")
    assert main(["report", str(run_dir)]) == 0
    pack = json.loads((run_dir / "report.json").read_text())
    failing = [c for c in pack["monotonicity"]["checks"] if c["status"] == "fail"]
    assert failing and all(c["violations"] > 0 and c["largest_violation"] > 1e-6 for c in failing)
    check = next(c for c in pack["verdict"]["checks"] if c["check"] == "monotonicity")
    assert check["status"] == "fail" and pack["verdict"]["overall"] == "fail"
    assert "FAIL" in _sections((run_dir / "report.html").read_text())["monotonicity"]


def test_report_json_is_rebuilt_byte_for_byte_from_the_run_directory(simulation):
    run_dir, _, _ = simulation
    first = (run_dir / "report.json").read_bytes()
    assert main(["report", str(run_dir)]) == 0
    assert (run_dir / "report.json").read_bytes() == first


def test_the_consortiums_intended_use_replaces_the_template(tiny_run, tmp_path):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    (run_dir / "intended-use.md").write_text("## Intended use\n- Card loans of members <b>only</b>\n")
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert "Card loans of members &lt;b&gt;only&lt;/b&gt;" in s["limitations"] and "(edit" not in s["limitations"]
    assert "the consortium" in s["limitations"]


def test_deployment_run_has_the_whole_pack_from_the_banks_histograms(tiny_run, tmp_path):  # noqa: F811
    run_dir = as_deployment(copy_run(tiny_run, tmp_path / "run"))
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert list(s) == list(SECTIONS)
    for name in PACK_SECTIONS:
        assert "Pooled validation" in s[name] or "pooled validation" in s[name]
        assert "Hold-out set" not in s[name]
    pack = json.loads((run_dir / "report.json").read_text())
    assert pack["holdout"] is None and pack["validation"]["rows"]["loans"] > 0
    assert "No hold-out set" in s["limitations"]
    assert "partner-0" in s["banks"] and "partner-0" in s["rounds"]
    assert sorted(p.name for p in (run_dir / "report").glob("*.png")) == sorted(PNG_NAMES)
    assert "No differential-privacy figures" in s["privacy"] and "fedavg" in s["summary"]
    # No loan rows at the coordinator: the monotonicity check is the typical applicant's, the reasons the banks'.
    mono = pack["monotonicity"]
    assert {c["rows_checked"] for c in mono["checks"]} == {1} and mono["holdout-rows"] == 0
    assert "No loan rows at the coordinator" in s["monotonicity"] and "typical applicant" in mono["rows"]
    assert "checks the typical applicant only" in s["limitations"]
    assert pack["reasons"]["holdout"] is None and "partial_dependence.png" in s["monotonicity"]


def test_a_run_without_histograms_says_why_the_pack_is_empty(tiny_run, tmp_path):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    shutil.rmtree(run_dir / "scores")
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert list(s) == list(SECTIONS)
    assert "No evaluated round" in s["performance"] and "kept no score histograms" in s["limitations"]
    assert "not judged" in s["verdict"].lower()


def test_failed_run_without_model(tiny_run, tmp_path):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    (run_dir / "model-final.keras").unlink()
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert "model-final.keras does not exist" in s["model"] and "model-final.keras is missing" in s["summary"]


def test_truncated_model_is_named_as_damaged_not_missing(tiny_run, tmp_path):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    model = run_dir / "model-final.keras"
    model.write_bytes(model.read_bytes()[:1000])
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert f"{model} is not a valid Keras model file" in s["model"] and "may be truncated or corrupt" in s["model"]
    assert "not found" not in s["model"].lower() and "does not exist" not in s["model"]
    assert "DOES NOT MATCH model-final.keras" in s["summary"]  # the recorded SHA-256 tells the copy is damaged


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
