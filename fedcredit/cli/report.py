"""`fedcredit report RUN_DIR`: the command line of `fedcredit.risk.report`.

Exit code 0 with report.html and its plots written in the run directory
(sections the run cannot support say why inside the report), 2 when the
run directory cannot be read at all.
"""

from __future__ import annotations

import argparse
import sys

from fedcredit.cli import quiet_tensorflow
from fedcredit.risk import report
from fedcredit.risk.rundir import RunDirError, load_run

EXAMPLE = "fedcredit report outputs/<run>"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", metavar="RUN_DIR", help="a run's output directory")


def run(args: argparse.Namespace) -> int:
    quiet_tensorflow()
    try:
        the_run = load_run(args.run_dir)
    except RunDirError as err:
        print(f"fedcredit report: error: {err}", file=sys.stderr)
        return 2
    out, size, pngs = report.write(the_run)
    print(
        f"fedcredit report: wrote {out} ({size // 1024} KiB) and {len(pngs)} plots in {the_run.dir / 'report'}",
        file=sys.stderr,
    )
    print(out)
    return 0
