"""Before round 1: each bank's feature profile over the global bins, for the model-risk report (profile.json).

The model-risk report needs per bank its rows, defaults and missing values
and how far its feature distributions are from the other banks' (CSI,
`fedcredit.risk.stability`); the statistics carry none of that. So once the
preprocessing is fixed, the coordinator asks every bank of the run once
(`query.profile`, carrying the preprocessing) for the counts of its
training and of its validation rows over the bins of `fedcredit.core.profile`.
Every reply is checked (`protocol.read_profile_reply`: the agreed layout,
whole counts that add up to the rows, training counts that agree with the
bank's statistics, validation rows and defaults the split allows); a bank
whose profile fails a check is refused with the reason, one that fails or
does not answer is recorded, and the run goes on either way: nothing of the
model depends on the profile.

Secure mode: the profiles are summed securely, so the coordinator sees only
the pooled profile, and only a sum over every bank whose statistics built
the model: a sum over fewer would give the missing banks' row and category
counts away, by difference from the summed statistics.

profile.json (bank names as in history.json; the JSON shape of a split is
`fedcredit.core.profile`'s: {"rows", "bads", "numeric": {col: {"counts",
"missing"}}, "categorical": {col: {"counts", "missing"}}})::

    {"grid": {"z-edges": [-3.0, -2.75, ..., 3.0]},   # 26 bins: below -3, [-3, -2.75), ..., at or above 3
     "features": {"numeric": [col, ...], "categorical": {col: [vocabulary..., "(unknown)"]}},
     "mode": "plain" | "secure",
     "preprocessing-sha256": "...",                  # the preprocessing the banks binned with
     "banks": {bank: {"train": split, "validation": split}},   # empty in secure mode
     "pooled": {"train": split, "validation": split} | null,   # the sum over "pooled-over"
     "pooled-over": [bank, ...],
     "refused": {bank: reason}, "failed": {bank: reason},
     "not-pooled": reason}                          # only when there is no pooled profile

Should the step itself fail (not a bank: the coordinator), profile.json is
{"mode": ..., "error": reason} and the run goes on.
"""

from __future__ import annotations

import json
from logging import INFO, WARNING
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core.config import RunConfig
from fedcredit.core.profile import Z_EDGES, ProfileLayout, add_profiles, layout_of
from fedcredit.core.schema import Schema
from fedcredit.core.stats import Preprocessing
from fedcredit.federation import protocol
from fedcredit.federation.exchange import exchange, record_by_bank
from fedcredit.federation.secure_sum import checked_secure_sum
from fedcredit.federation.statistics import Federation

WHAT = "fedcredit profile"


def collect_profiles(grid: Grid, federation: Federation, prep_json: str, schema: Schema, cfg: RunConfig) -> dict:
    """Ask the run's connected banks for their profiles; the content of profile.json."""
    layout = layout_of(schema, Preprocessing.from_json(prep_json))
    banks = federation.banks
    connected = set(grid.get_node_ids())
    nodes = sorted(n for n in banks if n in connected)
    messages = [
        Message(content=protocol.profile_request(prep_json), message_type=protocol.PROFILE, dst_node_id=n)
        for n in nodes
    ]
    record: dict[str, Any] = {
        "grid": {"z-edges": list(Z_EDGES)},
        "features": layout.names(),
        "mode": "secure" if cfg.privacy_secure_aggregation else "plain",
        "preprocessing-sha256": protocol.digest(prep_json),
        "banks": {},
        "pooled": None,
        "pooled-over": [],
        "refused": {},
        "failed": {banks[n].name: "not connected when asked" for n in sorted(banks) if n not in nodes},
    }
    if cfg.privacy_secure_aggregation:
        _secure(grid, messages, federation, layout, cfg, record)
    else:
        _plain(grid, messages, federation, layout, cfg, record)
    if record["pooled"] is None:
        record["not-pooled"] = record.get("not-pooled") or "no bank's profile was accepted"
        log(WARNING, "%s: no pooled profile: %s", WHAT, record["not-pooled"])
    else:
        log(INFO, "%s: pooled over %d of %d bank(s) (%s)", WHAT, len(record["pooled-over"]), len(banks), record["mode"])
    return record


def _pooled(profiles: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not profiles:
        return None
    return {split: add_profiles(p[split] for p in profiles) for split in protocol.PROFILE_SPLITS}


def _plain(
    grid: Grid, messages: list[Message], federation: Federation, layout: ProfileLayout, cfg: RunConfig, record: dict
) -> None:
    """Each bank's checked profile, and their sum."""
    banks = federation.banks

    def read(reply: Message) -> dict[str, Any]:
        bank = banks[reply.metadata.src_node_id]
        return protocol.read_profile_reply(reply.content, layout, bank.stats, cfg.val_fraction)

    outcome = exchange(grid, messages, read, cfg.round_timeout, WHAT)
    record_by_bank(record, outcome, {n: b.name for n, b in banks.items()}, _pooled)


def _secure(
    grid: Grid, messages: list[Message], federation: Federation, layout: ProfileLayout, cfg: RunConfig, record: dict
) -> None:
    """Only the sum over every bank of the run (see the module docstring), checked like one bank's profile."""
    banks = federation.banks
    if record["failed"]:
        record["not-pooled"] = "secure mode sums profiles only over every bank of the run, and not all are connected"
        return
    layout_json = layout.to_json()
    length = protocol.profile_length(json.loads(layout_json))

    def read(total: Any, contributors: int) -> dict[str, Any]:
        # The summed statistics are those of every bank: a group's sum (a corrupted total summed again) has none.
        stats = federation.merged if contributors == len(banks) else None
        return protocol.read_profile_sum(total, layout, stats, cfg.val_fraction, contributors)

    checked = checked_secure_sum(
        grid,
        messages,
        length,
        cfg.privacy_secure_threshold,
        cfg.round_timeout,
        read,
        {protocol.LAYOUT: layout_json},
        complete=True,
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
