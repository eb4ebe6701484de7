"""After the last round: how often each feature is a reason for the final model's declines (reasons.json).

A decision a bank can defend names its reasons; a validator asks which
reasons the model gives, and how often, over real declined loans. The
coordinator has no loan rows, so it asks every bank of the run once
(`query.reasons`, carrying the final global weights and the preprocessing)
to score its validation rows with the final model and count, among the
loans declined at `threshold`, how often each feature is the first reason
and how often any reason (`fedcredit.risk.reason_counts`), and on how many
of its rows each declared monotone constraint breaks. Every reply is
checked (`protocol.read_reasons_reply`: the schema's layout, whole counts
that fit each other, exactly the validation loans and only declines the
bank's own final-round histograms allow); a bank whose reply fails is refused with
the reason, one that fails or does not answer is recorded, and the run goes
on either way: nothing of the model depends on these counts.

Secure mode: the counts are summed securely over every bank of the run (as
the profile is: the declines repeat the final evaluation's confusion counts,
so a sum over fewer banks would give the missing ones' away by difference),
and only the pooled counts exist.

reasons.json (bank names as in history.json; counts as
`protocol.read_reasons_reply` returns them: {"rows", "declined",
"no-reason", "first": {feature: n}, "any": {feature: n}, "monotone-rows",
"monotone-violations": {feature: n}})::

    {"mode": "plain" | "secure", "threshold": 0.1, "round": 5,
     "features": [feature, ...],                   # the schema's, in its order
     "constraints": {feature: "increasing" | "decreasing"},
     "monotone-rows-per-bank": 100,                # the most rows a bank checks the constraints on
     "banks": {bank: counts},                      # empty in secure mode
     "pooled": counts | null, "pooled-over": [bank, ...],
     "refused": {bank: reason}, "failed": {bank: reason},
     "not-pooled": reason}                         # only when there are no pooled counts

Should the step itself fail (not a bank: the coordinator), reasons.json is
{"mode": ..., "error": reason} and the run goes on.
"""

from __future__ import annotations

from logging import INFO, WARNING
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core.config import RunConfig
from fedcredit.core.schema import Schema
from fedcredit.federation import protocol
from fedcredit.federation.exchange import exchange, record_by_bank
from fedcredit.federation.scores import RoundScores
from fedcredit.federation.secure_sum import checked_secure_sum
from fedcredit.federation.statistics import Federation

WHAT = "fedcredit reasons"


def collect_reasons(
    grid: Grid,
    federation: Federation,
    arrays: ArrayRecord,
    prep_json: str,
    schema: Schema,
    cfg: RunConfig,
    final: RoundScores | None = None,
    evaluated: list[str] | None = None,
) -> dict[str, Any]:
    """Ask the run's connected banks for their reason counts; the content of reasons.json.

    `final`: the score histograms of the final model's evaluation (the banks
    in `evaluated`), which bound how many loans each bank can decline.
    """
    layout = protocol.ReasonLayout.of(schema)
    banks = federation.banks
    connected = set(grid.get_node_ids())
    nodes = sorted(n for n in banks if n in connected)
    messages = [
        Message(content=protocol.reasons_request(arrays, prep_json), message_type=protocol.REASONS, dst_node_id=n)
        for n in nodes
    ]
    record: dict[str, Any] = {
        "mode": "secure" if cfg.privacy_secure_aggregation else "plain",
        "threshold": cfg.threshold,
        "round": cfg.num_server_rounds,
        "features": list(layout.features),
        "constraints": dict(schema.monotone),
        "monotone-rows-per-bank": protocol.MONOTONE_ROWS,
        "banks": {},
        "pooled": None,
        "pooled-over": [],
        "refused": {},
        "failed": {banks[n].name: "not connected when asked" for n in sorted(banks) if n not in nodes},
    }
    if cfg.privacy_secure_aggregation:
        _secure(grid, messages, federation, layout, cfg, record, final, evaluated)
    else:
        _plain(grid, messages, federation, layout, cfg, record, final)
    pooled = record["pooled"]
    if pooled is None:
        record["not-pooled"] = record.get("not-pooled") or "no bank's reason counts were accepted"
        log(WARNING, "%s: no pooled counts: %s", WHAT, record["not-pooled"])
    else:
        top = max(layout.features, key=lambda f: (pooled["first"][f], -layout.features.index(f)), default=None)
        log(
            INFO,
            "%s: pooled over %d of %d bank(s) (%s): %d of %d validation loans declined at PD >= %g, %d without a "
            "reason; most frequent first reason %s (%d)",
            WHAT,
            len(record["pooled-over"]),
            len(banks),
            record["mode"],
            pooled["declined"],
            pooled["rows"],
            cfg.threshold,
            pooled["no-reason"],
            top,
            pooled["first"][top] if top else 0,
        )
    return record


def _loans_in(hist: tuple[np.ndarray, np.ndarray]) -> float:
    return float(np.sum(hist[0]) + np.sum(hist[1]))


def add_counts(parts: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The sum of checked counts (`protocol.read_reasons_reply`'s): what the banks' rows in one place would give."""
    if not parts:
        return None
    out: dict[str, Any] = {}
    for key, value in parts[0].items():
        if isinstance(value, dict):
            out[key] = {k: sum(int(p[key][k]) for p in parts) for k in value}
        else:
            out[key] = sum(int(p[key]) for p in parts)
    return out


def _plain(
    grid: Grid,
    messages: list[Message],
    federation: Federation,
    layout: protocol.ReasonLayout,
    cfg: RunConfig,
    record: dict,
    final: RoundScores | None,
) -> None:
    """Each bank's checked counts, and their sum."""
    banks = federation.banks

    def read(reply: Message) -> dict[str, Any]:
        bank = banks[reply.metadata.src_node_id]
        rows = protocol.expected_validation_rows(bank.stats.rows, cfg.val_fraction) if bank.stats else None
        hist = final.banks.get(bank.name) if final is not None else None
        declined = None
        if hist is not None:  # the same validation loans it scored with the same model: exactly as many
            rows = (_loans_in(hist), _loans_in(hist))
            declined = protocol.declined_bounds(*hist, cfg.threshold)
        return protocol.read_reasons_reply(reply.content, layout, rows, declined)

    outcome = exchange(grid, messages, read, cfg.round_timeout, WHAT)
    record_by_bank(record, outcome, {n: b.name for n, b in banks.items()}, add_counts)


def _secure(
    grid: Grid,
    messages: list[Message],
    federation: Federation,
    layout: protocol.ReasonLayout,
    cfg: RunConfig,
    record: dict,
    final: RoundScores | None,
    evaluated: list[str] | None,
) -> None:
    """Only the sum over every bank of the run (module docstring), checked like one bank's counts."""
    banks = federation.banks
    if record["failed"]:
        record["not-pooled"] = (
            "secure mode sums reason counts only over every bank of the run, and not all are connected"
        )
        return
    merged_rows = federation.merged.rows if federation.merged is not None else None
    every = {b.name for b in banks.values()}
    # The final evaluation's pooled histograms bound the declines only if they are of exactly these banks.
    pooled_hist = final.pooled if final is not None and set(evaluated or ()) == every else None

    def read(total: Any, contributors: int) -> dict[str, Any]:
        whole = contributors == len(banks)
        rows, declined = None, None
        if merged_rows is not None:
            low, high = protocol.expected_validation_rows(merged_rows, cfg.val_fraction, len(banks))
            rows = (low, high) if whole else (0.0, high)  # a group's rows are only bounded by everyone's
        if whole and pooled_hist is not None:
            rows = (_loans_in(pooled_hist), _loans_in(pooled_hist))
            declined = protocol.declined_bounds(*pooled_hist, cfg.threshold)
        return protocol.read_reasons_sum(total, layout, contributors, rows, declined)

    checked = checked_secure_sum(
        grid, messages, layout.length, cfg.privacy_secure_threshold, cfg.round_timeout, read, complete=True
    )
    outcome = checked.outcome
    refused = {**outcome.refused, **checked.left_out}
    failed = {**outcome.failed, **{n: f"withheld: {why}" for n, why in outcome.withheld.items()}}
    record["refused"] = {banks[n].name: why for n, why in refused.items() if n in banks}
    record["failed"] = {banks[n].name: why for n, why in failed.items() if n in banks and n not in refused}
    if checked.value is None:
        record["not-pooled"] = outcome.reason or "no secure sum"
        return
    record["pooled"] = checked.value
    record["pooled-over"] = [banks[n].name for n in outcome.contributors if n in banks]
