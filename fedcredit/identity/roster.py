"""The consortium roster: bank name -> Ed25519 public signing key, one TOML file that ships in the app.

The roster is the consortium's agreement on who its banks are. It travels
inside the FAB (a `.toml` in the app directory reaches every SuperNode), so
each bank pins the one it agreed to (node config `roster-sha256`, or
`roster` naming a local copy) and refuses a run that ships another. The
SHA-256 is of the file's bytes: any edit, even a comment, is another roster.
"""

from __future__ import annotations

import base64
import hashlib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ROSTER_FILE = "roster.toml"
_BANK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
PUBLIC_KEY_BYTES = 32


class RosterError(ValueError):
    """A roster, a pin or a signing key that cannot be used; the message says which file and how to fix it."""


@dataclass(frozen=True)
class Roster:
    banks: Mapping[str, bytes]  # bank name -> raw Ed25519 public key (32 bytes)
    sha256: str  # of the file's bytes

    def public_key(self, bank: str) -> Ed25519PublicKey:
        if bank not in self.banks:
            raise RosterError(f"bank {bank!r} is not on the consortium roster (roster SHA-256 {self.sha256[:12]})")
        return Ed25519PublicKey.from_public_bytes(self.banks[bank])


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def roster_text(banks: Mapping[str, bytes]) -> str:
    """The roster file for these banks, sorted by name so that the same banks always give the same SHA-256."""
    lines = [
        "# fedcredit consortium roster: each bank's Ed25519 public signing key (raw, base64).",
        "# Written by `fedcredit certs`; every bank pins this file's SHA-256 (node config roster-sha256).",
        "[banks]",
    ]
    for name in sorted(banks):
        if not _BANK_NAME.fullmatch(name):
            raise RosterError(f"bank name {name!r}: use letters, digits, '.', '_' and '-' only")
        lines.append(f'"{name}" = "{base64.b64encode(banks[name]).decode()}"')
    return "\n".join(lines) + "\n"


def parse_roster(data: bytes, where: str = "roster") -> Roster:
    try:
        table = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise RosterError(f"{where} is not a TOML file ({err}): rewrite it with `fedcredit certs`") from None
    banks_table = table.get("banks")
    if not isinstance(banks_table, dict) or not banks_table:
        raise RosterError(f"{where} has no [banks] table of bank = public key: rewrite it with `fedcredit certs`")
    banks: dict[str, bytes] = {}
    seen: dict[bytes, str] = {}
    for name, value in banks_table.items():
        if not _BANK_NAME.fullmatch(name):
            raise RosterError(f"{where}: bank name {name!r} is not a valid name")
        try:
            key = base64.b64decode(str(value), validate=True)
        except ValueError:
            key = b""
        if len(key) != PUBLIC_KEY_BYTES:
            raise RosterError(f"{where}: bank {name!r} has no valid Ed25519 public key (32 bytes, base64)")
        if key in seen:
            raise RosterError(f"{where}: banks {seen[key]!r} and {name!r} have the same key")
        banks[name], seen[key] = key, name
    return Roster(banks, hashlib.sha256(data).hexdigest())


def load_roster(path: str | Path) -> Roster:
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise RosterError(f"cannot read the roster {path}: {err.strerror}") from None
    return parse_roster(data, str(path))


def public_bytes(key: Ed25519PrivateKey | Ed25519PublicKey) -> bytes:
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
