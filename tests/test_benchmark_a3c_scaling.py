"""The scaling benchmark runs end to end on a tiny budget; no speeds are asserted."""

import json

import pytest

from benchmark import a3c_scaling


def test_one_and_two_workers_at_a_tiny_budget(tmp_path):
    out = tmp_path / "scaling.json"
    rows = a3c_scaling.main(["--workers-max", "2", "--steps-per-worker", "300", "--out", str(out),
                             "--algo", "a3c_hogwild", "async_q/n-step-q"])
    assert [(r["method"], r["workers"]) for r in rows] == [
        ("a3c_hogwild", 1), ("a3c_hogwild", 2), ("async_q/n-step-q", 1), ("async_q/n-step-q", 2)]
    assert [r["steps"] for r in rows] == [300, 600, 300, 600]
    assert all(r["sps"] > 0 for r in rows)
    assert rows[0]["speedup"] == 1.0 and rows[1]["speedup"] == pytest.approx(rows[1]["sps"] / rows[0]["sps"])
    assert [r["paper_speedup"] for r in rows] == [1.0, 2.1, 1.0, 2.7]
    assert json.loads(out.read_text())["rows"] == rows
    assert not (tmp_path / "scaling.json.tmp").exists()


def test_worker_counts_double_up_to_the_maximum():
    assert a3c_scaling.worker_counts(1) == [1]
    assert a3c_scaling.worker_counts(8) == [1, 2, 4, 8]
    assert a3c_scaling.worker_counts(6) == [1, 2, 4, 6]
    assert a3c_scaling.paper_speedup("a3c_hogwild", 16) == 12.5 and a3c_scaling.paper_speedup("a3c_hogwild", 6) is None
