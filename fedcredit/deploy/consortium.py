"""A real deployment on one machine: SuperLink behind nginx + one SuperNode per bank, TLS and node auth.

Used by `fedcredit demo` and the deployment tests. Every process runs the
same commands a consortium runs on separate machines (see docs/deployment.md);
here they all listen on 127.0.0.1: the SuperLink on its own port, nginx's
banks' listener (Fleet API only) that the SuperNodes dial, and nginx's admin
listener (Control API only) that `flwr` uses. `LocalDeployment` stops every
process it started, also when a step fails.
"""

from __future__ import annotations

import json
import os
import shutil
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
from fedcredit.deploy.proxy import ProxySettings, nginx_command, write_nginx_config
from fedcredit.identity.egress import EGRESS_FILE
from fedcredit.identity.roster import ROSTER_FILE, file_sha256


def _descendants(pid: int) -> list[int]:
    """Every process below `pid` (children first found through /proc), wherever their session."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


CONNECTION = "fedcredit-local"  # the coordinator's connection: nginx's admin listener
# What a partner bank holding ca.crt could configure: nginx's banks' listener, where the Control API is refused.
BANK_SIDE_CONNECTION = "fedcredit-bank-side"


@dataclass
class Bank:
    name: str
    csv: Path
    key: Path | None  # private key; None: the node tries to join without one
    process: subprocess.Popen | None = None
    log: Path | None = None


@dataclass
class LocalDeployment:
    """SuperLink with TLS and SuperNode authentication behind nginx, banks on 127.0.0.1."""

    workdir: Path
    bank_csvs: Mapping[str, Path]
    # More node-config entries per bank, e.g. {"acme": {"schema-path": "/etc/acme/schema.toml"}}.
    node_configs: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    port: int = field(default_factory=_free_port)  # the SuperLink's own (loopback, reached only through nginx)
    bank_port: int = field(default_factory=_free_port)  # nginx's banks' listener: Fleet API only
    admin_port: int = field(default_factory=_free_port)  # nginx's admin listener: Control API only
    # A consortium roster: the app (copied to workdir/app) ships it, each bank pins it, signs and logs its replies.
    identity: bool = False
    credentials: Credentials | None = None
    banks: dict[str, Bank] = field(default_factory=dict)
    superlink: subprocess.Popen | None = None
    proxy: subprocess.Popen | None = None

    def __post_init__(self) -> None:
        self.workdir = Path(self.workdir).resolve()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = dict(os.environ)
        self.env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + self.env.get("PATH", "")
        self.env["FLWR_HOME"] = str(self.workdir / "flwr-home")
        self.env["TF_CPP_MIN_LOG_LEVEL"] = "3"
        self.superlink_address = f"127.0.0.1:{self.port}"
        self.address = f"127.0.0.1:{self.bank_port}"  # what the banks dial
        self.admin_address = f"127.0.0.1:{self.admin_port}"  # what `flwr` dials
        self.proxy_dir = self.workdir / "proxy"
        self.app_dir = APP_DIR

    # --- set-up -------------------------------------------------------------------
    def make_credentials(self) -> Credentials:
        self.credentials = make_credentials(self.workdir / "certs", ["localhost", "127.0.0.1"], list(self.bank_csvs))
        if self.identity:
            self.app_dir = self._app_with_roster()
        return self.credentials

    def _app_with_roster(self) -> Path:
        """A copy of the app that ships the consortium roster (never written into the source tree)."""
        assert self.credentials is not None and self.credentials.roster is not None
        app = self.workdir / "app"
        skip = shutil.ignore_patterns(".git", "tests", "benchmarks", "__pycache__", "*.egg-info", ".*cache", "outputs")
        shutil.copytree(APP_DIR, app, ignore=skip, dirs_exist_ok=True)
        shutil.copy(self.credentials.roster, app / ROSTER_FILE)
        return app

    def egress_log(self, bank: str) -> Path:
        """Where `bank` keeps its egress log in this deployment (node config egress-log)."""
        return self.workdir / "banks" / bank / EGRESS_FILE

    def _identity_config(self, bank: str) -> dict[str, str]:
        if not self.identity or self.credentials is None or bank not in self.credentials.signing_keys:
            return {}
        assert self.credentials.roster is not None
        return {
            "signing-key": str(self.credentials.signing_keys[bank]),
            "roster-sha256": file_sha256(self.credentials.roster),
            "egress-log": str(self.egress_log(bank)),
        }

    def write_flower_config(self) -> Path:
        """The coordinator's Flower config: TLS connections to the admin listener and (tests) the banks' one."""
        assert self.credentials is not None
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        path = home / "config.toml"
        text = f'[superlink]\ndefault = "{CONNECTION}"\n'
        for name, address in ((CONNECTION, self.admin_address), (BANK_SIDE_CONNECTION, self.address)):
            text += f'\n[superlink.{name}]\naddress = "{address}"\nroot-certificates = "{self.credentials.ca_cert}"\n'
        path.write_text(text)
        return path

    def proxy_settings(self) -> ProxySettings:
        assert self.credentials is not None
        return ProxySettings(
            certs=self.credentials.ca_cert.parent,
            workdir=self.proxy_dir,
            superlink=self.superlink_address,
            bank_listen=self.address,
            admin_listen=self.admin_address,
        )

    def start_proxy(self) -> None:
        """nginx in front of the SuperLink, as `fedcredit proxy` writes it for a consortium."""
        conf = write_nginx_config(self.proxy_settings(), self.proxy_dir / "nginx.conf")
        self.proxy = subprocess.Popen(
            nginx_command(conf, self.proxy_dir),
            cwd=self.proxy_dir,
            stdout=(self.proxy_dir / "nginx.out").open("w"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

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
            stdout=log.open("a"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill_superlink(self) -> None:
        """The coordinator's host going down: the SuperLink and every process it started (the ServerApp), at once."""
        proc = self.superlink
        if proc is None or proc.poll() is not None:
            return
        doomed = [proc.pid, *_descendants(proc.pid)]
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=30)

    def restart_superlink(self) -> None:
        """Start it again on the same database (registered banks keep their node ids) and wait until it answers."""
        self.start_superlink()
        self._wait_until_ready()

    def _wait_until_ready(self, timeout: float = 60) -> None:
        """Until `flwr` reaches the SuperLink through nginx's admin listener."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.superlink is not None and self.superlink.poll() is not None:
                raise RuntimeError(f"SuperLink exited: {(self.workdir / 'superlink.log').read_text()[-2000:]}")
            if self.proxy is not None and self.proxy.poll() is not None:
                raise RuntimeError(f"nginx exited: {(self.proxy_dir / 'nginx.out').read_text()[-2000:]}")
            done = self.flwr("supernode", "list", CONNECTION, "--format", "json", timeout=30)
            try:
                if json.loads(done.stdout).get("success"):  # flwr exits 0 either way
                    return
            except json.JSONDecodeError:
                pass
            time.sleep(1)
        raise TimeoutError(
            f"the SuperLink ({self.superlink_address}) did not answer through nginx ({self.admin_address}) "
            f"within {timeout:.0f} s; see {self.workdir / 'superlink.log'} and {self.proxy_dir / 'logs'}"
        )

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
        entries = {
            "data-path": str(csv),
            "bank-name": bank,
            **self._identity_config(bank),
            **self.node_configs.get(bank, {}),
        }
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
        self.start_proxy()
        self._wait_until_ready()
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

    def submit(self, run_config: Mapping[str, Any], app_dir: Path | None = None) -> str:
        return submit_run(self.flwr, app_dir or self.app_dir, run_config, [CONNECTION])

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
        procs = [b.process for b in self.banks.values() if b.process is not None] + [self.proxy, self.superlink]
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
