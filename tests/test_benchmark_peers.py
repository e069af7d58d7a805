"""python -m benchmark peers: the SB3 model of each row has our settings, field by field; the command runs end to
end on tiny budgets, alternating the sides; bad input ends in one line. No speed is asserted."""

import json
import os
import statistics
import subprocess
import sys

import pytest
import torch
import torch.nn as nn

from benchmark import peers
from benchmark.plan import ROOT

ROW_NAMES = list(peers.ROWS)


def importable(name: str):
    """The row, or a skip mark when its peer (sb3_contrib for TRPO) is not installed."""
    row = peers.ROWS[name]
    problem = peers.peer_problem(row)
    return pytest.param(row, id=name, marks=pytest.mark.skipif(bool(problem), reason=problem or ""))


def built(row):
    """Our settings at full budget and the SB3 model made from them."""
    args = peers.our_args(row, seed=3, steps_scale=1.0, threads=1)
    return args, peers.build_peer(row, args)


def shapes(module: nn.Module) -> list[tuple[int, ...]]:
    return sorted(tuple(p.shape) for p in module.parameters())


def count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def assert_schedule(schedule, value: float, anneal: bool, updates: int):
    """SB3 reads its schedules at progress_remaining = 1 - k / N in update k; ours multiplies by
    1 - (k - 1) / N there when it anneals (ppo.main, a2c_atari.main), else by 1."""
    assert schedule(1.0) == pytest.approx(value)
    for k in range(1, updates + 1):
        ours = value * (1 - (k - 1) / updates if anneal else 1.0)
        assert schedule(1 - k / updates) == pytest.approx(ours), f"update {k} of {updates}"


def assert_on_policy_common(model, args):
    assert model.n_envs == args.num_envs
    assert model.n_steps == args.num_steps
    assert model.gamma == args.gamma
    assert model.device.type == "cpu"


def assert_network(model, row, args):
    """The SB3 policy has our network's parameter shapes, activation and initialisation scheme."""
    agent, _ = peers.our_agent(peers.SCRIPTS[row.algo], args)
    assert shapes(model.policy) == shapes(agent)
    assert model.policy.ortho_init
    if agent.image:
        assert type(model.policy.features_extractor).__name__ == "NatureCNN"
        assert model.policy.share_features_extractor
    else:
        assert model.policy.activation_fn is type(agent.actor[1])


@pytest.mark.parametrize("row", [importable(name) for name in ("ppo-cartpole", "ppo-breakout")])
def test_ppo_settings_match(row):
    args, model = built(row)
    assert_on_policy_common(model, args)
    assert model.batch_size == args.minibatch_size  # SB3's PPO batch_size is the minibatch
    assert model.n_epochs == args.update_epochs
    assert_schedule(model.lr_schedule, args.learning_rate, args.anneal, args.num_iterations)
    assert_schedule(model.clip_range, args.clip_coef, args.anneal, args.num_iterations)
    assert model.clip_range_vf is None and model.target_kl is None
    assert model.gae_lambda == args.gae_lambda
    assert model.ent_coef == args.ent_coef
    assert model.vf_coef * 2 == args.vf_coef  # ours weighs 0.5 (V - R)^2, SB3 (V - R)^2
    assert model.max_grad_norm == args.max_grad_norm
    assert model.normalize_advantage == args.norm_adv
    assert type(model.policy.optimizer) is torch.optim.Adam
    assert model.policy.optimizer.defaults["eps"] == peers.optimizer_eps(peers.SCRIPTS["ppo"].main, "Adam") == 1e-5
    assert_network(model, row, args)
    if args.num_envs > 1:  # the Atari row: SB3's frames are ours (4 stacked 84 x 84)
        assert model.observation_space.shape == (4, 84, 84)
    assert args.anneal == (row.name == "ppo-breakout")  # both kinds of schedule are checked


@pytest.mark.parametrize("row", [importable("a2c-cartpole")])
def test_a2c_settings_match(row):
    args, model = built(row)
    assert_on_policy_common(model, args)
    assert_schedule(model.lr_schedule, args.learning_rate, args.anneal, args.num_iterations)
    assert model.gae_lambda == 1.0  # ours: n-step returns
    assert model.ent_coef == args.ent_coef and model.vf_coef == args.vf_coef
    assert model.max_grad_norm == args.max_grad_norm
    assert not model.normalize_advantage
    optimizer = model.policy.optimizer
    assert type(optimizer) is torch.optim.RMSprop
    assert optimizer.defaults["alpha"] == args.rms_decay and optimizer.defaults["eps"] == args.rms_eps
    assert optimizer.defaults["weight_decay"] == 0
    assert_network(model, row, args)


@pytest.mark.parametrize("row", [importable("trpo-cartpole")])
def test_trpo_settings_match(row):
    args, model = built(row)
    assert_on_policy_common(model, args)
    assert model.gae_lambda == args.gae_lambda
    assert model.target_kl == args.max_kl
    assert model.cg_max_steps == args.cg_iters and model.cg_damping == args.cg_damping
    assert model.line_search_shrinking_factor == args.backtrack_coeff
    assert model.line_search_max_iter == args.backtrack_iters
    assert model.sub_sampling_factor == args.fvp_every
    assert model.normalize_advantage == args.norm_adv
    assert model.lr_schedule(1.0) == args.learning_rate
    assert model.n_critic_updates == args.value_epochs
    assert model.batch_size == args.value_minibatch_size  # sb3_contrib's TRPO batch_size: the value minibatch
    assert model.policy.optimizer.defaults["eps"] == peers.optimizer_eps(peers.SCRIPTS["trpo"].main, "Adam") == 1e-8
    assert model.policy.net_arch == dict(pi=list(args.hidden_sizes), vf=list(args.hidden_sizes))
    assert_network(model, row, args)


def assert_replay_common(model, args):
    assert model.n_envs == 1
    assert model.learning_starts == args.learning_starts == 1_000
    assert model.buffer_size == min(args.buffer_size, args.total_timesteps)
    assert model.batch_size == args.batch_size == 256
    assert model.gamma == args.gamma and model.tau == args.tau
    assert model.train_freq.frequency == 1 and model.train_freq.unit.value == "step" and model.gradient_steps == 1
    assert model.actor.optimizer.defaults["lr"] == args.learning_rate
    assert model.critic.optimizer.defaults["lr"] == args.learning_rate
    assert model.device.type == "cpu"


def our_networks(script, args):
    obs_space, act_space = script.env_spaces(args.env_id)
    return script.Agent(obs_space.shape[0], act_space.shape[0], args), obs_space.shape[0] + act_space.shape[0]


@pytest.mark.parametrize("row", [importable("td3-hopper"), importable("td3-hopper-bf16")])
def test_td3_settings_match(row):
    args, model = built(row)
    assert_replay_common(model, args)
    assert model.policy_delay == args.policy_delay
    assert model.target_policy_noise == args.policy_noise and model.target_noise_clip == args.noise_clip
    assert (model.action_noise._sigma == args.exploration_noise).all()
    assert args.actor_learning_rate in (None, args.learning_rate)
    agent, critic_in = our_networks(peers.SCRIPTS["td3"], args)
    assert count(model.actor) == count(agent.actor) and count(model.critic) == count(agent.critic)
    assert len(model.critic.q_networks) == 2 and model.critic.qf0[0].in_features == critic_in
    assert [m.out_features for m in model.actor.mu if isinstance(m, nn.Linear)][:-1] == list(args.hidden_sizes)


@pytest.mark.parametrize("row", [importable("ddpg-hopper"), importable("ddpg-hopper-bf16")])
def test_ddpg_settings_match(row):
    args, model = built(row)
    assert_replay_common(model, args)
    assert model.policy_delay == 1 and model.target_noise_clip == 0.0  # no delay, no target smoothing
    assert (model.action_noise._sigma == args.exploration_noise).all() and args.exploration == "gaussian"
    assert args.actor_learning_rate in (None, args.learning_rate) and args.critic_weight_decay == 0
    assert args.final_layer_init is None
    agent, critic_in = our_networks(peers.SCRIPTS["ddpg"], args)
    assert count(model.actor) == count(agent.actor) and count(model.critic) == count(agent.critic)
    assert len(model.critic.q_networks) == 1
    assert model.critic.qf0[0].in_features == agent.critic.layers[0].in_features == critic_in


@pytest.mark.parametrize("row", [importable("sac-hopper")])
def test_sac_settings_match(row):
    args, model = built(row)
    assert_replay_common(model, args)
    agent, critic_in = our_networks(peers.SCRIPTS["sac"], args)
    assert args.alpha is None and model.ent_coef_optimizer is not None  # both learn the temperature...
    assert float(model.log_ent_coef.detach().exp()) == pytest.approx(float(agent.log_alpha.detach().exp()))  # ...from 1
    assert model.ent_coef_optimizer.defaults["lr"] == args.learning_rate
    assert model.target_entropy == -model.action_space.shape[0]  # ours' default, -|A|
    assert model.target_update_interval == 1 and not model.use_sde
    assert count(model.actor) == count(agent.actor) and count(model.critic) == count(agent.critic)
    assert len(model.critic.q_networks) == 2 and model.critic.qf0[0].in_features == critic_in


def test_the_bf16_rows_are_the_float32_rows_with_our_switch_on_and_say_so():
    for algo in ("td3", "ddpg"):
        float32, bfloat16 = peers.ROWS[f"{algo}-hopper"], peers.ROWS[f"{algo}-hopper-bf16"]
        assert bfloat16.overrides == {**float32.overrides, "bf16": True}
        args = peers.our_args(bfloat16, seed=1, steps_scale=1.0, threads=1)
        settings, unmatched = peers.match(bfloat16, args)
        same_settings, _ = peers.match(float32, peers.our_args(float32, seed=1, steps_scale=1.0, threads=1))
        assert [peers.shown(tuple(s)) for s in settings] == [peers.shown(tuple(s)) for s in same_settings]
        assert sum("--bf16" in note for note in unmatched) == 1


def test_anneal_is_ours_under_sb3s_progress():
    anneal = peers.Anneal(2.0, updates=4)
    assert [anneal(1 - k / 4) for k in (1, 2, 3, 4)] == [2.0, 1.5, 1.0, 0.5]
    assert anneal(1.0) == 2.0  # what SB3 builds the optimiser with


# --- the command ------------------------------------------------------------------------------------------


def run_command(*flags: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)}
    return subprocess.run([sys.executable, "-m", "benchmark", "peers", *flags], capture_output=True, text=True,
                          env=env)


def test_ppo_row_end_to_end(tmp_path):
    out = tmp_path / "peers.json"
    done = run_command("--only", "ppo-cartpole", "--pairs", "2", "--steps-scale", "0.01", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "| ppo-cartpole | ppo.py classic | SB3 PPO | 2,048 | 2/2 |" in done.stdout
    report = json.loads(out.read_text())
    assert report["pairs"] == 2 and report["threads"] == 1 and report["steps_scale"] == 0.01
    (row,) = report["rows"]
    assert row["name"] == "ppo-cartpole" and row["total_timesteps"] == 2048 and row["settings"]
    pairs = row["pairs"]
    assert [p["seed"] for p in pairs] == [1, 2]
    assert [p["order"] for p in pairs] == [["ours", "peer"], ["peer", "ours"]]
    assert pairs[0]["ours"]["started"] < pairs[0]["peer"]["started"]  # the processes really ran in that order
    assert pairs[1]["peer"]["started"] < pairs[1]["ours"]["started"]
    for pair in pairs:
        for side in ("ours", "peer"):
            assert pair[side]["sps"] > 0 and pair[side]["total_steps"] == 2048
            assert pair[side]["rate_from_step"] == 0 and pair[side]["final_return"] > 0
        assert pair["ratio"] == pytest.approx(pair["ours"]["sps"] / pair["peer"]["sps"])
    ratios = [p["ratio"] for p in pairs]
    summary = row["summary"]
    assert summary["ratio_median"] == pytest.approx(statistics.median(ratios))
    assert (summary["ratio_min"], summary["ratio_max"]) == (min(ratios), max(ratios))
    assert summary["ours_sps"] == pytest.approx(statistics.median(p["ours"]["sps"] for p in pairs))


def test_off_policy_row_measures_after_learning_starts(tmp_path):
    out = tmp_path / "peers.json"
    done = run_command("--only", "td3-hopper", "--pairs", "1", "--steps-scale", "0.005", "--out", str(out))
    assert done.returncode == 0, done.stderr
    (row,) = json.loads(out.read_text())["rows"]
    assert row["learning_starts"] == 1_000 and row["total_timesteps"] == 1_050
    (pair,) = row["pairs"]
    for side in ("ours", "peer"):
        result = pair[side]
        assert result["total_steps"] == 1_050
        assert result["rate_from_step"] == 1_001  # from the end of the first gradient step
        assert result["sps"] > 0 and result["whole_run_sps"] > 0
    assert pair["ratio"] == pytest.approx(pair["ours"]["sps"] / pair["peer"]["sps"])


# --- alternation, skipping and bad input, without training ----------------------------------------------


def test_pairs_alternate_and_report_medians(monkeypatch):
    calls = []
    rates = {("ours", 1): 300.0, ("peer", 1): 100.0, ("peer", 2): 200.0, ("ours", 2): 200.0,
             ("ours", 3): 500.0, ("peer", 3): 250.0}

    def fake_side(row, side, seed, steps_scale, threads):
        calls.append((side, seed))
        return {"sps": rates[side, seed], "final_return": float(seed)}

    monkeypatch.setattr(peers, "run_side", fake_side)
    result = peers.measure_row(peers.ROWS["ppo-cartpole"], pairs=3, seed=1, steps_scale=0.01, threads=1)
    assert calls == [("ours", 1), ("peer", 1), ("peer", 2), ("ours", 2), ("ours", 3), ("peer", 3)]
    assert [p["ratio"] for p in result["pairs"]] == [3.0, 1.0, 2.0]
    assert result["summary"]["ratio_median"] == 2.0  # the median of the pairs' ratios, not 300 / 200
    assert (result["summary"]["ours_sps"], result["summary"]["peer_sps"]) == (300.0, 200.0)
    assert (result["summary"]["ratio_min"], result["summary"]["ratio_max"]) == (1.0, 3.0)


def test_a_failed_side_is_reported(monkeypatch):
    monkeypatch.setattr(peers, "run_side", lambda row, side, *rest: {"error": "exit 1: boom"} if side == "peer"
                        else {"sps": 1.0, "final_return": None})
    result = peers.measure_row(peers.ROWS["ppo-cartpole"], pairs=1, seed=1, steps_scale=0.01, threads=1)
    assert result["pairs"][0]["ratio"] is None and result["summary"] == {"pairs_done": 0}
    assert "ppo-cartpole pair 1 peer failed: exit 1: boom" in peers.format_table([result])


def test_trpo_row_is_skipped_without_sb3_contrib(monkeypatch):
    monkeypatch.setitem(sys.modules, "sb3_contrib", None)  # import sb3_contrib now raises ImportError
    monkeypatch.setattr(peers, "run_side", lambda *args: pytest.fail("a skipped row must not run"))
    report = peers.run(["trpo-cartpole"], pairs=1, seed=1, steps_scale=0.01, threads=1)
    (row,) = report["rows"]
    assert "sb3_contrib is not importable" in row["skipped"] and "pip install -e '.[peers]'" in row["skipped"]
    lines = peers.format_table(report["rows"]).splitlines()
    assert sum("trpo-cartpole skipped: sb3_contrib is not importable" in line for line in lines) == 1


@pytest.mark.parametrize("flags, words", [
    (["--only", "ppo-cartpol"], "unknown row 'ppo-cartpol' in --only; the rows are ppo-cartpole"),
    (["--pairs", "0"], "--pairs, --threads and --steps-scale must be positive"),
    (["--threads", "0"], "--pairs, --threads and --steps-scale must be positive"),
    (["--steps-scale", "0"], "--pairs, --threads and --steps-scale must be positive"),
])
def test_bad_input_is_one_line(flags, words, capsys, monkeypatch):
    monkeypatch.setattr(peers, "run", lambda *args: pytest.fail("nothing may run"))
    with pytest.raises(SystemExit) as exit_info:
        peers.main(flags)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m benchmark peers: error: ") and words in err


def test_bad_input_on_the_command_line():
    done = run_command("--only", "nope", "ppo-cartpole")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"python -m benchmark peers: error: unknown row 'nope' in --only; the rows are {', '.join(ROW_NAMES)}"]
    assert "Traceback" not in done.stderr and not done.stdout
