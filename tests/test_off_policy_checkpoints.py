"""The replay kit that ddpg, td3 and sac share (tools/kit/replay.py; tests/test_kit.py checks that their copies
are one text, so its pieces are tested on one script's copy): the replay buffer, what a real run stores at an
episode's end, the actions' map onto the env's bounds, the Polyak update, DDPG's and TD3's actor, and, for each
script, checkpoints that hold the rows stored so far (never the buffer's whole allocation) and a killed run
that resumes with its buffer."""

import importlib
import itertools
import os
import shutil
import signal
import types

import gymnasium as gym
import numpy as np
import pytest
import torch

import td3 as kit  # any of the three: the replay kit is the same text in each
from helpers import read_episodes, returns_of, start_run, wait_for  # helpers also registers TestCounter*-v0

SCRIPTS = ["ddpg", "td3", "sac"]
SMALL_NETS = {"ddpg": ["--hidden-sizes", "32", "32"], "td3": ["--hidden-sizes", "32", "32"], "sac": ["--hidden-size", "32"]}
CPU = torch.device("cpu")


def add(buffer, value: float, terminated: bool = False) -> None:
    """One transition of one env: obs [value, value], action [value / 10], reward value, next obs value + 0.5."""
    buffer.add(np.full((1, 2), value, np.float32), np.full((1, 1), value / 10, np.float32), np.array([value]),
               np.full((1, 2), value + 0.5, np.float32), np.array([terminated]))


def test_the_buffer_wraps_around_over_the_oldest_transitions():
    buffer = kit.ReplayBuffer(capacity=3, obs_dim=2, act_dim=1, device=CPU)
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        add(buffer, value, terminated=value == 4.0)
    assert (buffer.size, buffer.pos) == (3, 2)
    rows = buffer.rows(buffer.data)
    assert rows.rewards.tolist() == [4.0, 5.0, 3.0]  # rows 0 and 1 overwritten by transitions 4 and 5
    assert rows.obs[:, 0].tolist() == [4.0, 5.0, 3.0] and rows.next_obs[:, 1].tolist() == [4.5, 5.5, 3.5]
    assert rows.actions[:, 0].tolist() == pytest.approx([0.4, 0.5, 0.3])
    assert rows.terminated.tolist() == [1.0, 0.0, 0.0]


def test_the_buffer_samples_only_filled_rows_and_keeps_each_transition_whole():
    torch.manual_seed(0)
    buffer = kit.ReplayBuffer(capacity=100, obs_dim=2, act_dim=1, device=CPU)
    for value in (1.0, 2.0, 3.0):
        add(buffer, value)
    obs, actions, rewards, next_obs, terminated = buffer.sample(3000)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0}  # all three drawn, never an empty (zero) row
    assert torch.equal(obs[:, 0], rewards) and torch.equal(next_obs[:, 0], rewards + 0.5)
    assert torch.allclose(actions[:, 0], rewards / 10) and not terminated.any()


def test_the_buffer_state_round_trips_and_holds_only_the_filled_rows():
    buffer = kit.ReplayBuffer(capacity=3, obs_dim=2, act_dim=1, device=CPU)
    for value in (1.0, 2.0, 3.0, 4.0):
        add(buffer, value)
    restored = kit.ReplayBuffer(capacity=3, obs_dim=2, act_dim=1, device=CPU)
    restored.load_state_dict(buffer.state_dict())
    assert (restored.pos, restored.size) == (1, 3) and torch.equal(restored.data, buffer.data)
    partial = kit.ReplayBuffer(capacity=10, obs_dim=2, act_dim=1, device=CPU)
    add(partial, 7.0)
    state = partial.state_dict()
    # Only the filled row, and only its bytes: torch.save writes a tensor's whole storage, so a view of the
    # first row would write all 10.
    assert state["data"].shape == (1, kit.ReplayBuffer.row_size(2, 1))
    assert state["data"].untyped_storage().nbytes() == state["data"].numel() * 4
    with pytest.raises(kit.ConfigError, match="more than --buffer-size 1"):
        kit.ReplayBuffer(capacity=1, obs_dim=2, act_dim=1, device=CPU).load_state_dict(buffer.state_dict())


def test_the_buffer_loads_the_tensor_per_part_checkpoints_of_ddpg_and_td3_before_the_kit():
    buffer = kit.ReplayBuffer(capacity=5, obs_dim=2, act_dim=1, device=CPU)
    for value in (1.0, 2.0):
        add(buffer, value, terminated=value == 2.0)
    rows = buffer.rows(buffer.data[:2])
    old_state = {"pos": 2, "size": 2, **{name: getattr(rows, name).clone() for name in rows._fields}}
    restored = kit.ReplayBuffer(capacity=5, obs_dim=2, act_dim=1, device=CPU)
    restored.load_state_dict(old_state)
    assert torch.equal(restored.data, buffer.data) and (restored.pos, restored.size) == (2, 2)


def test_memory_estimate_for_hopper():
    # 11 observation numbers twice, 3 action numbers, reward and flag: 27 float32 = 108 bytes, 103 MiB for 1M.
    assert kit.ReplayBuffer.bytes_per_transition(obs_dim=11, act_dim=3) == 108
    line = kit.ReplayBuffer(50, 11, 3, CPU).describe("Hopper-v5", resumed_step=None)
    assert line.startswith("replay buffer: 108 bytes a transition of Hopper-v5 (11-dim observation twice, 3-dim action")
    assert "1M transitions take 103 MiB; this run's 50 take 0.0 MiB on cpu" in line and "resumed" not in line


@pytest.mark.parametrize("name", SCRIPTS)
@pytest.mark.parametrize("env_id, terminate", [("TestCounterTerminates-v0", True), ("TestCounterTruncated-v0", False)])
def test_a_run_stores_the_true_final_observation_and_only_termination_as_terminal(name, env_id, terminate):
    # Three steps of a real run, saved in its checkpoint: 0 -> 1, 1 -> 2 (the episode's end: terminated, or
    # truncated by the time limit), then the new episode's 0 -> 1.
    module = importlib.import_module(name)
    module.main(module.parse_args(["--env-id", env_id, "--total-timesteps", "3", "--learning-starts", "10",
                                   "--checkpoint-every", "3", "--eval-episodes", "0", "--eval-every", "0",
                                   "--run-dir", "run", *SMALL_NETS[name]]))
    state = torch.load("run/checkpoint.pt", weights_only=True)["buffer"]
    stored = kit.ReplayBuffer(3, 1, 1, CPU).rows(state["data"])
    assert stored.obs[:, 0].tolist() == [0.0, 1.0, 0.0]
    assert stored.next_obs[:, 0].tolist() == [1.0, 2.0, 1.0]  # 2.0, not the reset observation 0.0
    assert stored.terminated.tolist() == [0.0, 1.0 if terminate else 0.0, 0.0]


class CountingEnv(gym.Env):
    """Observation t after t steps (100 after a reset), reward t; terminates after `terminate_at` steps."""

    observation_space = gym.spaces.Box(-1000, 1000, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, terminate_at: int = 0):
        self.terminate_at, self.t = terminate_at, 0

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.array([100.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), float(self.t), self.t == self.terminate_at, False, {}


@pytest.mark.parametrize("terminate_at, time_limit, stored_terminated", [
    (3, 10, 1.0),  # terminated at step 3: no bootstrap
    (0, 3, 0.0),  # cut off by the time limit at step 3: bootstrap from the last observation
    (3, 3, 1.0),  # both at once: the episode terminated
])
def test_the_final_step_stores_the_true_last_observation_and_terminated_not_done(terminate_at, time_limit,
                                                                                stored_terminated):
    # Four steps of a SAME_STEP vector env, each taken and stored by the kit's env_step, as main does.
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(CountingEnv(terminate_at), time_limit)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    buffer = kit.ReplayBuffer(capacity=10, obs_dim=1, act_dim=1, device=CPU)
    ended = []
    run = types.SimpleNamespace(episodes=lambda step, infos: None)  # the run's episode log is not under test
    obs, _ = envs.reset(seed=0)
    for step in range(1, 5):
        obs, done = kit.env_step(run, envs, buffer, step, obs, np.zeros((1, 1), dtype=np.float32))
        ended.append(bool(done[0]))
    envs.close()
    assert ended == [False, False, True, False]
    stored = buffer.rows(buffer.data[: buffer.size])
    assert stored.obs[:, 0].tolist() == [100.0, 1.0, 2.0, 100.0]  # the 4th step starts the next episode
    assert stored.next_obs[:, 0].tolist() == [1.0, 2.0, 3.0, 1.0]  # step 3's is its last one, not the reset's 100
    assert stored.rewards.tolist() == [1.0, 2.0, 3.0, 1.0]
    assert stored.terminated.tolist() == [0.0, 0.0, stored_terminated, 0.0]


def test_actions_are_mapped_linearly_onto_the_env_bounds():
    space = gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32))
    actions = np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]], np.float32)
    assert kit.env_action(space, actions).tolist() == [[-2.0, 0.0], [2.0, 1.0], [0.0, 0.5]]


def test_polyak_update_keeps_the_target_at_tau_0_copies_the_source_at_tau_1_and_stays_out_of_autograd():
    source = [torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([[3.0]], requires_grad=True)]
    target = [torch.tensor([5.0, -2.0]), torch.tensor([[7.0]])]
    kit.polyak_update(target, source, 0.0)
    assert target[0].tolist() == [5.0, -2.0] and target[1].tolist() == [[7.0]]
    kit.polyak_update(target, source, 0.25)  # 0.25 * source + 0.75 * target
    assert target[0].tolist() == [4.0, -1.0] and target[1].tolist() == [[6.0]]
    kit.polyak_update(target, source, 1.0)
    assert target[0].tolist() == [1.0, 2.0] and target[1].tolist() == [[3.0]]
    assert all(not t.requires_grad and t.grad_fn is None for t in target)


def test_the_deterministic_actor_acts_with_its_mean_or_with_clipped_gaussian_noise():
    torch.manual_seed(0)
    actor = kit.DeterministicActor(obs_dim=3, act_dim=2, hidden_sizes=(8,), exploration_noise=0.05)
    obs = torch.randn(2000, 3)
    assert torch.equal(actor.act(obs, deterministic=True), actor(obs))
    assert (actor.act(obs) - actor(obs)).std().item() == pytest.approx(0.05, rel=0.05)
    assert actor.act(torch.full((1, 3), 100.0)).abs().max() <= 1.0  # clipped to the action bounds
    final = kit.DeterministicActor(3, 2, (400, 300), 0.1, final_layer_init=3e-3).net[-1]
    assert final.weight.abs().max() <= 3e-3 and final.bias.abs().max() <= 3e-3


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_checkpoint_holds_the_stored_transitions_not_the_buffer_capacity(name, monkeypatch):
    # torch.save writes the whole storage of a view: a checkpoint that saved the buffer's first rows as views
    # held every allocated slot (108 MB for 10 Hopper transitions in the default 1M buffer). Two runs
    # interrupted at the same step, one with 300 slots and one with 100,000, write checkpoints of one size.
    module = importlib.import_module(name)
    sizes = []
    for buffer_size in (300, 100_000):
        def finished_episodes(infos, real=module.finished_episodes, steps=itertools.count(1)):
            if next(steps) == 300:  # main calls this once a step: interrupt the run at step 300
                signal.raise_signal(signal.SIGINT)
            return real(infos)

        run_dir = f"run{buffer_size}"
        with monkeypatch.context() as patch:
            patch.setattr(module, "finished_episodes", finished_episodes)
            result = module.main(module.parse_args([
                "--env-id", "Pendulum-v1", "--total-timesteps", "100000", "--learning-starts", "1000",
                "--buffer-size", str(buffer_size), "--batch-size", "32", "--eval-every", "0", "--eval-episodes", "0",
                "--run-dir", run_dir, *SMALL_NETS[name]]))
        assert result == {"interrupted": True, "global_step": 300, "run_dir": run_dir}
        buffer = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)["buffer"]
        assert all(value.untyped_storage().nbytes() == value.numel() * 4
                   for value in buffer.values() if isinstance(value, torch.Tensor))
        sizes.append(os.path.getsize(f"{run_dir}/checkpoint.pt"))
    assert abs(sizes[1] - sizes[0]) < 1_000, sizes


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_killed_run_resumes_with_its_replay_buffer_and_continues_the_step_count(name, capsys):
    module = importlib.import_module(name)
    process = start_run(name, "--env-id", "Pendulum-v1", "--total-timesteps", "1500", "--learning-starts", "100",
                        "--batch-size", "32", "--checkpoint-every", "500", "--eval-every", "0", *SMALL_NETS[name])
    wait_for(lambda: os.path.exists("run/checkpoint.pt") and len(read_episodes("run")) >= 3, process, timeout=300)
    process.kill()
    process.wait()
    checkpoint = torch.load("run/checkpoint.pt", weights_only=True)
    saved_step, saved_buffer = checkpoint["global_step"], checkpoint["buffer"]
    assert saved_step in (500, 1000) and saved_buffer["size"] == saved_step == len(saved_buffer["data"])  # every step
    if name != "sac":  # one update a step from the first after --learning-starts (sac does not count them)
        assert checkpoint["updates"] == saved_step - 100
    shutil.copytree("run", "again")

    capsys.readouterr()
    summary = module.main(module.parse_args(["--resume", "run"]))
    assert f"resumed with {saved_step:,} stored, at step {saved_step:,}" in capsys.readouterr().out
    # The buffer continued from the checkpoint's transitions, not from empty.
    assert summary["total_steps"] == 1500 and summary["buffer_size"] == 1500
    final = torch.load("run/checkpoint.pt", weights_only=True)
    assert torch.equal(final["buffer"]["data"][:saved_step], saved_buffer["data"])
    assert final.get("updates", 1400) == 1400
    # Resuming is itself exact: the same checkpoint resumed twice gives the same episodes.
    module.main(module.parse_args(["--resume", "again"]))
    assert returns_of("again") == returns_of("run")
