"""A bank's egress log: one signed, hash-chained JSON line for every reply it sends, kept at the bank.

The "what leaves a bank" table says what should leave; this file says what
did, for the bank's privacy officer, without the coordinator's help. Each
line names the run, message kind, round, the records and their sizes and the
SHA-256 of the content (never a cell value), the hash of the line before it
(so a removed, reordered or edited line breaks the chain) and the bank's
Ed25519 signature over all of that (so a line cannot be rewritten without
the bank's key). Appends take an exclusive lock: one line per reply, whole.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedcredit.identity.roster import Roster, RosterError
from fedcredit.identity.signing import SignatureError, sign, verify

EGRESS = "fedcredit-egress/1"
EGRESS_LOG = "egress-log"  # node config: where the bank keeps its egress log
EGRESS_FILE = "egress.jsonl"
GENESIS = "0" * 64
MODE = 0o600


def line_hash(line: str) -> str:
    return hashlib.sha256(line.encode()).hexdigest()


def _last_hash(fd: int) -> str:
    size = os.fstat(fd).st_size
    if size == 0:
        return GENESIS
    start = max(0, size - 65536)
    os.lseek(fd, start, os.SEEK_SET)
    tail = os.read(fd, size - start).decode().rstrip("\n")
    return line_hash(tail.rsplit("\n", 1)[-1])


def append(path: str | Path, key: Ed25519PrivateKey, bank: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """Append one signed line for `entry` (run, kind, round, records, content digest) under an exclusive lock."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0), MODE)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, MODE)
        fields = {"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "bank": bank, **entry}
        fields["previous"] = _last_hash(fd)
        signed = {**fields, "signature": base64.b64encode(sign(key, EGRESS, fields)).decode()}
        os.write(fd, (json.dumps(signed, sort_keys=True, separators=(",", ":")) + "\n").encode())
        return signed
    finally:
        os.close(fd)  # releases the lock


@dataclass
class Audit:
    """What a verified egress log says, for a privacy officer; `problems` empty means it verifies."""

    lines: int = 0
    problems: list[str] = field(default_factory=list)
    runs: set[int] = field(default_factory=set)
    kinds: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # kind -> error replies (no records, only the error's kind)
    records: Counter = field(default_factory=Counter)
    bytes: int = 0
    first: str | None = None
    last: str | None = None
    banks: set[str] = field(default_factory=set)


def audit(lines: Iterable[str], roster: Roster) -> Audit:
    """Verify the chain and every signature; tally runs, kinds, record names and bytes of the lines that verify."""
    out, previous = Audit(), GENESIS
    for number, raw in enumerate(lines, 1):
        raw = raw.rstrip("\n")
        out.lines += 1
        try:
            entry = json.loads(raw)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            signature = base64.b64decode(str(entry.pop("signature", "")), validate=True)
            if entry.get("previous") != previous:
                raise ValueError("the chain is broken here (a line before it was edited, removed or reordered)")
            bank = str(entry.get("bank"))
            verify(roster.public_key(bank), signature, EGRESS, entry, f"line {number}")
        except (ValueError, TypeError, SignatureError, RosterError) as err:
            out.problems.append(f"line {number}: {err}")
            previous = line_hash(raw)
            continue
        previous = line_hash(raw)
        out.banks.add(bank)
        out.runs.add(int(entry.get("run", 0)))
        out.kinds[str(entry.get("kind"))] += 1
        if entry.get("error"):
            out.errors[str(entry.get("kind"))] += 1
        for name, size in dict(entry.get("records", {})).items():
            out.records[str(name)] += 1
            out.bytes += int(size)
        out.first = out.first or str(entry.get("time"))
        out.last = str(entry.get("time"))
    return out
