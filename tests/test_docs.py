"""The docs: links between pages resolve, the README's lines are the commands CI and the CLI run,
the SuperNode's systemd unit is a command Flower's own parser accepts, and no page stops
processes by a name pattern."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
PAGES = [README, REPO / "CONTRIBUTING.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
UNIT = REPO / "docs" / "fedcredit-supernode.service"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)


def _prose(text: str) -> str:
    return FENCE.sub("", text)


def _anchors(page: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for line in _prose(page.read_text(encoding="utf-8")).splitlines():
        if heading := re.match(r"#{1,6} (.+)", line):
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).strip().lower())
            found.add(slug.replace(" ", "-"))
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_between_pages_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no file {file}")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no heading #{anchor} in {file.relative_to(REPO)}")
    assert not broken, broken


def test_the_readme_is_a_front_door_whose_lines_are_the_real_ones():
    readme = README.read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 150
    assert "```bash\npip install -e . && flwr run .\n```" in readme
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert 'pip install -e ".[test]"' in ci and "python -m pytest" in ci  # what CI runs for the tests
    assert '```bash\npip install -e ".[test]" && python -m pytest\n```' in readme
    report = re.search(r"```bash\nfedcredit report (\S+)\n```", readme)
    assert report, "the README lacks the line that opens a run's report"
    from fedcredit.cli import COMMANDS
    from fedcredit.cli import report as report_cli

    assert "report" in COMMANDS
    parser = argparse.ArgumentParser()
    report_cli.add_arguments(parser)
    assert parser.parse_args([report.group(1)]).run_dir == report.group(1)
    for page in ("docs/configuration.md", "docs/deployment.md", "docs/security.md", "docs/model-risk.md"):
        assert f"]({page})" in readme, f"the README's table does not send anyone to {page}"


def test_no_page_or_module_stops_processes_by_name():
    files = [*PAGES, *sorted((REPO / "fedcredit").rglob("*.py")), *sorted((REPO / "benchmarks").glob("*.py"))]
    found = [
        str(f.relative_to(REPO)) for f in files if re.search(r"\b(pkill|killall)\b", f.read_text(encoding="utf-8"))
    ]
    assert not found, found


def _unit() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").replace("\\\n", " ").splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_supernode_unit_runs_a_command_flower_accepts():
    from flwr.common.config import parse_config_args
    from flwr.supernode.cli.flower_supernode import _parse_args_run_supernode

    unit = _unit()
    (exec_start,) = unit["ExecStart"]
    argv = shlex.split(exec_start)  # systemd's quoting, for this line: single quotes around double quotes
    assert Path(argv[0]).name == "flower-supernode"
    args = _parse_args_run_supernode().parse_args(argv[1:])
    assert args.root_certificates and args.auth_supernode_private_key and not args.insecure
    assert not args.runtime_dependency_install  # the SuperNode installs nothing at run time
    node_config = parse_config_args([args.node_config])
    assert {"data-path", "bank-name", "model-dir"} <= node_config.keys()
    assert unit["User"] != ["root"] and unit["Restart"] == ["on-failure"]
    env = dict(value.split("=", 1) for value in unit["Environment"])
    # The SuperNode starts flower-superexec and flwr-clientapp by name: its own bin comes first.
    assert env["PATH"].split(":")[0] == str(Path(argv[0]).parent)
    assert str(node_config["model-dir"]).startswith(env["FLWR_HOME"].rsplit("/", 1)[0])  # its state directory
