"""`fedcredit` command line: one subcommand per job, each in its own module.

Each module `fedcredit.cli.<command>` provides `add_arguments(parser)` and
`run(args) -> int` (the exit code). Modules are imported only when their
command runs, so `fedcredit validate` does not pay for TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = {
    "validate": ("fedcredit.cli.validate", "check a bank's loan CSV against the schema before joining"),
    "split": ("fedcredit.cli.split", "write per-bank CSVs from the embedded data set (demos, tests)"),
    "baseline": ("fedcredit.cli.baseline", "pooled and bank-alone baselines on a simulation run's split"),
    "report": ("fedcredit.cli.report", "model-risk report (HTML + PNG) of a run directory"),
    "predict": ("fedcredit.cli.predict", "score applicants with a saved model, with reason codes"),
    "compare": (
        "fedcredit.cli.compare",
        "compare strategies, seeds and DP noise levels through the real Flower engine",
    ),
    "certs": ("fedcredit.cli.certs", "create the consortium CA, SuperLink certificate and bank key pairs"),
    "proxy": (
        "fedcredit.cli.proxy",
        "write the nginx configuration: banks reach only the Fleet API, the coordinator the Control API",
    ),
    "demo": ("fedcredit.cli.demo", "a TLS + authenticated deployment of N banks on this machine, end to end"),
}


def quiet_tensorflow() -> None:
    """Keep TensorFlow's retracing warnings (harmless here: one model per bank) off the user's terminal."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fedcredit", description="Federated credit-risk modelling with Flower.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    argv = sys.argv[1:] if argv is None else argv
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        # Only the chosen command's module is imported (and only it adds its arguments).
        if argv and argv[0] == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(_run=module.run)
    args = parser.parse_args(argv)
    return int(args._run(args))


if __name__ == "__main__":
    raise SystemExit(main())
