"""The `fedcredit` command line a newcomer meets: --version, --help with defaults and an example that works,
and argument checks before nginx (these tests pass the same on a machine with or without nginx)."""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import shlex
import shutil
import tomllib
from pathlib import Path

import pytest

import fedcredit
from fedcredit.cli import COMMANDS, build_parser, main
from fedcredit.core.config import app_defaults
from fedcredit.deploy import proxy
from fedcredit.federation.outputs import FILES

REPO = Path(__file__).resolve().parents[1]


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


# --- --version ---------------------------------------------------------------------------------------------


def _version_output(capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def test_version_prints_the_installed_version(capsys):
    assert _version_output(capsys) == f"fedcredit {importlib.metadata.version('fedcredit')}\n"


def test_version_without_installed_metadata_is_the_package_version(capsys, monkeypatch):
    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", not_installed)
    assert _version_output(capsys) == f"fedcredit {fedcredit.__version__}\n"


def test_package_version_is_the_pyproject_version():
    with open(REPO / "pyproject.toml", "rb") as f:
        assert tomllib.load(f)["project"]["version"] == fedcredit.__version__


# --- --help: defaults and one example ----------------------------------------------------------------------


def _help(capsys, monkeypatch, *argv: str) -> str:
    monkeypatch.setenv("COLUMNS", "1000")  # one line per option: a default is never wrapped
    with pytest.raises(SystemExit) as stop:
        main([*argv, "--help"])
    assert stop.value.code == 0
    return capsys.readouterr().out


def _subparser(command: str) -> argparse.ArgumentParser:
    parser = build_parser([command])
    (sub,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _meaningful(action: argparse.Action) -> bool:
    """An option whose default is a value the user gets (not "not given")."""
    return (
        bool(action.option_strings)
        and not action.required
        and action.default not in (None, "", [], (), False, argparse.SUPPRESS)
    )


def test_top_level_help_lists_every_command_and_an_example(capsys, monkeypatch):
    out = _help(capsys, monkeypatch)
    assert all(name in out for name in COMMANDS) and "--version" in out
    assert f"example: {importlib.import_module('fedcredit.cli').EXAMPLE}" in out


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_command_help_shows_its_defaults_and_an_example(capsys, monkeypatch, command):
    out = _help(capsys, monkeypatch, command)
    example = importlib.import_module(COMMANDS[command][0]).EXAMPLE
    assert f"\nexample: {example}\n" in out and example.startswith(f"fedcredit {command} ")
    for noise in ("(default: None)", "(default: )", "(default: [])", "(default: False)"):
        assert noise not in out
    options = [a for a in _subparser(command)._actions if a.option_strings and a.dest != "help"]
    for action in options:
        if _meaningful(action):
            shown = " ".join(map(str, action.default)) if isinstance(action.default, list) else str(action.default)
            line = next(line for line in out.splitlines() if action.help and action.help.split("%")[0] in line)
            said = "(default" in action.help  # the help text says it in words, e.g. "(default: stdout)"
            assert ("(default: " if said else f"(default: {shown})") in line, (action.option_strings, line)
    if any(_meaningful(a) or (a.help and "(default:" in a.help) for a in options):
        assert "(default: " in out
    else:  # a command without options (RUN_DIR only) has no default to show
        assert command in ("report", "baseline") and options == []


def test_optional_values_without_a_default_say_what_happens_without_them():
    for command in COMMANDS:
        for action in _subparser(command)._actions:
            if action.option_strings and action.default in ("", None) and not action.required and action.help:
                assert "(default: " in action.help, (command, action.option_strings)


# --- each example is one the command accepts ---------------------------------------------------------------


def _example(command: str) -> list[str]:
    argv = shlex.split(importlib.import_module(COMMANDS[command][0]).EXAMPLE)
    assert argv[0] == "fedcredit" and argv[1] == command
    return argv[1:]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_example_parses(command):
    argv = _example(command)
    args = build_parser(argv).parse_args(argv)
    assert args.command == command


def test_examples_name_the_files_a_run_writes():
    assert app_defaults(REPO)["output-dir"] == "outputs"  # examples write outputs/<run>
    for command in ("report", "baseline", "predict"):
        assert _example(command)[1].startswith("outputs/<run>")
    model = Path(_example("predict")[1]).relative_to("outputs/<run>")
    assert str(model) in FILES


def test_split_validate_certs_proxy_examples_run_in_order(tmp_path, monkeypatch, capsys, nginx_lookups):
    monkeypatch.chdir(tmp_path)
    for command in ("split", "validate", "certs", "proxy"):
        assert main(_example(command)) == 0, (command, capsys.readouterr())
    predict_input = Path(_example("predict")[2])
    assert predict_input.exists()  # the hold-out file the split example wrote
    assert (tmp_path / "coordinator" / "nginx.conf").exists()


def test_compare_example_plans_runs():
    from fedcredit.cli import compare

    argv = _example("compare")
    assert len(compare.plan(build_parser(argv).parse_args(argv))) == 2


def test_demo_example_passes_the_argument_checks(tmp_path, monkeypatch, capsys, nginx_lookups):
    monkeypatch.chdir(tmp_path)
    assert main(_example("demo")) == 2  # stops only because nginx is absent here
    assert capsys.readouterr().err.startswith("error: nginx is not installed")
    assert nginx_lookups == ["nginx"] and list(tmp_path.iterdir()) == []
