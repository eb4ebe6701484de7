"""`fedcredit` command line: one subcommand per job, each in its own module.

Each module `fedcredit.cli.<command>` provides `add_arguments(parser)`,
`run(args) -> int` (the exit code) and `EXAMPLE`, one invocation shown at
the end of its `--help`. Modules are imported only when their command runs
(or shows its help), so `fedcredit validate` does not pay for TensorFlow.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
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
    "certs": ("fedcredit.cli.certs", "create the consortium CA, SuperLink certificate, bank key pairs and the roster"),
    "proxy": (
        "fedcredit.cli.proxy",
        "write the nginx configuration: banks reach only the Fleet API, the coordinator the Control API",
    ),
    "synth": ("fedcredit.cli.synth", "write a synthetic bank CSV of N rows (resampled embedded data, for benchmarks)"),
    "demo": ("fedcredit.cli.demo", "a TLS + authenticated deployment of N banks on this machine, end to end"),
    "audit": ("fedcredit.cli.audit", "verify a bank's egress log and summarise what left the bank"),
}


EXAMPLE = "fedcredit split --banks 4 --out banks"


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Shows each option's default after its help text.

    Not for required options, nor when the default means "not given" (None,
    "", an empty list, False): such options say in their help text what
    happens without them, as "(default: ...)" (then nothing is appended).
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        positional = not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE)
        if (
            "(default" in text
            or "%(default)" in text
            or action.required
            or positional
            or default is argparse.SUPPRESS
            or default is None
            or default is False
            or default in ("", [], ())
        ):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def package_version() -> str:
    """The installed distribution's version; the package's own when it is not installed (a bare checkout)."""
    try:
        return importlib.metadata.version("fedcredit")
    except importlib.metadata.PackageNotFoundError:
        import fedcredit

        return getattr(fedcredit, "__version__", "unknown")


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    """The whole command line; only the command named by argv[0] is imported and given its arguments."""
    parser = argparse.ArgumentParser(
        prog="fedcredit",
        description="Federated credit-risk modelling with Flower.",
        epilog=f"example: {EXAMPLE}\n`fedcredit COMMAND --help` shows a command's options, defaults and an example.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text, formatter_class=HelpFormatter)
        if argv and argv[0] == name:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.epilog = f"example: {module.EXAMPLE}"
            p.set_defaults(_run=module.run)
    return parser


def quiet_tensorflow() -> None:
    """Keep TensorFlow's retracing warnings (harmless here: one model per bank) off the user's terminal."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    return int(args._run(args))


if __name__ == "__main__":
    raise SystemExit(main())
