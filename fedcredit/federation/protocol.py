"""What crosses the wire between the coordinator and a bank: every message, record and key.

A privacy reviewer reads this one file to see what leaves a bank. Each side
encodes with the functions here, and the coordinator decodes every reply with
them too, so a reply that does not follow the protocol is refused for that
bank (with the reason) before any of its numbers is used.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord, MetricRecord, RecordDict

from fedcredit.core.stats import Stats

# Every bank reply carries this key = 1: the weight of equal-weight averaging,
# which Flower's privacy accounting requires (banks of different sizes would
# otherwise weigh differently and the sensitivity bound would not hold).
UNIT_WEIGHT = "unit-weight"


def stats_to_record(stats: Stats) -> RecordDict:
    """Counts and sums only; categories travel as names with their counts."""
    numeric = MetricRecord({col: [float(n), s, ss] for col, (n, s, ss) in stats.numeric.items()})
    cats = ConfigRecord({col: json.dumps(counts, sort_keys=True) for col, counts in stats.categorical.items()})
    return RecordDict({"numeric-stats": numeric, "category-counts": cats, "bank": MetricRecord({"rows": stats.rows})})


def stats_from_record(content: RecordDict) -> Stats:
    rows = int(content.metric_records["bank"]["rows"])
    numeric = {k: (int(v[0]), float(v[1]), float(v[2])) for k, v in content.metric_records["numeric-stats"].items()}
    categorical = {k: json.loads(v) for k, v in content.config_records["category-counts"].items()}
    return Stats(numeric, categorical, rows)
