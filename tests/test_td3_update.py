"""td3.py's update() and training loop against hand-worked values.

References are to Fujimoto et al. 2018, "Addressing Function Approximation Error in Actor-Critic Methods":
Algorithm 1 (a~ <- pi_phi'(s') + eps, eps ~ clip(N(0, sigma~), -c, c); y <- r + gamma min_{i=1,2} Q_theta'_i(s', a~);
theta_i <- argmin N^-1 sum (y - Q_theta_i(s, a))^2; "if t mod d then" the actor's step along
N^-1 sum grad_a Q_theta1(s, a)|_{a = pi_phi(s)} grad_phi pi_phi(s) and theta'_i <- tau theta_i + (1 - tau) theta'_i,
phi' <- tau phi + (1 - tau) phi'), Eq. 10 (the clipped double-Q target), Eq. 14 (target policy smoothing),
Section 5.2 (d = 2) and Section 6.1 (exploration N(0, 0.1), sigma~ 0.2 clipped at c = 0.5, tau 0.005, 1,000
steps of random actions first).

The networks have one unit a layer (--hidden-sizes 1), set by hand so that on the inputs used here
    each critic j:  h = relu(0 s + a + 2) = a + 2,  Q_j(s, a) = w_j (a + 2) + b_j
    actor:          h = relu(s + 10) = s + 10,      pi(s) = tanh(v h + u)
the optimisers are plain SGD, and the smoothing noise's N(0, 1) draws are fixed (torch.randn_like patched),
so that one update is a handful of numbers worked out below. The training loop runs main() for a few steps
on a tiny registered env whose episodes end on known steps (the even ones terminate at their 3rd step, the
odd ones are truncated by a 5-step time limit), with update() replaced by a spy.
"""

import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import td3
from helpers import assert_targets_moved_by_tau, parameters

# --- networks with known outputs --------------------------------------------------------------------------


def set_twin_critic(critic: td3.TwinCritic, w: tuple, b: tuple) -> None:
    """Q_j(s, a) = w[j] (a + 2) + b[j]."""
    with torch.no_grad():
        for j in range(2):
            critic.weights[0][j] = torch.tensor([[0.0], [1.0]])  # input [s, a]
            critic.biases[0][j] = 2.0
            critic.weights[1][j] = w[j]
            critic.biases[1][j] = b[j]


def set_actor(actor: td3.DeterministicActor, v: float, u: float) -> None:
    """pi(s) = tanh(v (s + 10) + u)."""
    first, _, last = actor.net
    with torch.no_grad():
        first.weight.fill_(1.0), first.bias.fill_(10.0)
        last.weight.fill_(v), last.bias.fill_(u)


def hand_set_agent(**overrides):
    args = dataclasses.replace(td3.Args(), hidden_sizes=(1,), gamma=0.9, tau=0.25, **overrides)
    agent = td3.Agent(obs_dim=1, act_dim=1, args=args)
    set_twin_critic(agent.critic, w=(0.0, 0.0), b=(-0.5, 0.5))  # Q_1 = -0.5, Q_2 = 0.5
    set_twin_critic(agent.critic_target, w=(2.0, -1.0), b=(-4.0, 2.0))  # Q'_1 = 2a, Q'_2 = -a
    set_actor(agent.actor, v=0.0, u=0.0)  # pi(s) = 0
    set_actor(agent.actor_target, v=1.0, u=-10.0)  # pi'(s) = tanh(s)
    return agent, args


# Four transitions; the second terminated. next_obs is chosen so that pi'(s') = [0.5, -0.2, 0.3, 0.9].
BATCH = td3.Batch(obs=torch.tensor([[0.3], [-0.7], [1.2], [0.0]]),
                  actions=torch.tensor([[0.5], [-1.0], [0.0], [1.0]]),
                  rewards=torch.tensor([1.0, 0.0, -1.0, 0.5]),
                  next_obs=torch.tensor([[math.atanh(x)] for x in (0.5, -0.2, 0.3, 0.9)]),
                  terminated=torch.tensor([0.0, 1.0, 0.0, 0.0]))
EPS = torch.tensor([[0.5], [2.0], [-3.0], [1.0]])  # the smoothing noise's N(0, 1) draws
# By hand. Smoothing noise clip(0.2 eps, -0.5, 0.5) = [0.1, 0.4, -0.5 (-0.6 clipped), 0.2];
# a~ = clip(pi'(s') + noise, -1, 1) = [0.6, 0.2, -0.2, 1.0 (1.1 clipped)].
# Q'_1(s', a~) = 2 a~ = [1.2, 0.4, -0.4, 2.0]; Q'_2 = -a~ = [-0.6, -0.2, 0.2, -1.0]; min = [-0.6, -0.2, -0.4, -1.0].
# y = r + 0.9 (1 - terminated) min = [1 - 0.54, 0 (terminated), -1 - 0.36, 0.5 - 0.9] = [0.46, 0, -1.36, -0.4].
# Q_1 - y = [-0.96, -0.5, 0.86, -0.1], mean square 1.9212 / 4 = 0.4803;
# Q_2 - y = [0.04, 0.5, 1.86, 0.9], mean square 4.5212 / 4 = 1.1303; the critics' loss 1.6106.
# h = a + 2 = [2.5, 1, 2, 3]. Critic 1: dL/db = 2/4 sum(Q_1 - y) = -0.35, dL/dw = 2/4 sum((Q_1 - y) h) = -0.74;
# critic 2: 2/4 * 3.3 = 1.65 and 2/4 * 7.02 = 3.51. SGD 0.1: (w_1, b_1) = (0.074, -0.465),
# (w_2, b_2) = (-0.351, 0.335) (the first layer's gradients pass through w = 0).
# The actor, on the stepped Q_1 at pi(s) = 0: Q_1 = 0.074 * 2 - 0.465 = -0.317, its loss 0.317;
# d loss/du = -1/4 sum(dQ_1/da (1 - pi^2)) = -0.074, SGD 0.1: u = 0.0074. (Q_2 there is -0.367, lower: the
# minimum of the two, or Q_2, has the slope -0.351 and would move u to -0.0351.)
CRITIC_LOSS = 1.6106
CRITICS_W, CRITICS_B = (0.074, -0.351), (-0.465, 0.335)
ACTOR_LOSS, ACTOR_U = 0.317, 0.0074


def one_update(monkeypatch, update_actor: bool, **overrides):
    agent, args = hand_set_agent(**overrides)
    actor_optimizer = torch.optim.SGD(agent.actor.parameters(), lr=0.1)
    critic_optimizer = torch.optim.SGD(agent.critic.parameters(), lr=0.1)
    before = {name: parameters(getattr(agent, name)) for name in ("actor", "critic", "actor_target", "critic_target")}

    def eps_like(t):
        assert t.shape == EPS.shape
        return EPS.clone()

    monkeypatch.setattr(torch, "randn_like", eps_like)
    metrics = td3.update(agent, actor_optimizer, critic_optimizer, BATCH, args, update_actor=update_actor)
    return agent, metrics, before


def test_the_hand_set_networks_compute_what_the_comments_say():
    agent, _ = hand_set_agent()
    a = torch.tensor([[0.6], [0.2], [-0.2], [1.0]])
    with torch.no_grad():
        q1, q2 = agent.critic_target(BATCH.next_obs, a).tolist()
        assert q1 == pytest.approx([1.2, 0.4, -0.4, 2.0]) and q2 == pytest.approx([-0.6, -0.2, 0.2, -1.0])
        assert agent.critic(BATCH.obs, a).flatten().tolist() == pytest.approx([-0.5] * 4 + [0.5] * 4)
        assert agent.actor_target(BATCH.next_obs).squeeze(-1).tolist() == pytest.approx([0.5, -0.2, 0.3, 0.9], abs=1e-6)
        assert agent.actor(BATCH.obs).abs().max() == 0


def test_both_critics_regress_on_the_clipped_double_q_of_the_smoothed_target_action(monkeypatch):
    # Algorithm 1 and Eqs. 10 and 14: a~ = pi'(s') + clip(0.2 eps, -0.5, 0.5) clipped to the action bounds, of
    # the target actor; y = r + gamma (1 - terminated) min_i Q'_i(s', a~) of the target critics (their max,
    # Q'_1 alone, the online networks or no noise give other targets); each critic steps on its own mean
    # squared error against the same y, held fixed.
    agent, metrics, before = one_update(monkeypatch, update_actor=False)
    assert metrics["qf_loss"].item() == pytest.approx(CRITIC_LOSS, rel=1e-5)
    assert metrics["qf_values"].item() == pytest.approx(0.0, abs=1e-7)
    assert agent.critic.weights[1].flatten().tolist() == pytest.approx(CRITICS_W, rel=1e-5)
    assert agent.critic.biases[1].flatten().tolist() == pytest.approx(CRITICS_B, rel=1e-5)
    assert torch.equal(agent.critic.weights[0], before["critic"][0])  # its gradient passed through w = 0


def test_between_delayed_updates_the_actor_and_every_target_network_stand_still(monkeypatch):
    # Algorithm 1: "if t mod d then" update the actor and the targets; otherwise the critics alone move.
    agent, metrics, before = one_update(monkeypatch, update_actor=False)
    assert "actor_loss" not in metrics and torch.equal(metrics["loss"], metrics["qf_loss"])
    for name in ("actor", "actor_target", "critic_target"):
        assert all(torch.equal(a, b) for a, b in zip(before[name], parameters(getattr(agent, name)))), name


def test_the_delayed_actor_step_ascends_q1_of_the_critics_just_stepped(monkeypatch):
    # Algorithm 1: the actor's step along grad_a Q_theta1(s, a)|_{a = pi(s)} grad pi(s): Q_1 alone (not the
    # minimum, not Q_2), after this update's critic step, as a gradient ascent of Q_1.
    agent, metrics, _ = one_update(monkeypatch, update_actor=True)
    assert metrics["actor_loss"].item() == pytest.approx(ACTOR_LOSS, rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(CRITIC_LOSS + ACTOR_LOSS, rel=1e-5)
    assert agent.actor.net[2].bias.item() == pytest.approx(ACTOR_U, rel=1e-5)
    # The actor's loss left the critics as their own step made them.
    assert agent.critic.weights[1].flatten().tolist() == pytest.approx(CRITICS_W, rel=1e-5)
    assert agent.critic.biases[1].flatten().tolist() == pytest.approx(CRITICS_B, rel=1e-5)


def test_the_delayed_step_moves_every_target_network_tau_towards_its_online_one(monkeypatch):
    # Algorithm 1: theta'_i <- tau theta_i + (1 - tau) theta'_i, phi' <- tau phi + (1 - tau) phi', tau = 0.25
    # here, after the actor's step. Target Q'_1's last layer: w = 0.75 * 2 + 0.25 * 0.074 = 1.5185,
    # b = 0.75 * (-4) + 0.25 * (-0.465) = -3.11625; Q'_2's: w = 0.75 * (-1) + 0.25 * (-0.351) = -0.83775,
    # b = 0.75 * 2 + 0.25 * 0.335 = 1.58375; the target actor's u = 0.75 * (-10) + 0.25 * 0.0074 = -7.49815.
    agent, _, before = one_update(monkeypatch, update_actor=True)
    assert agent.critic_target.weights[1].flatten().tolist() == pytest.approx([1.5185, -0.83775], rel=1e-5)
    assert agent.critic_target.biases[1].flatten().tolist() == pytest.approx([-3.11625, 1.58375], rel=1e-5)
    assert agent.actor_target.net[2].bias.item() == pytest.approx(-7.49815, rel=1e-6)
    assert_targets_moved_by_tau(agent, before, tau=0.25)


# --- the training loop: main() on a tiny env, update() spied -------------------------------------------------

RECEIVED: list[float] = []  # every action a Corridor env got, in env units


class Corridor(gym.Env):
    """obs = [step in the episode, episode number]; the reward is the action the env got. Episodes 0, 2, ...
    terminate at their 3rd step; episodes 1, 3, ... run into the 5-step time limit (a truncation). Actions
    in [0, 4]: the centre 2, half the range 2."""

    observation_space = gym.spaces.Box(-100.0, 100.0, (2,), np.float32)
    action_space = gym.spaces.Box(0.0, 4.0, (1,), np.float32)

    def __init__(self, render_mode=None):
        self.episode, self.t = -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([0, self.episode], np.float32), {}

    def step(self, action):
        self.t += 1
        RECEIVED.append(float(action[0]))
        terminated = self.episode % 2 == 0 and self.t == 3
        return np.array([self.t, self.episode], np.float32), float(action[0]), terminated, False, {}


ENV_ID = "Td3UpdateTestCorridor-v0"
if ENV_ID not in gym.envs.registry:
    gym.register(ENV_ID, entry_point=Corridor, max_episode_steps=5)
STEPS = 12  # episodes 0 (steps 1-3, terminated), 1 (4-8, truncated), 2 (9-11, terminated), 3 (step 12)


def run_main(monkeypatch, policy_action=0.25, **overrides):
    """main() for 12 steps with update() replaced by a spy, the actor's output held at policy_action and the N(0, 1)
    draws of the exploration noise held at 1. Returns the actions the env got, the spy's calls (each with the
    env steps taken before it, update_actor and its other arguments) and the replay buffer."""
    RECEIVED.clear()
    calls, buffers = [], []

    def spy(agent, actor_optimizer, critic_optimizer, batch, args, update_actor):
        calls.append(dict(env_steps=len(RECEIVED), update_actor=update_actor, agent=agent,
                          actor_optimizer=actor_optimizer, critic_optimizer=critic_optimizer, batch=batch,
                          autocast=torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
        return {"loss": torch.zeros(())}

    class Recorded(td3.ReplayBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.append(self)

    monkeypatch.setattr(td3, "update", spy)
    monkeypatch.setattr(td3, "ReplayBuffer", Recorded)
    monkeypatch.setattr(td3.DeterministicActor, "forward",
                        lambda self, obs: torch.full((obs.shape[0], 1), policy_action))
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)
    settings = dict(env_id=ENV_ID, total_timesteps=STEPS, learning_starts=2, eval_episodes=0, eval_every=0,
                    run_dir="run", hidden_sizes=(4, 4), cuda=False)
    td3.main(dataclasses.replace(td3.Args(), **{**settings, **overrides}))
    assert len(RECEIVED) == STEPS
    return RECEIVED[:], calls, buffers[0]


@pytest.mark.parametrize("delay", [2, 3])
def test_the_actor_and_the_targets_update_on_every_dth_critic_update(monkeypatch, delay):
    # Algorithm 1, "if t mod d then": counting the updates from 1 (learning_starts 2: they follow env steps
    # 3, ..., 12), the actor and the targets move at the d-th, 2d-th, ... (Section 5.2: d = 2).
    _, calls, _ = run_main(monkeypatch, policy_delay=delay)
    assert [call["env_steps"] for call in calls] == list(range(3, STEPS + 1))
    assert [call["update_actor"] for call in calls] == [n % delay == 0 for n in range(1, STEPS - 1)]


def test_bf16_changes_an_update_by_a_few_percent():
    # The numerical cost that --bf16's help states: one update (critics, actor and targets) of the authors'
    # 256-256 networks on a Hopper-sized batch of 256, from the same state with the same noise, under
    # bfloat16 autocast and in float32. With plain SGD at step 1 each parameter's change is its gradient (or the
    # Polyak move of a target): the two changes differed by 2.7% of the float32 one's norm. Not zero: the
    # products did run in bfloat16.
    torch.manual_seed(0)
    args = dataclasses.replace(td3.PRESETS["authors"], env_id="Hopper-v5")
    agent = td3.Agent(11, 3, args)
    n = args.batch_size
    batch = td3.Batch(torch.randn(n, 11), torch.rand(n, 3) * 2 - 1, torch.randn(n), torch.randn(n, 11),
                      torch.zeros(n))
    steps = []
    for bf16 in (False, True):
        moved = copy.deepcopy(agent)
        optimizers = (torch.optim.SGD(moved.actor.parameters(), lr=1.0),
                      torch.optim.SGD(moved.critic.parameters(), lr=1.0))
        torch.manual_seed(1)
        with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
            td3.update(moved, *optimizers, batch, args, update_actor=True)
        steps.append(torch.cat([(p - q).flatten() for p, q in zip(moved.parameters(), agent.parameters())]))
    float32, bfloat16 = steps
    assert 1e-3 < (bfloat16 - float32).norm() / float32.norm() < 0.1


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_runs_each_update_under_bfloat16_autocast_and_only_when_asked(monkeypatch, bf16):
    # --bf16 (not the paper's, off by default): every update() runs inside torch.autocast(bfloat16); without
    # it, in float32 with no autocast at all.
    _, calls, _ = run_main(monkeypatch, bf16=bf16)
    assert [call["autocast"] for call in calls] == [torch.bfloat16 if bf16 else None] * (STEPS - 2)


def test_random_actions_until_learning_starts_then_the_policy_with_gaussian_noise(monkeypatch):
    # Section 6.1: random actions for the first steps (--learning-starts, 2 here), then pi(s) + N(0, 0.1) in
    # units of half the action range: 0.25 + 0.1 * 1 = 0.35, which the env (range [0, 4]) gets as 2 + 2 * 0.35.
    received, calls, _ = run_main(monkeypatch, batch_size=5)
    assert received[2:] == pytest.approx([2.7] * (STEPS - 2))
    assert all(0 <= a <= 4 and a != pytest.approx(2.7) for a in received[:2])  # uniform random, not the policy
    assert all(call["batch"].obs.shape == (5, 2) for call in calls)  # --batch-size transitions each
    (actor_group,) = calls[0]["actor_optimizer"].param_groups
    (critic_group,) = calls[0]["critic_optimizer"].param_groups
    assert [id(p) for p in actor_group["params"]] == [id(p) for p in calls[0]["agent"].actor.parameters()]
    assert [id(p) for p in critic_group["params"]] == [id(p) for p in calls[0]["agent"].critic.parameters()]
    assert actor_group["lr"] == critic_group["lr"] == 1e-3  # Table 3: Adam 1e-3 for both
    # The noisy action is clipped to the bounds: pi(s) = 0.95, 0.95 + 0.1 clipped to 1, the env's 2 + 2 = 4.
    received, _, _ = run_main(monkeypatch, policy_action=0.95)
    assert received[2:] == [4.0] * (STEPS - 2)


def test_the_buffer_marks_terminations_only_and_keeps_each_episodes_true_last_observation(monkeypatch):
    # The bootstrap mask of y = r + gamma (1 - terminated) min_i Q'_i(s', a~): only a termination (steps 3 and
    # 11) stops it; the time limit's cut (step 8) is stored as not terminated, with s' the episode's real last
    # observation [5, 1], not the next episode's first [0, 2]. The reward column is what the env got, 2 + 2a.
    _, _, buffer = run_main(monkeypatch)
    episodes = [(0, 3), (1, 5), (2, 3), (3, 1)]  # (episode, steps in this run)
    assert buffer.size == STEPS
    stored = buffer.rows(buffer.data[:STEPS])
    assert stored.obs.tolist() == [[t - 1, k] for k, n in episodes for t in range(1, n + 1)]
    assert stored.next_obs.tolist() == [[t, k] for k, n in episodes for t in range(1, n + 1)]
    assert stored.terminated.tolist() == [1.0 if step in (3, 11) else 0.0 for step in range(1, STEPS + 1)]
    assert stored.rewards.tolist() == pytest.approx((2 + 2 * stored.actions.squeeze(-1)).tolist())


def test_the_paper_settings():
    # Table 3 and Sections 5.2 and 6.1 (the defaults, the paper preset): tau 0.005, gamma 0.99, exploration
    # N(0, 0.1), smoothing noise 0.2 clipped at 0.5, d = 2, batch 100, Adam 1e-3, 1,000 random steps.
    args = td3.Args()
    assert (args.tau, args.gamma, args.exploration_noise, args.policy_noise, args.noise_clip, args.policy_delay) == (
        0.005, 0.99, 0.1, 0.2, 0.5, 2)
    assert (args.batch_size, args.learning_rate, args.actor_learning_rate, args.learning_starts) == (
        100, 1e-3, None, 1_000)
    assert args.hidden_sizes == (400, 300)
    assert not args.bf16  # float32, as the paper
