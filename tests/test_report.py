"""`fedcredit report`: one self-contained HTML file with every section, and the PNGs beside it."""

from __future__ import annotations

import base64
import re

import pytest
from runfixture import as_deployment, copy_run, tiny_run  # noqa: F401  (fixture)

from fedcredit.cli import main
from fedcredit.federation.history import StrategyRecord, read_history, write_history
from fedcredit.risk.report import PNG_NAMES

SECTIONS = (
    "summary",
    "baseline",
    "rounds",
    "holdout",
    "calibration",
    "distributions",
    "gains",
    "stability",
    "personalisation",
    "config",
    "privacy",
)
HOLDOUT_SECTIONS = ("holdout", "calibration", "distributions", "gains")
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
    _, page, history = simulation
    s = _sections(page)
    assert history.model_final_sha256 in s["summary"] and "matches model-final.keras" in s["summary"]
    assert "fedprox" in s["summary"] and "differential privacy: server-fixed" in s["summary"]
    assert "epsilon" in s["privacy"] and "3.25" in s["privacy"]
    last = history.last_round()
    assert f"{last.holdout_auc:.4f}" in s["holdout"]
    assert f"{last.pooled_auc:.4f}" in s["rounds"]
    for bank in history.banks:
        assert bank in s["rounds"] and bank in s["stability"]
    assert s["gains"].count("<tr>") == 1 + 10  # header and ten deciles
    assert "expected calibration error" in s["calibration"] and f"{last.holdout['brier']:.4f}" in s["calibration"]
    assert "num-server-rounds" in s["config"] and "hidden-units" in s["config"]
    assert "Not computed" in s["baseline"] and "fedcredit baseline" in s["baseline"]


def test_deployment_run_says_what_is_missing(tiny_run, tmp_path):  # noqa: F811
    run_dir = as_deployment(copy_run(tiny_run, tmp_path / "run"))
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert list(s) == list(SECTIONS)
    for name in HOLDOUT_SECTIONS:
        assert "No hold-out set in this run" in s[name] and "<img" not in s[name]
    assert "Not available" in s["stability"] and "simulation run" in s["stability"]
    assert "<img" in s["rounds"] and "partner-0" in s["rounds"]
    assert sorted(p.name for p in (run_dir / "report").glob("*.png")) == ["bank_auc.png", "rounds.png"]
    assert "No differential-privacy figures" in s["privacy"] and "fedavg" in s["summary"]


def test_failed_run_without_model(tiny_run, tmp_path):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    (run_dir / "model-final.keras").unlink()
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert "model-final.keras does not exist" in s["holdout"] and "model-final.keras is missing" in s["summary"]


def test_truncated_model_is_named_as_damaged_not_missing(tiny_run, tmp_path):  # noqa: F811
    run_dir = copy_run(tiny_run, tmp_path / "run")
    model = run_dir / "model-final.keras"
    model.write_bytes(model.read_bytes()[:1000])
    assert main(["report", str(run_dir)]) == 0
    s = _sections((run_dir / "report.html").read_text())
    assert f"{model} is not a valid Keras model file" in s["holdout"] and "may be truncated or corrupt" in s["holdout"]
    assert "not found" not in s["holdout"].lower() and "does not exist" not in s["holdout"]
    assert "DOES NOT MATCH model-final.keras" in s["summary"]  # the recorded SHA-256 tells the copy is damaged


def test_not_a_run_dir(tmp_path, capsys):
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "nowhere does not exist" in capsys.readouterr().err
