"""Credentials for a consortium: a CA, the SuperLink's TLS certificate, one key pair per bank.

Uses `cryptography` (already a Flower dependency) so that the same code runs
on every bank's machine without openssl scripts. Banks' keys are EC P-384 in
OpenSSH format, the format `flower-supernode --auth-supernode-private-key`
and `flwr supernode register` take.

Rerunning is safe: an existing CA is loaded and reused (that is how a bank is
added to a running consortium), an existing private key is never overwritten
(its pair is reused), and a credential with a missing half is an error, never
a silent regeneration. Every private key file ends with mode 0600 and must
never be committed or sent anywhere: a bank keeps its own private key, the
coordinator gets only the `.pub` file.

A private key path that is a symbolic link (or anything but a regular file) is
refused, never followed: setting a key's mode or writing a new key must not
reach a file elsewhere that the link happens to point to.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedcredit.identity.roster import ROSTER_FILE, public_bytes, roster_text

VALID_DAYS = 365
PRIVATE_MODE = 0o600
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)  # POSIX; elsewhere the lstat check alone
_BANK_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


class CredentialsError(Exception):
    """Existing credential files that cannot be reused as they are; the message says how to fix them."""


@dataclass(frozen=True)
class Credentials:
    ca_cert: Path
    superlink_cert: Path
    superlink_key: Path
    bank_keys: dict[str, tuple[Path, Path]]  # bank name -> (private key, public key)
    signing_keys: dict[str, Path] = field(default_factory=dict)  # bank name -> Ed25519 private signing key
    roster: Path | None = None  # the consortium roster (bank name -> public signing key), ships in the app
    notes: tuple[str, ...] = ()  # what was created, reused or re-issued, one sentence each, for the operator


# --- files ---------------------------------------------------------------------------


def _write_public(path: Path, data: bytes) -> Path:
    """Certificates and public keys: replaced atomically, so a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _refuse_link(path: Path) -> None:
    """A private key path must be the key file itself (or nothing yet): never a link, whose target would be used."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(path)
        raise CredentialsError(
            f"{path} is a symbolic link (to {target}): fedcredit does not follow links for private keys, so that "
            "it never changes the mode of, or writes, a file elsewhere. Put the key file itself there instead "
            f"of the link (e.g. `rm {path} && mv {target} {path}`) and rerun"
        )
    if not stat.S_ISREG(st.st_mode):
        raise CredentialsError(f"{path} is not a regular file: move it away and rerun")


def _write_private(path: Path, data: bytes) -> Path:
    """A new private key: O_EXCL so that an existing key (or a link) is never overwritten, mode 0600 from the start."""
    _refuse_link(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, PRIVATE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), PRIVATE_MODE)  # whatever the umask
            f.write(data)
    except BaseException:
        path.unlink(missing_ok=True)  # no half-written key left behind
        raise
    return path


def _read_private(path: Path, load, kind: type = ec.EllipticCurvePrivateKey):
    """Load an existing private key and make its file 0600 (files from older versions may be 0644).

    The file is opened without following a link and its mode set through that descriptor, so
    what is changed is the file that is read, and never a link's target.
    """
    _refuse_link(path)
    try:
        fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
    except OSError as err:  # ELOOP: it became a link after the check
        _refuse_link(path)
        raise CredentialsError(f"{path} cannot be opened ({err.strerror})") from err
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise CredentialsError(f"{path} is not a regular file: move it away and rerun")
        os.fchmod(f.fileno(), PRIVATE_MODE)
        data = f.read()
    try:
        key = load(data, password=None)
    except (ValueError, TypeError) as err:
        raise CredentialsError(
            f"{path} exists but is not an unencrypted private key ({err}); restore it from "
            "your backup, or move it away to create a new one"
        ) from err
    if not isinstance(key, kind):
        raise CredentialsError(
            f"{path} is a {type(key).__name__}, not a {kind.__name__}; move it away to create a new one"
        )
    return key


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _same_key(a: ec.EllipticCurvePublicKey, b: object) -> bool:
    return isinstance(b, ec.EllipticCurvePublicKey) and a.public_numbers() == b.public_numbers()


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


# --- CA ------------------------------------------------------------------------------


def _new_ca(out: Path, name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA384())
    )
    _write_private(out / "ca.key", _pem_key(key))  # first: fails if a key appeared meanwhile
    _write_public(out / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return cert, key


def load_or_make_ca(
    out: Path, name: str = "fedcredit consortium CA"
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, str]:
    """The consortium CA in `out`: reused when ca.crt and ca.key exist (every bank already trusts it).

    Returns the certificate, its key and a sentence for the operator.
    """
    crt_path, key_path = out / "ca.crt", out / "ca.key"
    _refuse_link(key_path)
    if not crt_path.exists() and not key_path.exists():
        cert, key = _new_ca(out, name)
        return cert, key, f"created a new CA {crt_path} (give it to every bank) and {key_path}"
    if not key_path.exists():
        raise CredentialsError(
            f"{crt_path} exists but {key_path} is missing: restore ca.key from your backup to add banks or "
            f"re-issue the SuperLink certificate. To start a new consortium instead, move {crt_path} away and "
            "rerun; every bank then needs the new ca.crt."
        )
    if not crt_path.exists():
        raise CredentialsError(
            f"{key_path} exists but {crt_path} is missing: copy ca.crt back from any bank or from your backup. "
            f"To start a new consortium instead, move {key_path} away and rerun; every bank then needs the new "
            "ca.crt."
        )
    key = _read_private(key_path, serialization.load_pem_private_key)
    try:
        cert = x509.load_pem_x509_certificate(crt_path.read_bytes())
    except ValueError as err:
        raise CredentialsError(f"{crt_path} is not a PEM certificate ({err}); copy ca.crt back from any bank") from err
    if not _same_key(key.public_key(), cert.public_key()):
        raise CredentialsError(
            f"{key_path} is not the key of {crt_path}: they come from different runs; put the "
            "matching ca.crt (every bank has a copy) next to ca.key"
        )
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC):
        raise CredentialsError(
            f"the CA {crt_path} expired on {cert.not_valid_after_utc:%Y-%m-%d}: move ca.crt and "
            "ca.key away and rerun to create a new CA, then give the new ca.crt to every bank"
        )
    return cert, key, f"reused the existing CA {crt_path} (banks keep their ca.crt)"


# --- SuperLink -----------------------------------------------------------------------


def _sans(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in names]


def _reissue_reason(
    cert: x509.Certificate, key: ec.EllipticCurvePrivateKey, hosts: list[str], ca_cert: x509.Certificate
) -> str | None:
    """Why an existing SuperLink certificate cannot be kept, or None when it can."""
    if not _same_key(key.public_key(), cert.public_key()):
        return "it was not made for superlink.key"
    try:
        cert.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return "it was signed by another CA"
    if cert.not_valid_after_utc <= dt.datetime.now(dt.UTC) + dt.timedelta(days=1):
        return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
    old = _sans(cert)
    if old != [str(_san(h).value) for h in hosts]:
        return f"--host changed from {old} to {hosts}"
    return None


def _issue_server_cert(
    key: ec.EllipticCurvePrivateKey, hosts: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=VALID_DAYS), ca_cert.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_san(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )


def make_server_cert(
    out: Path, hosts: list[str], ca_cert: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path, str]:
    """The SuperLink's certificate and key; `hosts` are every name and IP banks will dial.

    An existing superlink.key is kept; its certificate is re-issued (same key) only when the
    hosts, the CA or the validity no longer fit. Returns both paths and a sentence for the operator.
    """
    if not hosts:
        raise ValueError("give at least one host name or IP address the banks use to reach the SuperLink")
    crt_path, key_path = out / "superlink.crt", out / "superlink.key"
    _refuse_link(key_path)
    if not key_path.exists():
        if crt_path.exists():
            raise CredentialsError(
                f"{crt_path} exists but {key_path} is missing: restore superlink.key from the "
                f"coordinator's backup, or move {crt_path} away and rerun to issue a new pair"
            )
        key = ec.generate_private_key(ec.SECP384R1())
        _write_private(key_path, _pem_key(key))
        _write_public(
            crt_path, _issue_server_cert(key, hosts, ca_cert, ca_key).public_bytes(serialization.Encoding.PEM)
        )
        return crt_path, key_path, f"created the SuperLink key {key_path} and certificate {crt_path} for {hosts}"
    key = _read_private(key_path, serialization.load_pem_private_key)
    if crt_path.exists():
        try:
            reason = _reissue_reason(x509.load_pem_x509_certificate(crt_path.read_bytes()), key, hosts, ca_cert)
        except ValueError:
            reason = "it is not a PEM certificate"
        if reason is None:
            return crt_path, key_path, f"reused the SuperLink key {key_path} and certificate {crt_path}"
    else:
        reason = "it was missing"
    _write_public(crt_path, _issue_server_cert(key, hosts, ca_cert, ca_key).public_bytes(serialization.Encoding.PEM))
    return (
        crt_path,
        key_path,
        (
            f"re-issued the SuperLink certificate {crt_path} for {hosts} with the existing key "
            f"{key_path} because {reason}; restart the SuperLink with it"
        ),
    )


# --- banks ---------------------------------------------------------------------------


def _openssh_public(key: ec.EllipticCurvePrivateKey, bank: str) -> bytes:
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public + f" {bank}\n".encode()


def bank_keys(out: Path, bank: str) -> tuple[Path, Path, str]:
    """A bank's SuperNode authentication key pair (EC P-384, OpenSSH format), reused when it exists.

    Returns (private key, public key, a sentence for the operator).
    """
    if not _BANK_NAME.fullmatch(bank):
        raise ValueError(
            f"bank name {bank!r} is also a directory name: use letters, digits, '.', '_' or '-' "
            "and start with a letter or digit"
        )
    key_path, pub_path = out / bank / "supernode.key", out / bank / "supernode.key.pub"
    _refuse_link(key_path)
    if not key_path.exists():
        if pub_path.exists():
            raise CredentialsError(
                f"{pub_path} exists but {key_path} is missing: if {bank} made its own key pair, leave out "
                f"--bank {bank} (the coordinator needs only the .pub); otherwise restore the bank's supernode.key, "
                f"or move {pub_path} away (and `flwr supernode unregister` the old key) and rerun to make a new pair"
            )
        key = ec.generate_private_key(ec.SECP384R1())
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
            ),
        )
        _write_public(pub_path, _openssh_public(key, bank))
        return key_path, pub_path, f"{bank}: created a new key pair"
    key = _read_private(key_path, serialization.load_ssh_private_key)
    if not pub_path.exists():
        _write_public(pub_path, _openssh_public(key, bank))  # derived from the key: the same public key as before
        return key_path, pub_path, f"{bank}: reused the existing private key; wrote its missing public key {pub_path}"
    try:
        public = serialization.load_ssh_public_key(pub_path.read_bytes())
    except (ValueError, TypeError, serialization.UnsupportedAlgorithm) as err:
        raise CredentialsError(
            f"{pub_path} is not an OpenSSH public key ({err}); delete it and rerun to write it again from {key_path}"
        ) from err
    if not _same_key(key.public_key(), public):
        raise CredentialsError(
            f"{pub_path} is not the public key of {key_path}: delete {pub_path} and rerun to "
            "write it again from the private key (and register that one)"
        )
    return key_path, pub_path, f"{bank}: reused the existing key pair (never overwritten)"


def make_bank_keys(out: Path, bank: str) -> tuple[Path, Path]:
    """A bank's key pair as (private key, public key); see `bank_keys`."""
    private, public, _ = bank_keys(out, bank)
    return private, public


SIGNING_KEY_FILE = "signing.key"


def signing_key(banks_dir: Path, bank: str) -> tuple[Path, bytes, str]:
    """A bank's Ed25519 signing key (PEM, 0600), made once and never overwritten: (path, public key, note).

    It signs the bank's replies and SecAgg+ keys (`fedcredit.identity`); its
    public half goes on the consortium roster, the private key stays at the bank.
    """
    path = banks_dir / bank / SIGNING_KEY_FILE
    _refuse_link(path)
    if path.exists():
        key = _read_private(path, serialization.load_pem_private_key, Ed25519PrivateKey)
        return path, public_bytes(key), f"{bank}: reused the existing signing key (never overwritten)"
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    _write_private(path, pem)
    return path, public_bytes(key), f"{bank}: created a new signing key"


def write_roster(out: Path) -> Path | None:
    """The roster of every bank with a signing key under `out/banks` (so adding a bank keeps the others)."""
    banks: dict[str, bytes] = {}
    for path in sorted((out / "banks").glob(f"*/{SIGNING_KEY_FILE}")):
        banks[path.parent.name] = public_bytes(
            _read_private(path, serialization.load_pem_private_key, Ed25519PrivateKey)
        )
    if not banks:
        return None
    return _write_public(out / ROSTER_FILE, roster_text(banks).encode())


def make_credentials(out: str | Path, hosts: list[str], banks: list[str]) -> Credentials:
    """Create what is missing in `out` and reuse what exists; `Credentials.notes` says which."""
    out = Path(out)
    ca_cert, ca_key, ca_note = load_or_make_ca(out)
    cert, key, server_note = make_server_cert(out, hosts, ca_cert, ca_key)
    keys, signing, notes = {}, {}, [ca_note, server_note]
    for bank in dict.fromkeys(banks):
        private, public, note = bank_keys(out / "banks", bank)
        keys[bank] = (private, public)
        notes.append(note)
        signing[bank], _, note = signing_key(out / "banks", bank)
        notes.append(note)
    roster = write_roster(out)
    return Credentials(out / "ca.crt", cert, key, keys, signing_keys=signing, roster=roster, notes=tuple(notes))
