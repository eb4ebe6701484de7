"""`fedcredit baseline RUN_DIR`: the command line of `fedcredit.risk.baseline`.

Exit code 0 with baseline.md and baseline.json written in the run
directory, 2 when the run directory cannot be used (the message says why).
"""

from __future__ import annotations

import argparse
import sys

from fedcredit.cli import quiet_tensorflow
from fedcredit.risk import baseline
from fedcredit.risk.rundir import RunDirError, load_run

EXAMPLE = "fedcredit baseline outputs/<run>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a simulation run's output directory")


def _say(msg: str) -> None:
    print(f"fedcredit baseline: {msg}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    try:
        the_run = load_run(args.run_dir)
        result = baseline.compute(the_run, _say)
    except RunDirError as err:
        print(f"fedcredit baseline: error: {err}", file=sys.stderr)
        return 2
    if (warning := baseline.reproduction_warning(result)) is not None:
        _say(f"warning: {warning}")
    _, md_path = baseline.write(the_run.dir, result)
    print(baseline.to_markdown(result))
    _say(f"wrote {md_path} and baseline.json ({result['seconds']} s)")
    return 0
