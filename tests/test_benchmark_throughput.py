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
            if throughput.off_policy(args):  # whole env steps after the random ones, no periodic evaluation
                assert args.total_timesteps > args.learning_starts and args.eval_every == 0
            else:
                assert args.total_timesteps >= args.batch_size
                assert args.total_timesteps % args.batch_size == 0
            assert args.eval_episodes == 0


def test_mujoco_rows_at_tiny_scale():
    rows = throughput.main(["--steps-scale", "0.01", "--only", "mujoco"])
    assert [row["config"].split()[0] for row in rows] == ["trpo", "sac", "ddpg", "ddpg", "td3", "td3"]
    assert all(row["env_id"] == "Hopper-v5" and row["train_sps"] > 0 and row["raw_sps"] > 0 for row in rows)
    steps = [row["train_steps"] for row in rows]
    assert steps[0] == 1_024  # one rollout of trpo's mujoco preset
    assert steps[1] == 30  # sac learns from the first step
    assert steps[2:] == [1_050] * 4  # 1,000 random steps, then 50 with updates


def test_the_sac_row_measures_learning_from_the_first_step():
    (row,) = [row for row in throughput.ROWS if row.algo == "sac"]
    args = throughput.row_args(row, 1.0)
    assert args.total_timesteps == 3_000
    assert args.learning_starts == 0 and args.eval_every == 0 and args.batch_size == 256
