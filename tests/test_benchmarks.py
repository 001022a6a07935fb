"""Tiny end-to-end runs of the benchmark scripts."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import controllers  # noqa: E402


def test_controller_comparison_writes_everything_and_resumes(tmp_path, monkeypatch) -> None:
    argv = [
        "--controllers",
        "random",
        "tpe",
        "--tasks",
        "wine",
        "--children",
        "3",
        "--seeds",
        "0",
        "1",
        "--out",
        str(tmp_path),
    ]
    rows = controllers.main(argv)
    assert {(r["controller"], r["task"]) for r in rows} == {("random", "wine"), ("tpe", "wine")}
    for name in ("summary.json", "summary.csv", "summary.md", "curves-wine.png"):
        assert (tmp_path / name).exists()
    assert len(list((tmp_path / "runs").glob("*.json"))) == 4
    for r in rows:
        assert 0 < r["best_val"] <= r["best_any_run"] <= 1 and 0 < r["auc"] <= r["best_val"]

    def refuse(*args, **kwargs):
        raise AssertionError("a finished run was run again")

    monkeypatch.setattr(controllers, "run_controller", refuse)
    again = controllers.main(argv)
    assert json.loads(json.dumps(again)) == json.loads(json.dumps(rows))


@pytest.mark.parametrize("values", [[1, 2, None], [None, None, 3]])
def test_median_children_counts_never_as_never(values) -> None:
    expected = 2.0 if values[0] == 1 else None
    assert controllers._median_or_none(values) == expected
