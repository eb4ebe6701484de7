"""After the last round: each bank fine-tunes, compares and keeps its best model; the coordinator reads summaries.

The coordinator sends the final global model to every bank of the run (one
`query.personalise` message); each bank compares the global model, its
fine-tuned copy and a local-only model on its own validation rows and keeps
the best (see `fedcredit.federation.client.personalise`). Only score
summaries come back, checked against the protocol like every reply, so the
history can show per bank which model serves its customers best and the
pooled figures of "each bank with its kept model".
"""

from __future__ import annotations

import re
from logging import INFO, WARNING
from pathlib import Path
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Message, RecordDict
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core import metrics
from fedcredit.core.config import RunConfig
from fedcredit.federation import protocol
from fedcredit.federation.exchange import exchange
from fedcredit.federation.outputs import KEPT_MODEL
from fedcredit.federation.secure_sum import checked_secure_sum


def bank_dir(run_dir: Path, name: str) -> Path:
    """Where a simulated bank writes its kept model: a directory name made safe from the bank's name."""
    safe = re.sub(r"[^\w.#-]", "_", name).lstrip(".") or "_"
    return run_dir / "banks" / safe


def personalise_banks(
    grid: Grid,
    banks: dict[int, protocol.BankStatistics],
    arrays: ArrayRecord,
    prep_json: str,
    cfg: RunConfig,
    run_dir: Path,
) -> dict[str, Any]:
    """Ask every connected bank of the run to personalise; the history record of what they report."""
    nodes = [n for n in grid.get_node_ids() if n in banks]
    messages = _requests(nodes, banks, arrays, prep_json, run_dir)
    if cfg.privacy_secure_aggregation:
        return _secure(grid, messages, banks, cfg)

    def read(reply: Message) -> tuple[str, dict[str, Any]]:
        rows = protocol.expected_validation_rows(banks[reply.metadata.src_node_id].stats.rows, cfg.val_fraction)
        return protocol.read_personalise_reply(reply.content, cfg.histogram_bins, rows, cfg.threshold)

    outcome = exchange(grid, messages, read, cfg.round_timeout, "fedcredit personalisation")
    per_bank: dict[str, Any] = {}
    kept_summaries: dict[str, list[dict[str, Any]]] = {name: [] for name in (*protocol.CANDIDATES, "kept")}
    for node, (kept, summaries) in outcome.ok.items():
        name = banks[node].name
        per_bank[name] = _bank_record(node, banks[node], kept, summaries, run_dir)
        for c in protocol.CANDIDATES:
            kept_summaries[c].append(summaries[c])
        kept_summaries["kept"].append(summaries[kept])
        val = per_bank[name]["validation"]
        log(
            INFO,
            "fedcredit personalisation: %s keeps the %s model (validation AUC global %.4f, personalised %.4f, "
            "local-only %.4f)",
            name,
            kept,
            val["global"]["auc"],
            val["personalised"]["auc"],
            val["local-only"]["auc"],
        )
    failed = {banks[n].name: why for n, why in outcome.reasons().items()}
    pooled = {name: metrics.pooled(parts) for name, parts in kept_summaries.items() if parts}
    if "kept" in pooled:
        log(
            INFO,
            "fedcredit personalisation: pooled validation AUC with each bank's kept model %.4f (global model %.4f)",
            pooled["kept"]["auc"],
            pooled["global"]["auc"],
        )
    return {
        "settings": _settings(cfg),
        "banks": per_bank,
        "failed": failed,
        "pooled-validation": pooled,
    }


def _bank_record(
    node: int, bank: protocol.BankStatistics, kept: str, summaries: dict[str, Any], run_dir: Path
) -> dict[str, Any]:
    """What the history keeps of one bank's personalisation: its choice and each candidate's figures."""
    record: dict[str, Any] = {
        "kept": kept,
        "validation": {c: metrics.bank_figures(summaries[c]) for c in protocol.CANDIDATES},
    }
    if all(protocol.HOLDOUT_PREFIX + c in summaries for c in protocol.CANDIDATES):
        record["holdout"] = {
            c: metrics.bank_figures(summaries[protocol.HOLDOUT_PREFIX + c]) for c in protocol.CANDIDATES
        }
    if bank.source == "simulation":
        record["model"] = str(bank_dir(run_dir, bank.name) / KEPT_MODEL)
    return record


def _requests(
    nodes: list[int], banks: dict[int, protocol.BankStatistics], arrays: ArrayRecord, prep_json: str, run_dir: Path
) -> list[Message]:
    digest = protocol.digest(prep_json)
    messages = []
    for node in nodes:
        config: dict[str, Any] = {protocol.PREPROCESSING_SHA: digest}
        if banks[node].source == "simulation":  # one file system: the run directory is the bank's too
            config["bank-dir"] = str(bank_dir(run_dir, banks[node].name))
        content = RecordDict(
            {
                protocol.ARRAYS: arrays,
                protocol.CONFIG: ConfigRecord(config),
                protocol.PREPROCESSING: protocol.preprocessing_record(prep_json),
            }
        )
        messages.append(Message(content=content, message_type=protocol.PERSONALISE, dst_node_id=node))
    return messages


def _settings(cfg: RunConfig) -> dict[str, Any]:
    return {
        "epochs": cfg.personalize_epochs,
        "layers": cfg.personalize_layers,
        "learning-rate": cfg.personalize_learning_rate,
    }


def _secure(
    grid: Grid, messages: list[Message], banks: dict[int, protocol.BankStatistics], cfg: RunConfig
) -> dict[str, Any]:
    """Secure mode: only the sums come back: how many banks kept each model, and pooled summaries."""
    length = protocol.personalise_length(cfg.histogram_bins)

    def read(total: Any, contributors: int) -> tuple[dict[str, int], dict[str, dict[str, Any]]]:
        return protocol.read_personalise_sum(total, cfg.histogram_bins, cfg.threshold, contributors)

    checked = checked_secure_sum(grid, messages, length, cfg.privacy_secure_threshold, cfg.round_timeout, read)
    reasons = {**checked.outcome.reasons(), **checked.left_out}
    failed = {banks[n].name: reason for n, reason in reasons.items() if n in banks}
    record: dict[str, Any] = {"settings": _settings(cfg), "banks": {}, "failed": failed, "secure": True}
    if checked.value is None:
        reason = checked.outcome.reason or "no sum"
        log(WARNING, "fedcredit personalisation: no secure sum: %s", reason)
        record["not-summed"] = reason
        return record
    counts, summaries = checked.value
    record["kept-counts"] = counts
    record["pooled-validation"] = {name: metrics.pooled([s]) for name, s in summaries.items()}
    log(
        INFO,
        "fedcredit personalisation (secure sum): banks kept %s; pooled validation AUC with each bank's kept model "
        "%.4f (global model %.4f)",
        counts,
        record["pooled-validation"]["kept"]["auc"],
        record["pooled-validation"]["global"]["auc"],
    )
    return record
