"""a3c_hogwild.py's update() and worker loop pinned line by line to Algorithm S3 of Mnih et al. (2016), on
hand-made rollouts with an agent whose outputs are constants (zero observations, zero hidden biases and zero
output weights: the hidden units are all 0, so only the two output biases have a gradient and every number
below is worked out by hand), a scripted environment whose observations say where they come from, and the
worker function called in this process with a stand-in for its link to the main process."""

import copy
import math
import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
import torch

import a3c_hogwild as a3c

LOGITS = (0.0, math.log(3.0))  # pi = (0.25, 0.75)
P = (0.25, 0.75)
H = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))  # the policy's entropy, 0.5623


def constant_agent(logits=LOGITS, value: float = 1.0) -> a3c.Agent:
    """The CartPole-shaped agent with pi(.|s) = softmax(logits) and V(s) = value for a zero observation."""
    torch.manual_seed(0)
    agent = a3c.Agent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    with torch.no_grad():
        for head, bias in ((agent.actor[-1], logits), (agent.critic[-1], (value,))):
            head.weight.zero_()
            head.bias.copy_(torch.tensor(bias))
    assert all(layer.bias.abs().sum().item() == 0 for layer in (agent.actor[0], agent.actor[2], agent.critic[0]))
    return agent


def zero_rollout(rewards=(1.0, 0.0, 2.0), actions=(1, 0, 1), terminated=(), truncated=(), final_values=None,
                 next_value=4.0) -> a3c.Rollout:
    """A rollout of zero observations; terminated and truncated list the steps where an episode ended."""
    steps = len(rewards)
    return a3c.Rollout(obs=torch.zeros(steps, 4), actions=torch.tensor(actions), rewards=torch.tensor(rewards),
                       terminated=torch.tensor([t in terminated for t in range(steps)]),
                       truncated=torch.tensor([t in truncated for t in range(steps)]),
                       final_values=torch.tensor(final_values or [0.0] * steps),
                       starts=torch.zeros(steps, dtype=torch.bool), first_state=None,
                       next_value=torch.tensor(next_value))


def plain_args(**overrides) -> a3c.Args:
    """RMSProp with decay 1 (v stays 0), epsilon 1 and lr 1 moves a weight by exactly -g: the global weights'
    change is the worker's gradient. No annealing, no clipping unless a test asks."""
    settings = dict(gamma=0.5, learning_rate=1.0, rms_decay=1.0, rms_eps=1.0, anneal=False, max_grad_norm=1e6,
                    ent_coef=0.1, vf_coef=0.5, total_timesteps=100, run_dir="run")
    return a3c.Args(**{**settings, **overrides})


def run_update(args, rollout, start=0, model=None):
    """update() of a worker whose copy equals the global agent; returns (what it returned, the gradient that
    reached the global actor bias, the global critic bias, the worker's copy, the global agent, the optimiser)."""
    model = model or constant_agent()
    local, before = copy.deepcopy(model), copy.deepcopy(model)
    optimizer = a3c.make_optimizer(args, model.parameters())
    learned = a3c.update(local, model, optimizer, args, rollout, start)
    moved = [(b - a).detach() for b, a in zip(before.parameters(), model.parameters())]
    # Only the output biases can have a gradient: every other weight stays where it was.
    heads = {id(before.actor[-1].bias), id(before.critic[-1].bias)}
    assert all(float(m.abs().sum()) == 0 for p, m in zip(before.parameters(), moved) if id(p) not in heads)
    actor = (before.actor[-1].bias - model.actor[-1].bias).detach()
    critic = (before.critic[-1].bias - model.critic[-1].bias).item()
    return learned, actor, critic, local, model, optimizer


# Rollout rewards (1, 0, 2), gamma 0.5, V(s_3) = 4: R_2 = 2 + 0.5 * 4 = 4, R_1 = 0 + 0.5 * 4 = 2,
# R_0 = 1 + 0.5 * 2 = 2. With V = 1 the advantages are (1, 1, 3).
RETURNS = [2.0, 2.0, 4.0]
# Policy term of the actor bias's gradient, -(1/3) sum_t A_t (1[a_t = k] - pi_k), actions (1, 0, 1):
# k = 0: -(1 * -0.25 + 1 * 0.75 + 3 * -0.25) / 3 = 1/12; k = 1: -1/12.
PG_GRAD = (1 / 12, -1 / 12)


def entropy_grad(k: int) -> float:
    """d/dz_k of -H for a softmax: p_k (log p_k + H); the loss's entropy term is -beta * H."""
    return P[k] * (math.log(P[k]) + H)


def test_update_gradient_is_the_papers_actor_critic_gradient():
    """Algorithm S3: R = V(s_t; theta'_v) after the last step, R <- r_i + gamma R backwards;
    d theta += grad log pi(a_i|s_i) (R - V(s_i)) + beta grad H(pi(s_i)), d theta_v += d(R - V(s_i))^2 / d theta_v
    (the value term weighted 0.5), all averaged over the t_max steps, applied to the global theta."""
    learned, actor, critic, local, model, _ = run_update(plain_args(), zero_rollout())
    assert learned["returns"].tolist() == RETURNS
    # Value: 0.5 * d/dV mean (R - V)^2 = mean(V - R) = 1 - 8/3 = -5/3.
    assert critic == pytest.approx(-5 / 3, abs=1e-6)
    # Policy: the policy-gradient term plus beta = 0.1 times the entropy's: (1/12 - 0.0206, -1/12 + 0.0206).
    assert actor.tolist() == pytest.approx([PG_GRAD[k] + 0.1 * entropy_grad(k) for k in (0, 1)], abs=1e-6)
    # -(1/3) sum_t A_t log pi(a_t): actions (1, 0, 1), advantages (1, 1, 3).
    pg_loss = -(1 * math.log(0.75) + 1 * math.log(0.25) + 3 * math.log(0.75)) / 3
    assert learned["pg_loss"].item() == pytest.approx(pg_loss)
    assert learned["v_loss"].item() == pytest.approx((1 + 1 + 9) / 3)
    assert learned["entropy"].item() == pytest.approx(H)
    # The global weights moved; the worker's copy did not (it is refreshed before its next rollout).
    assert local.critic[-1].bias.item() == 1.0 and local.actor[-1].bias.tolist() == pytest.approx(list(LOGITS))


def test_the_advantage_is_a_constant_in_the_policy_gradient():
    """Algorithm S3: the policy's gradient is grad_theta' log pi (R - V(s_i; theta'_v)) with V held fixed;
    only the squared error moves V. With the value and entropy weights at 0 the critic gets no gradient
    (were V differentiated in the advantage, it would get mean log pi(a_t|s_t) = -0.65)."""
    learned, actor, critic, *_ = run_update(plain_args(vf_coef=0.0, ent_coef=0.0), zero_rollout())
    assert critic == 0.0
    assert actor.tolist() == pytest.approx(list(PG_GRAD), abs=1e-7)


@pytest.mark.parametrize("vf_coef", [0.25, 0.5, 1.0])
def test_the_value_weight_scales_the_value_gradient_only(vf_coef):
    """The paper's value loss: its gradient scaled by 0.5 (--vf-coef): d/dV of vf_coef * mean (R - V)^2 is
    vf_coef * 2 * mean(V - R) = vf_coef * 2 * (-5/3); the actor's gradient does not depend on it."""
    _, actor, critic, *_ = run_update(plain_args(vf_coef=vf_coef), zero_rollout())
    assert critic == pytest.approx(vf_coef * 2 * (-5 / 3), abs=1e-6)
    assert actor.tolist() == pytest.approx([PG_GRAD[k] + 0.1 * entropy_grad(k) for k in (0, 1)], abs=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.1, 1.0])
def test_the_entropy_bonus_pushes_the_policy_towards_uniform(beta):
    """Algorithm S3 with the entropy regulariser: the loss has -beta H, so a gradient step raises H: the less
    likely action's logit (pi_0 = 0.25) rises by beta * 0.206 more than it would without the bonus."""
    _, actor, critic, *_ = run_update(plain_args(ent_coef=beta), zero_rollout())
    # The global weight moves by -gradient: z_0 falls by PG_GRAD[0] and rises by beta * 0.206.
    assert entropy_grad(0) == pytest.approx(-0.205990, abs=1e-6)
    assert actor.tolist() == pytest.approx([PG_GRAD[0] + beta * entropy_grad(0), PG_GRAD[1] + beta * entropy_grad(1)],
                                           abs=1e-6)
    assert critic == pytest.approx(-5 / 3, abs=1e-6)  # beta touches the policy only


@pytest.mark.parametrize("ends, returns", [
    # Terminated at step 1: no future there, R_1 = 0, R_0 = 1 + 0.5 * 0 = 1; step 2 bootstraps from V(s_3) = 4.
    (dict(terminated=(1,)), [1.0, 0.0, 4.0]),
    # Truncated at step 1 with its final observation worth 6: R_1 = 0 + 0.5 * 6 = 3, R_0 = 1 + 1.5 = 2.5.
    (dict(truncated=(1,), final_values=[0.0, 6.0, 0.0]), [2.5, 3.0, 4.0]),
    # Both at once: terminated.
    (dict(terminated=(1,), truncated=(1,), final_values=[0.0, 6.0, 0.0]), [1.0, 0.0, 4.0]),
    # Truncated at the last step: V of its final observation (6), not of the next episode's first (4): R_2 = 5.
    (dict(truncated=(2,), final_values=[0.0, 0.0, 6.0]), [2.25, 2.5, 5.0]),
])
def test_update_bootstraps_a_truncated_episode_and_not_a_terminated_one(ends, returns):
    """Algorithm S3: R = 0 for a terminal s_t, V(s_t) otherwise; a time limit is not terminal, so the cut-off
    episode's return bootstraps from the value of its final observation."""
    learned, _, critic, *_ = run_update(plain_args(), zero_rollout(**ends))
    assert learned["returns"].tolist() == returns
    assert critic == pytest.approx(1 - sum(returns) / 3, abs=1e-6)  # mean(V - R), V = 1


def test_the_gradient_is_clipped_to_the_global_norm_before_it_is_applied():
    """The worker's whole gradient (all parameters together) is scaled to norm --max-grad-norm before the
    asynchronous update: g * c / |g| when |g| > c (the authors' A3C code: 40; here 0.1)."""
    unclipped = [PG_GRAD[k] + 0.1 * entropy_grad(k) for k in (0, 1)] + [-5 / 3]
    norm = math.sqrt(sum(g * g for g in unclipped))  # 1.669: the critic's share dominates
    _, actor, critic, *_ = run_update(plain_args(max_grad_norm=0.1), zero_rollout())
    assert actor.tolist() + [critic] == pytest.approx([g * 0.1 / norm for g in unclipped], rel=1e-4)
    # A bound above the norm leaves the gradient as it is.
    _, actor, critic, *_ = run_update(plain_args(max_grad_norm=2.0), zero_rollout())
    assert actor.tolist() + [critic] == pytest.approx(unclipped, rel=1e-5)


@pytest.mark.parametrize("anneal, start, factor", [(True, 0, 1.0), (True, 25, 0.75), (True, 100, 0.0),
                                                   (False, 25, 1.0)])
def test_the_applied_step_uses_the_learning_rate_annealed_to_the_global_step(anneal, start, factor):
    """The paper's setup: the learning rate falls linearly to 0 over the run, by the global step count T (here
    the first global step of the rollout). The shared optimiser steps at that rate: the weights move by lr * g."""
    learned, _, critic, _, _, optimizer = run_update(plain_args(anneal=anneal), zero_rollout(), start=start)
    assert learned["lr"] == pytest.approx(factor)
    assert critic == pytest.approx(factor * -5 / 3, abs=1e-6)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(factor)


def test_each_update_starts_from_cleared_gradients():
    """Algorithm S3: "Reset gradients: d theta <- 0 and d theta_v <- 0" at the start of each loop. A worker's
    second update applies only its second rollout's gradient, not the sum of both."""
    args = plain_args()
    model = constant_agent()
    local = copy.deepcopy(model)
    optimizer = a3c.make_optimizer(args, model.parameters())
    a3c.update(local, model, optimizer, args, zero_rollout(), 0)
    after_first = model.critic[-1].bias.item()
    assert after_first == pytest.approx(1 + 5 / 3)
    # The same worker copy (V = 1) and the same rollout again: the same gradient, -5/3, once.
    a3c.update(local, model, optimizer, args, zero_rollout(), 0)
    assert model.critic[-1].bias.item() == pytest.approx(after_first + 5 / 3)


def _update_in_a_child(local, model, optimizer, args, rollout):
    a3c.update(local, model, optimizer, args, rollout, 0)


def test_two_workers_step_one_rmsprop_whose_statistics_and_step_count_they_share():
    """The paper's shared RMSProp (section S2): g = alpha g + (1 - alpha) d theta^2 and theta -= eta d theta /
    sqrt(g + epsilon), one g for all threads (epsilon inside the root, as in TensorFlow). Worker A, a forked
    process, updates first; worker B then copies the global weights and updates: its step divides by the g that
    A's gradient left. Critic bias by hand (decay 0.9, epsilon 0.1, lr 0.1, V = 1):
    A: R = (2, 2, 4), g_A = mean(V - R) = -5/3, v = 0.1 g_A^2 = 0.2778, b = 1 + 0.1 (5/3) / sqrt(0.3778) = 1.27116;
    B: rewards 0 and V(s_3) = 0, so R = 0 and g_B = b; v = 0.9 * 0.2778 + 0.1 b^2, b -= 0.1 b / sqrt(v + 0.1)."""
    args = plain_args(learning_rate=0.1, rms_decay=0.9, rms_eps=0.1, ent_coef=0.0)
    model = constant_agent()
    model.share_memory()
    optimizer = a3c.make_optimizer(args, model.parameters())  # as main() makes them, before the workers fork
    worker_a, worker_b = copy.deepcopy(model), copy.deepcopy(model)
    child = multiprocessing.get_context("fork").Process(target=_update_in_a_child,
                                                        args=(worker_a, model, optimizer, args, zero_rollout()))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    v = 0.1 * (5 / 3) ** 2
    b = 1 + 0.1 * (5 / 3) / math.sqrt(v + 0.1)
    assert model.critic[-1].bias.item() == pytest.approx(b, abs=1e-6)  # A's step reached the global weights
    a3c.pull_weights(worker_b, model)
    a3c.update(worker_b, model, optimizer, args, zero_rollout(rewards=(0.0, 0.0, 0.0), next_value=0.0), 0)
    v = 0.9 * v + 0.1 * b**2
    b -= 0.1 * b / math.sqrt(v + 0.1)
    bias = model.critic[-1].bias
    assert float(optimizer.state[bias]["square_avg"]) == pytest.approx(v, abs=1e-6)
    assert bias.item() == pytest.approx(b, abs=1e-6)
    assert all(int(state["step"]) == 2 for state in optimizer.state.values())  # both workers' steps counted


def test_the_atari_preset_is_the_papers_setup():
    """The paper's experimental setup: 16 threads, t_max = 5, gamma 0.99, beta 0.01, the value gradient scaled
    by 0.5, RMSProp decay 0.99 and epsilon 0.1 shared, lr 7e-4 annealed to 0."""
    args = a3c.PRESETS["atari"]
    assert (args.num_workers, args.num_steps, args.gamma, args.ent_coef, args.vf_coef) == (16, 5, 0.99, 0.01, 0.5)
    assert (args.optimizer, args.rms_decay, args.rms_eps, args.learning_rate, args.anneal) == (
        "rmsprop", 0.99, 0.1, 7e-4, True)


# --- the worker's loop: rollouts in a scripted env --------------------------------------------------------


class CounterEnv(gym.Env):
    """Observations (episode, step, 0, 0); reward 1 a step. Even episodes terminate at their 2nd step; odd ones
    run into the time limit of 3 steps (registered below), which truncates them."""

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(-100, 100, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.episode, self.t = -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return self.observation(), {}

    def step(self, action):
        self.t += 1
        return self.observation(), 1.0, self.episode % 2 == 0 and self.t == 2, False, {}

    def observation(self):
        return np.array([self.episode, self.t, 0, 0], dtype=np.float32)


COUNTER = "A3CTestCounter-v0"
if COUNTER not in gym.envs.registry:
    gym.register(COUNTER, entry_point=CounterEnv, max_episode_steps=3)


def test_a_rollout_bootstraps_from_the_next_state_and_cut_off_episodes_from_their_final_observation():
    """Algorithm S3: R = V(s_t) for the state after the rollout's last step; an episode cut off by the time
    limit inside the rollout bootstraps from V of its own final observation, not the next episode's first. With
    V(obs) = 10 * episode + step, 6 steps from a reset (gamma 0.5, rewards 1):
    step 0 (0,0)->(0,1); 1 (0,1)->(0,2) terminated; 2 (1,0)->(1,1); 3 (1,1)->(1,2); 4 (1,2)->(1,3) truncated,
    V(final) = 13; 5 (2,0)->(2,1), V(s_6) = 21. R_5 = 1 + 10.5 = 11.5, R_4 = 1 + 6.5 = 7.5, R_3 = 4.75,
    R_2 = 3.375, R_1 = 1, R_0 = 1.5."""
    envs = a3c.make_worker_env(COUNTER, 0, False, "")
    torch.manual_seed(0)
    agent = a3c.Agent(envs.single_observation_space, envs.single_action_space)
    agent.get_value = lambda obs, state: 10 * obs[:, 0] + obs[:, 1]
    next_obs = torch.as_tensor(envs.reset(seed=0)[0])
    rollout, next_obs, _, episode_start, episodes = a3c.collect_rollout(agent, envs, 6, next_obs, None, True)
    envs.close()
    assert rollout.obs[:, :2].tolist() == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [2, 0]]
    assert rollout.terminated.tolist() == [False, True, False, False, False, False]
    assert rollout.truncated.tolist() == [False, False, False, False, True, False]
    assert rollout.final_values.tolist() == [0, 0, 0, 0, 13, 0]
    assert rollout.starts.tolist() == [True, False, True, False, False, True]
    assert float(rollout.next_value) == 21 and next_obs[0, :2].tolist() == [2, 1] and not episode_start
    assert episodes == [(1, 2.0, 2), (4, 3.0, 3)]
    args = plain_args()
    model = copy.deepcopy(agent)
    learned = a3c.update(agent, model, a3c.make_optimizer(args, model.parameters()), args, rollout, 0)
    assert learned["returns"].tolist() == [1.5, 1.0, 3.375, 4.75, 7.5, 11.5]


class FakeLink:
    """The worker's link to the main process, in this process: the real step claims on a counter of its own."""

    def __init__(self, start: int = 0, rank: int = 0):
        self.rank, self.step, self.asked = rank, start, []
        self.counter = multiprocessing.get_context("fork").Value("q", start)

    def safe_point(self, state=None) -> bool:
        return True

    def claim(self, num_steps: int, total: int):
        self.asked.append(num_steps)
        start, n = a3c.claim_steps(self.counter, num_steps, total)
        self.step = start + n
        return start, n

    def episode(self, step, episodic_return, episodic_length):
        pass

    def report_due(self) -> bool:
        return False

    def report(self, metrics=None):
        pass


def weights(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def test_the_worker_copies_the_global_weights_before_each_rollout_and_updates_the_global_ones(monkeypatch):
    """Algorithm S3: "Synchronize thread-specific parameters theta' = theta and theta'_v = theta_v" at the start
    of every loop, then act with theta' for t_max steps, then "perform asynchronous update of theta using
    d theta". Three rollouts of 4 steps: each acts with exactly the global weights as the previous update
    left them (the first with the global weights as given, not the worker's own initialisation)."""
    args = plain_args(env_id=COUNTER, num_steps=4, total_timesteps=12, learning_rate=0.01, rms_decay=0.99,
                      rms_eps=0.1, max_grad_norm=40.0)
    torch.manual_seed(123)
    model = a3c.build_agent(args)
    optimizer = a3c.make_optimizer(args, model.parameters())
    expected, seen, updates = [weights(model)], [], []
    real_collect, real_update = a3c.collect_rollout, a3c.update

    def collect_rollout(local, envs, n, *rest):
        seen.append((weights(local), weights(model), n))
        return real_collect(local, envs, n, *rest)

    def update(local, global_model, *rest):
        updates.append(global_model is model)
        learned = real_update(local, global_model, *rest)
        expected.append(weights(model))
        return learned

    monkeypatch.setattr(a3c, "collect_rollout", collect_rollout)
    monkeypatch.setattr(a3c, "update", update)
    link = FakeLink()
    a3c.worker(link, args, model, optimizer, seed=7)
    assert link.asked == [4, 4, 4, 4] and [n for *_, n in seen] == [4, 4, 4] and updates == [True, True, True]
    for (local_weights, global_weights, _), before in zip(seen, expected):
        assert same(global_weights, before)  # the copy did not write into the global weights
        assert same(local_weights, before)  # theta' = theta when the rollout starts
    assert all(not same(a, b) for a, b in zip(expected, expected[1:]))  # every update moved the global weights
