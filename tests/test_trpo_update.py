"""trpo.update(), its policy step and value fit, the rollout and the loop, on hand-made batches with controlled networks.

The policy is mostly a one-dimensional Gaussian whose mean is w x (a linear layer without bias on a 1-D
observation x) and whose log std is l, at w = 0 and l = 0. There everything TRPO needs has a closed form:
d log pi(a|x) / dw = a x and d log pi / dl = a^2 - 1, so g = mean(A a x), mean(A (a^2 - 1)); the Fisher matrix
(the Hessian of the mean KL) is diagonal, diag(mean(x^2), 2); the KL(pi_old || pi) of a sample is
l + (1 + (w x)^2) / (2 e^(2 l)) - 1/2. The natural gradient and its scaling to the trust region are then
worked by hand below (natural_step).
"""

import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import trpo


class Constant(nn.Module):
    """A network whose output is a trainable vector, the same for every input."""

    def __init__(self, values):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(values, dtype=torch.float32))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def gaussian_agent(value=0.0):
    """A real trpo.Agent, its policy mean w x (w = 0) and log std 0, its value network a constant."""
    agent = trpo.Agent(gym.spaces.Box(-np.inf, np.inf, (1,)), gym.spaces.Box(-1, 1, (1,)),
                       trpo.Args(normalize_obs=False))
    agent.actor = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        agent.actor.weight.zero_()
    agent.critic = Constant([value])
    return agent


def w_and_l(agent):
    return agent.actor.weight.item(), agent.actor_logstd.item()


def tensors(x, a):
    return torch.tensor(x, dtype=torch.float32)[:, None], torch.tensor(a, dtype=torch.float32)[:, None]


def natural_step(x, a, adv, fvp_x, damping, max_kl):
    """TRPO's step at w = 0, l = 0 (paper, Appendix C): s = (H + damping I)^-1 g, scaled by
    beta = sqrt(2 delta / s^T (H + damping I) s); H = diag(mean(x^2) over the Fisher's samples, 2)."""
    x, a, adv, fvp_x = map(np.asarray, (x, a, adv, fvp_x))
    g_w, g_l = np.mean(adv * a * x), np.mean(adv * (a**2 - 1))
    h_w, h_l = np.mean(fvp_x**2) + damping, 2 + damping
    s_w, s_l = g_w / h_w, g_l / h_l
    beta = math.sqrt(2 * max_kl / (s_w**2 * h_w + s_l**2 * h_l))
    return beta * s_w, beta * s_l, g_w, g_l


def kl_from_old(x, w, l):
    """The mean KL(pi_old || pi) of N(0, 1) and N(w x, e^(2 l)) (Gaussian KL, old first)."""
    x = np.asarray(x)
    return float(np.mean(l + (1 + (w * x) ** 2) / (2 * math.exp(2 * l)) - 0.5))


def surrogate_at(x, a, adv, w, l):
    """The surrogate mean(pi / pi_old A), log pi = -(a - w x)^2 / (2 e^(2 l)) - l + const."""
    x, a, adv = map(np.asarray, (x, a, adv))
    log_ratio = -((a - w * x) ** 2) / (2 * math.exp(2 * l)) - l + a**2 / 2
    return float(np.mean(np.exp(log_ratio) * adv))


# Four samples; x alternates 1 and 3 so that the Fisher matrix depends on which samples it is taken on.
X, ACTIONS, ADVANTAGES = [1.0, 3.0, 1.0, 3.0], [1.0, -0.5, 2.0, 0.5], [1.0, -1.0, 0.5, 2.0]


@pytest.mark.parametrize("fvp_every", [1, 2])
def test_the_natural_gradient_step_is_sqrt_2_delta_over_sHs_times_the_cg_solution(fvp_every):
    """TRPO (Schulman et al. 2015) Appendix C: s ~ H^-1 g by conjugate gradient, H the Hessian of the mean
    KL(pi_old || pi) plus the damping (0.1) on the diagonal, computed on every fvp_every-th sample (baselines'
    arr[::5]); the full step beta s, beta = sqrt(2 delta / s^T H s). Without the line search (NPG, Kakade
    2002) it is taken as it is. g = [1.625, 0.1875]; H = diag(5 or 1, 2) + 0.1: CG is exact in 2 iterations."""
    agent = gaussian_agent()
    obs, actions = tensors(X, ACTIONS)
    args = trpo.Args(max_kl=0.01, cg_damping=0.1, cg_iters=2, fvp_every=fvp_every, line_search=False)
    stats = trpo.policy_update(agent, obs, actions, torch.tensor(ADVANTAGES), args)
    w, l, g_w, g_l = natural_step(X, ACTIONS, ADVANTAGES, X[::fvp_every], damping=0.1, max_kl=0.01)
    assert (g_w, g_l) == pytest.approx((1.625, 0.1875))
    assert w_and_l(agent) == pytest.approx((w, l), rel=1e-4)
    assert stats["accepted"] and stats["backtracks"] == 0
    assert stats["expected_improvement"] == pytest.approx(g_w * w + g_l * l, rel=1e-4)
    assert stats["kl"] == pytest.approx(kl_from_old(X, w, l), rel=1e-3)  # KL(pi_old || pi), old first
    assert stats["surrogate_after"] == pytest.approx(surrogate_at(X, ACTIONS, ADVANTAGES, w, l), rel=1e-4)


def test_the_line_search_backtracks_by_c_until_the_kl_from_old_is_at_most_delta():
    """TRPO Section 6 / Appendix C: backtrack from the full step by factors c (0.8 here), accepting the first
    step that improves the surrogate with mean KL(pi_old || pi) <= delta; NPG takes the full step whatever its KL.

    x = 1, a = [0, 0, 2, -2], A = [1, 1, -1, -1]: g = [0, -2] (keep actions near the mean: shrink the std);
    H = diag(1, 2) with no damping; s = [0, -1], s^T H s = 2, delta 0.09: the full step is l = -sqrt(0.09) = -0.3.
    Its KL(old || new) = -0.3 + e^0.6 / 2 - 1/2 = 0.1111 > delta (and < 1.5 delta, baselines' tolerance), while
    KL(new || old) = 0.3 + e^-0.6 / 2 - 1/2 = 0.0744 would pass. At 0.8 of it, l = -0.24: KL = 0.0680, accepted."""
    x, a, adv = [1.0] * 4, [0.0, 0.0, 2.0, -2.0], [1.0, 1.0, -1.0, -1.0]
    obs, actions = tensors(x, a)
    assert 0.09 < kl_from_old(x, 0.0, -0.3) <= 1.5 * 0.09 and kl_from_old(x, 0.0, -0.24) <= 0.09
    settings = dict(max_kl=0.09, cg_damping=0.0, backtrack_coeff=0.8, backtrack_iters=10)
    agent = gaussian_agent()
    stats = trpo.policy_update(agent, obs, actions, torch.tensor(adv), trpo.Args(**settings))
    assert stats["accepted"] and stats["backtracks"] == 1
    assert w_and_l(agent) == pytest.approx((0.0, -0.24), rel=1e-4, abs=1e-6)
    assert stats["kl"] == pytest.approx(kl_from_old(x, 0.0, -0.24), rel=1e-4)
    assert stats["surrogate_after"] == pytest.approx(surrogate_at(x, a, adv, 0.0, -0.24), rel=1e-4)
    assert stats["surrogate_after"] > stats["surrogate_before"] == 0.0
    npg_agent = gaussian_agent()
    npg = trpo.policy_update(npg_agent, obs, actions, torch.tensor(adv), trpo.Args(**settings, line_search=False))
    assert w_and_l(npg_agent) == pytest.approx((0.0, -0.3), rel=1e-4, abs=1e-6)
    assert npg["backtracks"] == 0 and npg["kl"] == pytest.approx(kl_from_old(x, 0.0, -0.3), rel=1e-4)


def test_the_categorical_step_solves_the_damped_fisher_system_and_reports_the_kl_from_old():
    """Discrete actions, a constant policy of logits b (the same in every state): log pi(a) = b_a - logsumexp(b),
    d log pi(a) / db = e_a - p, and the Fisher matrix (Hessian of KL(pi_old || pi) in b) is diag(p) - p p^T,
    singular (b + const is the same policy) until the damping is added. NPG step: beta (F + lambda I)^-1 g."""
    logits = [0.0, 1.0, -1.0]
    agent = trpo.Agent(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3), trpo.Args(normalize_obs=False))
    agent.actor = Constant(logits)
    actions, adv = torch.tensor([0, 1, 2, 1]), torch.tensor([1.0, -0.5, 2.0, 0.5])
    stats = trpo.policy_update(agent, torch.zeros(4, 1), actions, adv,
                               trpo.Args(max_kl=0.01, cg_damping=0.1, line_search=False))
    p = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
    g = (adv.double()[:, None] * (torch.eye(3, dtype=torch.float64)[actions] - p)).mean(0)
    fisher = torch.diag(p) - torch.outer(p, p) + 0.1 * torch.eye(3, dtype=torch.float64)
    s = torch.linalg.solve(fisher, g)  # an explicit solve, against the script's conjugate gradient
    step = math.sqrt(2 * 0.01 / (s @ fisher @ s)) * s
    new = torch.tensor(logits, dtype=torch.float64) + step
    assert agent.actor.bias.tolist() == pytest.approx(new.tolist(), rel=1e-4)
    q = torch.softmax(new, 0)
    assert stats["kl"] == pytest.approx((p * (p / q).log()).sum().item(), rel=1e-3)  # KL(pi_old || pi_new)


def test_update_steps_on_centred_advantages_and_fits_the_value_to_the_returns_apart():
    """GAE paper Section 6.1 / baselines trpo_mpi: the policy steps on advantages standardised over the batch,
    and the value network, separate, is regressed on the returns (the TD(lambda) targets A + V) by its own
    optimiser: epochs of minimising 1/2 (V - R)^2. The step is scale-free (beta rescales s), so what the
    standardising changes is the centring: A = [3, 1, 2, 6] has mean 3."""
    adv, returns = [3.0, 1.0, 2.0, 6.0], [2.0, 4.0, 6.0, 8.0]
    agent = gaussian_agent(value=1.0)
    obs, actions = tensors(X, ACTIONS)
    with torch.no_grad():
        logprobs = agent.log_prob(agent.policy_output(obs), actions)
    batch = trpo.Batch(obs, actions, logprobs, torch.ones(4), torch.tensor(adv), torch.tensor(returns))
    args = trpo.Args(max_kl=0.01, cg_damping=0.1, line_search=False, value_epochs=2, value_minibatch_size=4)
    metrics = trpo.update(agent, torch.optim.SGD(agent.critic.parameters(), lr=0.5), batch, args)
    centred = (np.array(adv) - 3.0) / np.std(adv, ddof=1)
    w, l, _, _ = natural_step(X, ACTIONS, centred, X, damping=0.1, max_kl=0.01)
    assert w_and_l(agent) == pytest.approx((w, l), rel=1e-4)
    # The value: c = 1, mean return 5, two SGD steps of 0.5 * (R - c): 1 -> 3 -> 4; then 1/2 mean (4 - R)^2 = 3.
    assert agent.critic.bias.item() == pytest.approx(4.0)
    assert metrics["value_loss"] == pytest.approx(3.0)


# --- the rollout: GAE with episode ends (the gae kit's Rollout and compute_gae) -----------------------


class Counter(gym.Env):
    """Observation [k + 1] after k steps of the episode, reward 1; terminates after `terminate_after` steps."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_after=None):
        self.terminate_after, self.k = terminate_after, 0

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.k = 0
        return np.array([1.0], np.float32), {}

    def step(self, action):
        self.k += 1
        return np.array([self.k + 1.0], np.float32), 1.0, self.k == self.terminate_after, False, {}


def test_rollout_gae_stops_at_episode_ends_and_bootstraps_truncation_from_the_final_observation():
    """GAE (Schulman et al. 2016, Eq. 16) over a rollout of T = 4 steps in two envs, V(s) = s, gamma 0.9,
    lambda 0.5: A_t = delta_t + gamma lambda (1 - done_t) A_t+1, delta_t = r_t + gamma V(s_t+1) - V(s_t), where
    s_t+1 is nothing (0) after a termination, the episode's final observation after a truncation (not the
    next episode's first), and the observation after the rollout for its last step."""
    envs = gym.vector.SyncVectorEnv([lambda: Counter(terminate_after=3),
                                     lambda: gym.wrappers.TimeLimit(Counter(), max_episode_steps=2)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    run = SimpleNamespace(args=SimpleNamespace(seed=0, num_steps=4, num_envs=2, capture_video=False), start_step=0,
                          device=torch.device("cpu"), episodes=lambda step, infos: None)
    agent = trpo.Agent(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), trpo.Args(normalize_obs=False))
    agent.actor, agent.critic = Constant([0.0, 0.0]), nn.Linear(1, 1)
    with torch.no_grad():
        agent.critic.weight.fill_(1.0)
        agent.critic.bias.zero_()
    rollout = trpo.Rollout(envs, run)
    assert rollout.collect(agent, run, 0) == 8
    batch = rollout.batch(agent, gamma=0.9, gae_lambda=0.5)
    envs.close()
    # Env 0: observations 1, 2, 3 | 1, terminated at t = 2; after the rollout it sees 2.
    #   deltas: 1 + 0.9*2 - 1 = 1.8, 1 + 0.9*3 - 2 = 1.7, 1 - 3 = -2 (terminated), 1 + 0.9*2 - 1 = 1.8
    #   A_3 = 1.8, A_2 = -2, A_1 = 1.7 + 0.45*(-2) = 0.8, A_0 = 1.8 + 0.45*0.8 = 2.16
    # Env 1: observations 1, 2 | 1, 2, truncated at t = 1 and t = 3, each time with final observation 3.
    #   deltas: 1.8, 1 + 0.9*3 - 2 = 1.7, 1.8, 1.7 (bootstrapped from V(3) = 3, not V(1) of the reset)
    #   A_3 = 1.7, A_2 = 1.8 + 0.45*1.7 = 2.565, A_1 = 1.7 (its episode ends), A_0 = 1.8 + 0.45*1.7 = 2.565
    assert batch.obs[:, 0].tolist() == [1, 1, 2, 2, 3, 1, 1, 2]  # flattened as [t, env]
    advantages = batch.advantages.reshape(4, 2)
    assert advantages[:, 0].tolist() == pytest.approx([2.16, 0.8, -2.0, 1.8], rel=1e-5)
    assert advantages[:, 1].tolist() == pytest.approx([2.565, 1.7, 2.565, 1.7], rel=1e-5)
    torch.testing.assert_close(batch.returns, batch.advantages + batch.obs[:, 0])  # R = A + V


# --- the training loop ----------------------------------------------------------------------------


def test_the_loop_updates_from_the_policy_that_acted(monkeypatch):
    """TRPO's surrogate is an expectation under pi_theta_old, the policy that collected the batch (Eq. 14):
    with observation normalisation its statistics change only after the update, so the pi_old the update
    computes is the one that acted, at every iteration."""
    entries = []
    real = trpo.update

    def spy(agent, value_optimizer, batch, args):
        with torch.no_grad():
            logprob = agent.log_prob(agent.policy_output(batch.obs), batch.actions)
        entries.append((logprob - batch.logprobs).abs().max().item())
        return real(agent, value_optimizer, batch, args)

    monkeypatch.setattr(trpo, "update", spy)
    trpo.main(trpo.Args(preset="classic", env_id="CartPole-v1", normalize_obs=True, num_steps=32, total_timesteps=96,
                        eval_episodes=0, run_dir="run"))
    assert len(entries) == 3 and max(entries) < 1e-5
