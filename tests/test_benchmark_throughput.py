"""The throughput benchmark runs end to end on tiny budgets (CartPole rows only); no speeds are asserted."""

import json

import pytest

from benchmark import throughput


def test_cartpole_rows_at_tiny_scale(tmp_path):
    out = tmp_path / "throughput.json"
    rows = throughput.main(["--steps-scale", "0.02", "--only", "cartpole", "--out", str(out)])

    assert [row["env_id"] for row in rows] == ["CartPole-v1"] * 4
    assert [row["config"].split()[0] for row in rows] == ["ppo", "ppo", "a2c", "trpo"]
    for row in rows:
        assert row["backend"] == "gymnasium"
        assert row["raw_sps"] > 0 and row["train_sps"] > 0
        assert row["ratio"] == pytest.approx(row["train_sps"] / row["raw_sps"])
        assert row["train_steps"] > 0 and row["raw_steps"] > 0
    assert json.loads(out.read_text())["rows"] == rows
    assert not (tmp_path / "throughput.json.tmp").exists()


def test_budgets_round_to_whole_batches():
    for row in throughput.ROWS:
        for scale in (0.001, 0.02, 1.0):
            args = throughput.row_args(row, scale)
            assert args.total_timesteps >= args.batch_size
            assert args.total_timesteps % args.batch_size == 0
            assert args.eval_episodes == 0
