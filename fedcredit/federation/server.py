"""The coordinator's side of one run: a short list of named steps, each a module's job.

`run` is everything `server_app.py` does for one run (`sweep.serve` for
several). It fails loudly (the run ends as failed with the reason in the log
and in history.json) when banks are too few, no round trained, or metrics
turn NaN: Flower would otherwise report a run with no usable model as
completed. The steps: check the config, pick up a crashed run (`resume`),
gather the banks' statistics (`statistics`), fix the preprocessing, ask the
banks' feature profiles for the report (`profiles`), train the rounds
(`tracking` at the Grid, `rounds` after each round), release the final
model, ask the banks how often each feature is a reason for its declines
(`reasons`), personalise (`personalisation`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core import model as mdl
from fedcredit.core.banks import schema_of
from fedcredit.core.config import KEYS, RunConfig, app_defaults, check_overrides, ignored_keys, parse_run_config
from fedcredit.core.groups import group_names
from fedcredit.core.schema import Schema, resolve_schema_path
from fedcredit.core.stats import Preprocessing, preprocessing_from_stats
from fedcredit.federation import accounting, protocol, resume, signed_replies
from fedcredit.federation.errors import FederationError
from fedcredit.federation.exchange import short_reason
from fedcredit.federation.history import BankRecord, History, ResumedFrom, StrategyRecord
from fedcredit.federation.outputs import FILES, RunOutputs
from fedcredit.federation.personalisation import personalise_banks
from fedcredit.federation.profiles import collect_profiles
from fedcredit.federation.reasons import collect_reasons
from fedcredit.federation.rounds import (
    RecordsAggregation,
    RoundReporter,
    final_checks,
    final_evaluation,
    folded_evaluation,
    save_history,
)
from fedcredit.federation.scores import RoundScores, ScoresError, path_of, read_scores_file
from fedcredit.federation.software import software
from fedcredit.federation.statistics import Federation, gather, statistics_key, too_few_banks, wait_for_banks
from fedcredit.federation.strategies import make_strategy, privacy_summary, weight_key
from fedcredit.federation.tracking import ReplyRules, SecureSettings, Tracker, TrackingGrid

__all__ = ["FederationError", "run", "short_reason"]

# Strategies that average updates: one bank's oversized update is bounded (update-clip).
# Median, trimmed mean, Krum and Bulyan resist outliers by design; q-FedAvg reweights by loss.
BOUNDED_STRATEGIES = KEYS["update_clip"].strategies or ()


@dataclass
class _Run:
    """What the steps of one run share: its config (as the banks turn out to need it), outputs and history."""

    cfg: RunConfig
    schema: Schema
    out: RunOutputs
    history: History
    resumed: resume.Resume | None = None

    @property
    def offset(self) -> int:
        """Rounds a resumed run already has: Flower's round r is the run's round r + offset."""
        return self.resumed.last_round if self.resumed else 0


def run(
    grid: Grid,
    run_config: Mapping[str, Any],
    run_id: int | str,
    app_dir: str | Path | None = None,
    statistics: dict[tuple, Federation] | None = None,
    variant: dict[str, Any] | None = None,
    profiles: dict[tuple, dict[str, Any]] | None = None,
) -> History:
    """One federated training run; returns the history it also writes to disk.

    `app_dir`: the app's directory (a relative schema-path is a file of the app).
    In a sweep, `statistics` and `profiles` cache the banks' statistics and
    feature profiles across variants and `variant` is recorded in the history
    (a key this variant's strategy ignores may be there for another variant,
    so it is not refused).
    """
    state = _start(run_config, run_id, app_dir, variant)
    grid = signed_replies.signed_grid(grid, app_dir)  # with a roster: every reply verified before it is read
    state.history.roster_sha256 = grid.roster.sha256 if grid.roster is not None else None
    started = time.monotonic()
    try:
        if app_dir is not None and variant is None:  # a key given with --run-config this strategy ignores
            check_overrides(run_config, app_defaults(Path(app_dir)), state.cfg)
        _record_ignored_keys(state)
        _pick_up(state)
        federation = _federation(grid, state, statistics)
        _check_dp_budget(state, federation)
        prep = _preprocessing(state, federation)
        _profile(grid, state, federation, prep, profiles)
        model = mdl.build_model(prep, mdl.ModelSpec.of(state.cfg, state.schema))
        if state.resumed is not None:
            resume.check_weights(state.resumed, model.get_weights())
        arrays = _train(grid, state, federation, prep, model)
        _release(state, model, arrays)
        _reasons(grid, state, federation, prep, arrays)
        if state.cfg.personalize_epochs > 0:  # the released global model is final: what banks do next stays theirs
            save_history(state.out, state.history)
            state.history.personalisation = personalise_banks(
                grid, federation.banks, arrays, prep.to_json(), state.cfg, state.out.dir
            )
        state.history.status = "completed"
    except BaseException as err:  # also Flower's run-stopped exceptions: never leave "running" behind
        state.history.status = "failed" if isinstance(err, Exception) else "stopped"
        state.history.reason = f"{type(err).__name__}: {err}"
        state.history.seconds = round(time.monotonic() - started, 2)
        try:
            save_history(state.out, state.history)
        except Exception as again:  # noqa: BLE001 - e.g. a full disk: the run's own error is the one to raise
            log(WARNING, "fedcredit: history.json could not record why the run ended (%s): %s", again, err)
        raise
    state.history.seconds = round(time.monotonic() - started, 2)
    save_history(state.out, state.history)
    _log_finished(state)
    return state.history


def _start(
    run_config: Mapping[str, Any], run_id: int | str, app_dir: str | Path | None, variant: dict[str, Any] | None
) -> _Run:
    """The parsed config, the run directory, and the history as it stands before anything is asked of a bank."""
    cfg = parse_run_config(run_config)
    cfg = dataclasses.replace(cfg, schema_path=resolve_schema_path(cfg.schema_path, app_dir))
    schema = schema_of(cfg)
    out = RunOutputs(cfg.output_dir, run_id)
    log(INFO, "fedcredit: outputs of run %s go to %s", run_id, out.dir)
    out.save_json("config.json", cfg.to_flower())
    history = History(
        run_id=str(run_id),
        status="running",
        config=cfg.to_flower(),
        output_dir=str(out.dir),
        schema_sha256=schema.sha256,
        sweep=variant or None,
        software=software(Path(app_dir) if app_dir is not None else None),
    )
    return _Run(cfg, schema, out, history)


def _record_ignored_keys(state: _Run) -> None:
    cfg = state.cfg
    state.history.ignored_keys = ignored_keys(cfg)
    for key in state.history.ignored_keys:
        log(
            WARNING,
            "fedcredit: run config '%s' is set but %s = %r does not use it: ignored",
            key,
            "privacy.mode" if key.startswith("privacy.") else "strategy.name",
            cfg.privacy_mode if key.startswith("privacy.") else cfg.strategy_name,
        )


def _pick_up(state: _Run) -> None:
    """resume-from: the crashed run's rounds, checkpoints and best model become this run's start."""
    if not state.cfg.resume_from:
        return
    resumed = resume.load(state.cfg.resume_from, state.cfg, state.schema.sha256)
    state.resumed = resumed
    state.history.resumed_from = ResumedFrom(str(resumed.run_dir), resumed.last_round)
    state.history.rounds = list(resumed.history.rounds)
    state.history.best_round = resumed.history.best_round
    resume.carry_over(resumed, state.out)
    log(INFO, "fedcredit: resuming %s after its round %d", resumed.run_dir, resumed.last_round)


def _federation(grid: Grid, state: _Run, statistics: dict[tuple, Federation] | None) -> Federation:
    """The banks that build the model, recorded; banks reading their own files switch hold-out evaluation off."""
    cfg, history = state.cfg, state.history
    nodes = wait_for_banks(grid, cfg.min_banks, cfg.node_wait_timeout)
    federation = gather(grid, cfg, state.schema, nodes, statistics)
    banks = federation.banks
    history.banks = {b.name: BankRecord(str(n), b.rows) for n, b in banks.items()}
    history.statistics_failed = {f"node-{n}": r for n, r in federation.failed.items()}
    if len(banks) < cfg.min_banks or federation.merged is None:
        raise FederationError(too_few_banks(len(banks) if federation.merged else 0, federation.failed, cfg.min_banks))
    log(
        INFO,
        "fedcredit: statistics from %d bank(s): %s%s",
        len(banks),
        ", ".join(f"{b.name}" + (f" ({b.stats.rows} rows)" if b.stats else "") for b in banks.values()),
        f" ({federation.merged.rows} rows in all, summed securely)" if cfg.privacy_secure_aggregation else "",
    )
    if cfg.holdout_eval and any(b.source == "file" for b in banks.values()):
        # Banks train on their own files: the embedded data set is not their population,
        # and a real coordinator holds no loan data. Evaluation is federated only.
        log(
            WARNING,
            "fedcredit: banks use their own CSVs (deployment): hold-out evaluation on the "
            "embedded data set is switched off; evaluation is federated only",
        )
        state.cfg = dataclasses.replace(cfg, holdout_eval=False)
        history.config = state.cfg.to_flower()
        state.out.save_json("config.json", history.config)
    return federation


def dp_sgd_rows(federation: Federation) -> dict[str, int]:
    """{bank name: training rows} for DP-SGD accounting; every bank states them under dp-sgd."""
    rows = {b.name: b.rows for b in federation.banks.values()}
    unknown = sorted(name for name, n in rows.items() if n is None)
    if unknown:
        raise FederationError(
            f"privacy.dp-sgd accounts each bank at its training rows, but {unknown} did not state them "
            "(a sweep reusing the statistics of a variant without dp-sgd in secure mode): run dp-sgd on its own"
        )
    return {name: int(n) for name, n in rows.items() if n is not None}


def _check_dp_budget(state: _Run, federation: Federation) -> None:
    """DP-SGD: refuse, before round 1, a run whose last round would take a bank beyond privacy.target-epsilon."""
    cfg = state.cfg
    if not cfg.privacy_dp_sgd:
        return
    rows = dp_sgd_rows(federation)
    accounting.check_budget(cfg, rows)
    planned = accounting.summary(cfg, rows, cfg.num_server_rounds)
    log(
        INFO,
        "fedcredit: DP-SGD (borrower level): after %d round(s) the largest epsilon is %.3g (bank %s, delta %.3g)%s",
        cfg.num_server_rounds,
        planned["epsilon"],
        planned["bank"],
        planned["delta"],
        f", within privacy.target-epsilon = {cfg.privacy_target_epsilon:g}" if cfg.privacy_target_epsilon else "",
    )


def _privacy(cfg: RunConfig, accountant: Any, federation: Federation) -> Any:
    """The round reporter's privacy record: (run round) -> the epsilon spent up to it, or None."""
    if not cfg.privacy_dp_sgd:
        return lambda run_round: privacy_summary(cfg, accountant)
    rows = dp_sgd_rows(federation)
    if cfg.privacy_mode == "none":
        return lambda run_round: accounting.summary(cfg, rows, run_round)
    # Both: the client-level guarantee (one bank is the unit) with the borrower-level one inside, each with its unit.
    return lambda run_round: {
        **(privacy_summary(cfg, accountant) or {}),
        accounting.BORROWER_LEVEL: accounting.summary(cfg, rows, run_round),
    }


def _preprocessing(state: _Run, federation: Federation) -> Preprocessing:
    """The shared preprocessing from the merged statistics (a resumed run's must be the same)."""
    prep = preprocessing_from_stats(federation.merged, state.cfg.min_category_count)  # type: ignore[arg-type]
    saved = {"mean": prep.mean, "variance": prep.variance, "vocabulary": prep.vocabulary}
    if state.resumed is not None:
        resume.check_preprocessing(state.resumed, saved)
    state.out.save_json("preprocessing.json", saved)
    return prep


def _profile(
    grid: Grid, state: _Run, federation: Federation, prep: Preprocessing, cache: dict[tuple, dict[str, Any]] | None
) -> None:
    """profile.json: the banks' feature profiles for the model-risk report; whatever goes wrong, the run goes on.

    A sweep asks once per statistics, preprocessing and mode (the banks'
    answers would be the same); a resumed run asks again (the same banks and
    preprocessing, as `resume` requires, give the same counts).
    """
    prep_json = prep.to_json()
    key = (statistics_key(state.cfg, state.schema), protocol.digest(prep_json), state.cfg.privacy_secure_aggregation)
    if cache is not None and key in cache:
        log(INFO, "fedcredit sweep: the banks' profiles of an earlier variant apply (same data and preprocessing)")
        record = cache[key]
    else:
        try:
            record = collect_profiles(grid, federation, prep_json, state.schema, state.cfg)
        except Exception as err:  # noqa: BLE001 - informational: a profile that cannot be had never stops the run
            log(WARNING, "fedcredit profile: no profiles: %s", short_reason(f"{type(err).__name__}: {err}"))
            record = {"mode": "secure" if state.cfg.privacy_secure_aggregation else "plain", "error": str(err)}
        else:
            if cache is not None:
                cache[key] = record
    state.out.save_json("profile.json", record)


def _train(grid: Grid, state: _Run, federation: Federation, prep: Preprocessing, model: Any) -> ArrayRecord:
    """The rounds: Flower's strategy through the tracking Grid, `RoundReporter` after each; the final weights."""
    cfg, banks, offset = state.cfg, federation.banks, state.offset
    tracker = Tracker()
    folded = folded_evaluation(cfg, banks)
    state.history.evaluation = "folded" if folded else ("separate" if cfg.fraction_evaluate > 0 else "off")
    # Folded: the banks evaluate inside the train message; the strategy sends no evaluate message.
    strategy, accountant = make_strategy(dataclasses.replace(cfg, fraction_evaluate=0.0) if folded else cfg, len(banks))
    state.history.strategy = StrategyRecord(cfg.strategy_name, type(strategy).__name__, cfg.privacy_mode)
    reporter = RoundReporter(
        cfg,
        model,
        tracker,
        state.out,
        state.history,
        {n: b.name for n, b in banks.items()},
        _privacy(cfg, accountant, federation),
        offset=offset,
        folded=folded,
    )
    prep_json = prep.to_json()
    tracking = _tracking_grid(grid, cfg, state.schema, tracker, federation, prep_json, folded)
    # The configs carry only the preprocessing's digest; TrackingGrid adds the preprocessing itself.
    # round-offset: a resumed run's banks seed each message by the run's round, not Flower's.
    digest = ConfigRecord({protocol.PREPROCESSING_SHA: protocol.digest(prep_json), protocol.ROUND_OFFSET: offset})
    train_config = ConfigRecord({**dict(digest.items()), **({protocol.EVALUATE_FIRST: 1} if folded else {})})
    result = RecordsAggregation(strategy, tracker).start(
        tracking,
        ArrayRecord(state.resumed.weights if state.resumed else model.get_weights()),
        cfg.num_server_rounds - offset,
        timeout=cfg.round_timeout,
        train_config=train_config,
        evaluate_config=digest,
        evaluate_fn=reporter,
    )
    if folded:  # the last round's model has not been scored yet: one evaluate message per bank
        final_evaluation(tracking, banks, result.arrays, cfg.num_server_rounds - offset, digest, cfg.round_timeout)
        reporter.finish()
    final_checks(cfg, tracker, state.history)
    return result.arrays


def _tracking_grid(
    grid: Grid,
    cfg: RunConfig,
    schema: Schema,
    tracker: Tracker,
    federation: Federation,
    prep_json: str,
    folded: bool,
) -> TrackingGrid:
    """The Grid the strategy talks through: only the run's banks, every reply checked against what they sent."""
    banks = federation.banks
    rules = ReplyRules(
        rows={n: b.stats.rows for n, b in banks.items() if b.stats is not None},
        bins=cfg.histogram_bins,
        val_fraction=cfg.val_fraction,
        threshold=cfg.threshold,
        update_clip=cfg.update_clip if cfg.strategy_name in BOUNDED_STRATEGIES else 0.0,
        extra_train_keys=(protocol.NORM_BIT,) if cfg.privacy_mode == "client-adaptive" else (),
        update_direction=cfg.update_direction,
        # Client-side DP and DP-SGD noise each update at the bank, so an honest one may point anywhere: record only.
        exclude_away=cfg.strategy_name in BOUNDED_STRATEGIES
        and not (cfg.privacy_mode.startswith("client-") or cfg.privacy_dp_sgd),
        folded=folded,
        groups={attr: len(names) for attr, names in group_names(schema).items()},
    )
    secure = (
        SecureSettings(cfg.privacy_secure_threshold, cfg.privacy_max_update_norm, weight_key(cfg))
        if cfg.privacy_secure_aggregation
        else None
    )
    return TrackingGrid(
        grid,
        tracker,
        banks=banks,
        min_banks=cfg.min_banks,
        # Noise added at the coordinator is calibrated to the sampled banks; DP-SGD's is at each bank.
        all_or_nothing=cfg.privacy_mode != "none",
        wait_timeout=cfg.node_wait_timeout,
        rules=rules,
        preprocessing=prep_json,
        secure=secure,
    )


def _release(state: _Run, model: Any, arrays: ArrayRecord) -> None:
    """model-final.keras, only from finite final weights, and its SHA-256 in the history."""
    final_weights = arrays.to_numpy_ndarrays()
    if not final_weights or not all(np.isfinite(w).all() for w in final_weights):
        raise FederationError("the final global weights are missing or not finite: the model diverged")
    model.set_weights(final_weights)
    state.out.save_model("model-final.keras", model)
    state.history.model_final_sha256 = hashlib.sha256(state.out.path("model-final.keras").read_bytes()).hexdigest()


def _reasons(grid: Grid, state: _Run, federation: Federation, prep: Preprocessing, arrays: ArrayRecord) -> None:
    """reasons.json: the banks' counts of the final model's reasons for its declines; whatever goes wrong, the run
    goes on (they are evidence for the report, nothing of the model depends on them)."""
    cfg = state.cfg
    try:
        final, evaluated = _final_scores(state)
        record = collect_reasons(grid, federation, arrays, prep.to_json(), state.schema, cfg, final, evaluated)
    except Exception as err:  # noqa: BLE001 - informational: counts that cannot be had never stop the run
        log(WARNING, "fedcredit reasons: no reason counts: %s", short_reason(f"{type(err).__name__}: {err}"))
        record = {"mode": "secure" if cfg.privacy_secure_aggregation else "plain", "error": str(err)}
    state.out.save_json("reasons.json", record)


def _final_scores(state: _Run) -> tuple[RoundScores | None, list[str]]:
    """The final model's score histograms as the banks sent them (and which banks), if its round was evaluated."""
    final = state.cfg.num_server_rounds
    entry, path = state.history.round(final), path_of(state.out.dir, final)
    if entry is None or entry.evaluate is None or not path.is_file():
        return None, []
    try:
        return read_scores_file(path), list(entry.evaluate.ok)
    except ScoresError:
        return None, []


def _log_finished(state: _Run) -> None:
    final = state.history.rounds[-1]
    log(
        INFO,
        "fedcredit: finished %d round(s) in %.1f s; final pooled val AUC %s, hold-out AUC %s; outputs in %s",
        state.cfg.num_server_rounds,
        state.history.seconds,
        _fmt(final.pooled, "auc"),
        _fmt(final.holdout, "auc"),
        state.out.dir,
    )
    for name, what in FILES.items():
        log(INFO, "fedcredit:   %s: %s", name, what)
    log(INFO, "fedcredit: open its model-risk report with: fedcredit report %s", state.out.dir)


def _fmt(values: dict[str, Any] | None, key: str) -> str:
    return f"{values[key]:.4f}" if values and values.get(key) is not None else "n/a"
