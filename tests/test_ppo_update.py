"""ppo.update(), the rollout and the training loop on hand-made batches, each test against the paper's equation.

The networks are controlled: the policy is a constant vector of logits b (the same for every state) and the
value a constant c, both trainable, and the optimiser is plain SGD, so that one step moves b and c by minus
the learning rate times gradients worked out by hand. With logits b and p = softmax(b),
d log p(a) / d b = e_a - p, and the ratio r = p(a) / pi_old(a) is set per sample through the batch's old
log-probabilities, log pi_old(a) = log(p(a) / r).
"""

import math
from types import SimpleNamespace

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import ppo


class Constant(nn.Module):
    """A network whose output is a trainable vector, the same for every input."""

    def __init__(self, values):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(values, dtype=torch.float32))

    def forward(self, x):
        return self.bias.expand(len(x), -1)


def constant_agent(logits, value=0.0, **settings):
    """A real ppo.Agent (two actions or more) whose policy and value heads are constants; its args."""
    settings = dict(dict(normalize_obs=False, max_grad_norm=1e9, norm_adv=False, ent_coef=0.0, vf_coef=0.0,
                         update_epochs=1), **settings)
    args = ppo.Args(**settings)
    agent = ppo.Agent(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(len(logits)), args)
    agent.actor, agent.critic = Constant(logits), Constant([value])
    return agent, args


def make_batch(actions, ratios, advantages, logits, returns=None, values=None):
    """A batch whose old log-probabilities give the ratio r_i at the agent's logits: log pi_old = log(p(a_i) / r_i).
    Observation i is [i], so a spy can tell the samples apart."""
    n = len(actions)
    p = torch.softmax(torch.tensor(logits, dtype=torch.float32), 0)
    actions = torch.tensor(actions)
    logprobs = (p[actions] / torch.tensor(ratios, dtype=torch.float32)).log()
    returns = torch.zeros(n) if returns is None else torch.tensor(returns, dtype=torch.float32)
    values = torch.zeros(n) if values is None else torch.tensor(values, dtype=torch.float32)
    return ppo.Batch(torch.arange(n, dtype=torch.float32)[:, None], actions, logprobs, values,
                     torch.tensor(advantages, dtype=torch.float32), returns)


def sgd(agent, lr=1.0):
    return torch.optim.SGD(agent.parameters(), lr=lr)


# Four samples at b = [0, 0] (p = [1/2, 1/2]), annealed clip range 0.1 (the args hold 0.3):
#   i  a  r     A    r A    clip(r, 0.9, 1.1) A   min       gradient of -r A (when r A is the min)
#   0  0  1.05  +1   1.05   1.05                  1.05      -1.05 (e_0 - p) = [-0.525, 0.525]
#   1  1  1.2   +1   1.2    1.1                   1.1 clip  0
#   2  0  0.8   -1   -0.8   -0.9                  -0.9 clip 0
#   3  1  1.5   -2   -3.0   -2.2                  -3.0      +3 (e_1 - p) = [-1.5, 1.5]
# L^CLIP = mean(min) = (1.05 + 1.1 - 0.9 - 3) / 4 = -0.4375; the loss is -L^CLIP = 0.4375, and its gradient
# the mean of the last column: [-2.025, 2.025] / 4 = [-0.50625, 0.50625].
CLIP_CASE = dict(actions=[0, 1, 0, 1], ratios=[1.05, 1.2, 0.8, 1.5], advantages=[1.0, 1.0, -1.0, -2.0],
                 logits=[0.0, 0.0])
CLIP_GRADIENT = [-0.50625, 0.50625]


def test_the_statistics_after_the_epochs_pair_each_sample_with_its_own_action_across_minibatches():
    """approx_kl (which adapts beta, Section 4), clipfrac and entropy are measured after the epochs over the
    whole batch, computed minibatch by minibatch: each sample's new log-probability must be of its own action.
    Minibatches of 2 over CLIP_CASE; the expected values come from the final logits b, worked here:
    KL estimate mean((r - 1) - log r) with r = pi_new(a_i) / pi_old(a_i)."""
    agent, args = constant_agent([0.0, 0.0], clip_coef=0.3, minibatch_size=2)
    batch = make_batch(**CLIP_CASE)
    metrics = ppo.update(agent, sgd(agent), batch, args, clip_coef=0.1, kl_beta=1.0)
    new_logprob = torch.log_softmax(agent.actor.bias.detach(), 0)[batch.actions]
    log_ratio = new_logprob - batch.logprobs
    expected_kl = ((log_ratio.exp() - 1) - log_ratio).mean().item()
    expected_clipfrac = ((log_ratio.exp() - 1).abs() > 0.1).float().mean().item()
    assert metrics["approx_kl"] == pytest.approx(expected_kl, rel=1e-5)
    assert metrics["clipfrac"] == pytest.approx(expected_clipfrac)
    # the actions alternate 0, 1, 0, 1, so pairing sample i with another's action changes every ratio
    assert torch.log_softmax(agent.actor.bias.detach(), 0).diff().abs().item() > 1e-3


def test_clipped_surrogate_takes_the_min_with_the_annealed_clip_range_and_the_old_log_probs():
    """PPO Eq. 7: L^CLIP = E[min(r A, clip(r, 1 - eps, 1 + eps) A)], r = pi_theta / pi_theta_old, with the eps the
    loop passes in (Table 5: 0.1 x alpha), not the args' own; pi_old is the batch's, not the current policy."""
    agent, args = constant_agent([0.0, 0.0], clip_coef=0.3, minibatch_size=4)
    batch = make_batch(**CLIP_CASE)
    metrics = ppo.update(agent, sgd(agent), batch, args, clip_coef=0.1, kl_beta=1.0)
    assert metrics["loss"].item() == pytest.approx(0.4375, rel=1e-5)
    # One SGD step of size 1: b = -gradient. (With eps 0.3 sample 1 and 2 are not clipped, with the min taken
    # inside, min(r, clip r) A, sample 3 is clipped and 2 is not; with the current policy as pi_old every r is 1.)
    assert agent.actor.bias.tolist() == pytest.approx([-g for g in CLIP_GRADIENT], rel=1e-5)


def test_the_gradient_norm_is_clipped_before_the_step():
    """The authors' baselines (ppo2): the global gradient norm is clipped to max_grad_norm before Adam's step."""
    agent, args = constant_agent([0.0, 0.0], minibatch_size=4, max_grad_norm=0.1)
    ppo.update(agent, sgd(agent), make_batch(**CLIP_CASE), args, clip_coef=0.1, kl_beta=1.0)
    # The gradient [-0.50625, 0.50625] has norm 0.716 > 0.1: the step is the same direction with norm 0.1.
    step = 0.1 / math.sqrt(2)
    assert agent.actor.bias.tolist() == pytest.approx([step, -step], rel=1e-5)


def test_entropy_bonus_and_value_loss_enter_with_their_signs_and_weights():
    """PPO Eq. 9: maximise L^CLIP - c1 L^VF + c2 S[pi], i.e. the loss -L^CLIP + c1 1/2 (V - R)^2 - c2 S (the value
    error halved, as in the authors' code), here with c1 = 0.5 and c2 = 0.1 and no policy gradient (A = 0)."""
    logits = [0.0, math.log(3.0)]  # p = [1/4, 3/4]
    agent, args = constant_agent(logits, value=1.0, minibatch_size=4, ent_coef=0.1, vf_coef=0.5)
    batch = make_batch([0, 1, 1, 0], [1.0] * 4, [0.0] * 4, logits, returns=[3.0, 1.0, 2.0, 2.0])
    p = [0.25, 0.75]
    entropy = -sum(q * math.log(q) for q in p)  # 0.5623
    d_entropy = [-q * (math.log(q) + entropy) for q in p]  # dS/db_j = -p_j (log p_j + S) = [0.206, -0.206]
    v_loss = 0.5 * (4 + 0 + 1 + 1) / 4  # 1/2 mean (c - R)^2 with c = 1
    metrics = ppo.update(agent, sgd(agent), batch, args, clip_coef=0.2, kl_beta=1.0)
    assert metrics["loss"].item() == pytest.approx(-0.1 * entropy + 0.5 * v_loss, rel=1e-5)
    # The step climbs the entropy (c2 = 0.1) and moves c toward the mean return 2 by c1 * (2 - 1) = 0.5.
    assert agent.actor.bias.tolist() == pytest.approx([logits[0] + 0.1 * d_entropy[0], logits[1] + 0.1 * d_entropy[1]],
                                                      rel=1e-5)
    assert agent.critic.bias.tolist() == pytest.approx([1.0 + 0.5 * (2.0 - 1.0)], rel=1e-6)


@pytest.mark.parametrize("surrogate", ["fixed-kl", "adaptive-kl"])
def test_kl_penalty_gradient_with_the_beta_passed_in(surrogate):
    """PPO Eq. 8: L^KLPEN = E[r A - beta KL[pi_old, pi_theta]], beta the one the loop passes (the adaptive one),
    not args.kl_beta. The per-sample KL estimate (r - 1) - log r has the gradient (r - 1) d log pi."""
    agent, args = constant_agent([0.0, 0.0], minibatch_size=2, surrogate=surrogate, kl_beta=1.0)
    # Sample 0: a = 0, r = 1.5, A = 1; sample 1: a = 1, r = 0.5, A = 1; beta = 2.
    batch = make_batch([0, 1], [1.5, 0.5], [1.0, 1.0], [0.0, 0.0])
    metrics = ppo.update(agent, sgd(agent), batch, args, clip_coef=0.2, kl_beta=2.0)
    kl = ((0.5 - math.log(1.5)) + (-0.5 - math.log(0.5))) / 2
    assert metrics["loss"].item() == pytest.approx(-(1.5 + 0.5) / 2 + 2.0 * kl, rel=1e-5)
    # Per sample the gradient of -r A + beta ((r - 1) - log r) is (-r A + beta (r - 1)) (e_a - p):
    # sample 0: (-1.5 + 1) [1/2, -1/2] = [-0.25, 0.25]; sample 1: (-0.5 - 1) [-1/2, 1/2] = [0.75, -0.75].
    # Mean [0.25, -0.25]; one step of size 1 gives b = [-0.25, 0.25].
    assert agent.actor.bias.tolist() == pytest.approx([-0.25, 0.25], rel=1e-5)


def spy_on_policy_loss(monkeypatch):
    calls = []
    real = ppo.policy_loss

    def spy(new_logprob, old_logprob, advantages, surrogate, clip_coef, kl_beta):
        calls.append(dict(old_logprob=old_logprob.detach().clone(), advantages=advantages.detach().clone(),
                          clip_coef=clip_coef, kl_beta=kl_beta))
        return real(new_logprob, old_logprob, advantages, surrogate, clip_coef, kl_beta)

    monkeypatch.setattr(ppo, "policy_loss", spy)
    return calls


def test_each_epoch_is_a_fresh_shuffle_of_minibatches_with_advantages_standardised_per_minibatch(monkeypatch):
    """PPO Algorithm 1: optimise the surrogate for K epochs of minibatches of size M <= NT (each epoch a new
    partition of the batch); the authors' code standardises the advantages within each minibatch."""
    torch.manual_seed(0)
    calls = spy_on_policy_loss(monkeypatch)
    agent, args = constant_agent([0.0, 0.0], minibatch_size=3, update_epochs=4, norm_adv=True)
    advantages = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    batch = make_batch([0, 1, 0, 1, 0, 1], [1.0, 1.1, 0.9, 1.2, 0.8, 1.3], advantages, [0.0, 0.0])
    ppo.update(agent, torch.optim.SGD(agent.parameters(), lr=0.0), batch, args, clip_coef=0.2, kl_beta=1.0)
    steps, final = calls[:-1], calls[-1]
    assert len(steps) == 4 * 2  # K = 4 epochs of 6 / 3 = 2 minibatches
    # Which samples each step saw, read from the old log-probabilities that reached the loss (they are the batch's).
    where = {round(x, 5): i for i, x in enumerate(batch.logprobs.tolist())}
    minibatches = [[where[round(x, 5)] for x in call["old_logprob"].tolist()] for call in steps]
    epochs = [minibatches[k:k + 2] for k in range(0, 8, 2)]
    for epoch in epochs:  # every epoch covers each sample once
        assert sorted(epoch[0] + epoch[1]) == list(range(6))
    assert len({tuple(sorted(tuple(sorted(m)) for m in epoch)) for epoch in epochs}) > 1  # reshuffled between epochs
    for call, samples in zip(steps, minibatches):
        a = np.array(advantages)[samples]
        got = call["advantages"].numpy()
        # Standardised over the minibatch: mean 0, (unbiased) std 1, an increasing affine map of its own A.
        assert got.mean() == pytest.approx(0.0, abs=1e-6) and got.std(ddof=1) == pytest.approx(1.0, rel=1e-5)
        np.testing.assert_allclose(got, (a - a.mean()) / a.std(ddof=1), rtol=1e-5)
        assert call["clip_coef"] == 0.2 and call["kl_beta"] == 1.0
    # The metrics after the update are of the whole batch, advantages as they are.
    assert final["advantages"].tolist() == advantages


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
    agent, _ = constant_agent([0.0, 0.0])
    agent.critic = nn.Linear(1, 1)
    with torch.no_grad():
        agent.critic.weight.fill_(1.0)
        agent.critic.bias.zero_()
    rollout = ppo.Rollout(envs, run)
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


@pytest.mark.parametrize("surrogate", ["adaptive-kl", "fixed-kl"])
def test_the_loop_anneals_lr_and_clip_and_adapts_beta_from_the_kl_after_each_update(monkeypatch, surrogate):
    """Table 5: learning rate and clip range times alpha, annealed 1 -> 0 (alpha = 1 - (i - 1) / iterations); Section 4:
    after each update, d = E[KL] and beta / 2 when d < d_targ / 1.5 (beta * 2 when d > 1.5 d_targ), carried to the
    next update; the fixed penalty keeps its beta. The update starts at the policy that acted (ratio 1), also with
    observation normalisation, whose statistics change only after the update."""
    seen = []
    real = ppo.update

    def spy(agent, optimizer, batch, args, clip_coef, kl_beta):
        with torch.no_grad():
            logprob = agent.evaluate_actions(batch.obs, batch.actions)[0]
        torch.testing.assert_close(logprob, batch.logprobs)  # pi_old = pi_theta at the start of the update
        metrics = real(agent, optimizer, batch, args, clip_coef, kl_beta)
        seen.append((optimizer.param_groups[0]["lr"], clip_coef, kl_beta, metrics["approx_kl"]))
        return metrics

    monkeypatch.setattr(ppo, "update", spy)
    ppo.main(ppo.Args(env_id="CartPole-v1", num_steps=32, total_timesteps=128, minibatch_size=32, update_epochs=2,
                      anneal=True, learning_rate=1e-3, clip_coef=0.2, surrogate=surrogate, kl_target=1.0,
                      kl_beta=1.0, normalize_obs=True, eval_episodes=0, run_dir="run"))
    lrs, clips, betas, kls = zip(*seen)
    assert lrs == pytest.approx([1e-3, 0.75e-3, 0.5e-3, 0.25e-3])
    assert clips == pytest.approx([0.2, 0.15, 0.1, 0.05])
    assert max(kls) < 1.0 / 1.5  # so the adaptive rule halves beta after every update
    assert betas == ((1.0, 0.5, 0.25, 0.125) if surrogate == "adaptive-kl" else (1.0, 1.0, 1.0, 1.0))
