"""The layout is the architecture: dependencies between the subpackages point one way."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "fedcredit"
# What each subpackage may import from fedcredit (besides itself): lower layers only.
ALLOWED = {
    "core": set(),
    "identity": {"core"},
    "federation": {"core", "identity"},
    "risk": {"core", "federation", "identity"},
    "deploy": {"core", "federation", "identity"},
    "cli": {"core", "federation", "risk", "deploy", "identity"},
}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("fedcredit."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "fedcredit":
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("fedcredit."))
    return found


def test_no_module_imports_upward():
    wrong = []
    for layer, allowed in ALLOWED.items():
        for path in sorted((PACKAGE / layer).glob("*.py")):
            for target in _imports(path) - allowed - {layer}:
                wrong.append(f"{path.relative_to(PACKAGE.parent)} imports fedcredit.{target}")
    assert not wrong, wrong


def test_core_has_no_flower_import():
    for path in sorted((PACKAGE / "core").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert "import flwr" not in text and "from flwr" not in text, path


def test_every_python_file_sits_in_a_layer():
    assert {p.name for p in PACKAGE.glob("*.py")} == {"__init__.py"}
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == {*ALLOWED, "data"}
