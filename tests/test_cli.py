"""The `fedcredit` command line a newcomer meets: argument checks come before nginx."""

from __future__ import annotations

import shutil

import pytest

from fedcredit.cli import main
from fedcredit.deploy import proxy


@pytest.fixture()
def nginx_lookups(monkeypatch):
    """nginx absent, whatever this machine has; the list records each time someone looked for it."""
    looked: list[str] = []
    real_which = shutil.which
    monkeypatch.delenv("FEDCREDIT_NGINX", raising=False)
    monkeypatch.setattr(shutil, "which", lambda cmd, *a, **k: None if cmd == "nginx" else real_which(cmd, *a, **k))

    def find_nginx() -> None:
        looked.append("nginx")
        return None

    monkeypatch.setattr(proxy, "find_nginx", find_nginx)
    return looked


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--banks", "0"], "error: need at least one bank"),
        (["--banks", "500"], "error: partitioning 'region' cannot give 500 banks"),
        (["--rounds", "0"], "error: --rounds 0: run config 'num-server-rounds' = 0 is out of range"),
    ],
)
def test_demo_checks_its_arguments_before_looking_for_nginx(tmp_path, capsys, nginx_lookups, args, message):
    work = tmp_path / "demo"
    assert main(["demo", *args, "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message) and "\n" not in err
    assert "nginx" not in err and nginx_lookups == []
    assert not work.exists()


def test_demo_without_nginx_says_how_to_install_it_before_writing_anything(tmp_path, capsys, nginx_lookups):
    work = tmp_path / "demo"
    assert main(["demo", "--banks", "2", "--rounds", "1", "--workdir", str(work)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: nginx is not installed") and "apt-get install nginx" in err
    assert nginx_lookups == ["nginx"]
    assert not work.exists()
