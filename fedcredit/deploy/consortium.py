"""A real deployment on one machine: SuperLink + one SuperNode per bank, TLS and node auth.

Used by `fedcredit demo` and the deployment tests. Every process runs the
same commands a consortium runs on separate machines (see docs/deployment.md);
here they all listen on 127.0.0.1. `LocalDeployment` stops every process it
started, also when a step fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fedcredit.deploy.certs import Credentials, make_bank_keys, make_credentials
from fedcredit.deploy.localrun import APP_DIR, RunResult, _free_port, submit_run, wait_for_run

CONNECTION = "fedcredit-local"


@dataclass
class Bank:
    name: str
    csv: Path
    key: Path | None  # private key; None: the node tries to join without one
    process: subprocess.Popen | None = None
    log: Path | None = None


@dataclass
class LocalDeployment:
    """SuperLink with TLS and SuperNode authentication, banks on 127.0.0.1."""

    workdir: Path
    bank_csvs: Mapping[str, Path]
    # More node-config entries per bank, e.g. {"acme": {"schema-path": "/etc/acme/schema.toml"}}.
    node_configs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)
    credentials: Credentials | None = None
    banks: dict[str, Bank] = field(default_factory=dict)
    superlink: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        self.env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        self.env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        self.address = f"127.0.0.1:{self.port}"

    # --- set-up -------------------------------------------------------------------
    def make_credentials(self) -> Credentials:
        self.credentials = make_credentials(self.workdir / "certs", ["localhost", "127.0.0.1"], list(self.bank_csvs))
        return self.credentials

    def write_flower_config(self) -> Path:
        """The coordinator's Flower config: a TLS connection to this SuperLink."""
        assert self.credentials is not None
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        path = home / "config.toml"
        path.write_text(
            f'[superlink]\ndefault = "{CONNECTION}"\n\n'
            f'[superlink.{CONNECTION}]\naddress = "{self.address}"\n'
            f'root-certificates = "{self.credentials.ca_cert}"\n'
        )
        return path

    def start_superlink(self) -> None:
        assert self.credentials is not None
        c = self.credentials
        log = self.workdir / "superlink.log"
        self.superlink = subprocess.Popen(
            [
                "flower-superlink",
                "--ssl-ca-certfile",
                str(c.ca_cert),
                "--ssl-certfile",
                str(c.superlink_cert),
                "--ssl-keyfile",
                str(c.superlink_key),
                "--enable-supernode-auth",
                "--disable-runtime-dependency-installation",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--database",
                str(self.workdir / "superlink.db"),
            ],
            env=self.env,
            cwd=self.workdir,
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_for_superlink()

    def _wait_for_superlink(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.superlink is not None and self.superlink.poll() is not None:
                raise RuntimeError(f"SuperLink exited: {(self.workdir / 'superlink.log').read_text()[-2000:]}")
            done = self.flwr("supernode", "list", CONNECTION, "--format", "json", timeout=30)
            try:
                if json.loads(done.stdout).get("success"):  # flwr exits 0 either way
                    return
            except json.JSONDecodeError:
                pass
            time.sleep(1)
        raise TimeoutError(f"SuperLink did not answer on {self.address} within {timeout:.0f} s")

    def register(self, bank: str) -> dict[str, Any]:
        """`flwr supernode register`: only registered public keys may join."""
        assert self.credentials is not None
        pub = self.credentials.bank_keys[bank][1]
        done = self.flwr("supernode", "register", str(pub), CONNECTION, "--format", "json")
        answer = json.loads(done.stdout or "{}")
        if not answer.get("success"):
            raise RuntimeError(f"registering {bank} failed: {done.stdout} {done.stderr}")
        return answer

    def start_supernode(self, bank: str, key: Path | None = None, csv: Path | None = None) -> Bank:
        """Start (or restart) a bank's SuperNode; key defaults to the bank's own."""
        assert self.credentials is not None
        key = key if key is not None else self.credentials.bank_keys.get(bank, (None,))[0]
        csv = csv if csv is not None else self.bank_csvs[bank]
        entries = {"data-path": str(csv), "bank-name": bank, **self.node_configs.get(bank, {})}
        node_config = " ".join(f'{k}="{v}"' for k, v in entries.items())
        args = [
            "flower-supernode",
            "--superlink",
            self.address,
            "--root-certificates",
            str(self.credentials.ca_cert),
            "--node-config",
            node_config,
            "--port",
            str(_free_port()),
            "--max-retries",
            "5",
        ]
        if key is not None:
            args += ["--auth-supernode-private-key", str(key)]
        log = self.workdir / f"supernode-{bank}.log"
        proc = subprocess.Popen(
            args, env=self.env, cwd=self.workdir, stdout=log.open("a"), stderr=subprocess.STDOUT, start_new_session=True
        )
        self.banks[bank] = Bank(bank, csv, key, proc, log)
        return self.banks[bank]

    def add_unregistered_bank(self, name: str) -> Bank:
        """A node with a valid key pair that nobody registered: it must be refused."""
        key, _ = make_bank_keys(self.workdir / "certs" / "unregistered", name)
        return self.start_supernode(name, key=key, csv=next(iter(self.bank_csvs.values())))

    def start(self) -> LocalDeployment:
        self.make_credentials()
        self.write_flower_config()
        self.start_superlink()
        for bank in self.bank_csvs:
            self.register(bank)
            self.start_supernode(bank)
        return self

    # --- running ------------------------------------------------------------------
    def flwr(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["flwr", *args],
            env=self.env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def connected_nodes(self) -> list[dict[str, Any]]:
        listed = json.loads(self.flwr("supernode", "list", CONNECTION, "--format", "json").stdout or "{}")
        return [n for n in listed.get("nodes", []) if str(n.get("status", "")).lower() == "online"]

    def wait_for_nodes(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.connected_nodes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {count} SuperNodes online after {timeout:.0f} s")
            time.sleep(1)

    def submit(self, run_config: Mapping[str, Any], app_dir: Path = APP_DIR) -> str:
        return submit_run(self.flwr, app_dir, run_config, [CONNECTION])

    def wait(self, run_id: str, started: float, timeout: float = 1200) -> RunResult:
        return wait_for_run(self.flwr, run_id, started, timeout, [CONNECTION])

    def run(self, run_config: Mapping[str, Any], timeout: float = 1200) -> RunResult:
        started = time.monotonic()
        return self.wait(self.submit(run_config), started, timeout)

    # --- tear-down ----------------------------------------------------------------
    def kill_bank(self, bank: str) -> None:
        proc = self.banks[bank].process
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)

    def stop(self) -> None:
        procs = [b.process for b in self.banks.values() if b.process is not None] + [self.superlink]
        for proc in procs:
            if proc is not None and proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 15
        for proc in procs:
            if proc is None:
                continue
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:  # the whole session: ServerApp/ClientApp subprocesses included
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def __enter__(self) -> LocalDeployment:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
