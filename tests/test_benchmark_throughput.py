"""The throughput benchmark runs end to end on tiny budgets (CartPole and MuJoCo rows), and counts the FLOPs of
an update as worked out by hand; no speeds are asserted."""

import dataclasses
import json
from collections import Counter

import a2c_atari
import ddpg
import pytest
import td3
import torch

from benchmark import flops, throughput


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
        assert "update_flops" not in row  # classic control: no FLOP measurement
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


def test_mujoco_rows_at_tiny_scale(capsys, tmp_path):
    out = tmp_path / "throughput.json"
    rows = throughput.main(["--steps-scale", "0.01", "--only", "mujoco", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == rows
    assert [row["config"].split()[0] for row in rows] == ["trpo", *["sac"] * 2, *["ddpg"] * 4, *["td3"] * 3, "ddpg",
                                                          "td3"]
    assert all(row["env_id"] == "Hopper-v5" and row["train_sps"] > 0 and row["raw_sps"] > 0 for row in rows)
    steps = [row["train_steps"] for row in rows]
    assert steps[0] == 1_024  # one rollout of trpo's mujoco preset
    assert steps[1:3] == [30, 30]  # sac learns from the first step
    assert steps[3:] == [1_050] * 9  # 1,000 random steps, then 50 with updates
    # The off-policy rows' update against the peak of its shapes; none for trpo's vector-observation row.
    assert "share" not in rows[0]
    for row in rows[1:]:
        assert row["update_flops"] > 0 and row["update_gflops"] > 0 and row["peak_gflops"] > 0
        assert 0 < row["share"] < 2  # the update's own calls, back to back, are the faster, noise aside
        assert row["share"] == pytest.approx(row["update_gflops"] / row["peak_gflops"])
        assert sum(row["update_flops_by_op"].values()) == row["update_flops"] * row["update_calls"]
        assert all(op["calls"] > 0 and op["op"].startswith("aten.") for op in row["update_ops"])
    assert [row["flop_threads"] for row in rows[1:3]] == [throughput.DEFAULT_THREADS, 1]
    # SAC's update at 256-256, batch 256: its first layers (11 + 3 -> 2 x 256) alone, forward, 2 x 256 x 14 x 512
    assert rows[1]["update_flops"] == rows[2]["update_flops"] > 2 * 256 * 14 * 512
    table = capsys.readouterr().out
    assert "update GFLOP/s  peak GFLOP/s  share" in table
    trpo_line = next(line for line in table.splitlines() if line.startswith("Hopper-v5") and " trpo " in line)
    assert trpo_line.split()[-3:] == ["-", "-", "-"]


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


# --- the update's FLOPs and the peak of its shapes ------------------------------------------------------------
# Hand-worked counts: 2 m k n for an [m, k] x [k, n] product (FlopCounterMode's rule, bias adds left out). A
# linear layer k -> n on a batch of B costs 2 B k n forward, the same again for its weights' gradient and the
# same again for its input's gradient, which autograd computes only when that input needs one.


def linear_calls(layers, batch, forward=False, weight_grads=False, input_grads=False) -> list:
    """The aten calls of linear layers (k, n): addmm(bias [n], x [B, k], W^T [k, n]) forward; backward
    mm(grad [B, n], W [n, k]) for the input's gradient and mm(grad^T [n, B], x [B, k]) for the weights'."""
    calls = []
    for k, n in layers:
        calls += [("aten.addmm", ((n,), (batch, k), (k, n)))] * forward
        calls += [("aten.mm", ((batch, n), (n, k)))] * input_grads
        calls += [("aten.mm", ((n, batch), (batch, k)))] * weight_grads
    return calls


def mm_flops(calls) -> int:
    return sum(2 * a[-2] * a[-1] * b[-1] for _, (*_, a, b) in calls)


def ddpg_tiny_args():
    # The paper's critic: the action joins at its second layer. Hopper-v5: 11 observations, 3 actions.
    return dataclasses.replace(ddpg.PRESETS["paper"], env_id="Hopper-v5", hidden_sizes=(4, 4), batch_size=5,
                               threads=1)


def ddpg_tiny_calls() -> list:
    """DDPG's update by hand, B = 5, obs 11, actions 3, hidden 4-4."""
    B, S, A, H = 5, 11, 3, 4
    actor, critic = [(S, H), (H, H), (H, A)], [(S, H), (H + A, H), (H, 1)]
    return [
        # the target r + gamma Q'(s', mu'(s')), without gradients
        *linear_calls(actor, B, forward=True), *linear_calls(critic, B, forward=True),
        # the critic's step: forward, every weight's gradient, the inputs' gradients from its 2nd layer on (the
        # 1st layer's input, the observation, needs none)
        *linear_calls(critic, B, forward=True), *linear_calls(critic[2:], B, weight_grads=True, input_grads=True),
        *linear_calls(critic[1:2], B, weight_grads=True, input_grads=True), *linear_calls(critic[:1], B, weight_grads=True),
        # the actor's step: actor forward, the critic forward with its weights held (no weight gradients; the
        # action enters at layer 2, so the gradient goes back through layers 3 and 2), then the actor's backward
        *linear_calls(actor, B, forward=True), *linear_calls(critic, B, forward=True),
        *linear_calls(critic[1:], B, input_grads=True),
        *linear_calls(actor[1:], B, weight_grads=True, input_grads=True), *linear_calls(actor[:1], B, weight_grads=True),
    ]


def test_one_ddpg_update_has_the_hand_counted_flops_and_shapes():
    calls = ddpg_tiny_calls()
    # 2 B x (actor 11*4 + 4*4 + 4*3 = 72; critic 11*4 + 7*4 + 4*1 = 76): targets 72 + 76, critic step 76 + 76
    # + (7*4 + 4*1 = 32), actor step 72 + 76 + 32 + 72 + (4*4 + 4*3 = 28): 612 x 2 x 5
    assert mm_flops(calls) == 6_120
    result = throughput.measure_update(ddpg, ddpg_tiny_args(), min_seconds=0)
    assert result["update_flops"] == 6_120 and result["update_calls"] == 1
    assert result["update_flops_by_op"] == {"aten.addmm": mm_flops([c for c in calls if c[0] == "aten.addmm"]),
                                            "aten.mm": mm_flops([c for c in calls if c[0] == "aten.mm"])}
    recorded = Counter({(op["op"], tuple(map(tuple, op["shapes"]))): op["calls"] for op in result["update_ops"]})
    assert recorded == Counter(calls)
    assert result["flop_threads"] == 1
    assert result["update_gflops"] > 0 and result["peak_gflops"] > 0
    assert result["share"] == pytest.approx(result["update_gflops"] / result["peak_gflops"])


def test_a_td3_update_is_the_mean_over_its_cycle_of_a_critic_step_and_a_critic_and_actor_step():
    B, S, A, H = 5, 11, 3, 4
    twin, actor = 2 * (S + A) * H + 2 * H * H + 2 * H, S * H + H * H + H * A  # both critics' weights; 152 and 72
    critic_step = (actor + twin  # the target: pi'(s') and both target critics, no gradients
                   + twin + twin + 2 * (H * H + H))  # forward, weight gradients, inputs' gradients from layer 2 on
    actor_step = (actor + twin // 2  # pi(s) and Q1 alone, its weights held
                  + twin // 2  # Q1's input gradients down to the action, which enters at layer 1
                  + actor + H * H + H * A)  # the actor's weight gradients, its inputs' gradients from layer 2 on
    args = dataclasses.replace(td3.PRESETS["paper"], env_id="Hopper-v5", hidden_sizes=(H, H), batch_size=B, threads=1)
    result = throughput.measure_update(td3, args, min_seconds=0)
    assert result["update_calls"] == 2
    assert result["update_flops"] == 2 * B * (2 * critic_step + actor_step) / 2 == 7_300


def test_a_bf16_row_times_the_update_under_bfloat16_autocast_with_the_same_flops():
    # --bf16 rows: main() runs update() inside bfloat16 autocast, and so does the measurement; its products
    # (and the peak's replay of them) are bfloat16, their FLOPs those of the float32 update.
    args = dataclasses.replace(td3.PRESETS["paper"], env_id="Hopper-v5", hidden_sizes=(4, 4), batch_size=5, threads=1)
    float32 = throughput.measure_update(td3, args, min_seconds=0)
    run, parts, _ = throughput.off_policy_update(td3, dataclasses.replace(args, bf16=True))
    _, _, calls = flops.count(lambda: run(*parts))
    assert calls and all(spec.dtype == torch.bfloat16 for call in calls for spec in call.args
                         if isinstance(spec, flops.TensorSpec))
    bfloat16 = throughput.measure_update(td3, dataclasses.replace(args, bf16=True), min_seconds=0)
    assert bfloat16["update_flops"] == float32["update_flops"] == 7_300


def test_one_a2c_atari_update_has_the_hand_counted_convolution_and_matmul_flops():
    # The A3C network on 4 x 84 x 84 frames: conv 16 8x8 stride 4 -> 20 x 20 ((84 - 8) / 4 + 1), conv 32 4x4
    # stride 2 -> 9 x 9 ((20 - 4) / 2 + 1), dense 32*9*9 = 2592 -> 256, heads 256 -> 4 actions and 256 -> 1.
    # A convolution costs 2 x C_out x C_in x kernel area x output area a frame, forward, and the same again for
    # its weights' gradient and for its input's.
    conv1, conv2 = 2 * 16 * 4 * 8 * 8 * 20 * 20, 2 * 32 * 16 * 4 * 4 * 9 * 9
    dense, policy, value = 2 * 2592 * 256, 2 * 256 * 4, 2 * 256 * 1
    n_envs, n_steps = 2, 1
    B = n_envs * n_steps
    args = dataclasses.replace(a2c_atari.PRESETS["atari"], num_envs=n_envs, num_steps=n_steps, threads=1)
    result = throughput.measure_update(a2c_atari, args, min_seconds=0)
    assert result["update_flops_by_op"] == {
        # V(next obs) of each env to bootstrap from, then the rollout's frames forward
        "aten.convolution": (n_envs + B) * (conv1 + conv2),
        # backward: both weights' gradients, and the input's gradient of the second conv only (frames need none)
        "aten.convolution_backward": B * (conv1 + 2 * conv2),
        "aten.addmm": n_envs * (dense + value) + B * (dense + policy + value),
        "aten.mm": B * (2 * dense + 2 * policy + 2 * value),
    }
    assert result["update_flops"] == sum(result["update_flops_by_op"].values()) == 40_910_848


def test_the_peak_replays_exactly_the_recorded_calls():
    run, parts, _ = throughput.off_policy_update(ddpg, ddpg_tiny_args())
    total, _, calls = flops.count(lambda: run(*parts))
    replayed_total, _, replayed = flops.count(flops.replay(calls))
    assert replayed == calls  # the same ops on the same shapes, strides and dtypes, with the same other arguments
    assert replayed_total == total == 6_120
    assert Counter(call.shapes() for call in calls) == Counter(ddpg_tiny_calls())
    # strides are part of a call: the first, the target actor's first layer, multiplies by W^T, a transposed view
    assert calls[0].args[2] == flops.TensorSpec((11, 4), (1, 11), torch.float32)


def test_replayed_tensors_keep_their_strides_even_expanded_ones():
    spec = flops.TensorSpec((2, 5, 3), (0, 3, 1), torch.float32)
    x = spec.make()
    assert x.shape == (2, 5, 3) and x.stride() == (0, 3, 1) and torch.equal(x[0], x[1])
    channels_last = torch.empty(2, 4, 6, 6).to(memory_format=torch.channels_last)
    assert flops.TensorSpec.of(channels_last).make().is_contiguous(memory_format=torch.channels_last)


def test_the_table_has_the_flop_columns_and_dashes_where_there_are_none():
    base = dict(env_id="Hopper-v5", backend="gymnasium", raw_sps=1000.0, train_sps=100.0, ratio=0.1)
    table = throughput.format_table([{**base, "config": "sac", "update_gflops": 12.34, "peak_gflops": 56.7,
                                      "share": 0.2176}, {**base, "config": "trpo"}])
    header, sac_line, trpo_line = table.splitlines()
    assert header.endswith("update GFLOP/s  peak GFLOP/s  share")
    assert sac_line.split()[-3:] == ["12.3", "56.7", "0.22"]
    assert trpo_line.split()[-3:] == ["-", "-", "-"]
