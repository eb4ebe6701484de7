"""Protected attributes end to end on the data side: loaded at the bank, never a model input, never sent, never output.

With the embedded Taiwan credit-card data (`builtin:taiwan_credit_card`) and its schema, whose
SEX, AGE and MARRIAGE are protected.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from fedcredit.cli import main
from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set, load_bank, schema_of
from fedcredit.core.config import RunConfig, parse_run_config
from fedcredit.core.groups import group_counts, group_index
from fedcredit.core.loading import DataValidationError, Kind, builtin_csv_text, check_csv, load_csv
from fedcredit.core.schema import load_schema
from fedcredit.core.stats import compute_stats, merge_stats, preprocessing_from_stats
from fedcredit.deploy.localrun import APP_DIR
from fedcredit.federation import client, protocol

TAIWAN = "builtin:taiwan_credit_card"
TAIWAN_SCHEMA = "fedcredit/data/taiwan_credit_card.toml"  # relative: resolves against the app directory
PROTECTED = ("SEX", "AGE", "MARRIAGE")


@pytest.fixture(scope="module")
def schema():
    return load_schema(str(APP_DIR / TAIWAN_SCHEMA))


@pytest.fixture(scope="module")
def taiwan_raw() -> pd.DataFrame:
    """The embedded Taiwan file, every column as text."""
    return pd.read_csv(io.StringIO(builtin_csv_text("taiwan_credit_card")), dtype=str, keep_default_na=False)


def _cfg(**overrides) -> RunConfig:
    raw = {"data-path": TAIWAN, "schema-path": str(APP_DIR / TAIWAN_SCHEMA), "partitioning": "iid", **overrides}
    return parse_run_config(raw)


def test_the_taiwan_file_validates_against_its_schema_with_the_group_counts(tmp_path, capsys, schema, taiwan_raw):
    assert main(["validate", TAIWAN, "--schema-path", str(APP_DIR / TAIWAN_SCHEMA)]) == 0
    out = capsys.readouterr().out
    assert "rows: 30000, columns: 25" in out and "default rate: 6636/30000 = 22.12% ('1' rows)" in out
    assert "protected 'SEX' (fairness analysis only, never a model input): male 11888, female 18112" in out
    assert "protected 'AGE' (fairness analysis only, never a model input): <=24 2685, 25-39 18171, 40-61 8928" in out
    assert "undocumented 54" in out  # MARRIAGE 0
    assert "note: ignored columns: ['ID']" in out and "OK: the file follows the schema" in out
    # The same bytes as a bank's file on disk (quoted header included).
    path = tmp_path / "taiwan.csv"
    path.write_text(builtin_csv_text("taiwan_credit_card"), encoding="utf-8")
    assert path.read_text().startswith('"ID","LIMIT_BAL","SEX"')
    assert main(["validate", str(path), "--schema-path", str(APP_DIR / TAIWAN_SCHEMA)]) == 0


def test_loading_keeps_the_protected_columns_as_text_beside_the_features(schema):
    frame = load_csv(TAIWAN, schema)
    assert list(frame.columns) == [*schema.features, schema.target, *PROTECTED]
    assert "ID" not in frame.columns and len(frame) == 30000
    assert frame[schema.target].mean() == pytest.approx(0.2212)
    assert set(frame["SEX"]) == {"1", "2"} and frame["AGE"].map(type).eq(str).all()
    assert group_counts(frame, schema)["MARRIAGE"] == {
        "married": 13659,
        "single": 15964,
        "other": 323,
        "undocumented": 54,
    }


def test_a_missing_protected_column_blocks_a_training_file_but_not_an_applicants_file(tmp_path, schema, taiwan_raw):
    rows = taiwan_raw.head(200).drop(columns=["AGE"])
    path = tmp_path / "bank.csv"
    rows.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as err:
        load_csv(path, schema)
    (problem,) = [p for p in err.value.problems if p.blocking]
    assert problem.kind == Kind.MISSING_COLUMN and problem.columns == ("AGE",)
    assert "['AGE'] are protected attributes" in str(problem)
    assert "protected attributes" not in err.value.public_text() and "AGE" in err.value.public_text()
    applicants = rows.drop(columns=[schema.target])
    applicants.to_csv(path, index=False)
    assert check_csv(path, schema, require_target=False).ok


def test_undeclared_and_missing_protected_values_are_a_note_and_undocumented(tmp_path, schema, taiwan_raw):
    rows = taiwan_raw.head(100).copy()
    rows.loc[3, "SEX"], rows.loc[4, "SEX"], rows.loc[5, "SEX"] = "1.0", "", "9"
    rows.loc[6, "AGE"], rows.loc[7, "AGE"] = "unknown", ""
    path = tmp_path / "bank.csv"
    rows.to_csv(path, index=False)
    report = check_csv(path, schema)
    assert report.ok  # never blocking
    notes = {p.column: p for p in report.problems if p.kind == Kind.UNDOCUMENTED_GROUP}
    assert set(notes) == {"SEX", "AGE"} | ({"MARRIAGE"} if (rows["MARRIAGE"] == "0").any() else set())
    assert notes["SEX"].lines == (5, 6, 7) and not notes["SEX"].blocking
    assert "3 of 100 rows" in str(notes["SEX"]) and "'1.0' is not '1'" in str(notes["SEX"])
    assert "9" not in str(notes["SEX"]).split("rows")[0] and "'9'" in notes["SEX"].with_examples()
    assert "2 of 100 rows" in str(notes["AGE"]) and "not a number" in str(notes["AGE"])
    index = group_index(report.frame, schema)
    assert index["SEX"][3:6].tolist() == [2, 2, 2] and index["AGE"][6:8].tolist() == [4, 4]


def test_simulated_banks_and_the_holdout_carry_the_protected_columns(schema):
    cfg = _cfg()
    bank = load_bank(cfg, {"partition-id": 1, "num-partitions": 4})
    test = holdout_set(cfg)
    for frame in (bank.train, bank.val, test):
        assert set(PROTECTED) <= set(frame.columns)
        assert all(len(ix) == len(frame) for ix in group_index(frame, schema).values())
    assert len(test) == 6000 and len(bank.train) + len(bank.val) == 6000


def test_the_model_never_sees_a_protected_column_and_the_statistics_never_carry_one(schema):
    cfg = _cfg(**{"hidden-units": "4"})
    bank = load_bank(cfg, {"partition-id": 0, "num-partitions": 4})
    used = schema_of(cfg)
    stats = compute_stats(bank.train, used)
    assert not set(PROTECTED) & (set(stats.numeric) | set(stats.categorical))
    model = mdl.build_model(preprocessing_from_stats(merge_stats([stats]), 10), mdl.ModelSpec.of(cfg, used))
    names = {t.name for t in model.inputs}
    assert names == set(schema.features) and not set(PROTECTED) & names
    assert not set(PROTECTED) & set(mdl.to_inputs(bank.train, model))
    # What the bank sends with its statistics: no protected column's name, let alone a value.
    reply = protocol.statistics_reply(*client.statistics(cfg, {"partition-id": 0, "num-partitions": 4}))
    keys = {k for record in reply.values() for k in record}
    text = json.dumps({k: str(dict(v)) for k, v in reply.items()})
    assert not any(p in k for p in PROTECTED for k in keys) and not any(p in text for p in PROTECTED)


def test_protected_attributes_leave_a_bank_only_as_counts_per_group(tmp_path):
    from fedcredit.deploy.inprocess import InProcessGrid, serverapp_identity
    from fedcredit.federation import server

    seen: list[str] = []
    grouped: list[tuple[str, object]] = []

    def record(kind, content, msg):
        for rd in (content, msg.content):
            for name, rec in rd.items():
                seen.append(name)
                for k, v in rec.items():
                    if str(k).startswith(
                        "group:"
                    ):  # a protected attribute's per-group counts: set apart, checked below
                        grouped.append((str(k), v))
                        continue
                    seen.append(str(k))
                    if isinstance(v, str):
                        seen.append(v)
        return content

    run_config = {
        **RunConfig().to_flower(),
        "data-path": TAIWAN,
        "schema-path": TAIWAN_SCHEMA,
        "partitioning": "iid",
        "num-server-rounds": 1,
        "local-epochs": 1,
        "hidden-units": "4",
        "personalize.epochs": 0,
        "output-dir": str(tmp_path / "out"),
    }
    grid = InProcessGrid(run_config, 2, tamper=record, hostile=[11, 12])
    with serverapp_identity():
        history = server.run(grid, run_config, "fair", APP_DIR).to_json()
    assert history["status"] == "completed", history.get("reason")
    assert len(seen) > 50 and any("LIMIT_BAL" in s for s in seen)  # the recorder did see the features
    assert not [s for s in seen if any(p in s for p in PROTECTED)]
    # The only trace of a protected attribute: its name as the key of whole counts per group, class and score bin
    # (as many as the schema's groups x 2 x histogram-bins, whatever the bank's rows), never a borrower's value.
    sizes = {"group:AGE": 5, "group:MARRIAGE": 4, "group:SEX": 3}
    assert {k for k, _ in grouped} == set(sizes)
    bins = run_config["histogram-bins"]
    for key, counts in grouped:
        assert len(counts) == sizes[key] * 2 * bins and all(float(c).is_integer() and c >= 0 for c in counts)
    (run_dir,) = (tmp_path / "out").iterdir()
    for name in ("preprocessing.json", "profile.json", "reasons.json", "config.json"):
        assert not any(p in (run_dir / name).read_text() for p in PROTECTED), name
    assert json.loads((run_dir / "reasons.json").read_text())["pooled"]["rows"] > 0  # the Taiwan schema's counts
    for entry in history["rounds"]:  # no bank's own group figures in the history: only the pooled ones
        for bank in (entry.get("evaluate") or {}).get("banks", {}).values():
            assert not any(p in key for p in PROTECTED for key in bank)


@pytest.fixture(scope="module")
def taiwan_model(tmp_path_factory, schema):
    """An untrained model over the Taiwan schema's features (scoring needs no training), saved as .keras."""
    cfg = _cfg(**{"hidden-units": "4"})
    frame = load_csv(TAIWAN, schema).head(2000)
    prep = preprocessing_from_stats(compute_stats(frame, schema), 10)
    path = tmp_path_factory.mktemp("taiwan") / "model-final.keras"
    mdl.build_model(prep, mdl.ModelSpec.of(cfg, schema)).save(path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_predict_output_never_contains_a_protected_column(tmp_path, capsys, taiwan_model, taiwan_raw, fmt):
    applicants = taiwan_raw.iloc[100:130].drop(columns=["default.payment.next.month"])
    csv = tmp_path / "applicants.csv"
    applicants.to_csv(csv, index=False)
    out = tmp_path / f"scores.{fmt}"
    args = ["predict", str(taiwan_model), str(csv), "--schema-path", str(APP_DIR / TAIWAN_SCHEMA)]
    assert main([*args, "--output", str(out), "--format", fmt]) == 0
    if fmt == "csv":
        scored = pd.read_csv(out, dtype=str)
        columns = list(scored.columns)
        assert scored["ID"].tolist() == applicants["ID"].tolist()  # other columns still pass through
    else:
        records = [json.loads(line) for line in out.read_text().splitlines()]
        columns = sorted({k for r in records for k in r})
        assert [r["ID"] for r in records] == applicants["ID"].tolist()
    assert len(columns) > 5 and not set(PROTECTED) & set(columns)
    assert not any(p in out.read_text() for p in PROTECTED)
    assert main([*args, "--output", "-"]) == 0  # stdout too
    assert not set(PROTECTED) & set(capsys.readouterr().out.splitlines()[0].split(","))


def test_group_index_arrays_line_up_with_the_rows_scored(schema, taiwan_model):
    """The shape the per-group evaluation builds on: one group index per scored row."""
    model = mdl.load(str(taiwan_model))
    frame = holdout_set(_cfg())
    scores = mdl.score(model, frame)
    index = group_index(frame, schema)
    assert all(ix.shape == scores.shape for ix in index.values())
    assert np.bincount(index["SEX"], minlength=3).sum() == len(frame)
