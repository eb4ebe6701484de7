"""Secure mode against plain mode, and how far honest updates reach (to set privacy.max-update-norm).

The real ServerApp logic drives the real ClientApp (through its mods) in this
process (`fedcredit.deploy.inprocess`), default config (region split, 5
rounds, seed 42) unless changed with --set. For each federation size: the
plain run's honest update norms (each bank's distance from the global model,
every round), hold-out AUC and wall time; then the same run in secure mode.

    python benchmarks/secure_mode.py [--banks 2 4 9] [--set local-epochs=5 ...]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time

import numpy as np

from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, server
from fedcredit.federation.history import History


class NormSpy(InProcessGrid):
    """Records each honest bank's update norm from its plain train replies."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.norms: list[float] = []

    def send_and_receive(self, messages, *, timeout=None):
        messages = list(messages)
        glob = {
            m.metadata.dst_node_id: m.content[protocol.ARRAYS] for m in messages if m.metadata.message_type == "train"
        }
        replies = super().send_and_receive(messages, timeout=timeout)
        for r in replies:
            node = r.metadata.src_node_id
            if node in glob and not r.has_error():
                mine, start = r.content[protocol.ARRAYS].to_numpy_ndarrays(), glob[node].to_numpy_ndarrays()
                self.norms.append(protocol.update_distance(mine, start))
        return replies


def holdout_auc(history: History) -> float:
    """The final global model's hold-out AUC (NaN when undefined)."""
    last = history.last_round()
    auc = last.holdout_auc if last is not None else None
    return float("nan") if auc is None else auc


def run(config: dict, banks: int, grid_class=InProcessGrid) -> tuple[History, float, InProcessGrid]:
    with tempfile.TemporaryDirectory() as out:
        config = {**config, "output-dir": out, "personalize.epochs": 0}
        grid = grid_class(config, banks)
        started = time.monotonic()
        with serverapp_identity():
            history = server.run(grid, config, f"secure-{banks}", APP_DIR)
        return history, time.monotonic() - started, grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--banks", nargs="+", type=int, default=[2, 4, 9])
    parser.add_argument("--set", nargs="*", default=[], help="run-config overrides key=value (numbers as numbers)")
    args = parser.parse_args()
    logging.getLogger("flwr").setLevel(logging.WARNING)
    config: dict = {}
    for item in args.set:
        key, value = item.split("=", 1)
        try:
            config[key] = int(value) if value.isdigit() else float(value)
        except ValueError:
            config[key] = value
    print(f"config overrides: {config or 'none'}")
    print("| banks | honest update norm min / median / max | hold-out AUC plain | secure | s plain | s secure |")
    print("| ---: | --- | ---: | ---: | ---: | ---: |")
    for banks in args.banks:
        plain, t_plain, spy = run(config, banks, NormSpy)
        secure, t_secure, _ = run({**config, "privacy.secure-aggregation": True}, banks)
        norms = np.array(spy.norms)
        print(
            f"| {banks} | {norms.min():.2f} / {np.median(norms):.2f} / {norms.max():.2f} "
            f"| {holdout_auc(plain):.4f} | {holdout_auc(secure):.4f} "
            f"| {t_plain:.1f} | {t_secure:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
