"""After every round: the round's record, its log line, checkpoint, best model and TensorBoard scalars.

`RoundReporter` is the strategy's `evaluate_fn`: Flower calls it at round 0
and after each round with the global weights. It scores the hold-out set
(simulation), turns the `Tracker`'s per-bank phases into the round's entry
of the history, and settles what depends on the round's evaluation. With
folded evaluation the banks score round r's model in round r + 1, so that
part waits one round (`finish`).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from logging import INFO
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy
from flwr.supercore import log

from fedcredit.core import fairness, groups, metrics
from fedcredit.core import model as mdl
from fedcredit.core.banks import holdout_set, schema_of
from fedcredit.core.config import RunConfig
from fedcredit.federation import protocol
from fedcredit.federation.errors import FederationError
from fedcredit.federation.exchange import short_reason
from fedcredit.federation.history import History, PhaseRecord, RoundEntry, write_history
from fedcredit.federation.outputs import RunOutputs, load_checkpoint, sha256_of, write_scalars
from fedcredit.federation.scores import RoundScores, write_scores
from fedcredit.federation.strategies import finite_metrics, logged_record
from fedcredit.federation.tracking import Tracker, TrackingGrid


def save_history(out: RunOutputs, history: History) -> None:
    """Through the one writer of `fedcredit.federation.history` (it refuses what its reader would refuse)."""
    write_history(out.path("history.json"), history)


class RecordsAggregation(Strategy):
    """A strategy wrapper in the style of Flower's DP wrappers: it records the rounds the strategy aggregated.

    A round counts as trained only when the wrapped strategy returned new
    arrays (a Bulyan round below its quorum, or a round the tracking Grid
    handed no replies, returns none), so the round record need not guess it.
    """

    def __init__(self, strategy: Strategy, tracker: Tracker) -> None:
        super().__init__()
        self.strategy, self.tracker = strategy, tracker

    def summary(self) -> None:
        self.strategy.summary()

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        arrays, train_metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays is not None:
            self.tracker.aggregated.add(server_round)
        return arrays, train_metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Message]) -> MetricRecord | None:
        return self.strategy.aggregate_evaluate(server_round, replies)


class RoundReporter:
    """`evaluate_fn` of the strategy: runs after every round to log, evaluate and save."""

    def __init__(
        self,
        cfg: RunConfig,
        model: Any,
        tracker: Tracker,
        out: RunOutputs,
        history: History,
        bank_names: dict[int, str],
        privacy: Any = lambda run_round: None,
        offset: int = 0,
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
        self.folded = folded
        self.pending: tuple[int, RoundEntry, list[np.ndarray]] | None = None
        self.started = time.monotonic()
        self.holdout = None
        self.holdout_hists: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # run round -> its hold-out histograms
        self.holdout_groups: dict[int, np.ndarray] = {}  # run round -> its hold-out loans' per-group histograms
        schema = schema_of(cfg)
        self.group_names = groups.group_names(schema)
        self.holdout_index: dict[str, np.ndarray] = {}
        if cfg.holdout_eval:
            test = holdout_set(cfg)
            self.holdout = (mdl.to_inputs(test, model), test[schema.target].to_numpy())
            self.holdout_index = groups.group_index(test, schema)

    def _bank(self, node: int) -> str:
        return self.names.get(node, f"node-{node}")

    def _phase_record(self, kind: str, server_round: int) -> PhaseRecord:
        phase = self.tracker.phase(kind, server_round)
        return PhaseRecord(
            ok=[self._bank(n) for n in phase.replies],
            failed={self._bank(n): reason for n, reason in phase.failed.items()},
            refused={self._bank(n): reason for n, reason in phase.refused.items()},
            clipped={self._bank(n): round(factor, 6) for n, factor in phase.clipped.items()},
            suspicious={self._bank(n): cosine for n, cosine in phase.suspicious.items()},
            withheld={self._bank(n): why for n, why in phase.withheld.items()},
            missing=[self._bank(n) for n in phase.missing],
            # Banks of the run that were not asked this round (disconnected, or not sampled by fraction-*).
            not_sampled=sorted(name for n, name in self.names.items() if n not in phase.sampled),
            pooled=phase.pooled() if kind == "evaluate" else phase.mean_train_loss(),
            banks={self._bank(n): m for n, m in phase.replies.items()},
            not_aggregated=phase.skipped or None,
        )

    def __call__(self, server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        weights = arrays.to_numpy_ndarrays()
        self.model.set_weights(weights)
        run_round = server_round + self.offset
        entry = RoundEntry(run_round)
        if self.holdout is not None:
            scores = mdl.predict(self.model, self.holdout[0])
            entry.holdout = metrics.exact(scores, self.holdout[1], self.cfg.threshold)
            binned = metrics.summarise(scores, self.holdout[1], self.cfg.threshold, self.cfg.histogram_bins)
            self.holdout_hists[run_round] = (np.asarray(binned["hist-bad"]), np.asarray(binned["hist-good"]))
            if self.group_names:
                self.holdout_groups[run_round] = np.concatenate(
                    [
                        protocol.group_histograms(
                            np.asarray(
                                metrics.group_histograms(
                                    scores, self.holdout[1], self.holdout_index[a], len(n), self.cfg.histogram_bins
                                )
                            ),
                            self.cfg.histogram_bins,
                        )
                        for a, n in sorted(self.group_names.items())
                    ]
                )
        holdout = entry.holdout
        if server_round > 0:
            entry.aggregated = server_round in self.tracker.aggregated  # `RecordsAggregation` knows
            entry.train = self._phase_record("train", server_round)
            entry.seconds = round(time.monotonic() - self.started, 2)
            if (privacy := self.privacy(run_round)) is not None:  # the epsilon spent up to this run round
                entry.privacy = privacy
                self.history.privacy = privacy
            entry.checkpoint_sha256 = sha256_of(self.out.save_checkpoint(run_round, weights))
            if not self.folded:
                entry.evaluate = self._phase_record("evaluate", server_round)
                entry.fairness = self._fairness(self._keep_scores(server_round))
                self._evaluated(run_round, entry, weights)
        elif not self.folded and not self.offset:
            self._keep_scores(server_round)  # the initial model: hold-out histograms only
        if self.folded:
            if server_round == 0 and self.offset and self.history.rounds:
                entry = self.history.rounds[-1]  # the resumed run's last round, scored at the start of round 1
            self.finish()
            self.pending = (server_round, entry, weights)
        self.started = time.monotonic()
        if server_round > 0 or not self.offset:  # a resumed run's start is the old run's last round, recorded
            self.history.rounds.append(entry)
        save_history(self.out, self.history)
        return logged_record(holdout) if holdout is not None else None

    def finish(self) -> None:
        """Folded evaluation: settle the round whose model the banks have just scored."""
        if self.pending is None:
            return
        server_round, entry, weights = self.pending
        self.pending = None
        entry.evaluate = self._phase_record("evaluate", server_round)
        entry.fairness = self._fairness(self._keep_scores(server_round))
        run_round = server_round + self.offset
        if entry.train is not None:
            self._evaluated(run_round, entry, weights)
        else:
            log(
                INFO,
                "fedcredit round %d (the model the run starts from): pooled val AUC %.4f",
                run_round,
                (entry.evaluate.pooled or {}).get("auc", float("nan")),
            )
        save_history(self.out, self.history)

    def _keep_scores(self, server_round: int) -> RoundScores | None:
        """scores/round-NNN.npz: the round's pooled (and, in plain mode, per-bank) and hold-out histograms."""
        run_round = server_round + self.offset
        phase = self.tracker.evaluate.get(server_round)
        pooled = None
        if phase is not None and phase.summaries:
            pooled = tuple(
                np.sum([np.asarray(s[k], dtype=np.int64) for s in phase.summaries], axis=0) for k in metrics.HIST_KEYS
            )
        banks = {
            self._bank(n): (np.asarray(s["hist-bad"]), np.asarray(s["hist-good"]))
            for n, s in (phase.bank_summaries.items() if phase is not None else ())
        }
        holdout = self.holdout_hists.pop(run_round, None)
        if pooled is None and holdout is None:
            return None
        scores = RoundScores(run_round, pooled, banks, holdout)  # type: ignore[arg-type]
        if self.group_names:
            scores = self._with_groups(scores, phase)
        write_scores(self.out.dir, scores)
        return scores

    def _fairness(self, scores: RoundScores | None) -> dict[str, Any] | None:
        """The round's pooled fair-lending figures per protected attribute, as history.json and TensorBoard keep them."""
        if scores is None or scores.groups is None:
            return None
        out = {}
        for attr, names in sorted(self.group_names.items()):
            rows = [i for i, label in enumerate(scores.group_labels) if label.split("=", 1)[0] == attr]
            table = fairness.attribute(
                fairness.split_groups(scores.groups[rows], list(names)),
                self.cfg.threshold,
                self.cfg.fairness_min_group_size,
            )
            out[attr] = {
                "approval-rate": {g["group"]: g["approval-rate"]["value"] for g in table["groups"]},
                "air": {g["group"]: g["air"]["value"] for g in table["groups"] if "air" in g},
                "worst-air": (table["worst-air"] or {}).get("value"),
                "worst-group": table["worst-group"],
                "four-fifths-flag": table["four-fifths-flag"],
                "too-small": table["too-small"],
            }
        return out

    def _with_groups(self, scores: RoundScores, phase: Any) -> RoundScores:
        """The per-group histograms of the round: pooled, each bank's groups of at least the minimum size, hold-out."""
        bins = self.cfg.histogram_bins
        keys = protocol.group_keys({a: len(n) for a, n in self.group_names.items()})

        def stacked(summary: dict[str, Any]) -> np.ndarray:
            return np.concatenate([protocol.group_histograms(np.asarray(summary[k]), bins) for k in keys])

        pooled = None
        if phase is not None and phase.summaries and all(keys[0] in s for s in phase.summaries):
            pooled = np.sum([stacked(s) for s in phase.summaries], axis=0)
        bank_groups, kept = {}, {}
        for node, summary in phase.bank_summaries.items() if phase is not None else ():
            own = stacked(summary)
            kept[self._bank(node)] = own.sum(axis=(1, 2)) >= self.cfg.fairness_min_group_size
            bank_groups[self._bank(node)] = own * kept[self._bank(node)][:, None, None]
        labels = tuple(f"{a}={g}" for a, names in sorted(self.group_names.items()) for g in names)
        return dataclasses.replace(
            scores,
            group_labels=labels,
            groups=pooled,
            bank_groups=bank_groups,
            bank_groups_kept=kept,
            holdout_groups=self.holdout_groups.pop(scores.round, None),
        )

    def _evaluated(self, run_round: int, entry: RoundEntry, weights: list[np.ndarray]) -> None:
        """Log line, TensorBoard scalars and best model of a round whose evaluation is in."""
        assert entry.train is not None and entry.evaluate is not None
        self._log_round(run_round, entry)
        write_scalars(
            self.out.path("tensorboard"),
            run_round,
            {
                "pooled": entry.evaluate.pooled,
                "holdout": entry.holdout,
                "train": entry.train.pooled,
                **{f"bank/{name}": m for name, m in entry.evaluate.banks.items()},
                **{
                    f"fairness/{attr}": {
                        **{f"approval-rate/{g}": v for g, v in f["approval-rate"].items()},
                        **{f"air/{g}": v for g, v in f["air"].items()},
                    }
                    for attr, f in (entry.fairness or {}).items()
                },
            },
        )
        phase = self.tracker.phase("evaluate", run_round - self.offset)
        entry.evaluate.leave_one_out_auc = leave_one_out_auc(
            {self._bank(n): s for n, s in phase.bank_summaries.items()}
        )
        rounds = self.history.rounds if any(r is entry for r in self.history.rounds) else [*self.history.rounds, entry]
        # Secure mode: no bank's figures, so no leave-one-out check: the best model is the latest one.
        best = run_round if self.cfg.privacy_secure_aggregation else best_round(rounds)
        if best is not None and best != self.history.best_round:
            self.history.best_round = best
            self.model.set_weights(weights if best == run_round else load_checkpoint(self.out.checkpoint(best)))
            self.out.save_model("model-best.keras", self.model)

    def _log_round(self, server_round: int, entry: RoundEntry) -> None:
        tr, ev = entry.train, entry.evaluate
        assert tr is not None and ev is not None
        pooled = ev.pooled or {}
        line = (
            f"fedcredit round {server_round}/{self.cfg.num_server_rounds}: banks train {len(tr.ok)}/{tr.sampled} ok"
            f"{'' if entry.aggregated else ' (NOT aggregated: ' + (tr.not_aggregated or 'strategy skipped it') + ')'}, "
            f"evaluate {len(ev.ok)}/{ev.sampled} ok | pooled val AUC {pooled.get('auc', float('nan')):.4f} "
            f"KS {pooled.get('ks', float('nan')):.4f} loss {pooled.get('logloss', float('nan')):.4f}"
        )
        if entry.holdout is not None:
            line += f" | hold-out AUC {entry.holdout['auc']:.4f}"
        privacy = entry.privacy or {}
        for record in (privacy, privacy.get("borrower-level") or {}):  # client level, then borrower level
            if record.get("epsilon") is not None:
                unit = "per bank" if record.get("mode") != "dp-sgd" else "per borrower"
                line += f" | epsilon {record['epsilon']:.3g} {unit} (delta {record['delta']:g})"
        line += f" | {entry.seconds:.1f} s"
        failed = {**tr.failed, **ev.failed, **tr.refused, **ev.refused}
        failed.update({b: f"withheld: {why}" for b, why in {**tr.withheld, **ev.withheld}.items()})
        if failed:
            line += " | failed: " + "; ".join(f"{b}: {short_reason(r, 120)}" for b, r in failed.items())
        if tr.clipped:
            line += " | update scaled down: " + ", ".join(f"{b} x{f:.2g}" for b, f in tr.clipped.items())
        if tr.suspicious:
            line += " | pointing away: " + ", ".join(f"{b} cos {c:.2f}" for b, c in tr.suspicious.items())
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


def final_checks(cfg: RunConfig, tracker: Tracker, history: History) -> None:
    """The run ends as failed, with the reason, when its model cannot be trusted."""
    if tracker.rounds_trained() == 0:
        reasons = {r for p in tracker.train.values() for r in (*p.failed.values(), *p.refused.values())}
        reasons |= {f"round not aggregated: {p.skipped}" for p in tracker.train.values() if p.skipped}
        raise FederationError(
            f"no round trained (the global model never changed): every bank failed, none "
            f"replied, or the strategy aggregated nothing. Reasons: {sorted(reasons) or ['no replies']}"
        )
    bad_rounds = [
        e.round
        for e in history.trained_rounds
        if (e.pooled is not None and not finite_metrics(e.pooled))
        or (e.holdout is not None and not finite_metrics(e.holdout))
    ]
    if bad_rounds:
        raise FederationError(
            f"metrics are NaN or infinite in rounds {bad_rounds}: the model diverged or a "
            "validation set lacks one class; see history.json"
        )
    if cfg.fraction_evaluate > 0 and not any(e.pooled for e in history.rounds):
        raise FederationError("no round was evaluated: every bank failed evaluation; see history.json")


def leave_one_out_auc(summaries: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
    """Pooled AUC of a round with each bank's summary left out ({} with fewer than two banks).

    The AUC `metrics.pooled` gives the other banks' summed histograms, got as
    all banks' sum less the bank's own (the same integers): linear in the
    banks, where pooling the others afresh for each bank was quadratic
    (13.5 s a round at 300 banks).
    """
    if len(summaries) < 2:
        return {}
    bad, good = (np.array([np.asarray(s[k], dtype=np.int64) for s in summaries.values()]) for k in metrics.HIST_KEYS)
    all_bad, all_good = bad.sum(axis=0), good.sum(axis=0)
    return {
        bank: float(metrics.histogram_auc_ks(all_bad - b, all_good - g)[0])
        for bank, b, g in zip(summaries, bad, good, strict=True)
    }


def best_round(rounds: Sequence[RoundEntry]) -> int | None:
    """The round of model-best.keras: one that no single bank's figures decide.

    Candidates are the trained rounds with a pooled validation AUC. The round
    with the highest pooled AUC is the best only if it is also the highest
    with any one bank's rows left out (`leave-one-out-auc`); otherwise the
    latest round is, since one bank's figures (true or not) would decide the
    choice. A bank that lies can thus only make the latest model the best,
    never promote another round. Ties go to the earlier round.
    """
    candidates = [r for r in rounds if r.train is not None and r.evaluate is not None and r.pooled_auc is not None]
    if not candidates:
        return None
    banks = {b for r in candidates for b in r.evaluate.leave_one_out_auc}  # type: ignore[union-attr]

    def top(bank: str | None) -> int:
        def score(r: RoundEntry) -> float:
            value = r.evaluate.leave_one_out_auc.get(bank, r.pooled_auc) if bank else r.pooled_auc  # type: ignore[union-attr]
            return value if value is not None and math.isfinite(value) else -math.inf

        return max(candidates, key=score).round  # the first of equal scores: the earlier round

    choices = {top(None), *(top(b) for b in banks)}
    return choices.pop() if len(choices) == 1 else candidates[-1].round
