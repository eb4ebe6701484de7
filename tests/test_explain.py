"""Reasons fit for a notice: against each feature's lowest-risk value, at most four, the schema's words, stable."""

from __future__ import annotations

import numpy as np
import pytest
from runfixture import tiny_run  # noqa: F401  (fixture)

from fedcredit.core import model as mdl
from fedcredit.core.config import parse_run_config
from fedcredit.core.schema import BUILTIN_SCHEMA_FILE, LENDING_CLUB, Schema
from fedcredit.core.stats import Preprocessing
from fedcredit.risk import explain, predict

S = LENDING_CLUB


@pytest.fixture(scope="module")
def model(tiny_run):  # noqa: F811
    return mdl.load(tiny_run / "model-final.keras")


@pytest.fixture(scope="module")
def refs(model):
    return explain.references(model, S)


@pytest.fixture(scope="module")
def frame(raw_frame):
    return predict.validate_rows(raw_frame.iloc[3000:3080].reset_index(drop=True), S, "x")[0]


def _features(reasons):
    return [[r.feature for r in why] for why in reasons]


def test_lowest_risk_values_are_the_low_risk_end_of_the_known_range(refs):
    assert refs.direction == S.directions
    for col, sign in refs.direction.items():
        (end,) = refs.lowest_risk_candidates(col)
        if col in refs.categorical:
            assert end == refs.categorical[col][0 if sign > 0 else -1]
            continue
        lo, hi = refs.span(col)
        assert end == (lo if sign > 0 else hi)
        assert lo == max(refs.numeric[col] - explain.RANGE_SD * refs.spread[col], S.bound(col)[0])
    assert refs.lowest_risk_candidates("inq_last_12m") == [0.0]  # never a negative count of inquiries
    assert refs.lowest_risk_candidates("sub_grade") == ["A1"] and refs.lowest_risk_candidates("emp_length") == [
        "emp_ge_10"
    ]
    assert len(refs.lowest_risk_candidates("num_il_tl")) == explain.GRID_POINTS  # no direction: a grid


def test_at_most_four_reasons_largest_first_each_raising_the_pd_with_the_schemas_text(model, refs, frame):
    base, reasons = explain.explain(model, frame, refs)
    assert max(len(why) for why in reasons) == explain.TOP_REASONS == 4
    for i, why in enumerate(reasons):
        impacts = [r.impact for r in why]
        assert impacts == sorted(impacts, reverse=True) and all(d > explain.MIN_IMPACT for d in impacts)
        assert len({r.feature for r in why}) == len(why)
        for r in why:
            assert r.text == S.reason_text(r.feature)
            # The stated impact is the PD drop when the feature takes the stated lowest-risk value.
            again = mdl.score(model, frame.iloc[[i]].assign(**{r.feature: r.reference}))[0]
            assert base[i] - again == pytest.approx(r.impact, abs=2e-6)


def test_a_feature_at_or_beyond_its_lowest_risk_value_is_never_a_reason(model, refs, frame):
    base, reasons = explain.explain(model, frame, refs)
    assert any("sub_grade" in f for f in _features(reasons))  # otherwise the test below proves nothing
    for col, sign in refs.direction.items():
        (end,) = refs.lowest_risk_candidates(col)
        at_end = frame.assign(**{col: end})
        assert not any(col in f for f in _features(explain.explain(model, at_end, refs)[1])), col
        if col in refs.numeric:  # beyond the end of the range, in the low-risk direction
            beyond = frame.assign(**{col: end - sign * 3 * max(refs.spread[col], 1.0)})
            assert not any(col in f for f in _features(explain.explain(model, beyond, refs)[1])), col
    # A feature without a direction: set to the value its reason named, it is no longer a reason.
    for i, why in enumerate(reasons):
        for r in (r for r in why if r.feature not in refs.direction):
            moved = frame.iloc[[i]].assign(**{r.feature: r.reference})
            assert r.feature not in _features(explain.explain(model, moved, refs)[1])[0]


def test_missing_and_unknown_values_are_never_a_reason(model, refs, frame):
    unstated = frame.copy()
    unstated["annual_inc"] = np.nan
    unstated["int_rate"] = np.nan
    unstated["sub_grade"] = "Z9"  # a grade no bank reported
    unstated["emp_length"] = ""  # not stated
    unstated["verification_status"] = "Pending"
    _, reasons = explain.explain(model, unstated, refs)
    named = {f for why in reasons for f in (r.feature for r in why)}
    assert not named & {"annual_inc", "int_rate", "sub_grade", "emp_length", "verification_status"}
    assert named  # the stated features still give reasons


def test_the_same_applicant_gets_the_same_reasons_alone_in_a_batch_or_in_another_order(model, refs, frame):
    _, together = explain.explain(model, frame, refs)
    shuffled = frame.sample(frac=1.0, random_state=3)
    _, mixed = explain.explain(model, shuffled.reset_index(drop=True), refs)
    for pos, i in enumerate(shuffled.index[:25]):
        alone = explain.explain(model, frame.iloc[[i]].reset_index(drop=True), refs)[1][0]
        for other in (together[i], mixed[pos]):
            assert [(r.feature, r.text, r.reference) for r in other] == [
                (r.feature, r.text, r.reference) for r in alone
            ]
            np.testing.assert_allclose([r.impact for r in other], [r.impact for r in alone], atol=1e-6)


def test_reason_texts_default_from_the_column_and_claim_no_direction_the_model_does_not_hold(
    model,
    tiny_run,  # noqa: F811
    tmp_path,
):
    removed = ('int_rate = "Interest', 'annual_inc = "Annual')
    text = "\n".join(line for line in BUILTIN_SCHEMA_FILE.read_text().splitlines() if not line.startswith(removed))
    (tmp_path / "schema.toml").write_text(text + "\n", encoding="utf-8")
    schema = Schema.from_toml(tmp_path / "schema.toml")
    refs = explain.references(model, schema)
    assert refs.text("int_rate") == "Int rate is high" and refs.text("annual_inc") == "Annual inc is low"
    assert refs.text("term") == "Term of the loan is long"
    # A model built without the constraints: "... is high" would claim a direction the model does not hold.
    prep = Preprocessing.from_json((tiny_run / "preprocessing.json").read_text())
    cfg = parse_run_config({"monotone-constraints": False, "hidden-units": "4"})
    plain = explain.references(mdl.build_model(prep, mdl.ModelSpec.of(cfg, S)), S)
    assert plain.direction == {}
    assert plain.text("int_rate") == "Int rate raises the estimated risk"
    assert plain.text("verification_status") == "Status of the income verification"  # declares no direction
