"""Run the app through a private local Flower SuperLink and wait for the outcome.

`flwr run` exits 0 even when the run fails, reuses any SuperLink already on
its port, and leaves the SuperLink running. `LocalFlower` gives tests,
benchmarks and comparisons a SuperLink of their own (own FLWR_HOME, own port,
no per-run dependency installation), reads the real run status, and stops
exactly the processes it started.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

APP_DIR = Path(__file__).resolve().parents[2]


@dataclass
class RunResult:
    run_id: str
    status: str
    details: str
    logs: str
    seconds: float

    @property
    def completed(self) -> bool:
        return self.status == "finished:completed"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> Iterator[tuple[int, list[str]]]:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                raw = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            yield int(proc.name), [a.decode(errors="replace") for a in raw.split(b"\0") if a]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def config_string(values: Mapping[str, Any]) -> str:
    """`--run-config` text: strings quoted, booleans lower-case, floats with a decimal point."""
    parts = []
    for key, value in values.items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, str):
            text = "'" + value.replace("'", "") + "'"
        elif isinstance(value, float):
            text = repr(value)
        else:
            text = str(value)
        parts.append(f"{key}={text}")
    return " ".join(parts)


Flwr = Callable[..., subprocess.CompletedProcess]


def submit_run(flwr: Flwr, app_dir: Path, run_config: Mapping[str, Any], extra: Sequence[str] = ()) -> str:
    """`flwr run APP ... --format json`; the run id, or an error with Flower's reason (it exits 0 either way)."""
    args = ["run", str(app_dir), *extra, "--format", "json"]
    if run_config:
        args += ["--run-config", config_string(run_config)]
    submitted = flwr(*args)
    try:
        answer = json.loads(submitted.stdout)
    except json.JSONDecodeError as err:
        raise RuntimeError(f"flwr run printed no JSON: {submitted.stdout}\n{submitted.stderr}") from err
    if not answer.get("success"):
        raise RuntimeError(f"flwr run was refused: {answer.get('error-message')} {submitted.stderr}")
    return str(answer["run-id"])


def wait_for_run(flwr: Flwr, run_id: str, started: float, timeout: float, connection: Sequence[str] = ()) -> RunResult:
    """Poll `flwr list` until the run has finished; its real status and ServerApp log."""
    deadline = time.monotonic() + timeout
    while True:
        info = json.loads(flwr("list", "--run-id", run_id, *connection, "--format", "json").stdout)["runs"][0]
        if info["status"].startswith("finished"):
            break
        if time.monotonic() > deadline:
            flwr("stop", run_id, *connection)
            raise TimeoutError(f"run {run_id} did not finish within {timeout:.0f} s")
        time.sleep(1.0)
    logs = flwr("log", run_id, *connection, "--show").stdout
    return RunResult(run_id, info["status"], str(info.get("status-details", "")), logs, time.monotonic() - started)


class LocalFlower:
    """A private local SuperLink (simulation) for one or more `flwr run`s."""

    def __init__(self, home: str | Path | None = None) -> None:
        self._tmp = None if home else tempfile.TemporaryDirectory(prefix="fedcredit-flwr-")
        self.home = Path(home or self._tmp.name).resolve()  # type: ignore[union-attr]
        self.work = self.home / "work"  # neutral cwd: the ClientApps must import the app from the FAB
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        # flwr starts flower-superlink, flower-superexec and flwr-simulation by name:
        # find those of this interpreter first, even in a venv that is not activated.
        bin_dir = str(Path(sys.executable).parent)
        self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", "")
        self.env.update(
            FLWR_HOME=str(self.home / "flwr"),
            FLWR_LOCAL_SUPERLINK_HTTP_API_PORT=str(_free_port()),
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            TF_CPP_MIN_LOG_LEVEL="3",
        )

    def flwr(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["flwr", *args], env=self.env, cwd=self.work, capture_output=True, text=True, timeout=timeout, check=False
        )

    def run(
        self, run_config: Mapping[str, Any], federation_config: str = "", app_dir: Path = APP_DIR, timeout: float = 1800
    ) -> RunResult:
        """Submit a run, wait until it finishes, return its status and ServerApp log."""
        extra = ["--federation-config", federation_config] if federation_config else []
        started = time.monotonic()
        run_id = submit_run(self.flwr, app_dir, run_config, extra)
        return wait_for_run(self.flwr, run_id, started, timeout)

    def stop(self) -> None:
        """Stop the SuperLink of this FLWR_HOME and the process groups it spawned."""
        marker = str(Path(self.env["FLWR_HOME"]) / "local-superlink")
        links = [
            pid
            for pid, argv in _processes()
            if any(a.endswith("flower-superlink") for a in argv) and any(marker in a for a in argv)
        ]
        execs = [
            pid
            for pid, argv in _processes()
            if any(a.endswith("flower-superexec") for a in argv)
            and "--parent-pid" in argv
            and argv[argv.index("--parent-pid") + 1] in {str(p) for p in links}
        ]
        for pid in links:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:  # gone between listing and signalling
                pass
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and any(_alive(p) for p in links):
            time.sleep(0.2)
        for pid in links:
            if _alive(pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pgid in execs:  # Ray agents of an aborted run ignore SIGTERM
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> LocalFlower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()
