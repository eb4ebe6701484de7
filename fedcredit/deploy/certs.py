"""Credentials for a consortium: a CA, the SuperLink's TLS certificate, one key pair per bank.

Uses `cryptography` (already a Flower dependency) so that the same code runs
on every bank's machine without openssl scripts. Banks' keys are EC P-384 in
OpenSSH format, the format `flower-supernode --auth-supernode-private-key`
and `flwr supernode register` take. Private keys are written with mode 0600
and must never be committed or sent anywhere: a bank keeps its own private
key, the coordinator gets only the `.pub` file.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_DAYS = 365


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    superlink_cert: Path
    superlink_key: Path
    bank_keys: dict[str, tuple[Path, Path]]  # bank name -> (private key, public key)


def _write(path: Path, data: bytes, private: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if private:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_ca(out: Path, name: str = "fedcredit consortium CA") -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA384()))
    _write(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    _write(out / "ca.key", _pem_key(key), private=True)
    return cert, key


def make_server_cert(out: Path, hosts: list[str], ca_cert: x509.Certificate,
                     ca_key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
    """The SuperLink's certificate; `hosts` are every name and IP banks will dial."""
    if not hosts:
        raise ValueError("give at least one host name or IP address the banks use to reach the SuperLink")
    key = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
            .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA384()))
    return (_write(out / "superlink.crt", cert.public_bytes(serialization.Encoding.PEM)),
            _write(out / "superlink.key", _pem_key(key), private=True))


def make_bank_keys(out: Path, bank: str) -> tuple[Path, Path]:
    """A bank's SuperNode authentication key pair (EC P-384, OpenSSH format)."""
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return (_write(out / bank / "supernode.key", private, private=True),
            _write(out / bank / "supernode.key.pub", public + f" {bank}\n".encode()))


def make_credentials(out: str | Path, hosts: list[str], banks: list[str]) -> Credentials:
    out = Path(out)
    ca_cert, ca_key = make_ca(out)
    cert, key = make_server_cert(out, hosts, ca_cert, ca_key)
    keys = {bank: make_bank_keys(out / "banks", bank) for bank in banks}
    return Credentials(out / "ca.crt", cert, key, keys)


# --- `fedcredit certs` -----------------------------------------------------------

def add_arguments(parser) -> None:
    parser.add_argument("--out", required=True, help="directory for the files (private keys are mode 0600)")
    parser.add_argument("--host", action="append", required=True,
                        help="a host name or IP the banks use to reach the SuperLink (repeat for each)")
    parser.add_argument("--bank", action="append", default=[], help="a bank name (repeat for each)")


def run(args) -> int:
    creds = make_credentials(args.out, args.host, args.bank)
    print(f"CA certificate (give to every bank): {creds.ca_cert}")
    print(f"SuperLink certificate and key (coordinator only): {creds.superlink_cert}, {creds.superlink_key}")
    for bank, (private, public) in creds.bank_keys.items():
        print(f"{bank}: private key {private} (stays at the bank), public key {public} (register it)")
    print(f"Keep {Path(args.out) / 'ca.key'} offline: it signs SuperLink certificates.")
    return 0
