"""`fedcredit predict`: PDs, decisions, reason codes and invalid rows, with a tiny run's model."""

from __future__ import annotations

import errno
import json

import numpy as np
import pandas as pd
import pytest
from runfixture import tiny_run  # noqa: F401  (fixture)

from fedcredit.cli import main
from fedcredit.core import model as mdl
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.risk import explain, predict


@pytest.fixture(scope="module")
def model_path(tiny_run):  # noqa: F811
    return tiny_run / "model-final.keras"


@pytest.fixture(scope="module")
def loaded(model_path):
    return mdl.load(str(model_path))


@pytest.fixture()
def applicants(raw_frame):
    """40 applicants without the target, with an id column the bank keeps."""
    a = raw_frame.iloc[3000:3040].drop(columns=["Class"]).reset_index(drop=True)
    a.insert(0, "applicant_id", [f"A{i:03d}" for i in range(len(a))])
    return a


def _not_json(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _predict(model_path, csv, tmp_path, *extra, fmt="csv"):
    out = tmp_path / f"out.{fmt}"
    code = main(["predict", str(model_path), str(csv), "--output", str(out), "--format", fmt, *extra])
    if fmt == "jsonl":
        return code, [json.loads(line, parse_constant=_not_json) for line in out.read_text().splitlines()]
    return code, pd.read_csv(out, dtype={"reason_1_value": str, "reason_1_reference": str})


def test_scores_decisions_and_ids(model_path, loaded, applicants, write_csv, tmp_path):
    expected = mdl.score(loaded, predict.validate_rows(applicants, LENDING_CLUB, "x")[0])
    threshold = float(np.round(np.median(expected), 4))
    code, out = _predict(model_path, write_csv(applicants), tmp_path, "--threshold", str(threshold))
    assert code == 0
    assert out["applicant_id"].tolist() == applicants["applicant_id"].tolist()
    assert out["line"].tolist() == list(range(2, 42))
    assert (out["status"] == "scored").all()
    np.testing.assert_allclose(out["pd"], expected, atol=1e-6)
    assert ((expected >= threshold) == (out["decision"] == "decline")).all()
    assert set(out["decision"]) == {"approve", "decline"}


def test_top_reason_at_its_reference_lowers_the_score(model_path, applicants, write_csv, tmp_path):
    _, out = _predict(model_path, write_csv(applicants), tmp_path)
    assert out["reason_1"].notna().sum() >= 30
    with_reason = out[out["reason_1_impact"] > 1e-4]  # well above the output's 6 decimals
    assert len(with_reason) >= 20
    impacts = out[[f"reason_{k}_impact" for k in range(1, 5)]].to_numpy()
    assert (np.nan_to_num(impacts[:, :-1], nan=0) >= np.nan_to_num(impacts[:, 1:], nan=0)).all()  # largest first
    assert (impacts[~np.isnan(impacts)] > 0).all()
    # Set each applicant's top reason feature to its reference value: the PD drops by the stated impact.
    changed = applicants.copy()
    for i, row in with_reason.iterrows():
        changed.loc[i, row["reason_1"]] = row["reason_1_reference"]
    _, again = _predict(model_path, write_csv(changed, "changed.csv"), tmp_path)
    idx = with_reason.index
    assert (again.loc[idx, "pd"] < out.loc[idx, "pd"]).all()
    np.testing.assert_allclose(out.loc[idx, "pd"] - again.loc[idx, "pd"], with_reason["reason_1_impact"], atol=2e-5)
    # The other features' reasons remain, the changed one no longer raises the score.
    assert all(r != f for r, f in zip(again.loc[idx, "reason_1"], with_reason["reason_1"]))


def test_numeric_references_are_the_global_means(loaded, tiny_run):  # noqa: F811
    refs = explain.references(loaded)
    prep = json.loads((tiny_run / "preprocessing.json").read_text())
    assert set(refs.numeric) == set(LENDING_CLUB.numeric)
    for col, mean in prep["mean"].items():
        assert refs.numeric[col] == pytest.approx(mean, rel=1e-6)  # float32 in the layer
    assert refs.categorical["verification_status"] == prep["vocabulary"]["verification_status"]
    # An ordered column keeps its whole order, rare levels included (they score as their lower neighbour).
    assert refs.categorical["sub_grade"] == list(LENDING_CLUB.orders["sub_grade"])


def test_categorical_reference_is_the_lowest_risk_category(loaded, applicants):
    """Ordered and monotone: the first level for everybody; unordered: the category giving this applicant the least PD."""
    refs = explain.references(loaded, LENDING_CLUB)
    frame = predict.validate_rows(applicants, LENDING_CLUB, "x")[0]
    base, reasons = explain.explain(loaded, frame, refs)
    checked = set()
    for i, why in enumerate(reasons):
        for r in (r for r in why if r.feature in refs.categorical):
            vocab = refs.categorical[r.feature]
            pds = mdl.score(loaded, pd.concat([frame.iloc[[i]].assign(**{r.feature: v}) for v in vocab]))
            if r.feature in refs.direction:
                assert r.reference == vocab[0 if refs.direction[r.feature] > 0 else -1]
            else:
                assert r.reference == vocab[int(np.argmin(pds))]
            assert r.impact == pytest.approx(base[i] - pds.min(), abs=2e-6)
            checked.add(r.feature)
    assert "sub_grade" in checked and len(checked) >= 2


def test_invalid_rows_are_flagged_not_dropped(model_path, applicants, write_csv, tmp_path, capsys):
    a = applicants.head(8).copy()
    a.loc[1, "int_rate"] = "12,5%"  # line 3
    a.loc[4, "funded_amnt"] = "inf"  # line 6
    a.loc[4, "revol_util"] = "n.a."
    a.loc[5, "annual_inc"] = None  # missing numeric: imputed, scored
    a.loc[6, "sub_grade"] = "Z9"  # unknown category: scored as unknown
    capsys.readouterr()
    code, out = _predict(model_path, write_csv(a), tmp_path)
    err = capsys.readouterr().err
    assert code == 1  # output complete, some rows not scored
    assert len(out) == 8 and out["applicant_id"].tolist() == a["applicant_id"].tolist()
    assert out["status"].tolist() == [
        "scored",
        "invalid",
        "scored",
        "scored",
        "invalid",
        "scored-with-missing",
        "scored-with-unknown",
        "scored",
    ]
    assert out.loc[[1, 4], "pd"].isna().all() and out.loc[[1, 4], "decision"].isna().all()
    assert out.loc[1, "problem"] == "column 'int_rate': value '12,5%' is not a number"
    assert "funded_amnt" in out.loc[4, "problem"] and "revol_util" in out.loc[4, "problem"]
    assert out.drop(index=[1, 4])["pd"].notna().all() and out.loc[[0, 2, 3, 7], "problem"].isna().all()
    assert out.loc[5, "problem"].startswith("missing values: annual_inc")
    assert out.loc[6, "problem"].startswith("categories the model never learned, scored as unknown: sub_grade")
    assert "line 3: column 'int_rate': value '12,5%' is not a number" in err
    assert "line 6: column 'funded_amnt': value 'inf' is infinite" in err
    assert "scored 6 of 8 applicants" in err


def test_target_column_is_optional_and_ignored(model_path, raw_frame, write_csv, tmp_path):
    a = raw_frame.iloc[3000:3005].reset_index(drop=True)
    a.loc[0, "Class"] = "unknown-yet"  # not a label: irrelevant for scoring
    code, out = _predict(model_path, write_csv(a), tmp_path, fmt="jsonl")
    assert code == 0
    assert [r["Class"] for r in out] == a["Class"].tolist()
    assert all(r["status"] == "scored" and 0 < r["pd"] < 1 and len(r["reasons"]) <= 4 for r in out)
    assert all(
        set(reason) == {"feature", "text", "value", "reference", "impact"} for r in out for reason in r["reasons"]
    )
    assert all(reason["text"] == LENDING_CLUB.reason_text(reason["feature"]) for r in out for reason in r["reasons"])


def test_file_level_problems_stop_with_one_line(model_path, applicants, write_csv, tmp_path, capsys):
    code = main(["predict", str(model_path), str(write_csv(applicants.drop(columns=["int_rate"])))])
    lines = capsys.readouterr().err.strip().splitlines()
    assert (
        code == 2 and "missing columns ['int_rate']" in lines[-1] and lines[-1].startswith("fedcredit predict: error:")
    )
    assert main(["predict", str(tmp_path / "nope.keras"), str(write_csv(applicants))]) == 2
    assert "nope.keras does not exist" in capsys.readouterr().err
    assert main(["predict", str(model_path), str(tmp_path / "none.csv")]) == 2
    assert "none.csv: file does not exist" in capsys.readouterr().err


def test_non_finite_pd_is_an_invalid_row_never_a_decision(
    model_path, loaded, applicants, write_csv, tmp_path, capsys, monkeypatch
):
    # 1e300 used to reach the model (and overflow float32 there); validation now refuses it as a bank's file
    # would (beyond fedcredit.core.limits.MAX_ABS_VALUE), so a non-finite PD is forced here instead.
    a = applicants.head(5).copy()
    a.loc[2, "funded_amnt"] = "1e300"
    capsys.readouterr()
    code, out = _predict(model_path, write_csv(a), tmp_path, fmt="jsonl")  # strict JSON: no NaN anywhere
    assert code == 1 and out[2]["status"] == "invalid" and out[2]["pd"] is None
    assert out[2]["problem"] == "column 'funded_amnt': value '1e300' is beyond +-1e+18"
    real = predict.explain

    def nan_for_the_second_row(model, frame, refs=None):
        scores, reasons = real(model, frame, refs)
        scores[1] = np.nan
        return scores, reasons

    monkeypatch.setattr(predict, "explain", nan_for_the_second_row)
    a = applicants.head(5).copy()
    capsys.readouterr()
    code, out = _predict(model_path, write_csv(a), tmp_path, fmt="jsonl")
    assert code == 1
    assert [r["status"] for r in out] == ["scored", "invalid", "scored", "scored", "scored"]
    assert out[1]["pd"] is None and out[1]["decision"] is None and out[1]["reasons"] == []
    assert out[1]["problem"] == predict.NON_FINITE_PD and "magnitude" in out[1]["problem"]
    assert all(0 < r["pd"] < 1 for r in out if r["status"] == "scored")
    assert "line 3: the model's probability of default is not finite" in capsys.readouterr().err
    code, csv_out = _predict(model_path, write_csv(a), tmp_path)
    assert code == 1 and csv_out.loc[1, "status"] == "invalid" and pd.isna(csv_out.loc[1, "decision"])


def test_jsonl_missing_values_are_null(model_path, applicants, write_csv, tmp_path):
    a = applicants.head(4).copy()
    a.loc[1, "applicant_id"] = None  # a passthrough NaN
    a.loc[2, "revol_util"] = None  # a missing feature value
    a.loc[3, "int_rate"] = "high"
    code, out = _predict(model_path, write_csv(a), tmp_path, fmt="jsonl")
    assert code == 1 and out[1]["applicant_id"] is None and out[2]["status"] == "scored-with-missing"
    assert out[3]["pd"] is None and out[3]["problem"] == "column 'int_rate': value 'high' is not a number"


def test_lines_count_blank_lines_and_extra_columns_pass_through(model_path, applicants, write_csv, tmp_path, capsys):
    a = applicants.head(6).copy()
    a["branch"] = "B7"
    a.loc[4, "int_rate"] = "high"
    text = a.to_csv(index=False).splitlines()
    text.insert(3, "")  # line 4 is blank: the rows after it move one line down
    capsys.readouterr()
    code, out = _predict(model_path, write_csv("\n".join(text) + "\n"), tmp_path)
    assert code == 1
    assert out["line"].tolist() == [2, 3, 5, 6, 7, 8]
    assert out["applicant_id"].tolist() == a["applicant_id"].tolist() and (out["branch"] == "B7").all()
    assert out["status"].tolist() == ["scored"] * 4 + ["invalid", "scored"]
    assert "line 7: column 'int_rate': value 'high' is not a number" in capsys.readouterr().err


def test_truncated_model_is_not_reported_as_missing(model_path, applicants, write_csv, tmp_path, capsys):
    """An interrupted copy of model-final.keras: named as not a valid model file, distinct from a missing one."""
    truncated = tmp_path / "model-final.keras"
    data = model_path.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    csv = write_csv(applicants)
    assert main(["predict", str(truncated), str(csv), "--output", str(tmp_path / "out.csv")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith(f"fedcredit predict: error: {truncated} is not a valid Keras model file")
    assert "may be truncated or corrupt" in err and "copy it again from the run directory" in err
    assert "not found" not in err.lower() and "does not exist" not in err
    assert not (tmp_path / "out.csv").exists()
    assert main(["predict", str(tmp_path / "gone.keras"), str(csv)]) == 2
    err = capsys.readouterr().err
    assert "gone.keras does not exist" in err and "valid Keras" not in err


# --- read as a bank's file is; out-of-range values; atomic output ------------------------------------------


def test_values_far_outside_the_training_range_are_flagged_not_plainly_scored(
    model_path,
    tiny_run,  # noqa: F811
    applicants,
    write_csv,
    tmp_path,
    capsys,
):
    prep = json.loads((tiny_run / "preprocessing.json").read_text())
    mean, sd = prep["mean"]["annual_inc"], prep["variance"]["annual_inc"] ** 0.5
    a = applicants.head(7).copy()
    a.loc[1, "annual_inc"] = "1e12"  # line 3: a trillion
    a.loc[2, "annual_inc"] = "1e30"  # line 4: beyond what any bank's file may hold
    a.loc[3, "funded_amnt"] = "-1e9"  # line 5
    a.loc[4, ["annual_inc", "total_bal_il"]] = ["5e9", "1e10"]  # line 6: two columns
    a.loc[5, "annual_inc"] = repr(mean + 99 * sd)  # line 7: inside the bound
    a.loc[6, "annual_inc"] = repr(mean + 101 * sd)  # line 8: just outside
    capsys.readouterr()
    code, out = _predict(model_path, write_csv(a), tmp_path, fmt="jsonl")
    err = capsys.readouterr().err
    assert code == 1
    status = [r["status"] for r in out]
    assert status == ["scored", "out-of-range", "invalid", "out-of-range", "out-of-range", "scored", "out-of-range"]
    for r in (out[1], out[3], out[4], out[6]):
        assert 0 <= r["pd"] <= 1 and r["decision"] in ("approve", "decline")  # scored, but flagged
        assert "outside the training range" in r["problem"] and "standard deviations" in r["problem"]
    assert "annual_inc" in out[1]["problem"] and "funded_amnt" in out[3]["problem"]
    assert "annual_inc, total_bal_il" in out[4]["problem"]
    assert out[2]["pd"] is None and out[2]["problem"] == "column 'annual_inc': value '1e30' is beyond +-1e+18"
    assert "line 3: outside the training range: annual_inc" in err and "1 invalid row(s) flagged, 4 out of range" in err
    _, csv_out = _predict(model_path, write_csv(a), tmp_path)
    assert csv_out["status"].tolist() == status


def test_out_of_range_uses_the_models_own_mean_and_spread(loaded, tiny_run, raw_frame):  # noqa: F811
    prep = json.loads((tiny_run / "preprocessing.json").read_text())
    refs = explain.references(loaded)
    for col in LENDING_CLUB.numeric:
        assert refs.spread[col] == pytest.approx(prep["variance"][col] ** 0.5, rel=1e-5)
    frame = pd.DataFrame({c: [refs.numeric[c]] for c in LENDING_CLUB.numeric})
    frame.loc[1] = {c: refs.numeric[c] - 101 * refs.spread[c] for c in LENDING_CLUB.numeric}
    frame.loc[2] = {c: np.nan for c in LENDING_CLUB.numeric}  # missing: imputed, never out of range
    assert predict.out_of_range(frame, refs) == [[], list(LENDING_CLUB.numeric), []]
    # Heavy tails are real: no loan of the built-in data set is out of range for a model trained on it.
    loans = predict.validate_rows(raw_frame, LENDING_CLUB, "x")[0]
    assert not any(predict.out_of_range(loans, refs))


def test_an_unseen_category_or_a_missing_value_is_never_plainly_scored(
    model_path, loaded, applicants, write_csv, tmp_path, capsys
):
    a = applicants.head(6).copy()
    a.loc[1, "term"] = "term_48"  # line 3: a term the schema does not name, never in any bank's training rows
    a.loc[2, "emp_length"] = None  # line 4: a missing category
    a.loc[3, "revol_util"] = None  # line 5: a missing number
    a.loc[4, ["term", "annual_inc"]] = ["term_48", None]  # line 6: both
    capsys.readouterr()
    code, out = _predict(model_path, write_csv(a), tmp_path, fmt="jsonl")
    err = capsys.readouterr().err
    assert code == 0  # every row scored
    assert [r["status"] for r in out] == [
        "scored",
        "scored-with-unknown",
        "scored-with-missing",
        "scored-with-missing",
        "scored-with-unknown",  # the more serious of the two
        "scored",
    ]
    assert all(0 < r["pd"] < 1 and r["decision"] in ("approve", "decline") for r in out)
    assert out[1]["problem"].startswith("categories the model never learned, scored as unknown: term (")
    assert (
        out[2]["problem"].startswith("missing values: emp_length (")
        and "missing values: revol_util (" in (out[3]["problem"])
    )
    assert "unknown: term (" in out[4]["problem"] and "; missing values: annual_inc (" in out[4]["problem"]
    assert out[0]["problem"] is None and out[5]["problem"] is None
    # Scored as the unknown category: the PD a missing term gives, not anything learned about a 48-month loan.
    as_missing = mdl.score(loaded, predict.validate_rows(a.iloc[[1]].assign(term=""), LENDING_CLUB, "x")[0])
    assert out[1]["pd"] == pytest.approx(float(as_missing[0]), abs=1e-6)
    assert "line 3: categories the model never learned, scored as unknown: term" in err
    assert "line 4:" not in err  # missing values are counted, not listed
    assert "0 out of range, 2 scored-with-unknown, 2 scored-with-missing" in err
    _, csv_out = _predict(model_path, write_csv(a), tmp_path)
    assert csv_out["status"].tolist() == [r["status"] for r in out]


def test_the_most_serious_flag_is_the_status_and_every_one_is_noted():
    flags = predict.Flags(far=["annual_inc"], unknown=["term"], missing=["revol_util"])
    assert flags.status == predict.STATUS_OUT_OF_RANGE
    parts = ("outside the training range: annual_inc", "; categories the model never learned", "; missing values")
    at = [flags.problem.find(part) for part in parts]
    assert at[0] == 0 and at == sorted(at) and -1 not in at, flags.problem
    assert predict.Flags(unknown=["term"], missing=["revol_util"]).status == predict.STATUS_UNKNOWN
    assert predict.Flags().status == predict.STATUS_SCORED and predict.Flags().problem is None


def test_a_full_disk_leaves_the_previous_output_never_a_truncated_one(
    model_path, applicants, write_csv, tmp_path, capsys, monkeypatch
):
    real = predict.write

    def fills_the_disk(recs, passthrough, fmt, stream):
        real(recs[:3], passthrough, fmt, stream)  # part of the output is written...
        raise OSError(errno.ENOSPC, "No space left on device")  # ... then the disk is full

    csv = write_csv(applicants.head(10))
    out = tmp_path / "scores.csv"
    monkeypatch.setattr(predict, "write", fills_the_disk)
    assert main(["predict", str(model_path), str(csv), "--output", str(out)]) == 2
    assert "could not write" in capsys.readouterr().err and not out.exists()
    out.write_text("the previous scores\n")
    assert main(["predict", str(model_path), str(csv), "--output", str(out)]) == 2
    assert out.read_text() == "the previous scores\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.csv", "scores.csv"]  # no temporary file left
    monkeypatch.setattr(predict, "write", real)
    assert main(["predict", str(model_path), str(csv), "--output", str(out)]) == 0
    assert len(pd.read_csv(out)) == 10


def test_applicants_are_read_as_a_banks_file_is(model_path, applicants, write_csv, tmp_path, capsys):
    a = applicants.head(8).copy()
    a.insert(1, "note", "")
    a.loc[1, "note"] = "called twice\nthen paid"  # row of line 3 spans lines 3-4
    a.loc[2, "emp_length"] = "NA"  # line 5: a category value (unknown to the model), not a missing one
    a.loc[3, "revol_util"] = "NA"  # line 6: not a number
    text = a.to_csv(index=False).splitlines()
    text[7] += ",X"  # line 8 (the row of data line 7): more fields than the header
    capsys.readouterr()
    code, out = _predict(model_path, write_csv("\n".join(text) + "\n"), tmp_path)
    err = capsys.readouterr().err
    assert code == 1
    assert out["line"].tolist() == [2, 3, 5, 6, 7, 8, 9, 10]
    assert out["status"].tolist() == [
        "scored",
        "scored",
        "scored-with-unknown",  # 'NA' is a category value, one the model never learned
        "invalid",
        "scored",
        "invalid",
        "scored",
        "scored",
    ]
    assert out.loc[3, "problem"] == "column 'revol_util': value 'NA' is not a number"
    assert "more fields than the header" in out.loc[5, "problem"] and "line 8: the row has more fields" in err
    assert (
        out["applicant_id"].tolist() == a["applicant_id"].tolist() and out.loc[1, "note"] == "called twice\nthen paid"
    )


@pytest.mark.parametrize(
    "change,message",
    [
        (lambda t: [t[0] + ",int_rate", *(line + ",7.5" for line in t[1:])], "at columns 4 (D) and 24 (X)"),
        (lambda t: [t[0].replace("applicant_id", "Class", 1) + ",Class", *(x + ",good" for x in t[1:])], "at columns"),
        (
            lambda t: [*t[:4], t[4].replace("A0", '"A0', 1), *t[5:]],
            'a quote (") opens here and never closes, so everything after it reads as one cell: close the quote or remove it (lines 5)',
        ),
    ],
    ids=["feature twice", "label twice", "unclosed quote"],
)
def test_a_repeated_header_or_an_unclosed_quote_stops_predict_with_one_line(
    model_path, applicants, write_csv, capsys, change, message
):
    text = change(applicants.head(6).to_csv(index=False).splitlines())
    capsys.readouterr()
    assert main(["predict", str(model_path), str(write_csv("\n".join(text) + "\n"))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("fedcredit predict: error:") and message in err[-1] and "Traceback" not in err[-1]
