"""`excluded-features`: features left out of the model and the statistics (less discriminatory alternatives)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from fedcredit.cli import main
from fedcredit.core import model as mdl
from fedcredit.core.banks import load_bank, schema_of
from fedcredit.core.config import ConfigError, RunConfig, parse_run_config, sweep_variants
from fedcredit.core.schema import LENDING_CLUB
from fedcredit.core.stats import compute_stats, preprocessing_from_stats
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import client, protocol, sweep
from fedcredit.federation.statistics import statistics_key

BANK = {"partition-id": 0, "num-partitions": 3}
TINY = {"partitioning": "iid", "hidden-units": "4"}


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("", ()),
        ("int_rate", ("int_rate",)),
        (" int_rate , sub_grade ", ("int_rate", "sub_grade")),
        ("int_rate+sub_grade", ("int_rate", "sub_grade")),  # the form a sweep's values use
        ("int_rate,", ("int_rate",)),
    ],
)
def test_names_are_separated_by_commas_or_plus(text, names):
    assert parse_run_config({"excluded-features": text}).excluded == names


def test_a_name_given_twice_is_refused():
    with pytest.raises(ConfigError, match="'excluded-features' = 'int_rate,int_rate' names a feature twice"):
        parse_run_config({"excluded-features": "int_rate,int_rate"})


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("int_rat", r"\['int_rat'\] are not features of the schema; its features are \['funded_amnt'"),
        ("Class", r"\['Class'\] are not features"),  # the target is no feature
        ("addr_state", r"\['addr_state'\] are not features"),  # nor the partition column
        (",".join(LENDING_CLUB.features), "leaves the model no input: keep at least one"),
    ],
)
def test_every_name_must_be_a_feature_and_one_must_remain(text, match):
    cfg = parse_run_config({"excluded-features": text})
    with pytest.raises(ConfigError, match=f"run config 'excluded-features' = .*{match}"):
        schema_of(cfg)


def test_a_protected_attribute_is_no_feature_to_exclude():
    cfg = parse_run_config(
        {
            "excluded-features": "SEX",
            "data-path": "builtin:taiwan_credit_card",
            "schema-path": str(APP_DIR / "fedcredit/data/taiwan_credit_card.toml"),
        }
    )
    with pytest.raises(ConfigError, match="'SEX' is a protected attribute, never a feature"):
        schema_of(cfg)


def test_excluding_int_rate_builds_a_model_and_statistics_without_it():
    cfg = parse_run_config({**TINY, "excluded-features": "int_rate,sub_grade"})
    schema = schema_of(cfg)
    assert "int_rate" not in schema.features and "sub_grade" not in schema.features
    assert "sub_grade" not in schema.known_categories
    assert set(schema.features) == set(LENDING_CLUB.features) - {"int_rate", "sub_grade"}
    assert schema.sha256 != LENDING_CLUB.sha256  # another feature set, the same on every side
    # What a bank sends: its statistics without the excluded columns; the coordinator's checks agree.
    name, source, sha, stats = client.statistics(cfg, BANK)
    assert "int_rate" not in stats.numeric and "sub_grade" not in stats.categorical
    assert "annual_inc" in stats.numeric and "term" in stats.categorical
    read = protocol.read_statistics(protocol.statistics_reply(name, source, sha, stats), schema, cfg.limits)
    protocol.check_schema(read.schema_sha256, schema)
    prep = preprocessing_from_stats(stats, cfg.min_category_count)
    assert "int_rate" not in prep.mean and "sub_grade" not in prep.vocabulary
    # The model: no such input, whichever schema the spec is taken from.
    spec = mdl.ModelSpec.of(cfg, schema)
    assert spec == mdl.ModelSpec.of(cfg, LENDING_CLUB)
    model = mdl.build_model(prep, spec)
    names = {t.name for t in model.inputs}
    assert names == set(schema.features) and not {"int_rate", "sub_grade"} & names
    # The bank's rows still carry the column (the file's contract is the whole schema); the model ignores it.
    bank = load_bank(cfg, BANK)
    assert "int_rate" in bank.train.columns and "int_rate" not in mdl.to_inputs(bank.train, model)
    # Without the key: the full feature set.
    full = parse_run_config(TINY)
    assert "int_rate" in mdl.ModelSpec.of(full, schema_of(full)).numeric
    assert "int_rate" in client.statistics(full, BANK)[3].numeric


def test_a_sweep_over_excluded_features_gathers_statistics_per_feature_set(tmp_path):
    variants = sweep_variants("excluded-features=,int_rate,int_rate+sub_grade")
    assert variants == [
        {"excluded-features": ""},
        {"excluded-features": "int_rate"},
        {"excluded-features": "int_rate+sub_grade"},
    ]
    cfgs = [parse_run_config({**TINY, **v}) for v in variants]
    assert [c.excluded for c in cfgs] == [(), ("int_rate",), ("int_rate", "sub_grade")]
    assert len({statistics_key(c, schema_of(c)) for c in cfgs}) == 3
    config = {
        **RunConfig().to_flower(),
        **TINY,
        "num-server-rounds": 1,
        "local-epochs": 1,
        "personalize.epochs": 0,
        "histogram-bins": 100,
        "output-dir": str(tmp_path / "out"),
        "sweep": "excluded-features=,int_rate",
    }
    with serverapp_identity():
        histories = [h.to_json() for h in sweep.serve(InProcessGrid(config, 3), config, "ex", APP_DIR)]
    assert [h["status"] for h in histories] == ["completed", "completed"]
    preps = [json.loads((tmp_path / "out" / h["output-dir"] / "preprocessing.json").read_text()) for h in histories]
    assert "int_rate" in preps[0]["mean"] and "int_rate" not in preps[1]["mean"]
    assert [h["config"]["excluded-features"] for h in histories] == ["", "int_rate"]
    models = [mdl.load(str(tmp_path / "out" / h["output-dir"] / "model-final.keras")) for h in histories]
    assert "int_rate" in {t.name for t in models[0].inputs} and "int_rate" not in {t.name for t in models[1].inputs}


def test_a_sweep_with_a_wrong_name_is_refused_before_anything_runs(tmp_path):
    config = {**TINY, "output-dir": str(tmp_path), "sweep": "excluded-features=,int_rat"}
    with serverapp_identity(), pytest.raises(ConfigError, match=r"\['int_rat'\] are not features"):
        sweep.serve(InProcessGrid(config, 3), config, "bad", APP_DIR)
    assert not list(tmp_path.iterdir())


def test_predict_scores_with_a_model_that_left_features_out(tmp_path, raw_frame, capsys):
    cfg = parse_run_config({**TINY, "excluded-features": "int_rate"})
    frame = load_bank(cfg, BANK).train
    model = mdl.build_model(
        preprocessing_from_stats(compute_stats(frame, schema_of(cfg)), 10), mdl.ModelSpec.of(cfg, LENDING_CLUB)
    )
    path = tmp_path / "model-final.keras"
    model.save(path)
    applicants = raw_frame.head(20).drop(columns=["Class", "int_rate"])  # the excluded column is not needed
    csv = tmp_path / "applicants.csv"
    applicants.to_csv(csv, index=False)
    out = tmp_path / "scores.csv"
    assert main(["predict", str(path), str(csv), "--output", str(out)]) == 0
    assert "the model leaves out ['int_rate']" in capsys.readouterr().err
    scored = pd.read_csv(out)
    assert (scored["status"] == "scored").all() and "int_rate" not in scored.columns
