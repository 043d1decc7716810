"""eval/compare.py: paired differences of two methods recomputed from a run's per_user.csv."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "eval" / "compare.py"


def _compare():
    spec = importlib.util.spec_from_file_location("eval_compare", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module.main


def _run_dir(tmp_path: Path) -> Path:
    rows = []
    for seed in (0, 1):
        for user in range(40):
            a = 1.0 if user < 20 else 0.0  # A hits the first 20 users
            b = 1.0 if user < 5 else 0.0  # B the first 5
            cold = int(user >= 30)
            for method, v in (("a", a), ("b", b)):
                rows.append({"method": method, "seed": seed, "user": user, "NDCG@10": v,
                             "cohort:cold": cold})  # fmt: skip
    pd.DataFrame(rows).to_csv(tmp_path / "per_user.csv", index=False)
    return tmp_path


def test_difference_ci_and_p_over_users(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _compare()([str(_run_dir(tmp_path)), "a|b", "--resamples", "2000"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[3].strip() == "+0.3750"  # 15 of 40 users differ by 1
    lo, hi = (float(x) for x in row[4].strip(" []").split(","))
    assert 0 < lo < 0.375 < hi < 1
    assert float(row[5]) < 0.01 and row[6].strip() == "40"


def test_cohort_restricts_the_users(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert _compare()([str(_run_dir(tmp_path)), "a|b", "--cohort", "cold"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].split("|")
    assert row[3].strip() == "+0.0000" and float(row[5]) == 1.0 and row[6].strip() == "10"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["a|nope"], "need 'A|B' with methods of the run"),
        (["a|b", "--metric", "HR@99"], "no metric 'HR@99'"),
        (["a|b", "--cohort", "warm"], "no cohort 'warm'"),
    ],
)
def test_bad_requests_are_one_line_errors(tmp_path, capsys, args, message) -> None:
    assert _compare()([str(_run_dir(tmp_path)), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
