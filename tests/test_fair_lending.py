"""Fair lending end to end in one process: per-group figures from the banks' summed counts equal the pooled rows'.

The real ServerApp logic drives the real ClientApp (`InProcessGrid`) on the
embedded Taiwan credit-card data, whose schema declares SEX, AGE bands and
MARRIAGE as protected, in plain and in secure mode.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from fedcredit.cli import main
from fedcredit.core import binned as bn
from fedcredit.core import fairness, groups
from fedcredit.core import model as mdl
from fedcredit.core.banks import load_bank, schema_of
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, server
from fedcredit.federation.scores import read_scores
from fedcredit.risk.rundir import load_run

BANKS = 4
CONFIG = {
    "data-path": "builtin:taiwan_credit_card",
    "schema-path": "fedcredit/data/taiwan_credit_card.toml",
    "partitioning": "iid",
    "num-server-rounds": 2,
    "local-epochs": 1,
    "hidden-units": "8",
    "threshold": 0.3,
    "seed": 3,
    "personalize.epochs": 0,
}


def _run(tmp: Path, **extra) -> Path:
    config = {**CONFIG, "output-dir": str(tmp), **extra}
    with serverapp_identity():
        history = server.run(InProcessGrid(config, BANKS), config, "fair", APP_DIR)
    assert history.status == "completed", history.reason
    run_dir = Path(history.output_dir)
    assert main(["report", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("plain"))


@pytest.fixture(scope="module")
def secure(tmp_path_factory) -> Path:
    return _run(tmp_path_factory.mktemp("secure"), **{"privacy.secure-aggregation": True})


def _rows(run_dir: Path) -> dict[str, tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]]:
    """Each simulated bank's validation rows scored with the final model, with their groups."""
    run = load_run(run_dir)
    schema = schema_of(run.cfg)
    model = mdl.load(run_dir / "model-final.keras")
    out = {}
    for i in range(BANKS):
        bank = load_bank(run.cfg, {"partition-id": i, "num-partitions": BANKS})
        y = bank.val[schema.target].to_numpy().astype(bool)
        out[bank.name] = (mdl.score(model, bank.val), y, groups.group_index(bank.val, schema))
    return out


def _row_level(rows: dict, attr: str, names: tuple[str, ...], threshold: float) -> dict[str, dict[str, float]]:
    s = np.concatenate([r[0] for r in rows.values()])
    y = np.concatenate([r[1] for r in rows.values()])
    g = np.concatenate([r[2][attr] for r in rows.values()])
    out = {}
    for i, name in enumerate(names):
        mine = g == i
        out[name] = {
            "loans": int(mine.sum()),
            "defaults": int(y[mine].sum()),
            "approved": int((s[mine] < threshold).sum()),
            "approved-repaid": int((s[mine & ~y] < threshold).sum()),
        }
    return out


@pytest.mark.parametrize("mode", ["plain", "secure"])
def test_per_group_figures_from_summed_counts_equal_the_pooled_rows(mode, request):
    run_dir = request.getfixturevalue(mode)
    run = load_run(run_dir)
    names = groups.group_names(schema_of(run.cfg))
    pack = json.loads((run_dir / "report.json").read_text())
    rows = _rows(run_dir)
    for attr, group_names in names.items():
        expected = _row_level(rows, attr, group_names, run.cfg.threshold)
        table = {g["group"]: g for g in pack["fair-lending"]["attributes"][attr]["pooled"]["groups"]}
        assert list(table) == list(group_names)
        for name, e in expected.items():
            g = table[name]
            assert (g["loans"], g["defaults"]) == (e["loans"], e["defaults"]), (attr, name)
            if e["loans"]:
                assert g["approval-rate"]["value"] == pytest.approx(e["approved"] / e["loans"])
            else:
                assert g["approval-rate"]["value"] is None  # no loan in the group: no rate (null in JSON)
        ref = pack["fair-lending"]["attributes"][attr]["pooled"]["reference"]
        for name, g in table.items():
            if "air" in g and g["judged"]:
                own, top = expected[name], expected[ref]
                assert g["air"]["value"] == pytest.approx(
                    (own["approved"] / own["loans"]) / (top["approved"] / top["loans"])
                )
    history = run.history
    assert set(history.rounds[-1].fairness) == set(names)


def test_secure_mode_keeps_no_banks_group_counts(secure):
    for scores in read_scores(secure).values():
        assert not scores.bank_groups and scores.groups is not None or scores.round == 0
    pack = json.loads((secure / "report.json").read_text())
    assert all("banks" not in part for part in pack["fair-lending"]["attributes"].values())


def test_a_banks_groups_below_the_minimum_size_are_never_kept_nor_reported(plain):
    run = load_run(plain)
    final = read_scores(plain)[2]
    labels = final.group_labels
    pack = json.loads((plain / "report.json").read_text())
    per_bank = pack["fair-lending"]["attributes"]["AGE"]["banks"]
    for bank, kept in final.bank_groups_kept.items():
        counts = final.bank_groups[bank].sum(axis=(1, 2))
        assert (counts[~kept] == 0).all() and (counts[kept] >= run.cfg.fairness_min_group_size).all()
        shown = {g["group"] for g in per_bank[bank]["groups"]}
        small = {labels[i].split("=", 1)[1] for i in np.flatnonzero(~kept) if labels[i].startswith("AGE=")}
        assert small and not shown & small  # e.g. >=62: a few loans per bank, never shown per bank
    page = (plain / "report.html").read_text()
    section = page[page.index('<section id="fairness">') : page.index('<section id="baseline">')]
    assert "four-fifths" in section and "&gt;=62" in section  # pooled, flagged too small if it is, never hidden


def test_a_bank_whose_groups_do_not_add_up_is_refused():
    bins = 10
    hist_bad, hist_good = [1, 0, 0, 0, 0, 0, 0, 0, 0, 1], [5] * 10
    record = {
        "num-examples": 52, "num-bad": 2, "tp": 1, "fp": 0, "tn": 50, "fn": 1,
        "sum-brier": 1.0, "sum-logloss": 5.0, "sum-score": 3.0, "hist-bad": hist_bad, "hist-good": hist_good,
        "loss": 0.1, "auc": 0.5, protocol.UNIT_WEIGHT: 1,
    }  # fmt: skip
    split = [*hist_bad, *hist_good, *([0] * 2 * bins)]  # everything in group 0
    ok = protocol.read_summary({**record, "group:SEX": split}, bins, groups={"SEX": 2})
    assert protocol.group_histograms(np.asarray(ok["group:SEX"]), bins).sum(axis=0).tolist() == [hist_bad, hist_good]
    moved = [*hist_bad, *hist_good, *([0] * 2 * bins)]
    moved[0] = 0  # one defaulted loan dropped from every group
    with pytest.raises(protocol.ProtocolError, match="do not add up"):
        protocol.read_summary({**record, "group:SEX": moved}, bins, groups={"SEX": 2})
    with pytest.raises(protocol.ProtocolError, match="missing keys"):
        protocol.read_summary(record, bins, groups={"SEX": 2})
    with pytest.raises(protocol.ProtocolError, match="2 groups"):
        protocol.read_summary({**record, "group:SEX": split[:-1]}, bins, groups={"SEX": 2})
    assert fairness.attribute({"a": bn.Binned(hist_bad, hist_good)}, 0.5, 1)["worst-air"] is None
