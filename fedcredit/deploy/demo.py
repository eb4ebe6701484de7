"""A whole consortium on this machine, secured as in production (`fedcredit demo`).

Cuts per-bank CSVs from the embedded data set (`fedcredit split`), creates a
CA, the SuperLink certificate and one key pair per bank, starts a SuperLink
with TLS and SuperNode authentication on loopback behind nginx (`fedcredit
proxy`: banks reach only the Fleet API, `flwr` uses the admin listener),
registers the banks' public keys, starts one SuperNode per bank on 127.0.0.1
with its own CSV, runs the app with `flwr run . <connection>` and stops
everything. Needs nginx installed (the system service need not run).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from fedcredit.core.config import parse_run_config
from fedcredit.deploy.consortium import LocalDeployment
from fedcredit.deploy.localrun import RunResult
from fedcredit.deploy.proxy import require_nginx
from fedcredit.deploy.split import cut_builtin, write_split
from fedcredit.federation.history import read_history


@dataclass(frozen=True)
class DemoResult:
    """What the demo did; `run_dir` is gone afterwards when no workdir was given."""

    banks: dict[str, Path]
    run: RunResult
    run_dir: Path | None
    final_auc: float | None  # pooled validation AUC of the last round
    seconds: float


def run_demo(
    banks: int,
    scheme: str = "region",
    rounds: int = 3,
    workdir: str | Path | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> DemoResult:
    """Split, deploy with TLS + node authentication behind nginx, run `rounds` rounds and stop.

    `progress` hears each step. The arguments are checked first, then nginx,
    and only then is anything written or started: PartitionError when the
    banks cannot be cut, ConfigError when `rounds` is out of range, ProxyError
    when nginx is not installed.
    """
    started = time.monotonic()
    cut = cut_builtin(banks, scheme)
    parse_run_config({"num-server-rounds": rounds})
    require_nginx()
    with tempfile.TemporaryDirectory(prefix="fedcredit-demo-") as tmp:
        work = Path(workdir or tmp).resolve()
        csvs = write_split(cut, work / "banks")
        progress(f"banks: {', '.join(f'{n} ({p})' for n, p in csvs.items())}")
        with LocalDeployment(work / "deployment", csvs) as deployment:
            progress(
                f"SuperLink on {deployment.superlink_address} (TLS, SuperNode authentication) behind nginx: "
                f"banks dial {deployment.address} (Fleet API only), flwr uses {deployment.admin_address} "
                f"(Control API only); {len(csvs)} SuperNodes registered and started"
            )
            deployment.wait_for_nodes(len(csvs))
            result = deployment.run({"num-server-rounds": rounds, "output-dir": str(work / "outputs")})
        run_dir, auc = None, None
        if result.completed:
            run_dir = max((work / "outputs").iterdir(), key=lambda p: p.stat().st_mtime)
            auc = read_history(run_dir / "history.json").last_round().pooled_auc
        return DemoResult(csvs, result, run_dir, auc, time.monotonic() - started)
