"""`fedcredit certs --out DIR --host H --bank B`: the consortium's CA, SuperLink certificate and bank keys.

Safe to rerun on the same `--out`: the CA and every existing key are reused
(never overwritten), so `fedcredit certs --out DIR --host H --bank newbank`
adds a bank to a running consortium. The certificate always lists 127.0.0.1
and localhost too (the ServerApp and `fedcredit proxy` dial the SuperLink on
loopback). Exit code 0 on success, 1 when existing files cannot be reused as
they are (the message says how to fix them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fedcredit.deploy.certs import CredentialsError, make_credentials
from fedcredit.identity.roster import file_sha256

LOOPBACK_HOSTS = ("127.0.0.1", "localhost")


EXAMPLE = "fedcredit certs --out certs --host superlink.example.org --bank bank-a --bank bank-b"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", required=True, help="directory for the files; an existing CA and existing keys there are reused"
    )
    parser.add_argument(
        "--host",
        action="append",
        required=True,
        help="a host name or IP the banks use to reach the SuperLink (repeat for each); 127.0.0.1 and localhost "
        "are always added (the ServerApp and the proxy dial the SuperLink there)",
    )
    parser.add_argument(
        "--bank",
        action="append",
        default=[],
        help="a bank name, repeat for each (default: none; rerun with --bank later to add a bank)",
    )


def run(args: argparse.Namespace) -> int:
    # The SuperLink is also dialled on loopback: by its own ServerApp (at 127.0.0.1, checked against ca.crt) and by
    # nginx in front of it (`fedcredit proxy`, which verifies DNS names only), so the certificate lists both.
    hosts = [*args.host, *(h for h in LOOPBACK_HOSTS if h not in args.host)]
    try:
        creds = make_credentials(args.out, hosts, args.bank)
    except (CredentialsError, ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for note in creds.notes:
        print(note)
    print(f"CA certificate (give to every bank): {creds.ca_cert}")
    print(f"SuperLink certificate and key (coordinator only): {creds.superlink_cert}, {creds.superlink_key}")
    for bank, (private, public) in creds.bank_keys.items():
        print(f"{bank}: private key {private} (stays at the bank), public key {public} (register it)")
    for bank, path in creds.signing_keys.items():
        print(f"{bank}: signing key {path} (stays at the bank: node config signing-key)")
    if creds.roster is not None:
        sha = file_sha256(creds.roster)
        print(
            f"Consortium roster (copy into the app directory): {creds.roster}, SHA-256 {sha} (node config roster-sha256)"
        )
    print(f"Keep {Path(args.out) / 'ca.key'} offline: it signs SuperLink certificates. Private keys are mode 0600.")
    return 0
