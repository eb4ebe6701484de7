"""What software a run used: the model file's specification a validator must be able to reproduce.

Versions of the packages the model depends on, Python's, the app's git
commit where the app directory is a git checkout (a FAB unpacked by Flower
is not), and always the SHA-256 of the code itself (the `fedcredit`
package and the two app modules), which identifies it in every mode.
"""

from __future__ import annotations

import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = ("fedcredit", "flwr", "tensorflow", "keras", "numpy", "pandas", "scikit-learn")
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def code_sha256(app_dir: Path | None = None) -> str:
    """Digest over the paths and bytes of fedcredit's .py and .toml files (and the app modules)."""
    files = sorted(p for p in PACKAGE_DIR.rglob("*") if p.suffix in (".py", ".toml") and "__pycache__" not in p.parts)
    if app_dir is not None:
        files += [p for p in (Path(app_dir) / "client_app.py", Path(app_dir) / "server_app.py") if p.is_file()]
    digest = hashlib.sha256()
    for path in files:
        name = path.relative_to(PACKAGE_DIR.parent if path.is_relative_to(PACKAGE_DIR) else path.parent).as_posix()
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def git_commit(app_dir: Path | None) -> str | None:
    """HEAD of the app directory's git checkout ("+ changes" when the work tree differs); None otherwise."""
    if app_dir is None or not (Path(app_dir) / ".git").exists():
        return None
    try:
        head = subprocess.run(
            ["git", "-C", str(app_dir), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(app_dir), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head} + changes" if dirty else head


def software(app_dir: Path | None = None) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    out["code-sha256"] = code_sha256(app_dir)
    commit = git_commit(app_dir)
    if commit is not None:
        out["app-commit"] = commit
    return out
