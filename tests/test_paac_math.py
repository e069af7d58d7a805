"""The math of algos/paac.py against values worked out by hand, and its EnvPool adapter against a
scripted stand-in for EnvPool."""

import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import paac


def test_nstep_return_matrix_of_four_envs_with_mixed_episode_ends():
    # gamma 0.5, t_max 4, n_e 4, laid out [t, env]. V after the rollout: 8, 4, 2, 16.
    # Env 0, no episode end: R_3 = 1 + 4 = 5, R_2 = 1 + 2.5 = 3.5, R_1 = 1 + 1.75 = 2.75, R_0 = 1 + 1.375 = 2.375.
    # Env 1, terminated at t 1: R_3 = 0 + 0.5*4 = 2, R_2 = 2 + 1 = 3; R_1 = 1 (no future), R_0 = 2 + 0.5 = 2.5.
    # Env 2, truncated at t 2 with final value 6 and terminated at t 0:
    #   R_3 = 3 + 0.5*2 = 4; R_2 = 0 + 0.5*6 = 3 (nothing flows from t 3); R_1 = 1 + 1.5 = 2.5; R_0 = 4.
    # Env 3, terminated and truncated at t 3 (counts as terminated; final value 100 ignored), truncated at
    #   t 1 with final value -2: R_3 = 1, R_2 = 0 + 0.5 = 0.5, R_1 = 0 + 0.5*-2 = -1, R_0 = 1 - 0.5 = 0.5.
    rewards = torch.tensor([[1.0, 2.0, 4.0, 1.0],
                            [1.0, 1.0, 1.0, 0.0],
                            [1.0, 2.0, 0.0, 0.0],
                            [1.0, 0.0, 3.0, 1.0]])
    terminated = torch.tensor([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1]], dtype=torch.bool)
    truncated = torch.tensor([[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    final_values = torch.zeros(4, 4)
    final_values[2, 2], final_values[1, 3], final_values[3, 3] = 6.0, -2.0, 100.0
    out = paac.nstep_returns(rewards, torch.tensor([8.0, 4.0, 2.0, 16.0]), terminated, truncated, final_values, 0.5)
    expected = torch.tensor([[2.375, 2.5, 4.0, 0.5],
                             [2.75, 1.0, 2.5, -1.0],
                             [3.5, 3.0, 3.0, 0.5],
                             [5.0, 2.0, 4.0, 1.0]])
    assert torch.allclose(out, expected)


def test_the_first_step_of_a_rollout_looks_t_max_steps_ahead():
    # No episode end, gamma 0.9, t_max 3, V(s_3) = 10: R_0 = r_0 + 0.9 r_1 + 0.81 r_2 + 0.729 * 10.
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    out = paac.nstep_returns(rewards, torch.tensor([10.0]), no, no, torch.zeros(3, 1), 0.9)
    assert out[0].item() == pytest.approx(1 + 1.8 + 2.43 + 7.29)
    assert out[2].item() == pytest.approx(3 + 9.0)


def test_loss_is_the_scaled_mean_over_the_batch():
    # Two samples. R = (3, 0), V = (1, 1): advantages (2, -1). logprob log(0.5) both, entropy 0.7 and 0.3.
    # pg = -mean(log 0.5 * (2, -1)) = -0.5 log 0.5; v = mean(4, 1) = 2.5; entropy mean 0.5.
    # loss = 5 * (pg - 0.01 * 0.5 + 0.25 * 2.5). d loss / d V_0 = 5 * 0.25 * -2 * 2 / 2 = -2.5.
    logprob = torch.full((2,), math.log(0.5), requires_grad=True)
    entropy = torch.tensor([0.7, 0.3], requires_grad=True)
    value = torch.tensor([1.0, 1.0], requires_grad=True)
    loss, pg, v, ent = paac.actor_critic_loss(logprob, entropy, value, torch.tensor([3.0, 0.0]), 0.01, 0.25, 5.0)
    loss.backward()
    assert pg.item() == pytest.approx(-0.5 * math.log(0.5)) and v.item() == pytest.approx(2.5)
    assert ent.item() == pytest.approx(0.5)
    assert loss.item() == pytest.approx(5 * (-0.5 * math.log(0.5) - 0.005 + 0.625))
    assert value.grad.tolist() == pytest.approx([-2.5, 1.25])
    assert logprob.grad.tolist() == pytest.approx([5 * -2 / 2, 5 * 1 / 2])
    assert entropy.grad.tolist() == pytest.approx([-5 * 0.01 / 2] * 2)


def test_tensorflow_rmsprop_step_by_hand():
    # Minimise p^2 from p = 1: g = 2. decay 0.99, eps 0.1, lr 0.0224 (the paper's).
    # v = 0.01 * 4 = 0.04; p = 1 - 0.0224 * 2 / sqrt(0.14) = 1 - 0.0448 / 0.37416574 = 1 - 0.11973304 = 0.88026696.
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = paac.RMSpropTF([p], lr=0.0224, decay=0.99, eps=0.1)
    (p**2).sum().backward()
    optimizer.step()
    assert p.item() == pytest.approx(0.88026696, abs=1e-7)


def test_both_architectures_of_table_1():
    actions, frames = gym.spaces.Discrete(4), gym.spaces.Box(0, 255, (4, 84, 84), dtype=np.uint8)
    shapes = {}
    for arch in ("nips", "nature"):
        agent = paac.Agent(frames, actions, arch)
        convs = [m for m in agent.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
        shapes[arch] = ([(c.out_channels, c.kernel_size[0], c.stride[0]) for c in convs], agent.actor.in_features)
        action, logits, value = agent.act(torch.zeros(3, 4, 84, 84, dtype=torch.uint8))
        assert action.shape == value.shape == (3,) and logits.shape == (3, 4)
    assert shapes["nips"] == ([(16, 8, 4), (32, 4, 2)], 256)
    assert shapes["nature"] == ([(32, 8, 4), (64, 4, 2), (64, 3, 1)], 512)
    # MinAtar's 10x10 frames get its small network under either setting; vectors an MLP.
    assert paac.Agent(gym.spaces.Box(0, 1, (10, 10, 4), dtype=bool), actions, "nature").actor.in_features == 128
    assert paac.Agent(gym.spaces.Box(-1, 1, (4,)), actions).get_value(torch.zeros(5, 4)).shape == (5,)


def test_the_update_on_the_acting_graph_equals_one_on_the_observations_run_again():
    # paac.py's update differentiates the logits and values the network gave when it acted; the authors' code
    # ran the n_e x t_max observations through the network again. The weights do not change within a rollout,
    # so both give the same loss and the same clipped RMSProp step. n_e 2, t_max 3, env 1 terminated at t 1.
    torch.manual_seed(0)
    space = gym.spaces.Box(-1, 1, (4,))
    agent = paac.Agent(space, gym.spaces.Discrete(3))
    twin = copy.deepcopy(agent)
    args = dataclasses.replace(paac.PRESETS["classic"], num_envs=2, num_steps=3, ent_coef=0.01)
    observations = torch.randn(4, 2, 4)  # the rollout's 3 steps and the observation after them
    rewards = np.array([[1.0, 0.0], [0.5, 1.0], [0.0, 2.0]], dtype=np.float32)
    terminated = np.array([[False, False], [False, True], [False, False]])
    rollout = paac.Rollout(3, 2, torch.device("cpu"))
    step_logits, step_values = [], []
    for t in range(3):
        action, logits, value = agent.act(observations[t])
        step_logits.append(logits)
        step_values.append(value)
        rollout.record(t, agent, action, value, rewards[t], terminated[t], np.zeros(2, dtype=bool), {})
    optimizer = paac.RMSpropTF(agent.parameters(), lr=0.01, eps=1e-5)
    metrics = paac.update(agent, optimizer, rollout, torch.cat(step_logits), torch.cat(step_values), observations[3],
                          args)

    twin_optimizer = paac.RMSpropTF(twin.parameters(), lr=0.01, eps=1e-5)
    with torch.no_grad():
        next_value = twin.get_value(observations[3])
    returns = paac.nstep_returns(torch.from_numpy(rewards), next_value, torch.from_numpy(terminated),
                                 torch.zeros(3, 2, dtype=torch.bool), torch.zeros(3, 2), args.gamma).reshape(-1)
    _, logprob, entropy, value = twin.get_action_and_value(observations[:3].flatten(0, 1), rollout.actions.reshape(-1))
    loss = paac.actor_critic_loss(logprob, entropy, value, returns, args.ent_coef, args.vf_coef, args.loss_scale)[0]
    paac.clipped_step(twin_optimizer, loss, twin.parameters(), args.max_grad_norm)
    assert metrics["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
    for p, q in zip(agent.parameters(), twin.parameters()):
        assert torch.allclose(p, q, atol=1e-6)


class ScriptedPool:
    """Stands in for envpool.make(...): each env follows a script of (clipped reward, raw reward,
    terminated, game over, truncated) per step; like EnvPool, an env whose episode ended is reset by the
    *next* step sent to it, which ignores its action and returns the first observation (-1)."""

    def __init__(self, scripts):
        self.scripts, self.t = scripts, [0] * len(scripts)
        self.needs_reset = [False] * len(scripts)
        self.resets = []

    def step(self, actions, env_id=None):
        ids = range(len(self.scripts)) if env_id is None else env_id
        obs, out = np.zeros((len(ids), 1)), np.zeros((5, len(ids)))
        for k, i in enumerate(ids):
            if self.needs_reset[i]:
                self.needs_reset[i] = False
                self.resets.append(i)
                obs[k] = -1
                continue
            out[:, k] = self.scripts[i][self.t[i]]
            self.t[i] += 1
            obs[k] = 10 * i + self.t[i]
            self.needs_reset[i] = bool(out[2, k] or out[4, k])
        info = {"reward": out[1], "terminated": out[3].astype(np.int32)}
        return obs, out[0].astype(np.float32), out[2].astype(bool), out[4].astype(bool), info


def scripted_envpool(scripts) -> paac.EnvPoolVecEnv:
    envs = paac.EnvPoolVecEnv.__new__(paac.EnvPoolVecEnv)
    envs.envs, envs.num_envs = ScriptedPool(scripts), len(scripts)
    envs.episode_returns, envs.episode_lengths = np.zeros(len(scripts)), np.zeros(len(scripts), dtype=np.int64)
    envs.closed = False
    return envs


def test_envpool_adapter_resets_at_once_and_reports_whole_games_with_true_scores():
    # Env 0: raw rewards 4, 7 (clipped to 1), a life lost at step 2, then 5 and the game over at step 3.
    # Env 1: raw 2, then the time limit at step 2; then 3 in its next episode.
    scripts = [
        [(1, 4, 0, 0, 0), (1, 7, 1, 0, 0), (1, 5, 1, 1, 0)],
        [(1, 2, 0, 0, 0), (0, 0, 0, 0, 1), (1, 3, 0, 0, 0)],
    ]
    envs = scripted_envpool(scripts)
    actions = np.zeros(2, dtype=np.int32)
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    assert obs[:, 0].tolist() == [1, 11] and not infos
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    # Env 0 lost a life, env 1 hit the time limit: both reset in the same call, their final
    # observations kept; only env 1's episode (game) is over, with return 2 over 2 steps.
    assert terminated.tolist() == [True, False] and truncated.tolist() == [False, True]
    assert obs[:, 0].tolist() == [-1, -1] and envs.envs.resets == [0, 1]
    assert infos["final_obs"][0][0] == 2 and infos["final_obs"][1][0] == 12
    assert infos["final_info"]["_episode"].tolist() == [False, True]
    assert infos["final_info"]["episode"]["r"][1] == 2 and infos["final_info"]["episode"]["l"][1] == 2
    obs, rewards, terminated, truncated, infos = envs.step(actions)
    # Env 0's game ends at its last life: the true score 4 + 7 + 5 = 16 over 3 steps, not the clipped 3.
    # Env 1's return restarted after the truncation: 3 so far.
    assert rewards.tolist() == [1, 1]
    assert infos["final_info"]["_episode"].tolist() == [True, False]
    assert infos["final_info"]["episode"]["r"][0] == 16 and infos["final_info"]["episode"]["l"][0] == 3
    assert envs.episode_returns.tolist() == [0, 3] and envs.episode_lengths.tolist() == [0, 1]
