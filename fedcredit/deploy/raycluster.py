"""A two-node Ray cluster on this host, for running the simulation on an existing cluster.

Flower's simulation joins whatever cluster `RAY_ADDRESS` names (it calls `ray.init`
without an address, and Ray reads the variable). `LocalRayCluster` starts a head
and one worker node with `ray start --block` in their own process groups, their
own temporary directory and free ports, so a test can prove ClientApps ran on both
nodes; on exit it kills those process groups only. `ray stop` is never used: it
stops every Ray cluster of the user on the host, other runs' included.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fedcredit.deploy.localrun import _free_port


def _ray_cli() -> str:
    """The `ray` of this interpreter, so the cluster runs the same Ray as the driver."""
    here = Path(sys.executable).parent / "ray"
    return str(here) if here.exists() else "ray"


class LocalRayCluster:
    """A head node and one worker node (`num_cpus` each) that exist only inside the `with` block."""

    def __init__(self, num_cpus: int = 1, timeout: float = 90.0) -> None:
        self.num_cpus = num_cpus
        self.timeout = timeout
        # Short path: Ray's socket paths under the temp dir must stay below the 107-byte AF_UNIX limit.
        self.temp_dir = Path(tempfile.mkdtemp(prefix="fcray-", dir="/tmp"))
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self._procs: list[subprocess.Popen] = []
        self.pgids: list[int] = []  # one process group per node: what stop() kills, and nothing else
        self._logs: list[Path] = []

    def _start(self, name: str, args: list[str]) -> None:
        """`ray start --block ...` in a new session: its raylet, GCS and workers share its process group."""
        ports = {
            "--node-manager-port": _free_port(),
            "--object-manager-port": _free_port(),
            "--dashboard-agent-listen-port": _free_port(),
            "--dashboard-agent-grpc-port": _free_port(),
            "--runtime-env-agent-port": _free_port(),
            "--metrics-export-port": _free_port(),
        }
        argv = [_ray_cli(), "start", "--block", *args, "--num-cpus", str(self.num_cpus), "--disable-usage-stats"]
        argv += [str(x) for kv in ports.items() for x in kv]
        log = self.temp_dir / f"{name}.log"
        self._logs.append(log)
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
        env.pop("RAY_ADDRESS", None)
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=self.temp_dir
            )
        self._procs.append(proc)
        self.pgids.append(proc.pid)

    def _wait_for_nodes(self, count: int) -> None:
        """Until the cluster reports `count` alive nodes (ray status through the GCS), or fail with the logs."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in self._procs):
                break
            status = subprocess.run(
                [_ray_cli(), "status", "--address", self.address], capture_output=True, text=True, check=False
            )
            if status.returncode == 0 and status.stdout.count("node_") >= count:
                return
            time.sleep(1.0)
        logs = "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in self._logs)
        raise RuntimeError(f"Ray cluster at {self.address} did not reach {count} nodes\n{logs}")

    def start(self) -> LocalRayCluster:
        """Start the head, then the worker node joining it; return once both are up."""
        self._start(
            "head",
            [
                "--head",
                "--port",
                str(self.port),
                "--node-ip-address",
                "127.0.0.1",
                "--temp-dir",
                str(self.temp_dir),
                "--include-dashboard",
                "false",
                "--ray-client-server-port",
                str(_free_port()),
            ],
        )
        self._wait_for_nodes(1)
        self._start("worker", ["--address", self.address, "--node-ip-address", "127.0.0.1"])
        self._wait_for_nodes(2)
        return self

    def stop(self) -> None:
        """Kill the process groups this cluster started (Ray's agents may ignore SIGTERM)."""
        for proc in self._procs:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    proc.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue
        for proc in self._procs:  # children that outlived their `ray start`
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self._procs.clear()
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def running(self) -> list[int]:
        """PIDs still in this cluster's process groups (zombies excluded): empty after stop()."""
        alive = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[2]) in self.pgids:
                alive.append(int(proc.name))
        return alive

    def __enter__(self) -> LocalRayCluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()


_ACTOR_NODES = """
import json, sys, ray
from ray._private import state
ray.init(address=sys.argv[1], logging_level="ERROR", log_to_driver=False)
nodes = [n["NodeID"] for n in ray.nodes()]
actors = {}
for info in state.actors().values():
    actors.setdefault(info["ActorClassName"], []).append(info["Address"]["NodeID"])
print(json.dumps({"nodes": nodes, "actors": actors}))
"""


def actor_nodes(address: str) -> tuple[list[str], dict[str, list[str]]]:
    """The cluster's node ids and, per actor class, the node id each actor of it ran on (dead ones included).

    Read from the GCS in a child process, so the caller never becomes a Ray driver itself.
    """
    import json

    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(
        [sys.executable, "-c", _ACTOR_NODES, address], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    return answer["nodes"], answer["actors"]
