"""Secure mode with one bank corrupting its masked vector: does the run go on, and what does the model lose?

    python benchmarks/secure_corruption.py --sum train --banks 4 9
    python benchmarks/secure_corruption.py --sum none --banks 4 9      # the honest reference

In process (the real ServerApp against the real ClientApp handlers), default
config, `privacy.secure-aggregation = true`, personalisation off. Bank node 11
flips one byte (byte 5) of its masked vector in every sum of the chosen kind.
The mask is random, so the size of the damage a flip does, and whether the
total still passes its checks, differs from run to run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from fedcredit.core.config import RunConfig
from fedcredit.deploy.inprocess import APP_DIR, InProcessGrid, serverapp_identity
from fedcredit.federation import protocol, secure_bank, server


def corrupt(kind: str) -> None:
    honest = secure_bank._masked

    def hostile(msg, reply, record, context):
        content = honest(msg, reply, record, context)
        if kind != "none" and msg.metadata.dst_node_id == 11 and msg.metadata.message_type == kind:
            masked = bytearray(content[protocol.SECAGG]["masked"])
            masked[5] ^= 0xFF
            content[protocol.SECAGG]["masked"] = bytes(masked)
        return content

    secure_bank._masked = hostile


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sum", choices=("none", "query", "train", "evaluate"), default="train")
    parser.add_argument("--banks", type=int, nargs="+", default=[4, 9])
    args = parser.parse_args()
    corrupt(args.sum)
    print("| banks | corrupted sum | status | hold-out AUC | rounds with the bank left out | seconds |")
    print("| ---: | --- | --- | ---: | ---: | ---: |")
    for banks in args.banks:
        out = tempfile.mkdtemp(prefix="fedcredit-corrupt-")
        config = {
            **RunConfig().to_flower(),
            "privacy.secure-aggregation": True,
            "personalize.epochs": 0,
            "output-dir": out,
        }
        started = time.monotonic()
        with serverapp_identity():
            history = server.run(InProcessGrid(config, banks), config, f"corrupt-{args.sum}-{banks}", APP_DIR)
        phase = "evaluate" if args.sum == "evaluate" else "train"
        left_out = sum(
            any("left out" in why for why in getattr(r, phase).refused.values()) for r in history.trained_rounds
        )
        print(
            f"| {banks} | {args.sum} | {history.status} | {history.rounds[-1].holdout_auc:.4f} | "
            f"{left_out}/{len(history.trained_rounds)} | {time.monotonic() - started:.1f} |"
        )


if __name__ == "__main__":
    main()
