"""REINFORCE's update() and episode loop against hand-worked values, with networks whose outputs are set by hand.

References: Williams 1992 (REINFORCE: Delta theta = alpha (G - b) grad log pi); Sutton & Barto 2nd ed.,
Algorithm 13.3 (REINFORCE: theta <- theta + alpha G grad ln pi(A_t|S_t), G = sum_k gamma^(k-t-1) R_k) and
Algorithm 13.4 (with baseline: delta = G - v(S_t, w); w <- w + alpha^w delta grad v; theta <- theta +
alpha^theta delta grad ln pi), eq. 3.8 (G_t = R_{t+1} + gamma G_{t+1}, to the episode's end). The script's
documented choices, pinned as they are: the gamma^t factor left out, the policy's gradient averaged over the
batch's episodes (not its steps), no entropy bonus and no normalisation of G_t - v, the baseline fitted by MSE
on G_t with --value-epochs full-batch steps, the first taken with the policy's step.

The networks (--hidden-size 1): the policy's last layer has zero weights and biases [0, ln 4, ln 2], so
pi(.|s) = [1/7, 4/7, 2/7] in every state, and d log pi(a|s) / d bias = e_a - pi (one-hot minus pi); the
baseline is v(s) = 0.5 + 2 tanh(tanh(s)) (weights 1, 1, 2, last bias 0.5), so d v / d (last bias) = 1.
"""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import reinforce

PI = [1 / 7, 4 / 7, 2 / 7]
GAMMA = 0.5
# Two whole episodes: observations, actions, rewards (rewards[t] = R_{t+1}).
EPISODES = [([0.5, -1.0, 2.0], [1, 0, 2], [1.0, 0.0, 2.0]), ([0.0, 1.5], [1, 1], [-1.0, 3.0])]
# G_t by hand, gamma 0.5, each episode on its own: [1 + 0.5 (0 + 0.5 * 2), 0 + 0.5 * 2, 2] and [-1 + 0.5 * 3, 3].
RETURNS = [1.5, 1.0, 2.0, 0.5, 3.0]
FULL_RETURNS = [1.5, 1.5, 1.5, 0.5, 0.5]  # G_0 of each episode at each of its steps (--no-reward-to-go)
OBS = [s for obs, _, _ in EPISODES for s in obs]
ACTIONS = [a for _, actions, _ in EPISODES for a in actions]


def v(s: float) -> float:
    return 0.5 + 2 * math.tanh(math.tanh(s))


def make_agent(baseline: bool, n_actions: int = 3):
    agent = reinforce.Agent(gym.spaces.Box(-10, 10, (1,)), gym.spaces.Discrete(n_actions), hidden=1, baseline=baseline)
    with torch.no_grad():
        agent.actor[4].weight.zero_()
        agent.actor[4].bias.copy_(torch.tensor([0.0, math.log(4), math.log(2)])[:n_actions])
        if baseline:
            for layer, (w, b) in zip(agent.critic[::2], ((1.0, 0.0), (1.0, 0.0), (2.0, 0.5))):
                layer.weight.fill_(w), layer.bias.fill_(b)
    return agent


def optimizer_of(agent, args):
    """As main makes it: one Adam, the policy at --learning-rate and the baseline at --value-learning-rate."""
    groups = [{"params": agent.policy_parameters(), "lr": args.learning_rate}]
    if args.baseline:
        groups.append({"params": list(agent.critic.parameters()), "lr": args.value_learning_rate})
    return torch.optim.Adam(groups)


def episodes(data=EPISODES) -> list:
    return [reinforce.Episode(np.array(obs, np.float32)[:, None], np.array(actions), np.array(rewards))
            for obs, actions, rewards in data]


def capture_steps(agent, optimizer) -> list:
    """Every parameter's gradient (by name; None when it has none) at each optimizer.step()."""
    steps = []
    real_step = optimizer.step

    def step(*args, **kwargs):
        steps.append({name: None if p.grad is None else p.grad.clone() for name, p in agent.named_parameters()})
        return real_step(*args, **kwargs)

    optimizer.step = step
    return steps


def policy_gradient(weights: list[float], num_episodes: int = 2) -> list[float]:
    """d/d(last bias) of -(1/E) sum_t w_t log pi(A_t|S_t) = -(1/E) sum_t w_t (e_{A_t} - pi)."""
    return [-sum(w * ((a == k) - PI[k]) for w, a in zip(weights, ACTIONS)) / num_episodes for k in range(3)]


def run_update(baseline: bool, **overrides):
    settings = {"baseline": baseline, "gamma": GAMMA, "value_epochs": 3, **overrides}
    args = dataclasses.replace(reinforce.Args(), **settings)
    agent = make_agent(baseline)
    optimizer = optimizer_of(agent, args)
    steps = capture_steps(agent, optimizer)
    before = agent.actor[4].bias.detach().clone()
    metrics = reinforce.update(agent, optimizer, episodes(), args)
    return agent, steps, before, metrics, args


def test_the_hand_set_networks():
    agent = make_agent(baseline=True)
    obs = torch.tensor([[0.5], [0.0]])
    logprob, entropy = agent.log_prob(obs, torch.tensor([1, 2]))
    assert logprob.tolist() == pytest.approx([math.log(4 / 7), math.log(2 / 7)], abs=1e-6)
    assert agent.get_value(obs).tolist() == pytest.approx([v(0.5), 0.5], abs=1e-6)
    # v(0.5) = 0.5 + 2 tanh(tanh(0.5)) = 0.5 + 2 tanh(0.4621) = 0.5 + 2 * 0.4318
    assert v(0.5) == pytest.approx(1.3636, abs=1e-4)


def test_the_policy_step_follows_g_t_per_episode_reward_to_go_within_each_episode():
    # Algorithm 13.3 (no baseline): the gradient of -(1/E) sum_t G_t log pi(A_t|S_t), G_t discounted with
    # gamma to the end of its own episode (G_2 = 2 of episode 1 does not see episode 2's rewards), averaged
    # over E = 2 episodes, not over the 5 steps. Worked:
    #   sum_t G_t (e_{A_t} - pi) = 1.5 (e_1 - pi) + 1 (e_0 - pi) + 2 (e_2 - pi) + 0.5 (e_1 - pi) + 3 (e_1 - pi)
    #                            = [1, 5, 2] - 8 pi = [1 - 8/7, 5 - 32/7, 2 - 16/7] = [-1/7, 3/7, -2/7]
    # so the gradient is -1/2 of that: [1/14, -3/14, 1/7].
    agent, steps, before, metrics, args = run_update(baseline=False)
    assert policy_gradient(RETURNS) == pytest.approx([1 / 14, -3 / 14, 1 / 7])
    assert len(steps) == 1  # one step, of the policy only
    assert steps[0]["actor.4.bias"].tolist() == pytest.approx([1 / 14, -3 / 14, 1 / 7], abs=1e-6)
    # The loss reported: -(1/2) sum_t G_t log pi(A_t) with log pi = log [4/7, 1/7, 2/7, 4/7, 4/7].
    logpi = [math.log(PI[a]) for a in ACTIONS]
    assert metrics["policy_loss"].item() == pytest.approx(-sum(g * lp for g, lp in zip(RETURNS, logpi)) / 2, rel=1e-6)
    # Gradient ascent on J: the step raises the logit of the action with the largest weighted score (action 1)
    # and lowers the others; Adam's first step moves each by the learning rate.
    step = (agent.actor[4].bias.detach() - before).tolist()
    assert step == pytest.approx([-args.learning_rate, args.learning_rate, -args.learning_rate], rel=1e-4)
    # Only logged: the entropy of [1/7, 4/7, 2/7] (REINFORCE has no entropy bonus: the gradient above has none).
    entropy = -sum(p * math.log(p) for p in PI)
    assert metrics["entropy"].item() == pytest.approx(entropy, rel=1e-6)


def test_the_baseline_is_subtracted_state_by_state_and_fitted_to_g_t():
    # Algorithm 13.4: delta_t = G_t - v(S_t) weighs grad log pi (v from before this batch, a constant there:
    # the policy's loss sends no gradient into v), and v's own step follows the MSE on G_t:
    # d/d(v's last bias) mean_t (v(S_t) - G_t)^2 = (2/5) sum_t (v(S_t) - G_t).
    agent, steps, before, metrics, args = run_update(baseline=True)
    values = [v(s) for s in OBS]
    deltas = [g - value for g, value in zip(RETURNS, values)]
    assert deltas == pytest.approx([0.1364, 1.7840, 0.0079, 0.0, 1.0624], abs=1e-4)
    first = steps[0]
    assert first["actor.4.bias"].tolist() == pytest.approx(policy_gradient(deltas), abs=1e-6)
    assert first["critic.4.bias"].item() == pytest.approx(2 / 5 * sum(-d for d in deltas), abs=1e-6)
    assert first["critic.4.weight"].item() == pytest.approx(
        2 / 5 * sum(-d * math.tanh(math.tanh(s)) for d, s in zip(deltas, OBS)), abs=1e-6)
    logpi = [math.log(PI[a]) for a in ACTIONS]
    pg_loss = -sum(d * lp for d, lp in zip(deltas, logpi)) / 2
    value_loss = sum(d * d for d in deltas) / 5
    assert metrics["policy_loss"].item() == pytest.approx(pg_loss, rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(pg_loss + value_loss, rel=1e-5)


def test_the_baseline_takes_value_epochs_steps_and_the_policy_only_the_first():
    # --value-epochs 3: three Adam steps in all. The first carries the policy's gradient with the baseline's;
    # the two after it carry the baseline's only (the policy's gradients cleared to None, so Adam leaves the
    # policy where its one step put it: no second move from its momentum).
    agent, steps, before, metrics, args = run_update(baseline=True)
    assert len(steps) == 3
    assert all(steps[0][name] is not None for name in ("actor.4.bias", "critic.4.bias"))
    for later in steps[1:]:
        assert all(later[name] is None for name, _ in agent.named_parameters() if not name.startswith("critic."))
        assert later["critic.4.bias"] is not None
    deltas = [g - v(s) for g, s in zip(RETURNS, OBS)]
    signs = [math.copysign(1, g) if abs(g) > 1e-6 else 0.0 for g in policy_gradient(deltas)]
    assert (agent.actor[4].bias.detach() - before).tolist() == pytest.approx(
        [-args.learning_rate * s for s in signs], rel=1e-4, abs=1e-7)
    # Each step fitted v towards G_t: the MSE after them is below the one before.
    fitted = agent.get_value(torch.tensor(OBS)[:, None]).detach()
    assert ((fitted - torch.tensor(RETURNS)) ** 2).mean().item() < sum(d * d for d in deltas) / 5
    assert metrics["value_loss"].item() < sum(d * d for d in deltas) / 5


def test_without_reward_to_go_every_step_is_weighed_by_g_0_and_the_baseline_still_fits_g_t():
    # --no-reward-to-go (Williams 1992's estimator): the weight at every step is the whole episode's return
    # G_0 (1.5 in episode 1, 0.5 in episode 2) less v(S_t), while v still regresses on G_t (Algorithm 13.4's G).
    agent, steps, before, metrics, args = run_update(baseline=True, reward_to_go=False)
    values = [v(s) for s in OBS]
    weights = [g0 - value for g0, value in zip(FULL_RETURNS, values)]
    assert steps[0]["actor.4.bias"].tolist() == pytest.approx(policy_gradient(weights), abs=1e-6)
    assert steps[0]["critic.4.bias"].item() == pytest.approx(
        2 / 5 * sum(value - g for value, g in zip(values, RETURNS)), abs=1e-6)


def test_gamma_reaches_the_returns():
    # Eq. 3.8 with the run's gamma: --gamma 1 makes G_t the plain sums to each episode's end, [3, 2, 2, 2, 3];
    # the step follows them.
    agent, steps, _, _, _ = run_update(baseline=True, gamma=1.0)
    values = [v(s) for s in OBS]
    deltas = [g - value for g, value in zip([3.0, 2.0, 2.0, 2.0, 3.0], values)]
    assert steps[0]["actor.4.bias"].tolist() == pytest.approx(policy_gradient(deltas), abs=1e-6)
    assert steps[0]["critic.4.bias"].item() == pytest.approx(2 / 5 * sum(-d for d in deltas), abs=1e-6)


# --- acting: the samples are of the policy whose log-probability the gradient uses -------------------------


def test_discrete_actions_are_samples_of_the_softmax_policy():
    # Algorithm 13.3's "generate an episode following pi": the score-function gradient needs A_t ~ pi(.|S_t)
    # (the Gumbel-max draw argmax(logits + Gumbel noise) is one). 60,000 draws of [1/7, 4/7, 2/7] land
    # within 0.01 of it (the standard error is 0.002); with the noise's sign flipped they give about
    # [0.105, 0.609, 0.286].
    torch.manual_seed(0)
    agent = make_agent(baseline=False)
    actions = agent.act(torch.zeros(60_000, 1))
    frequencies = torch.bincount(actions, minlength=3).double() / len(actions)
    assert frequencies.tolist() == pytest.approx(PI, abs=0.01)
    assert agent.act(torch.zeros(3, 1), deterministic=True).tolist() == [1, 1, 1]


def test_gaussian_actions_are_samples_of_the_policy_with_std_exp_log_std():
    # Algorithm 13.3's "following pi", for continuous actions: mean the MLP's output, std exp(log std) (here
    # log std = log 2, so std 2).
    torch.manual_seed(0)
    agent = reinforce.Agent(gym.spaces.Box(-10, 10, (1,)), gym.spaces.Box(-1, 1, (1,)), hidden=1, baseline=False)
    with torch.no_grad():
        agent.actor[4].weight.zero_(), agent.actor[4].bias.fill_(0.5), agent.actor_logstd.fill_(math.log(2))
    actions = agent.act(torch.zeros(40_000, 1))
    assert actions.mean().item() == pytest.approx(0.5, abs=0.05)
    assert actions.std().item() == pytest.approx(2.0, abs=0.05)


# --- episodes: where they end --------------------------------------------------------------------------------


class TwoResets(gym.Env):
    """Observation 100 * (resets so far) + t, reward t at step t, two actions. The first episode runs into the
    time limit (2 steps); the second terminates at its first step."""

    observation_space = gym.spaces.Box(-1000, 1000, (1,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.resets, self.t = 0, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.resets, self.t = self.resets + 1, 0
        return np.array([100.0 * self.resets], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([100.0 * self.resets + self.t], np.float32), float(self.t), self.resets >= 2, False, {}


gym.register("TestReinforceTwoResets-v0", entry_point=TwoResets, max_episode_steps=2)


def test_an_episode_ends_at_a_time_limit_and_the_next_starts_from_its_reset():
    # Algorithm 13.3: an episode S_0, A_0, R_1, ..., R_T following pi, and G_t summed to its end T. Monte-Carlo
    # returns stop at the episode's end, termination or truncation alike (no bootstrap, and nothing of the
    # next episode): episode 1 is [100, 101] with rewards [1, 2], cut by the time limit;
    # episode 2 starts at the reset observation 200, with a real reward (no step of the old episode in it).
    torch.manual_seed(0)
    envs = reinforce.make_vector_env("TestReinforceTwoResets-v0")
    agent = make_agent(baseline=False, n_actions=2)
    obs, _ = envs.reset(seed=0)
    first, obs = reinforce.play_episode(envs, agent, obs)
    assert first.observations.flatten().tolist() == [100.0, 101.0] and first.rewards.tolist() == [1.0, 2.0]
    assert obs.flatten().tolist() == [200.0]
    second, _ = reinforce.play_episode(envs, agent, obs)
    envs.close()
    assert second.observations.flatten().tolist() == [200.0] and second.rewards.tolist() == [1.0]


def test_each_update_gets_episodes_per_update_whole_episodes_played_by_sampling(monkeypatch):
    # Algorithm 13.3's loop ("for each episode": generate it, then step), here batched: --episodes-per-update
    # whole episodes of the current policy, sampled (not its most likely action), then one update on them.
    batches, modes = [], []
    real_update, real_play = reinforce.update, reinforce.play_episode

    def update(agent, optimizer, episodes, args):
        batches.append([len(e.rewards) for e in episodes])
        return real_update(agent, optimizer, episodes, args)

    def play_episode(envs, agent, obs, deterministic=False):
        modes.append(deterministic)
        return real_play(envs, agent, obs, deterministic)

    monkeypatch.setattr(reinforce, "update", update)
    monkeypatch.setattr(reinforce, "play_episode", play_episode)
    reinforce.main(reinforce.parse_args(["--env-id", "TestReinforceTwoResets-v0", "--total-timesteps", "5",
                                         "--episodes-per-update", "2", "--hidden-size", "4", "--eval-episodes", "0",
                                         "--run-dir", "run"]))
    # Batch 1: 2 steps cut by the limit, then 1 step terminated (3 steps); batch 2 starts from a fresh reset of
    # an env that now terminates at once: two 1-step episodes, 5 steps in all, the budget.
    assert batches == [[2, 1], [1, 1]]
    assert modes == [False] * 4
