"""`fedcredit split` and `fedcredit demo` on the command line: files written, impossible counts refused early."""

from __future__ import annotations

import pandas as pd
import pytest

from fedcredit.cli import main


def test_split_writes_one_csv_per_bank_with_every_row(tmp_path, raw_frame, capsys):
    assert main(["split", "--banks", "7", "--out", str(tmp_path)]) == 0
    files = sorted(tmp_path.glob("bank-*.csv"))
    assert len(files) == 7
    parts = [pd.read_csv(f, dtype=str) for f in files]
    assert all(list(p.columns) == list(raw_frame.columns) for p in parts)
    assert sum(len(p) for p in parts) == len(raw_frame)
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 7 and all(line.endswith(f"({len(p)} rows)") for line, p in zip(printed, parts))


def test_split_with_holdout_keeps_it_out_of_every_bank(tmp_path, raw_frame):
    assert main(["split", "--banks", "5", "--holdout", "0.2", "--out", str(tmp_path), "--seed", "3"]) == 0
    holdout = pd.read_csv(tmp_path / "holdout.csv", dtype=str, keep_default_na=False)
    banks = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in sorted(tmp_path.glob("bank-*.csv"))]
    assert len(banks) == 5
    assert len(holdout) + sum(len(b) for b in banks) == len(raw_frame)
    assert abs(len(holdout) - 0.2 * len(raw_frame)) <= 2


@pytest.mark.parametrize("command", ["split", "demo"])
def test_impossible_bank_count_fails_before_anything_starts(tmp_path, capsys, command):
    out = tmp_path / "out"
    args = [command, "--banks", "0"] + (["--out", str(out)] if command == "split" else ["--workdir", str(out)])
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: need at least one bank") and "\n" not in err
    assert not out.exists()  # no bank CSV, certificate or process was made
