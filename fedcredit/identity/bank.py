"""A bank's identity at the bank: its private signing key, the roster it pinned, and whether a run may go on.

Node config (set by the bank, never by the coordinator):
  `signing-key`   its Ed25519 private key (PEM, mode 0600, from `fedcredit certs`);
  `roster-sha256` the SHA-256 of the roster it agreed to, or `roster`: a local copy of it.
A bank with either refuses any run whose app ships no roster or another one;
a run that ships a roster is refused by a bank that pinned none. With
neither and no roster in the app (a simulation), identity is off.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedcredit.identity.roster import ROSTER_FILE, Roster, RosterError, file_sha256, load_roster, public_bytes

SIGNING_KEY, ROSTER_PIN, ROSTER_COPY = "signing-key", "roster-sha256", "roster"


@dataclass(frozen=True)
class BankIdentity:
    name: str
    key: Ed25519PrivateKey
    roster: Roster


def load_signing_key(path: str | Path) -> Ed25519PrivateKey:
    """The bank's private key; refused when others may read it (as ssh does), or when it is not Ed25519."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError as err:
        raise RosterError(f"node config {SIGNING_KEY}: cannot read {path} ({err.strerror})") from None
    if not stat.S_ISREG(st.st_mode):
        raise RosterError(f"node config {SIGNING_KEY}: {path} is not a regular file (links are not followed)")
    if st.st_mode & 0o077:
        raise RosterError(f"node config {SIGNING_KEY}: {path} may be read by others: `chmod 600 {path}`")
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise RosterError(f"node config {SIGNING_KEY}: {path} is not an unencrypted PEM private key ({err})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise RosterError(f"node config {SIGNING_KEY}: {path} is not an Ed25519 key (make one with `fedcredit certs`)")
    return key


def _pinned_sha256(node_config: Mapping[str, Any]) -> str | None:
    if ROSTER_PIN in node_config:
        return str(node_config[ROSTER_PIN]).strip().lower()
    if ROSTER_COPY in node_config:
        try:
            return file_sha256(str(node_config[ROSTER_COPY]))
        except OSError as err:
            raise RosterError(f"node config {ROSTER_COPY}: cannot read {node_config[ROSTER_COPY]} ({err})") from None
    return None


def bank_identity(node_config: Mapping[str, Any], app_dir: str | Path, bank_name: str) -> BankIdentity | None:
    """This bank's identity for a run of the app in `app_dir`, None when identity is off; RosterError refuses."""
    shipped = Path(app_dir) / ROSTER_FILE
    pinned = _pinned_sha256(node_config)
    has_key = SIGNING_KEY in node_config
    if not shipped.is_file():
        if pinned or has_key:
            raise RosterError(
                "this bank pinned a consortium roster, but the run's app ships none: refused (a run without the "
                f"roster would let the coordinator speak for banks); ask for the app with {ROSTER_FILE}"
            )
        return None
    roster = load_roster(shipped)
    if pinned is None:
        raise RosterError(
            f"the run's app ships a consortium roster (SHA-256 {roster.sha256}) but this bank pinned none: check "
            f'it with the consortium, then set node config {ROSTER_PIN}="{roster.sha256}"'
        )
    if pinned != roster.sha256:
        raise RosterError(
            f"the run's roster has SHA-256 {roster.sha256}, not the {pinned} this bank pinned: refused (the roster "
            "was changed); agree on the new roster with the consortium before pinning it"
        )
    if not has_key:
        raise RosterError(f"node config {SIGNING_KEY} is not set: name this bank's private signing key")
    key = load_signing_key(str(node_config[SIGNING_KEY]))
    if roster.banks.get(bank_name) != public_bytes(key):
        on = "is on the roster with another key" if bank_name in roster.banks else "is not on the roster"
        raise RosterError(f"bank {bank_name!r} {on}: check node config bank-name and {SIGNING_KEY}")
    return BankIdentity(bank_name, key, roster)
