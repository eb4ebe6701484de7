"""Before round 1: which banks are there, and the statistics their data gives the shared preprocessing.

Plain mode: each bank's statistics are checked (`protocol.read_statistics`)
and merged in node order, so the preprocessing does not depend on which bank
answered first. Secure mode: the coordinator sees only their sum. A sweep
gathers them once per distinct combination of the keys that decide them
(`Key.statistics` in the config table).
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from logging import INFO, WARNING
from typing import Any

from flwr.app import Message
from flwr.serverapp import Grid
from flwr.supercore import log

from fedcredit.core.config import STATISTICS_KEYS, RunConfig
from fedcredit.core.schema import Schema
from fedcredit.core.stats import Stats, merge_stats
from fedcredit.federation import protocol
from fedcredit.federation.errors import FederationError
from fedcredit.federation.exchange import exchange, short_reason
from fedcredit.federation.secure_sum import checked_secure_sum


@dataclass(frozen=True)
class Federation:
    """The banks whose statistics build the model (node id -> bank), those that sent none, and the merged sum."""

    banks: dict[int, protocol.BankStatistics]
    failed: dict[int, str]
    merged: Stats | None


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


def unique_names(names: dict[int, str]) -> dict[int, str]:
    """Each bank's name in this run: a name claimed by several banks is kept by none of them.

    Every claimant gets its node id appended (`midwest#12`), so a bank cannot
    take another's name by answering first.
    """
    claims: dict[str, int] = {}
    for name in names.values():
        claims[name] = claims.get(name, 0) + 1
    out = {}
    for node, name in names.items():
        out[node] = f"{name}#{node}" if claims[name] > 1 else name
        if claims[name] > 1:
            log(
                WARNING,
                "Several banks call themselves %r: this one is %r (set bank-name in its node config)",
                name,
                out[node],
            )
    return out


def _requests(node_ids: list[int]) -> list[Message]:
    return [Message(content=protocol.statistics_request(), message_type="query", dst_node_id=n) for n in node_ids]


def collect_statistics(
    grid: Grid, node_ids: list[int], timeout: float, schema: Schema, limits: protocol.Limits
) -> tuple[dict[int, protocol.BankStatistics], dict[int, str]]:
    """Ask every bank for sufficient statistics: ({node: its checked statistics}, {node: why not})."""

    def read(reply: Message) -> protocol.BankStatistics:
        bank = protocol.read_statistics(reply.content, schema, limits)
        protocol.check_schema(bank.schema_sha256, schema)
        return bank

    outcome = exchange(grid, _requests(node_ids), read, timeout, "statistics")
    names = unique_names({node: bank.name for node, bank in outcome.ok.items()})
    banks = {node: dataclasses.replace(bank, name=names[node]) for node, bank in outcome.ok.items()}
    return banks, outcome.reasons()


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

    def bank_info(content: Any) -> tuple[str, str, int | None]:
        name, source, sha = protocol.read_bank_info(content)
        protocol.check_schema(sha, schema)
        return name, source, protocol.read_disclosed_rows(content)

    length = protocol.statistics_length(layout)
    collect = {protocol.LAYOUT: json.dumps(layout)}

    def read(total: Any, banks: int) -> Stats:
        return protocol.read_statistics_sum(total, layout, banks)

    checked = checked_secure_sum(grid, _requests(node_ids), length, fraction, timeout, read, collect, bank_info)
    outcome = checked.outcome
    failed = {**outcome.reasons(), **checked.left_out}
    names = unique_names({node: outcome.info[node][0] for node in outcome.contributors})
    banks = {
        node: protocol.BankStatistics(names[node], outcome.info[node][1], schema.sha256, None, outcome.info[node][2])
        for node in outcome.contributors
    }
    if checked.value is None:
        log(WARNING, "fedcredit: %s", outcome.reason)
        return banks, {**failed, **{n: str(outcome.reason) for n in node_ids if n not in failed}}, None
    return banks, failed, checked.value


def too_few_banks(banks: int, failed: dict[int, str], min_banks: int) -> str:
    """One line that says why the run cannot start, each distinct reason once."""
    reasons: dict[str, list[int]] = {}
    for node, reason in failed.items():
        reasons.setdefault(short_reason(reason), []).append(node)
    parts = [f"{reason} ({len(nodes)} bank{'s' if len(nodes) > 1 else ''})" for reason, nodes in reasons.items()]
    return f"{banks} bank(s) sent usable statistics, min-banks={min_banks}: " + "; ".join(parts)


def statistics_key(cfg: RunConfig, schema: Schema) -> tuple:
    """What decides the banks' statistics: runs (sweep variants) with the same key have the same ones."""
    flat = cfg.to_flower()
    return tuple(str(flat[k]) for k in STATISTICS_KEYS) + (schema.sha256,)


def gather(
    grid: Grid, cfg: RunConfig, schema: Schema, nodes: list[int], cache: dict[tuple, Federation] | None
) -> Federation:
    """The federation of this run: from `cache` when a sweep's earlier variant had the same data and split."""
    key = statistics_key(cfg, schema)
    if cache is not None and key in cache:
        log(INFO, "fedcredit sweep: the banks' statistics of an earlier variant apply (same data and split)")
        return cache[key]
    if cfg.privacy_secure_aggregation:
        banks, failed, merged = collect_secure_statistics(
            grid, nodes, cfg.round_timeout, schema, cfg.privacy_secure_threshold
        )
    else:
        banks, failed = collect_statistics(grid, nodes, cfg.round_timeout, schema, cfg.limits)
        # In node order: the float sums, and so the preprocessing, do not depend on which bank answered first.
        merged = merge_stats([banks[n].stats for n in sorted(banks)]) if banks else None  # type: ignore[misc]
    federation = Federation(banks, failed, merged)
    if cache is not None and merged is not None:
        cache[key] = federation
    return federation
