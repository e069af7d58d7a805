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


def test_budgets_round_to_whole_rollouts():
    for row in throughput.ROWS:
        for scale in (0.001, 0.02, 1.0):
            args = throughput.row_args(row, scale)
            size = throughput.rollout_size(args)
            assert args.total_timesteps >= size
            assert args.total_timesteps % size == 0
            assert args.eval_episodes == 0


def test_the_sac_row_measures_learning_from_the_first_step():
    (row,) = [row for row in throughput.ROWS if row.algo == "sac"]
    args = throughput.row_args(row, 1.0)
    assert throughput.rollout_size(args) == 1 and args.total_timesteps == 3_000
    assert args.learning_starts == 0 and args.eval_every == 0 and args.batch_size == 256
