"""ddpg.py's update() and training loop against hand-worked values.

References are to Lillicrap et al. 2015, "Continuous control with deep reinforcement learning": Algorithm 1
(y_i = r_i + gamma Q'(s_{i+1}, mu'(s_{i+1})) of the target networks; the critic minimises
L = 1/N sum_i (y_i - Q(s_i, a_i))^2; the actor follows 1/N sum_i grad_a Q(s, a)|_{a = mu(s_i)} grad mu(s_i);
then theta' <- tau theta + (1 - tau) theta' for both target networks; a fresh exploration process N at each
episode's start), Section 3 (Ornstein-Uhlenbeck exploration noise) and Section 7 (Adam 1e-4 for the actor,
1e-3 for the critic with L2 weight decay 1e-2; tau 0.001; the action enters Q at its second hidden layer).

The networks have one unit a layer (--hidden-sizes 1 1), set by hand so that on the inputs used here
    critic:  h1 = relu(s), h2 = relu(0 h1 + a + 2) = a + 2,  Q(s, a) = w (a + 2) + b
    actor:   h = relu(relu(s + 10)) = s + 10,                 mu(s) = tanh(v h + u)
and the optimisers are plain SGD, so that one update is a handful of numbers worked out below. The training
loop runs main() for a few steps on a tiny registered env whose episodes end on known steps (the even ones
terminate at their 3rd step, the odd ones are truncated by a 5-step time limit), with update() replaced by a
spy, the actor's output held at a constant and the noise's N(0, 1) draws held at 1.
"""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import ddpg
from helpers import assert_targets_moved_by_tau, parameters

# --- networks with known outputs --------------------------------------------------------------------------


def set_linear(layer: torch.nn.Linear, weight: list, bias: list) -> None:
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))


def set_critic(critic: ddpg.Critic, w: float, b: float) -> None:
    """Q(s, a) = w (a + 2) + b, the action entering at the second layer."""
    first, second, last = critic.layers
    set_linear(first, [[1.0]], [0.0])  # h1 = relu(s)
    set_linear(second, [[0.0, 1.0]], [2.0])  # input [h1, a]: h2 = relu(a + 2) = a + 2 on [-1, 1]
    set_linear(last, [[w]], [b])


def set_actor(actor: ddpg.DeterministicActor, v: float, u: float) -> None:
    """mu(s) = tanh(v (s + 10) + u)."""
    first, _, second, _, last = actor.net
    set_linear(first, [[1.0]], [10.0])
    set_linear(second, [[1.0]], [0.0])
    set_linear(last, [[v]], [u])


def hand_set_agent(**overrides):
    args = dataclasses.replace(ddpg.Args(), hidden_sizes=(1, 1), critic_action_layer=2, gamma=0.9, tau=0.25,
                               **overrides)
    agent = ddpg.Agent(obs_dim=1, act_dim=1, args=args)
    set_critic(agent.critic, w=0.0, b=0.5)  # Q(s, a) = 0.5
    set_critic(agent.critic_target, w=2.0, b=-3.0)  # Q'(s, a) = 2 (a + 2) - 3 = 2a + 1
    set_actor(agent.actor, v=0.0, u=0.0)  # mu(s) = 0
    set_actor(agent.actor_target, v=1.0, u=-10.0)  # mu'(s) = tanh(s)
    return agent, args


# Four transitions; the third terminated. next_obs is chosen so that mu'(s') = tanh(s') = [0.5, -0.5, 0.25, 0].
BATCH = ddpg.Batch(obs=torch.tensor([[0.3], [-0.7], [1.2], [0.0]]),
                   actions=torch.tensor([[0.5], [-1.0], [0.0], [1.0]]),
                   rewards=torch.tensor([1.0, 0.0, -1.0, 0.5]),
                   next_obs=torch.tensor([[math.atanh(0.5)], [math.atanh(-0.5)], [math.atanh(0.25)], [0.0]]),
                   terminated=torch.tensor([0.0, 0.0, 1.0, 0.0]))
# By hand. Q'(s', mu'(s')) = 2 [0.5, -0.5, 0.25, 0] + 1 = [2, 0, 1.5, 1];
# y = r + 0.9 (1 - terminated) Q' = [1 + 1.8, 0 + 0, -1 (terminated), 0.5 + 0.9] = [2.8, 0, -1, 1.4].
# Q(s, a) = 0.5 everywhere: Q - y = [-2.3, 0.5, 1.5, -0.9]; L = (5.29 + 0.25 + 2.25 + 0.81) / 4 = 2.15.
# h2 = a + 2 = [2.5, 1, 2, 3]. dL/db = 2/4 sum(Q - y) = -0.6; dL/dw = 2/4 sum((Q - y) h2)
# = 0.5 (-5.75 + 0.5 + 3 - 2.7) = -2.475 (every other critic gradient is 0: they pass through w = 0).
# SGD 0.1: b = 0.5 + 0.06 = 0.56, w = 0.2475.
# Actor, on the stepped critic: mu(s) = 0, Q(s, 0) = 0.2475 * 2 + 0.56 = 1.055, its loss -1.055;
# d loss/du = -1/4 sum(dQ/da (1 - mu^2)) = -0.2475, SGD 0.1: u = 0.02475.
CRITIC_LOSS, CRITIC_W, CRITIC_B = 2.15, 0.2475, 0.56
ACTOR_LOSS, ACTOR_U = -1.055, 0.02475


def one_update():
    agent, args = hand_set_agent()
    actor_optimizer = torch.optim.SGD(agent.actor.parameters(), lr=0.1)
    critic_optimizer = torch.optim.SGD(agent.critic.parameters(), lr=0.1)
    before = {name: parameters(getattr(agent, name)) for name in ("actor", "critic", "actor_target", "critic_target")}
    metrics = ddpg.update(agent, actor_optimizer, critic_optimizer, BATCH, args)
    return agent, metrics, before


def test_the_hand_set_networks_compute_what_the_comments_say():
    # Section 7: "actions were not included until the 2nd hidden layer of Q": Q = w relu(W2 [relu(W1 s + b1),
    # a] + b2) + b. With h2 = relu(5 h1 + a + 2): at s = -3, h1 = relu(-3) = 0 and Q' = 2 (0 + 0.5 + 2) - 3 = 2;
    # at s = 1, h1 = 1 and Q' = 2 (5 + 0.5 + 2) - 3 = 12.
    agent, _ = hand_set_agent()
    set_linear(agent.critic_target.layers[1], [[5.0, 1.0]], [2.0])
    with torch.no_grad():
        q = agent.critic_target(torch.tensor([[-3.0], [1.0]]), torch.tensor([[0.5], [0.5]]))
        assert q.tolist() == pytest.approx([2 * 2.5 - 3, 2 * 7.5 - 3])
        assert agent.actor_target(BATCH.next_obs).squeeze(-1).tolist() == pytest.approx([0.5, -0.5, 0.25, 0.0])
        assert agent.actor(BATCH.obs).abs().max() == 0


def test_the_critic_regresses_on_the_bootstrap_of_both_target_networks():
    # Algorithm 1: y_i = r_i + gamma Q'(s_{i+1}, mu'(s_{i+1})), the target critic of the target actor's action
    # (not the online ones: those give Q = 0.5 and mu = 0), without bootstrap after a termination; the critic
    # takes a gradient step on L = 1/N sum (y_i - Q(s_i, a_i))^2 with y held fixed.
    agent, metrics, _ = one_update()
    assert metrics["qf_loss"].item() == pytest.approx(CRITIC_LOSS, rel=1e-5)
    assert metrics["qf_values"].item() == pytest.approx(0.5)
    last = agent.critic.layers[-1]
    assert (last.weight.item(), last.bias.item()) == pytest.approx((CRITIC_W, CRITIC_B), rel=1e-5)
    first, second = agent.critic.layers[:2]  # their gradients pass through w = 0
    assert second.weight.tolist() == [[0.0, 1.0]] and first.weight.tolist() == [[1.0]]


def test_the_actor_ascends_the_critic_just_stepped():
    # Algorithm 1: the actor follows grad_a Q(s, a)|_{a = mu(s)} grad mu(s), the policy gradient of the online
    # critic after this update's critic step (the stepped slope dQ/da = 0.2475 > 0: mu moves up). A descent
    # (wrong sign), the critic before its step (slope 0) or the target critic (slope 2) move it otherwise.
    agent, metrics, _ = one_update()
    assert metrics["actor_loss"].item() == pytest.approx(ACTOR_LOSS, rel=1e-5)
    assert metrics["loss"].item() == pytest.approx(CRITIC_LOSS + ACTOR_LOSS, rel=1e-5)
    assert agent.actor.net[4].bias.item() == pytest.approx(ACTOR_U, rel=1e-5)
    # The actor's loss left the critic as its own step made it (its parameters are held fixed there).
    last = agent.critic.layers[-1]
    assert (last.weight.item(), last.bias.item()) == pytest.approx((CRITIC_W, CRITIC_B), rel=1e-5)


def test_both_target_networks_move_tau_towards_the_online_ones_after_the_actor_step():
    # Algorithm 1's last line: theta' <- tau theta + (1 - tau) theta', tau = 0.25 here, for the critic and the
    # actor, after both have stepped. Target critic's last layer: w' = 0.75 * 2 + 0.25 * 0.2475 = 1.561875,
    # b' = 0.75 * (-3) + 0.25 * 0.56 = -2.11; the target actor's u' = 0.75 * (-10) + 0.25 * 0.02475 = -7.4938125.
    agent, _, before = one_update()
    last = agent.critic_target.layers[-1]
    assert (last.weight.item(), last.bias.item()) == pytest.approx((1.561875, -2.11), rel=1e-6)
    assert agent.actor_target.net[4].bias.item() == pytest.approx(-7.4938125, rel=1e-6)
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


ENV_ID = "DdpgUpdateTestCorridor-v0"
if ENV_ID not in gym.envs.registry:
    gym.register(ENV_ID, entry_point=Corridor, max_episode_steps=5)
STEPS = 12  # episodes 0 (steps 1-3, terminated), 1 (4-8, truncated), 2 (9-11, terminated), 3 (step 12)


def run_main(monkeypatch, preset="paper", policy_action=0.25, **overrides):
    """main() for 12 steps with update() replaced by a spy, the actor's output held at policy_action, and the
    N(0, 1) draws of the noise held at 1. Returns the actions the env got, the spy's calls (each with the env
    steps taken before it and its arguments) and the replay buffer."""
    RECEIVED.clear()
    calls, buffers = [], []

    def spy(agent, actor_optimizer, critic_optimizer, batch, args):
        calls.append(dict(env_steps=len(RECEIVED), agent=agent, actor_optimizer=actor_optimizer,
                          critic_optimizer=critic_optimizer, batch=batch,
                          autocast=torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
        return {"loss": torch.zeros(())}

    class Recorded(ddpg.ReplayBuffer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            buffers.append(self)

    monkeypatch.setattr(ddpg, "update", spy)
    monkeypatch.setattr(ddpg, "ReplayBuffer", Recorded)
    monkeypatch.setattr(ddpg.DeterministicActor, "forward",
                        lambda self, obs: torch.full((obs.shape[0], 1), policy_action))
    monkeypatch.setattr(torch, "randn_like", torch.ones_like)
    settings = dict(env_id=ENV_ID, total_timesteps=STEPS, learning_starts=2, eval_episodes=0, eval_every=0,
                    run_dir="run", hidden_sizes=(4, 4), cuda=False)
    ddpg.main(dataclasses.replace(ddpg.PRESETS[preset], **{**settings, **overrides}))
    assert len(RECEIVED) == STEPS
    return RECEIVED[:], calls, buffers[0]


def test_ou_exploration_carries_its_state_and_starts_afresh_at_every_episode_end(monkeypatch):
    # Section 3 and Section 7: the exploration noise is an Ornstein-Uhlenbeck process, theta 0.15 and sigma
    # 0.2 (in units of half the action range), x' = (1 - theta) x + sigma eps; Algorithm 1 starts a fresh
    # process N (x = 0) at each episode, whether it terminated or was truncated. With eps = 1 the process runs
    # 0.2, 0.85 * 0.2 + 0.2 = 0.37, 0.5145, 0.637325, 0.74172625, ... The action is mu(s) + x = 0.3 + x clipped
    # to the bounds [-1, 1], which the env gets as 2 + 2 min(0.3 + x, 1). Steps 1-2 are random (learning_starts
    # 2); the episodes end at steps 3 (terminated), 8 (truncated) and 11 (terminated).
    received, _, _ = run_main(monkeypatch, policy_action=0.3)
    x = [0.2, 0.2, 0.37, 0.5145, 0.637325, 0.74172625, 0.2, 0.37, 0.5145, 0.2]  # steps 3 .. 12
    assert received[2:] == pytest.approx([2 + 2 * min(0.3 + xi, 1.0) for xi in x], abs=1e-5)
    assert received[7] == 4.0  # step 8: 0.3 + 0.74172625 clipped to 1


@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_runs_each_update_under_bfloat16_autocast_and_only_when_asked(monkeypatch, bf16):
    # --bf16 (not the paper's, off by default): every update() runs inside torch.autocast(bfloat16); without
    # it, in float32 with no autocast at all.
    _, calls, _ = run_main(monkeypatch, bf16=bf16)
    assert calls and [call["autocast"] for call in calls] == [torch.bfloat16 if bf16 else None] * len(calls)


@pytest.mark.parametrize("bf16", [False, True])
def test_a_nearly_saturated_action_still_has_a_gradient_under_bf16(bf16):
    # The actor's tanh runs in float32 under --bf16's autocast too: in bfloat16, tanh(4) rounds to exactly 1,
    # its gradient 1 - tanh^2 to 0, and an action pushed that far can never come back (every DDPG seed on
    # Hopper stalled so). A last-layer pre-activation of 4: the output tanh(4) = 0.99933 in float32, and the
    # gradient of the action with respect to that layer's bias 1 - tanh(4)^2 = 0.0013410.
    actor = ddpg.DeterministicActor(2, 1, (3,), exploration_noise=0.1)
    last = actor.net[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(4.0)
    with torch.autocast("cpu", torch.bfloat16, enabled=bf16):
        action = actor(torch.ones(1, 2))
    action.sum().backward()
    assert action.dtype == torch.float32 and action.item() == pytest.approx(math.tanh(4.0), rel=1e-6)
    # (under autocast the gradient reaches the layer in bfloat16, 3 significant digits: 0.0013428)
    assert last.bias.grad.item() == pytest.approx(1 - math.tanh(4.0) ** 2, rel=1e-2 if bf16 else 1e-4)


def test_random_actions_until_learning_starts_then_one_update_per_env_step(monkeypatch):
    # Algorithm 1: one update per env step, on a minibatch sampled from the buffer. Before it, --learning-starts
    # steps of uniformly random actions (the paper's DDPG updates as soon as the buffer holds a minibatch; the
    # TD3 paper's DDPG has 1,000 random steps). learning_starts 2: the updates follow env steps 3, 4, ..., 12.
    received, calls, _ = run_main(monkeypatch, preset="our-ddpg", batch_size=5)
    assert [call["env_steps"] for call in calls] == list(range(3, STEPS + 1))
    assert all(call["batch"].obs.shape == (5, 2) for call in calls)  # --batch-size transitions each
    # Gaussian exploration of the TD3 paper's DDPG: mu(s) + 0.1 eps = 0.35, the env's 2 + 2 * 0.35 = 2.7.
    assert received[2:] == pytest.approx([2.7] * (STEPS - 2))
    assert all(0 <= a <= 4 and a != pytest.approx(2.7) for a in received[:2])  # uniform random, not the policy


def test_the_paper_optimisers_decay_the_critics_weights_only(monkeypatch):
    # Section 7: "Adam ... learning rate of 10^-4 and 10^-3 for the actor and critic respectively. For Q we
    # included L2 weight decay of 10^-2". Each optimiser holds its own network's parameters.
    _, calls, _ = run_main(monkeypatch)
    agent, actor_optimizer, critic_optimizer = (calls[0][k] for k in ("agent", "actor_optimizer", "critic_optimizer"))
    (actor_group,), (critic_group,) = actor_optimizer.param_groups, critic_optimizer.param_groups
    assert isinstance(actor_optimizer, torch.optim.Adam) and isinstance(critic_optimizer, torch.optim.Adam)
    assert [id(p) for p in actor_group["params"]] == [id(p) for p in agent.actor.parameters()]
    assert [id(p) for p in critic_group["params"]] == [id(p) for p in agent.critic.parameters()]
    assert (actor_group["lr"], actor_group["weight_decay"]) == (1e-4, 0)
    assert (critic_group["lr"], critic_group["weight_decay"]) == (1e-3, 1e-2)
    # The TD3 paper's DDPG: Adam 1e-3 for both, no weight decay.
    _, calls, _ = run_main(monkeypatch, preset="our-ddpg")
    (actor_group,) = calls[0]["actor_optimizer"].param_groups
    (critic_group,) = calls[0]["critic_optimizer"].param_groups
    assert (actor_group["lr"], actor_group["weight_decay"], critic_group["lr"], critic_group["weight_decay"]) == (
        1e-3, 0, 1e-3, 0)


def test_the_buffer_marks_terminations_only_and_keeps_each_episodes_true_last_observation(monkeypatch):
    # The bootstrap mask of y = r + gamma (1 - terminated) Q'(s', mu'(s')): only a termination (steps 3 and 11)
    # stops it; the time limit's cut (step 8) is stored as not terminated, with s' the episode's real last
    # observation [5, 1], not the next episode's first [0, 2]. The reward column is what the env got, 2 + 2a.
    _, _, buffer = run_main(monkeypatch)
    episodes = [(0, 3), (1, 5), (2, 3), (3, 1)]  # (episode, steps in this run)
    expected_obs = [[t - 1, k] for k, n in episodes for t in range(1, n + 1)]
    expected_next_obs = [[t, k] for k, n in episodes for t in range(1, n + 1)]
    assert buffer.size == STEPS
    stored = buffer.rows(buffer.data[:STEPS])
    assert stored.obs.tolist() == expected_obs
    assert stored.next_obs.tolist() == expected_next_obs
    assert stored.terminated.tolist() == [1.0 if step in (3, 11) else 0.0 for step in range(1, STEPS + 1)]
    assert stored.rewards.tolist() == pytest.approx((2 + 2 * stored.actions.squeeze(-1)).tolist())


def test_the_paper_settings():
    # Section 7 (the defaults, the paper preset): tau 0.001, gamma 0.99, batch 64, 400-300 units with the
    # action at the critic's second layer, OU theta 0.15 sigma 0.2, final layers U(+-3e-3).
    args = ddpg.Args()
    assert (args.tau, args.gamma, args.batch_size, args.hidden_sizes, args.critic_action_layer) == (
        0.001, 0.99, 64, (400, 300), 2)
    assert (args.exploration, args.ou_theta, args.exploration_noise, args.final_layer_init) == ("ou", 0.15, 0.2, 3e-3)
    assert (args.learning_rate, args.actor_learning_rate, args.critic_weight_decay) == (1e-3, 1e-4, 1e-2)
    assert not args.bf16  # float32, as the paper
