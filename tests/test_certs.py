"""Rerunning `fedcredit certs` must never replace the consortium's CA or anyone's private key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedcredit.cli import main
from fedcredit.deploy.certs import CredentialsError, make_bank_keys, make_credentials

HOSTS = ["localhost", "127.0.0.1"]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _private_keys(out: Path) -> list[Path]:
    return sorted([out / "ca.key", out / "superlink.key", *(out / "banks").glob("*/supernode.key")])


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def _superlink_signed_by_ca(out: Path) -> bool:
    ca = x509.load_pem_x509_certificate((out / "ca.crt").read_bytes())
    cert = x509.load_pem_x509_certificate((out / "superlink.crt").read_bytes())
    cert.verify_directly_issued_by(ca)  # raises when it is not
    return True


def test_rerun_keeps_every_file_byte_identical(tmp_path):
    out = tmp_path / "certs"
    first = make_credentials(out, HOSTS, ["acme", "bravo"])
    before = _snapshot(out)
    again = make_credentials(out, HOSTS, ["acme", "bravo"])
    assert _snapshot(out) == before
    assert again.bank_keys == first.bank_keys
    assert any("reused the existing CA" in n for n in again.notes)
    assert sum("reused the existing key pair" in n for n in again.notes) == 2


def test_a_new_bank_joins_the_existing_consortium(tmp_path):
    out = tmp_path / "certs"
    make_credentials(out, HOSTS, ["acme", "bravo"])
    before = _snapshot(out)
    creds = make_credentials(out, HOSTS, ["charlie"])
    after = _snapshot(out)
    old_roster = before.pop("roster.toml")  # the roster gains the new bank: the one file that must change
    assert after["roster.toml"] != old_roster
    assert {k: after[k] for k in before} == before  # CA, SuperLink and old banks untouched
    new = {"banks/charlie/supernode.key", "banks/charlie/supernode.key.pub", "banks/charlie/signing.key"}
    assert set(after) - set(before) == new | {"roster.toml"}
    assert creds.ca_cert.read_bytes() == before["ca.crt"]
    assert _superlink_signed_by_ca(out)
    private, public = creds.bank_keys["charlie"]
    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    pub = serialization.load_ssh_public_key(public.read_bytes())
    assert key.public_key().public_numbers() == pub.public_numbers()
    assert _mode(private) == 0o600


def test_new_private_keys_are_0600_whatever_the_umask(tmp_path):
    old = os.umask(0)
    try:
        make_credentials(tmp_path, HOSTS, ["acme"])
    finally:
        os.umask(old)
    assert [_mode(p) for p in _private_keys(tmp_path)] == [0o600] * 3
    assert _mode(tmp_path / "ca.crt") & 0o044  # certificates stay readable


def test_existing_world_readable_keys_end_0600_and_are_not_rewritten(tmp_path):
    make_credentials(tmp_path, HOSTS, ["acme"])
    keys = _private_keys(tmp_path)
    for path in keys:
        os.chmod(path, 0o644)
    before = {p: (p.read_bytes(), p.stat().st_ino) for p in keys}
    make_credentials(tmp_path, HOSTS, ["acme"])
    assert {p: (p.read_bytes(), p.stat().st_ino) for p in keys} == before
    assert [_mode(p) for p in keys] == [0o600] * 3


def test_missing_ca_key_next_to_ca_crt_is_an_error_not_a_new_ca(tmp_path):
    make_credentials(tmp_path, HOSTS, ["acme"])
    (tmp_path / "ca.key").unlink()
    before = _snapshot(tmp_path)
    with pytest.raises(CredentialsError, match=r"ca\.crt exists but .*ca\.key is missing: restore ca\.key"):
        make_credentials(tmp_path, HOSTS, ["acme", "bravo"])
    assert _snapshot(tmp_path) == before


def test_missing_ca_crt_next_to_ca_key_is_an_error(tmp_path):
    make_credentials(tmp_path, HOSTS, [])
    (tmp_path / "ca.crt").unlink()
    with pytest.raises(CredentialsError, match=r"ca\.crt is missing: copy ca\.crt back"):
        make_credentials(tmp_path, HOSTS, [])
    assert not (tmp_path / "ca.crt").exists()


def test_ca_key_of_another_consortium_is_refused(tmp_path):
    make_credentials(tmp_path / "one", HOSTS, [])
    make_credentials(tmp_path / "two", HOSTS, [])
    (tmp_path / "one" / "ca.key").write_bytes((tmp_path / "two" / "ca.key").read_bytes())
    with pytest.raises(CredentialsError, match="is not the key of"):
        make_credentials(tmp_path / "one", HOSTS, [])


def test_bank_public_key_without_its_private_key_is_an_error(tmp_path):
    make_credentials(tmp_path, HOSTS, ["acme"])
    (tmp_path / "banks" / "acme" / "supernode.key").unlink()
    with pytest.raises(
        CredentialsError, match=r"supernode\.key is missing: if acme made its own key pair, leave out --bank acme"
    ):
        make_bank_keys(tmp_path / "banks", "acme")
    assert not (tmp_path / "banks" / "acme" / "supernode.key").exists()


def test_missing_bank_public_key_is_derived_again_from_the_private_key(tmp_path):
    creds = make_credentials(tmp_path, HOSTS, ["acme"])
    private, public = creds.bank_keys["acme"]
    pub_bytes, key_bytes = public.read_bytes(), private.read_bytes()
    public.unlink()
    assert make_bank_keys(tmp_path / "banks", "acme") == (private, public)
    assert public.read_bytes() == pub_bytes
    assert private.read_bytes() == key_bytes


def test_mismatched_bank_public_key_is_refused(tmp_path):
    make_credentials(tmp_path, HOSTS, ["acme", "bravo"])
    banks = tmp_path / "banks"
    (banks / "acme" / "supernode.key.pub").write_bytes((banks / "bravo" / "supernode.key.pub").read_bytes())
    with pytest.raises(CredentialsError, match="is not the public key of"):
        make_bank_keys(banks, "acme")


def test_superlink_certificate_is_reissued_with_the_same_key_when_hosts_change(tmp_path):
    make_credentials(tmp_path, HOSTS, [])
    key, cert = (tmp_path / "superlink.key").read_bytes(), (tmp_path / "superlink.crt").read_bytes()
    creds = make_credentials(tmp_path, [*HOSTS, "coordinator.example.org"], [])
    assert (tmp_path / "superlink.key").read_bytes() == key
    new = x509.load_pem_x509_certificate((tmp_path / "superlink.crt").read_bytes())
    assert new.public_bytes(serialization.Encoding.PEM) != cert
    sans = new.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "coordinator.example.org" in sans.get_values_for_type(x509.DNSName)
    assert _superlink_signed_by_ca(tmp_path)
    assert any("re-issued the SuperLink certificate" in n and "--host changed" in n for n in creds.notes)


def test_superlink_certificate_without_its_key_is_an_error(tmp_path):
    make_credentials(tmp_path, HOSTS, [])
    (tmp_path / "superlink.key").unlink()
    with pytest.raises(CredentialsError, match=r"superlink\.key is missing"):
        make_credentials(tmp_path, HOSTS, [])
    assert not (tmp_path / "superlink.key").exists()


def test_bank_names_cannot_leave_the_output_directory(tmp_path):
    with pytest.raises(ValueError, match="bank name '../evil'"):
        make_credentials(tmp_path, HOSTS, ["../evil"])


def test_cli_rerun_reuses_and_says_so(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--host", "localhost", "--bank", "acme"]) == 0
    first = capsys.readouterr().out
    assert "created a new CA" in first and "acme: created a new key pair" in first
    before = _snapshot(out)
    assert main(["certs", "--out", str(out), "--host", "localhost", "--bank", "acme", "--bank", "bravo"]) == 0
    second = capsys.readouterr().out
    assert "reused the existing CA" in second
    assert "acme: reused the existing key pair" in second and "bravo: created a new key pair" in second
    assert "acme: reused the existing signing key" in second and "Consortium roster" in second
    after = _snapshot(out)
    before.pop("roster.toml")  # gains bravo
    assert {k: after[k] for k in before} == before


def test_cli_reports_a_missing_ca_key_and_fails(tmp_path, capsys):
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--host", "localhost"]) == 0
    (out / "ca.key").unlink()
    assert main(["certs", "--out", str(out), "--host", "localhost", "--bank", "acme"]) == 1
    err = capsys.readouterr().err
    assert "ca.key is missing" in err and "restore ca.key" in err
    assert not (out / "banks").exists()


def _link_key_elsewhere(key: Path, target: Path) -> None:
    """Move `key` to `target` (mode 0644, as a key kept elsewhere might be) and leave a symlink in its place."""
    key.rename(target)
    os.chmod(target, 0o644)
    key.symlink_to(target)


@pytest.mark.parametrize("key", ["ca.key", "superlink.key", "banks/acme/supernode.key"])
def test_symlinked_private_key_is_refused_and_its_target_left_alone(tmp_path, capsys, key):
    out = tmp_path / "certs"
    assert main(["certs", "--out", str(out), "--host", "localhost", "--bank", "acme"]) == 0
    capsys.readouterr()
    target = tmp_path / "elsewhere.key"
    _link_key_elsewhere(out / key, target)
    content = target.read_bytes()
    assert main(["certs", "--out", str(out), "--host", "localhost", "--bank", "acme"]) == 1
    err = capsys.readouterr().err
    assert _mode(target) == 0o644 and target.read_bytes() == content
    assert (out / key).is_symlink()
    assert f"{out / key} is a symbolic link (to {target})" in err
    assert "does not follow links for private keys" in err and f"mv {target} {out / key}" in err


def test_dangling_symlink_is_refused_not_written_through(tmp_path):
    """A link to nowhere in place of ca.key: no new CA is written where it points, and the reason is given."""
    target = tmp_path / "outside" / "ca.key"
    target.parent.mkdir()
    out = tmp_path / "certs"
    out.mkdir()
    (out / "ca.key").symlink_to(target)
    with pytest.raises(CredentialsError, match=r"ca\.key is a symbolic link"):
        make_credentials(out, HOSTS, ["acme"])
    assert not target.exists() and not (out / "ca.crt").exists()


def test_key_replaced_by_the_linked_file_is_reused(tmp_path):
    """The fix the message gives (the file itself in place of the link) works and keeps the CA."""
    make_credentials(tmp_path, HOSTS, [])
    ca = (tmp_path / "ca.crt").read_bytes()
    target = tmp_path / "elsewhere.key"
    _link_key_elsewhere(tmp_path / "ca.key", target)
    with pytest.raises(CredentialsError):
        make_credentials(tmp_path, HOSTS, [])
    (tmp_path / "ca.key").unlink()
    target.rename(tmp_path / "ca.key")
    creds = make_credentials(tmp_path, HOSTS, [])
    assert any("reused the existing CA" in n for n in creds.notes)
    assert (tmp_path / "ca.crt").read_bytes() == ca and _mode(tmp_path / "ca.key") == 0o600


def test_a_private_key_that_is_a_directory_is_refused(tmp_path):
    make_credentials(tmp_path, HOSTS, ["acme"])
    key = tmp_path / "banks" / "acme" / "supernode.key"
    key.unlink()
    key.mkdir()
    with pytest.raises(CredentialsError, match=r"supernode\.key is not a regular file"):
        make_bank_keys(tmp_path / "banks", "acme")


def test_certs_gives_each_bank_a_signing_key_once_and_writes_the_roster(tmp_path):
    from fedcredit.identity.roster import load_roster

    creds = make_credentials(tmp_path, ["127.0.0.1"], ["bank-a", "bank-b"])
    key_a = creds.signing_keys["bank-a"]
    assert stat.S_IMODE(key_a.stat().st_mode) == 0o600
    first = key_a.read_bytes()
    roster = load_roster(creds.roster)
    assert set(roster.banks) == {"bank-a", "bank-b"}
    again = make_credentials(tmp_path, ["127.0.0.1"], ["bank-a", "bank-c"])  # add a bank; never overwrite
    assert again.signing_keys["bank-a"].read_bytes() == first
    assert load_roster(again.roster).banks["bank-a"] == roster.banks["bank-a"]
    assert set(load_roster(again.roster).banks) == {"bank-a", "bank-b", "bank-c"}
