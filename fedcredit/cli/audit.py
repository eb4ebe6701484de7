"""`fedcredit audit FILE --roster R`: verify a bank's egress log and summarise what left the bank.

For the bank's privacy officer: the chain and every signature are checked
(an edited, removed or reordered line is reported by number), then runs,
messages per kind, bytes and first/last time are printed, and every record
name seen is compared with the protocol's "what leaves a bank" table. Exit
code 0 when the log verifies and holds only allowed records, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedcredit.federation.signed_replies import allowed_records
from fedcredit.identity.egress import audit
from fedcredit.identity.roster import RosterError, load_roster

EXAMPLE = "fedcredit audit /srv/bank-a/egress.jsonl --roster /srv/bank-a/roster.toml"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the bank's egress log (JSON lines, node config egress-log)")
    parser.add_argument(
        "--roster", default="roster.toml", help="the consortium roster the bank pinned (its local copy)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        roster = load_roster(args.roster)
        lines = Path(args.file).read_text(encoding="utf-8").splitlines()
    except (RosterError, OSError, UnicodeDecodeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    result = audit(lines, roster)
    unknown = sorted(set(result.records) - allowed_records())
    print(f"{args.file}: {result.lines} line(s), roster SHA-256 {roster.sha256}")
    print(f"banks: {', '.join(sorted(result.banks)) or '-'}; runs: {', '.join(map(str, sorted(result.runs))) or '-'}")
    print(f"first: {result.first or '-'}; last: {result.last or '-'}; bytes sent: {result.bytes}")
    for kind, count in sorted(result.kinds.items()):
        errors = result.errors.get(kind, 0)
        print(f"  {kind}: {count} message(s)" + (f", {errors} of them error replies" if errors else ""))
    for name, count in sorted(result.records.items()):
        print(f"  record {name}: in {count} message(s){'' if name in allowed_records() else '  NOT IN THE PROTOCOL'}")
    for problem in result.problems:
        print(f"FAILED {problem}")
    if unknown:
        print(f"FAILED records outside the protocol's 'what leaves a bank' table: {', '.join(unknown)}")
    ok = not result.problems and not unknown
    print("verified: every line is signed and chained, every record is allowed" if ok else "NOT verified")
    return 0 if ok else 1
