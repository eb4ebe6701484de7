"""The coordinator's side of a run: statistics, rounds, round log, outputs.

`run` is everything `server_app.py` does. It fails loudly (the run ends as
failed with the reason in the log and in history.json) when banks are too
few, no round trained, or metrics turn NaN: Flower would otherwise report a
run with no usable model as completed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
from collections.abc import Mapping
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core import metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set, schema_of
from fedcredit.core.config import (
    KEYS,
    RunConfig,
    app_defaults,
    check_overrides,
    ignored_keys,
    parse_run_config,
    sweep_variants,
)
from fedcredit.core.schema import Schema, resolve_schema_path
from fedcredit.core.stats import Stats, merge_stats, preprocessing_from_stats
from fedcredit.federation import protocol, resume
from fedcredit.federation.history import History, write_history
from fedcredit.federation.outputs import FILES, RunOutputs, write_scalars
from fedcredit.federation.personalisation import personalise_banks
from fedcredit.federation.secure_sum import secure_sum
from fedcredit.federation.strategies import finite_metrics, logged_record, make_strategy, privacy_summary, weight_key
from fedcredit.federation.tracking import ReplyRules, SecureSettings, Tracker, TrackingGrid

# Strategies that average updates: one bank's oversized update is bounded (update-clip).
# Median, trimmed mean, Krum and Bulyan resist outliers by design; q-FedAvg reweights by loss.
BOUNDED_STRATEGIES = KEYS["update_clip"].strategies or ()


def short_reason(reason: str, limit: int = 200) -> str:
    """One line of a ClientApp error for the round log (history.json keeps it whole)."""
    text = re.sub(r"^<class '[\w.]+'>:<'(.*)'>$", r"\1", reason.strip(), flags=re.DOTALL)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def save_history(out: RunOutputs, history: dict[str, Any]) -> None:
    """Through the one writer of `fedcredit.federation.history`: what it cannot read back is never written."""
    write_history(out.path("history.json"), History.from_json(history))


class FederationError(RuntimeError):
    """The run cannot produce a trustworthy model; the message says why."""


def wait_for_banks(grid: Grid, minimum: int, timeout: float, poll: float = 1.0) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        nodes = sorted(grid.get_node_ids())
        if len(nodes) >= minimum:
            return nodes
        if time.monotonic() >= deadline:
            raise FederationError(
                f"only {len(nodes)} bank(s) connected after {timeout:.0f} s, the run needs min-banks={minimum}: "
                "start more SuperNodes or lower 'min-banks'"
            )
        time.sleep(poll)


def collect_statistics(
    grid: Grid, node_ids: list[int], timeout: float, schema: Schema, limits: protocol.Limits
) -> tuple[dict[int, protocol.BankStatistics], dict[int, str]]:
    """Ask every bank for sufficient statistics: ({node: its checked statistics}, {node: why not})."""
    messages = [Message(content=protocol.statistics_request(), message_type="query", dst_node_id=n) for n in node_ids]
    banks: dict[int, protocol.BankStatistics] = {}
    failed: dict[int, str] = {}
    for reply in grid.send_and_receive(messages, timeout=timeout):
        node = reply.metadata.src_node_id
        if node not in node_ids or node in banks or node in failed:
            continue
        if reply.has_error():
            failed[node] = reply.error.reason
            log(WARNING, "Bank node %s could not compute statistics: %s", node, short_reason(reply.error.reason))
            continue
        try:
            bank = protocol.read_statistics(reply.content, schema, limits)
            protocol.check_schema(bank.schema_sha256, schema)
        except protocol.ProtocolError as err:
            failed[node] = f"statistics refused: {err}"
            log(WARNING, "Bank node %s: statistics refused: %s", node, err)
            continue
        if any(b.name == bank.name for b in banks.values()):
            log(
                WARNING,
                "Two banks call themselves %r: the second is named %r (set bank-name in its node config)",
                bank.name,
                f"{bank.name}#{node}",
            )
            bank = dataclasses.replace(bank, name=f"{bank.name}#{node}")
        banks[node] = bank
    for node in node_ids:
        if node not in banks and node not in failed:
            failed[node] = f"no reply within {timeout:.0f} s"
    return banks, failed


def secure_statistics_layout(schema: Schema) -> dict[str, Any]:
    """The statistics vector of secure mode; every categorical column needs its agreed values in the schema."""
    missing = [c for c in schema.categorical if not schema.known_categories.get(c)]
    if missing:
        raise FederationError(
            f"privacy.secure-aggregation = true sums category counts over the values the consortium agreed on, "
            f"but the schema lists none for {missing}: add them under [categories] in the schema file"
        )
    return protocol.statistics_layout(schema)


def collect_secure_statistics(
    grid: Grid, node_ids: list[int], timeout: float, schema: Schema, fraction: float
) -> tuple[dict[int, protocol.BankStatistics], dict[int, str], Stats | None]:
    """Secure mode: ({node: its name and schema}, {node: why not}, the summed statistics or None)."""
    layout = secure_statistics_layout(schema)
    messages = [Message(content=protocol.statistics_request(), message_type="query", dst_node_id=n) for n in node_ids]

    def bank_info(content: Any) -> tuple[str, str]:
        name, source, sha = protocol.read_bank_info(content)
        protocol.check_schema(sha, schema)
        return name, source

    length = protocol.statistics_length(layout)
    outcome = secure_sum(grid, messages, length, fraction, timeout, {"layout": json.dumps(layout)}, bank_info)
    failed = {**outcome.failed, **outcome.refused, **{n: f"withheld: {r}" for n, r in outcome.withheld.items()}}
    banks: dict[int, protocol.BankStatistics] = {}
    for node in outcome.contributors:
        name, source = outcome.info[node]
        if any(b.name == name for b in banks.values()):
            name = f"{name}#{node}"
        banks[node] = protocol.BankStatistics(name, source, schema.sha256, None)
    if outcome.total is None:
        log(WARNING, "fedcredit: %s", outcome.reason)
        return banks, {**failed, **{n: str(outcome.reason) for n in node_ids if n not in failed}}, None
    try:
        return banks, failed, protocol.read_statistics_sum(outcome.total, layout, len(banks))
    except protocol.ProtocolError as err:
        raise FederationError(f"the banks' securely summed statistics fail the checks: {err}") from None


def too_few_banks(banks: int, failed: dict[int, str], min_banks: int) -> str:
    """One line that says why the run cannot start, each distinct reason once."""
    reasons: dict[str, list[int]] = {}
    for node, reason in failed.items():
        reasons.setdefault(short_reason(reason), []).append(node)
    parts = [f"{reason} ({len(nodes)} bank{'s' if len(nodes) > 1 else ''})" for reason, nodes in reasons.items()]
    return f"{banks} bank(s) sent usable statistics, min-banks={min_banks}: " + "; ".join(parts)


class RoundReporter:
    """`evaluate_fn` of the strategy: runs after every round to log, evaluate and save."""

    def __init__(
        self,
        cfg: RunConfig,
        model: Any,
        tracker: Tracker,
        out: RunOutputs,
        history: dict[str, Any],
        bank_names: dict[int, str],
        privacy: Any = lambda: None,
        offset: int = 0,
        best_auc: float = -1.0,
        folded: bool = False,
    ) -> None:
        """`offset`: rounds a resumed run already has; Flower's round r is the run's round r + offset.

        `folded`: the banks score round r's model at the start of round r + 1
        (or in the final evaluation), so round r's evaluation, log line, best
        model and TensorBoard scalars are settled one round later.
        """
        self.cfg, self.model, self.tracker, self.out, self.history = cfg, model, tracker, out, history
        self.names = bank_names
        self.privacy = privacy
        self.offset = offset
        self.best_auc = best_auc
        self.folded = folded
        self.pending: tuple[int, dict[str, Any], list[np.ndarray]] | None = None
        self.last_arrays: ArrayRecord | None = None
        self.started = time.monotonic()
        self.holdout = None
        if cfg.holdout_eval:
            test = holdout_set(cfg)
            self.holdout = (mdl.to_inputs(test, model), test[schema_of(cfg).target].to_numpy())

    def _bank(self, node: int) -> str:
        return self.names.get(node, f"node-{node}")

    def _phase_record(self, kind: str, server_round: int) -> dict[str, Any]:
        phase = self.tracker.phase(kind, server_round)
        return {
            "ok": [self._bank(n) for n in phase.replies],
            "failed": {self._bank(n): reason for n, reason in phase.failed.items()},
            "refused": {self._bank(n): reason for n, reason in phase.refused.items()},
            "clipped": {self._bank(n): round(factor, 6) for n, factor in phase.clipped.items()},
            **({"withheld": {self._bank(n): why for n, why in phase.withheld.items()}} if phase.withheld else {}),
            "missing": [self._bank(n) for n in phase.missing],
            # Banks of the run that were not asked this round (disconnected, or not sampled by fraction-*).
            "not-sampled": sorted(name for n, name in self.names.items() if n not in phase.sampled),
            "pooled": phase.pooled() if kind == "evaluate" else phase.mean_train_loss(),
            "banks": {self._bank(n): m for n, m in phase.replies.items()},
            **({"not-aggregated": phase.skipped} if phase.skipped else {}),
        }

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        weights = arrays.to_numpy_ndarrays()
        self.model.set_weights(weights)
        run_round = server_round + self.offset
        entry: dict[str, Any] = {"round": run_round}
        holdout = None
        if self.holdout is not None:
            scores = mdl.predict(self.model, self.holdout[0])
            holdout = metrics.exact(scores, self.holdout[1], self.cfg.threshold)
            entry["holdout"] = holdout
        if server_round > 0:
            # Flower passes the previous round's ArrayRecord on when nothing was aggregated.
            entry["aggregated"] = arrays is not self.last_arrays
            if entry["aggregated"]:
                self.tracker.aggregated.add(server_round)
            entry["train"] = self._phase_record("train", server_round)
            entry["seconds"] = round(time.monotonic() - self.started, 2)
            if (privacy := self.privacy()) is not None:
                entry["privacy"] = privacy
                self.history["privacy"] = privacy
            self.out.save_checkpoint(run_round, weights)
            if not self.folded:
                entry["evaluate"] = self._phase_record("evaluate", server_round)
                self._evaluated(run_round, entry, weights)
        if self.folded:
            if server_round == 0 and self.offset and self.history["rounds"]:
                entry = self.history["rounds"][-1]  # the resumed run's last round, scored at the start of round 1
            self.finish()
            self.pending = (server_round, entry, weights)
        self.last_arrays = arrays
        self.started = time.monotonic()
        if server_round > 0 or not self.offset:  # a resumed run's start is the old run's last round, recorded
            self.history["rounds"].append(entry)
        save_history(self.out, self.history)
        return logged_record(holdout) if holdout is not None else None

    def finish(self) -> None:
        """Folded evaluation: settle the round whose model the banks have just scored."""
        if self.pending is None:
            return
        server_round, entry, weights = self.pending
        self.pending = None
        entry["evaluate"] = self._phase_record("evaluate", server_round)
        run_round = server_round + self.offset
        if "train" in entry:
            self._evaluated(run_round, entry, weights)
        else:
            pooled = entry["evaluate"]["pooled"] or {}
            log(
                INFO,
                "fedcredit round %d (the model the run starts from): pooled val AUC %.4f",
                run_round,
                pooled.get("auc", float("nan")),
            )
        save_history(self.out, self.history)

    def _evaluated(self, run_round: int, entry: dict[str, Any], weights: list[np.ndarray]) -> None:
        """Log line, TensorBoard scalars and best model of a round whose evaluation is in."""
        self._log_round(run_round, entry)
        write_scalars(
            self.out.path("tensorboard"),
            run_round,
            {
                "pooled": entry["evaluate"]["pooled"],
                "holdout": entry.get("holdout"),
                "train": entry["train"]["pooled"],
                **{f"bank/{name}": m for name, m in entry["evaluate"]["banks"].items()},
            },
        )
        pooled = entry["evaluate"]["pooled"] or {}
        auc = pooled.get("auc")
        if auc is not None and np.isfinite(auc) and auc > self.best_auc:
            self.best_auc = auc
            self.history["best-round"] = run_round
            self.model.set_weights(weights)
            self.out.save_model("model-best.keras", self.model)

    def _log_round(self, server_round: int, entry: dict[str, Any]) -> None:
        tr, ev = entry["train"], entry["evaluate"]
        n_tr, n_ev = (
            sum(len(p.get(k) or ()) for k in ("ok", "failed", "refused", "withheld", "missing")) for p in (tr, ev)
        )
        pooled = ev["pooled"] or {}
        line = (
            f"fedcredit round {server_round}/{self.cfg.num_server_rounds}: banks train {len(tr['ok'])}/{n_tr} ok"
            f"{'' if entry['aggregated'] else ' (NOT aggregated: ' + (tr.get('not-aggregated') or 'strategy skipped it') + ')'}, "
            f"evaluate {len(ev['ok'])}/{n_ev} ok | pooled val AUC {pooled.get('auc', float('nan')):.4f} "
            f"KS {pooled.get('ks', float('nan')):.4f} loss {pooled.get('logloss', float('nan')):.4f}"
        )
        if "holdout" in entry:
            line += f" | hold-out AUC {entry['holdout']['auc']:.4f}"
        if entry.get("privacy", {}).get("epsilon") is not None:
            line += f" | epsilon {entry['privacy']['epsilon']:.3g} (delta {entry['privacy']['delta']:g})"
        line += f" | {entry['seconds']:.1f} s"
        failed = {**tr["failed"], **ev["failed"], **tr["refused"], **ev["refused"]}
        failed.update(
            {b: f"withheld: {why}" for b, why in {**tr.get("withheld", {}), **ev.get("withheld", {})}.items()}
        )
        if failed:
            line += " | failed: " + "; ".join(f"{b}: {short_reason(r, 120)}" for b, r in failed.items())
        if tr["clipped"]:
            line += " | update scaled down: " + ", ".join(f"{b} x{f:.2g}" for b, f in tr["clipped"].items())
        log(INFO, line)


def folded_evaluation(cfg: RunConfig, banks: Mapping[int, protocol.BankStatistics]) -> bool:
    """Whether evaluation rides on the train messages: `folded`, or `auto` when banks read their own files."""
    if cfg.fraction_evaluate == 0 or cfg.privacy_mode == "client-adaptive":
        return False
    return cfg.evaluation == "folded" or (cfg.evaluation == "auto" and any(b.source == "file" for b in banks.values()))


def final_evaluation(
    grid: TrackingGrid,
    banks: Mapping[int, protocol.BankStatistics],
    arrays: ArrayRecord,
    server_round: int,
    config: ConfigRecord,
    timeout: float,
) -> None:
    """Folded evaluation: the final model, scored by every connected bank of the run in one evaluate message."""
    nodes = [n for n in grid.get_node_ids() if n in banks]
    messages = [
        Message(
            content=RecordDict(
                {
                    protocol.ARRAYS: arrays,
                    protocol.CONFIG: ConfigRecord({**dict(config.items()), "server-round": server_round}),
                }
            ),
            message_type="evaluate",
            dst_node_id=n,
        )
        for n in nodes
    ]
    if messages:
        grid.send_and_receive(messages, timeout=timeout)


def _final_checks(cfg: RunConfig, tracker: Tracker, history: dict[str, Any]) -> None:
    if tracker.rounds_trained() == 0:
        reasons = {r for p in tracker.train.values() for r in (*p.failed.values(), *p.refused.values())}
        reasons |= {f"round not aggregated: {p.skipped}" for p in tracker.train.values() if p.skipped}
        raise FederationError(
            f"no round trained (the global model never changed): every bank failed, none "
            f"replied, or the strategy aggregated nothing. Reasons: {sorted(reasons) or ['no replies']}"
        )
    bad_rounds = [
        e["round"]
        for e in history["rounds"]
        if e["round"] > 0
        and (
            ((e.get("evaluate") or {}).get("pooled") is not None and not finite_metrics(e["evaluate"]["pooled"]))
            or ("holdout" in e and not finite_metrics(e["holdout"]))
        )
    ]
    if bad_rounds:
        raise FederationError(
            f"metrics are NaN or infinite in rounds {bad_rounds}: the model diverged or a "
            "validation set lacks one class; see history.json"
        )
    if cfg.fraction_evaluate > 0 and not any(e.get("evaluate", {}).get("pooled") for e in history["rounds"]):
        raise FederationError("no round was evaluated: every bank failed evaluation; see history.json")


# Keys that decide what a bank's statistics are: a sweep gathers them once per distinct combination.
STATISTICS_KEYS = (
    "data-path",
    "schema-path",
    "partitioning",
    "dirichlet-alpha",
    "seed",
    "test-fraction",
    "val-fraction",
    "max-categories",
    "max-category-length",
    "privacy.secure-aggregation",
    "privacy.secure-threshold",
    "round-timeout",
)


class VariantGrid:
    """The Grid as one sweep variant uses it: every message carries the variant's run-config overrides."""

    def __init__(self, grid: Grid, overrides: Mapping[str, Any]) -> None:
        self._grid = grid
        self.record = ConfigRecord(dict(overrides))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)

    def send_and_receive(self, messages: Any, *, timeout: float | None = None) -> Any:
        messages = list(messages)
        for msg in messages:
            msg.content[protocol.RUN_CONFIG] = self.record
        return self._grid.send_and_receive(messages, timeout=timeout)


def serve(
    grid: Grid, run_config: Mapping[str, Any], run_id: int | str, app_dir: str | Path | None = None
) -> list[dict[str, Any]]:
    """What the ServerApp does: one run, or every variant of `sweep` one after the other over the same banks.

    A variant that fails is recorded (its history says why) and the sweep goes on with the next one.
    """
    text = str(run_config.get("sweep", "") or "")
    if not text:
        return [run(grid, run_config, run_id, app_dir)]
    base = {k: v for k, v in run_config.items() if k != "sweep"}
    variants = sweep_variants(text)
    for overrides in variants:  # every variant's config is checked before the first one runs
        parse_run_config({**base, **overrides})
    statistics: dict[tuple, Any] = {}
    histories = []
    for index, overrides in enumerate(variants, start=1):
        log(INFO, "fedcredit sweep: variant %d/%d: %s", index, len(variants), overrides)
        try:
            histories.append(
                run(
                    VariantGrid(grid, overrides),
                    {**base, **overrides},
                    f"{run_id}-{index:03d}",
                    app_dir,
                    statistics=statistics,
                    variant={"index": index, "of": len(variants), "overrides": dict(overrides)},
                )
            )
        except Exception as err:  # noqa: BLE001 - its history records why; the next variant still runs
            log(WARNING, "fedcredit sweep: variant %d failed: %s", index, short_reason(str(err)))
    if not histories:
        raise FederationError(f"every one of the sweep's {len(variants)} variants failed (see their history.json)")
    return histories


def run(
    grid: Grid,
    run_config: Mapping[str, Any],
    run_id: int | str,
    app_dir: str | Path | None = None,
    statistics: dict[tuple, Any] | None = None,
    variant: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One federated training run; returns the history it also writes to disk.

    `app_dir`: the app's directory (a relative schema-path is a file of the app).
    In a sweep, `statistics` caches the banks' statistics across variants and
    `variant` is recorded in the history (a key this variant's strategy ignores
    may be there for another variant, so it is not refused).
    """
    cfg = parse_run_config(run_config)
    cfg = dataclasses.replace(cfg, schema_path=resolve_schema_path(cfg.schema_path, app_dir))
    schema = schema_of(cfg)
    out = RunOutputs(cfg.output_dir, run_id)
    log(INFO, "fedcredit: outputs of run %s go to %s", run_id, out.dir)
    out.save_json("config.json", cfg.to_flower())
    history: dict[str, Any] = {
        "run-id": str(run_id),
        "status": "running",
        "config": cfg.to_flower(),
        "output-dir": str(out.dir),
        "schema-sha256": schema.sha256,
        "banks": {},
        "rounds": [],
        **({"sweep": variant} if variant else {}),
    }
    started = time.monotonic()
    try:
        if app_dir is not None and variant is None:  # a key given with --run-config this strategy ignores
            check_overrides(run_config, app_defaults(Path(app_dir)), cfg)
        history["ignored-keys"] = ignored_keys(cfg)
        for key in history["ignored-keys"]:
            log(
                WARNING,
                "fedcredit: run config '%s' is set but %s = %r does not use it: ignored",
                key,
                "privacy.mode" if key.startswith("privacy.") else "strategy.name",
                cfg.privacy_mode if key.startswith("privacy.") else cfg.strategy_name,
            )
        resumed = None
        if cfg.resume_from:
            resumed = resume.load(cfg.resume_from, cfg, schema.sha256)
            history["resumed-from"] = {"run-dir": str(resumed.run_dir), "rounds": resumed.last_round}
            history["rounds"] = list(resumed.history["rounds"])
            history["best-round"] = resumed.history.get("best-round")
            resume.carry_over(resumed, out)
            log(INFO, "fedcredit: resuming %s after its round %d", resumed.run_dir, resumed.last_round)
        nodes = wait_for_banks(grid, cfg.min_banks, cfg.node_wait_timeout)
        limits = protocol.Limits(cfg.max_categories, cfg.max_category_length)
        flat = cfg.to_flower()
        key = tuple(str(flat[k]) for k in STATISTICS_KEYS) + (schema.sha256,)
        if statistics is not None and key in statistics:
            banks, failed, merged = statistics[key]
            log(INFO, "fedcredit sweep: the banks' statistics of an earlier variant apply (same data and split)")
        elif cfg.privacy_secure_aggregation:
            banks, failed, merged = collect_secure_statistics(
                grid, nodes, cfg.round_timeout, schema, cfg.privacy_secure_threshold
            )
        else:
            banks, failed = collect_statistics(grid, nodes, cfg.round_timeout, schema, limits)
            merged = merge_stats([banks[n].stats for n in sorted(banks)]) if banks else None  # type: ignore[misc]
        if statistics is not None and merged is not None:
            statistics[key] = (banks, failed, merged)
        history["banks"] = {
            b.name: {"node-id": str(n), **({"training-rows": b.stats.rows} if b.stats else {})}
            for n, b in banks.items()
        }
        history["statistics-failed"] = {f"node-{n}": r for n, r in failed.items()}
        if len(banks) < cfg.min_banks or merged is None:
            raise FederationError(too_few_banks(len(banks) if merged else 0, failed, cfg.min_banks))
        log(
            INFO,
            "fedcredit: statistics from %d bank(s): %s%s",
            len(banks),
            ", ".join(f"{b.name}" + (f" ({b.stats.rows} rows)" if b.stats else "") for b in banks.values()),
            f" ({merged.rows} rows in all, summed securely)" if cfg.privacy_secure_aggregation else "",
        )
        if cfg.holdout_eval and any(b.source == "file" for b in banks.values()):
            # Banks train on their own files: the embedded data set is not their population,
            # and a real coordinator holds no loan data. Evaluation is federated only.
            log(
                WARNING,
                "fedcredit: banks use their own CSVs (deployment): hold-out evaluation on the "
                "embedded data set is switched off; evaluation is federated only",
            )
            cfg = dataclasses.replace(cfg, holdout_eval=False)
            history["config"] = cfg.to_flower()
            out.save_json("config.json", history["config"])
        # In node order: the float sums, and so the preprocessing, do not depend on which bank answered first.
        prep = preprocessing_from_stats(merged, cfg.min_category_count)
        prep_json = prep.to_json()
        if resumed is not None:
            resume.check_preprocessing(
                resumed, {"mean": prep.mean, "variance": prep.variance, "vocabulary": prep.vocabulary}
            )
        out.save_json(
            "preprocessing.json", {"mean": prep.mean, "variance": prep.variance, "vocabulary": prep.vocabulary}
        )
        model = mdl.build_model(prep, mdl.ModelSpec.of(cfg, schema))
        tracker = Tracker()
        folded = folded_evaluation(cfg, banks)
        history["evaluation"] = "folded" if folded else ("separate" if cfg.fraction_evaluate > 0 else "off")
        # Folded: the banks evaluate inside the train message; the strategy sends no evaluate message.
        strategy, accountant = make_strategy(
            dataclasses.replace(cfg, fraction_evaluate=0.0) if folded else cfg, len(banks)
        )
        history["strategy"] = {
            "name": cfg.strategy_name,
            "flower-class": type(strategy).__name__,
            "privacy": cfg.privacy_mode,
        }
        reporter = RoundReporter(
            cfg,
            model,
            tracker,
            out,
            history,
            {n: b.name for n, b in banks.items()},
            lambda: privacy_summary(cfg, accountant),
            offset=resumed.last_round if resumed else 0,
            best_auc=resumed.best_auc if resumed else -1.0,
            folded=folded,
        )
        rules = ReplyRules(
            rows={n: b.stats.rows for n, b in banks.items() if b.stats is not None},
            bins=cfg.histogram_bins,
            val_fraction=cfg.val_fraction,
            threshold=cfg.threshold,
            update_clip=cfg.update_clip if cfg.strategy_name in BOUNDED_STRATEGIES else 0.0,
            extra_train_keys=(protocol.NORM_BIT,) if cfg.privacy_mode == "client-adaptive" else (),
            folded=folded,
        )
        tracking = TrackingGrid(
            grid,
            tracker,
            banks=banks,
            min_banks=cfg.min_banks,
            all_or_nothing=cfg.privacy_mode != "none",
            wait_timeout=cfg.node_wait_timeout,
            rules=rules,
            preprocessing=prep_json,
            secure=SecureSettings(cfg.privacy_secure_threshold, cfg.privacy_max_update_norm, weight_key(cfg))
            if cfg.privacy_secure_aggregation
            else None,
        )
        # The configs carry only the preprocessing's digest; TrackingGrid adds the preprocessing itself.
        # round-offset: a resumed run's banks seed each message by the run's round, not Flower's.
        offset = resumed.last_round if resumed else 0
        digest = ConfigRecord({protocol.PREPROCESSING_SHA: protocol.digest(prep_json), protocol.ROUND_OFFSET: offset})
        train_config = ConfigRecord({**dict(digest.items()), **({protocol.EVALUATE_FIRST: 1} if folded else {})})
        result = strategy.start(
            tracking,
            ArrayRecord(resumed.weights if resumed else model.get_weights()),
            cfg.num_server_rounds - offset,
            timeout=cfg.round_timeout,
            train_config=train_config,
            evaluate_config=digest,
            evaluate_fn=reporter,
        )
        if folded:  # the last round's model has not been scored yet: one evaluate message per bank
            final_evaluation(tracking, banks, result.arrays, cfg.num_server_rounds - offset, digest, cfg.round_timeout)
            reporter.finish()
        _final_checks(cfg, tracker, history)
        final_weights = result.arrays.to_numpy_ndarrays()
        if not final_weights or not all(np.isfinite(w).all() for w in final_weights):
            raise FederationError("the final global weights are missing or not finite: the model diverged")
        model.set_weights(final_weights)
        out.save_model("model-final.keras", model)
        history["model-final-sha256"] = hashlib.sha256(out.path("model-final.keras").read_bytes()).hexdigest()
        if cfg.personalize_epochs > 0:  # the released global model is final: what banks do next stays with them
            save_history(out, history)
            history["personalisation"] = personalise_banks(grid, banks, result.arrays, prep_json, cfg, out.dir)
        history["status"] = "completed"
    except BaseException as err:  # also Flower's run-stopped exceptions: never leave "running" behind
        history["status"] = "failed" if isinstance(err, Exception) else "stopped"
        history["reason"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        history["seconds"] = round(time.monotonic() - started, 2)
        save_history(out, history)
    final = history["rounds"][-1]
    log(
        INFO,
        "fedcredit: finished %d round(s) in %.1f s; final pooled val AUC %s, hold-out AUC %s; outputs in %s",
        cfg.num_server_rounds,
        history["seconds"],
        _fmt((final.get("evaluate") or {}).get("pooled"), "auc"),
        _fmt(final.get("holdout"), "auc"),
        out.dir,
    )
    for name, what in FILES.items():
        log(INFO, "fedcredit:   %s: %s", name, what)
    return history


def _fmt(values: dict[str, Any] | None, key: str) -> str:
    return f"{values[key]:.4f}" if values and values.get(key) is not None else "n/a"
