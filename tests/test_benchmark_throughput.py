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
    assert [row["config"].split()[0] for row in rows] == ["trpo", *["sac"] * 2, *["ddpg"] * 4, *["td3"] * 3]
    assert all(row["env_id"] == "Hopper-v5" and row["train_sps"] > 0 and row["raw_sps"] > 0 for row in rows)
    steps = [row["train_steps"] for row in rows]
    assert steps[0] == 1_024  # one rollout of trpo's mujoco preset
    assert steps[1:3] == [30, 30]  # sac learns from the first step
    assert steps[3:] == [1_050] * 7  # 1,000 random steps, then 50 with updates


def test_each_off_policy_reference_row_runs_again_on_one_thread():
    rows = [row for row in throughput.ROWS if "reference" in row.label]
    assert [row.algo for row in rows] == ["sac", "sac", "ddpg", "ddpg", "td3", "td3"]
    for default, single in zip(rows[::2], rows[1::2]):
        assert default.overrides["threads"] is None and single.overrides["threads"] == 1
        assert {k: v for k, v in default.overrides.items() if k != "threads"} == \
            {k: v for k, v in single.overrides.items() if k != "threads"}
        assert throughput.row_args(single, 1.0).threads == 1


def test_the_sac_row_measures_learning_from_the_first_step():
    row = next(row for row in throughput.ROWS if row.algo == "sac")
    args = throughput.row_args(row, 1.0)
    assert args.total_timesteps == 3_000
    assert args.learning_starts == 0 and args.eval_every == 0 and args.batch_size == 256


def test_repeated_measurements_alternate_and_report_medians(monkeypatch):
    calls = []
    raws, trains = iter([100.0, 400.0, 200.0]), iter([50.0, 40.0, 30.0])
    monkeypatch.setattr(throughput, "measure_raw", lambda script, args, steps: calls.append("raw") or next(raws))
    monkeypatch.setattr(throughput, "measure_train", lambda script, args: calls.append("train") or next(trains))

    raw, train, ratio = throughput.measure_pair(None, None, 10, repeats=3)

    assert calls == ["raw", "train"] * 3
    assert (raw, train) == (200.0, 40.0)
    assert ratio == 0.15  # the median of the pairs' ratios 0.5, 0.1, 0.15, not 40 / 200
