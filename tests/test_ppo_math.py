"""The math of algos/ppo.py against values worked out by hand."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import ppo
from helpers import gae_of_lists


def gae(*args, **kwargs):
    return gae_of_lists(ppo.compute_gae, *args, **kwargs)


def test_gae_lambda_0_is_the_td_error():
    # delta_t = r_t + 0.9 * V(s_t+1) - V(s_t) = 1 + 0.45 - 0.5 = 0.95 at every step.
    adv, ret = gae([1, 1, 1], [0.5, 0.5, 0.5], next_value=0.5, lam=0.0)
    assert adv == pytest.approx([0.95, 0.95, 0.95])
    assert ret == pytest.approx([1.45, 1.45, 1.45])


def test_gae_lambda_1_is_the_monte_carlo_return_minus_v():
    # Episode ends (terminated) at the last step, gamma 0.5: G = [1 + 0.5*2 + 0.25*3, 2 + 0.5*3, 3]
    # = [2.75, 3.5, 3]; advantages G - V with V = 1.
    adv, ret = gae([1, 2, 3], [1, 1, 1], next_value=100.0, terminated=[False, False, True], gamma=0.5)
    assert adv == pytest.approx([1.75, 2.5, 2.0])
    assert ret == pytest.approx([2.75, 3.5, 3.0])


def test_gae_bootstraps_from_next_value_when_the_rollout_stops_mid_episode():
    # gamma 0.5, V = 0, V(next) = 10: A_2 = 3 + 5 = 8, A_1 = 2 + 4 = 6, A_0 = 1 + 3 = 4.
    adv, _ = gae([1, 2, 3], [0, 0, 0], next_value=10.0, gamma=0.5)
    assert adv == pytest.approx([4.0, 6.0, 8.0])


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not():
    # Episode ends after step 0; the final observation is worth 4; the next episode's step 1 sees
    # V(next) = 10. gamma 0.5, lambda 1, V = 0.
    truncated, _ = gae([1, 1], [0, 0], 10.0, truncated=[True, False], final_values=[4.0, 0.0], gamma=0.5)
    assert truncated == pytest.approx([1 + 0.5 * 4, 1 + 0.5 * 10])  # [3, 6]: nothing flows from step 1
    terminated, _ = gae([1, 1], [0, 0], 10.0, terminated=[True, False], final_values=[4.0, 0.0], gamma=0.5)
    assert terminated == pytest.approx([1.0, 6.0])
    # Both flags (a time limit reached on the terminal step): the episode terminated, no bootstrap.
    both, _ = gae([1, 1], [0, 0], 10.0, terminated=[True, False], truncated=[True, False],
                  final_values=[4.0, 0.0], gamma=0.5)
    assert both == pytest.approx([1.0, 6.0])


def test_gae_with_episode_ends_inside_a_two_env_rollout():
    # gamma 0.9, lambda 0.5, T = 3, two envs with V = 1 everywhere and V(next) = 2.
    # Env 0 terminates at t = 1. Env 1 is truncated at t = 0 with V(final obs) = 3.
    rewards = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])
    values = torch.ones(3, 2)
    terminated = torch.tensor([[False, False], [True, False], [False, False]])
    truncated = torch.tensor([[False, True], [False, False], [False, False]])
    final_values = torch.tensor([[0.0, 3.0], [0.0, 0.0], [0.0, 0.0]])
    adv, _ = ppo.compute_gae(rewards, values, torch.tensor([2.0, 2.0]), terminated, truncated, final_values, 0.9, 0.5)
    # Env 0: delta = [1 + .9 - 1, 1 + 0 - 1, 1 + 1.8 - 1] = [0.9, 0, 1.8];
    #        A_2 = 1.8, A_1 = 0 (episode ends), A_0 = 0.9 + 0.45 * 0 = 0.9.
    # Env 1: delta = [1 + 2.7 - 1, 0.9, 1.8] = [2.7, 0.9, 1.8];
    #        A_2 = 1.8, A_1 = 0.9 + 0.45 * 1.8 = 1.71, A_0 = 2.7 (episode ends at t = 0).
    assert adv[:, 0].tolist() == pytest.approx([0.9, 0.0, 1.8])
    assert adv[:, 1].tolist() == pytest.approx([2.7, 1.71, 1.8])


@pytest.mark.parametrize("surrogate", ["clip", "adaptive-kl", "fixed-kl", "none"])
def test_identical_policies_give_ratio_1_no_clipping_and_zero_kl(surrogate):
    logprob = torch.log(torch.tensor([0.2, 0.5, 0.9, 0.1]))
    advantages = torch.tensor([1.0, -2.0, 0.5, 3.0])
    loss, kl, clip_fraction = ppo.policy_loss(logprob, logprob.clone(), advantages, surrogate, 0.2, 1.0)
    assert kl.item() == 0.0
    assert clip_fraction.item() == 0.0
    assert loss.item() == pytest.approx(-advantages.mean().item())  # ratio 1 times A


def test_clipped_surrogate_by_hand():
    ratio = torch.tensor([1.5, 0.5, 0.5, 1.1])
    advantages = torch.tensor([1.0, 1.0, -1.0, 1.0])
    # min(r A, clip(r, 0.8, 1.2) A): [min(1.5, 1.2), min(0.5, 0.8), min(-0.5, -0.8), min(1.1, 1.1)]
    expected = -(1.2 + 0.5 - 0.8 + 1.1) / 4
    loss, _, clip_fraction = ppo.policy_loss(ratio.log(), torch.zeros(4), advantages, "clip", 0.2, 1.0)
    assert loss.item() == pytest.approx(expected)
    assert clip_fraction.item() == pytest.approx(3 / 4)
    unclipped, _, _ = ppo.policy_loss(ratio.log(), torch.zeros(4), advantages, "none", 0.2, 1.0)
    assert unclipped.item() == pytest.approx(-(1.5 + 0.5 - 0.5 + 1.1) / 4)


def test_kl_penalty_adds_beta_times_the_kl_estimate():
    log_ratio = torch.tensor([0.1, -0.2])
    advantages = torch.tensor([1.0, 2.0])
    kl = ((math.exp(0.1) - 1 - 0.1) + (math.exp(-0.2) - 1 + 0.2)) / 2
    surrogate = (math.exp(0.1) * 1 + math.exp(-0.2) * 2) / 2
    loss, measured_kl, _ = ppo.policy_loss(log_ratio, torch.zeros(2), advantages, "fixed-kl", 0.2, 3.0)
    assert measured_kl.item() == pytest.approx(kl, rel=1e-5)  # float32
    assert loss.item() == pytest.approx(-surrogate + 3.0 * kl, rel=1e-5)


def test_kl_estimate_is_the_exact_kl_in_expectation_over_old_actions():
    # Weighting each action's estimate (r - 1) - log r by pi_old(a) gives exactly KL(pi_old || pi).
    old = torch.tensor([0.1, 0.2, 0.3, 0.4])
    new = torch.tensor([0.25, 0.25, 0.25, 0.25])
    ratio = new / old
    per_action = (ratio - 1) - ratio.log()
    exact = (old * (old / new).log()).sum()
    assert (old * per_action).sum().item() == pytest.approx(exact.item(), rel=1e-6)


def test_adaptive_beta_follows_the_papers_rule():
    target = 0.01
    assert ppo.adapt_kl_beta(1.0, 0.005, target) == 0.5  # d < d_targ / 1.5: halve
    assert ppo.adapt_kl_beta(1.0, 0.02, target) == 2.0  # d > 1.5 d_targ: double
    assert ppo.adapt_kl_beta(1.0, 0.01, target) == 1.0  # in between: keep
    assert ppo.adapt_kl_beta(1.0, 0.0067, target) == 1.0  # just above d_targ / 1.5 = 0.00667
    assert ppo.adapt_kl_beta(1.0, 0.0066, target) == 0.5  # just below it
    assert ppo.adapt_kl_beta(1.0, 0.0151, target) == 2.0  # just above 1.5 d_targ


def test_explained_variance():
    target = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert ppo.explained_variance(target, target) == pytest.approx(1.0)
    assert ppo.explained_variance(torch.full((4,), 2.5), target) == pytest.approx(0.0)
    assert math.isnan(ppo.explained_variance(target, torch.ones(4)))


def test_running_mean_std_matches_numpy_over_all_batches():
    rng = np.random.default_rng(0)
    batches = [rng.normal(3.0, 2.0, size=(n, 3)) for n in (5, 17, 1, 40)]
    rms = ppo.RunningMeanStd((3,))
    for batch in batches:
        rms.update(torch.as_tensor(batch))
    everything = np.concatenate(batches)
    np.testing.assert_allclose(rms.mean.numpy(), everything.mean(0), rtol=1e-4)
    np.testing.assert_allclose(rms.var.numpy(), everything.var(0), rtol=1e-4)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))])
def test_act_gives_the_log_probabilities_and_values_of_evaluate_actions(action_space):
    torch.manual_seed(0)
    agent = ppo.Agent(gym.spaces.Box(-1, 1, (4,)), action_space, ppo.Args())
    with torch.no_grad():
        if not agent.discrete:
            agent.actor_logstd.fill_(-0.3)
        obs = torch.randn(64, 4)
        action, logprob, value = ppo.act(agent, obs)
        expected_logprob, _, expected_value = agent.evaluate_actions(obs, action)
    torch.testing.assert_close(logprob, expected_logprob)
    torch.testing.assert_close(value, expected_value)


def test_act_samples_actions_with_the_policy_probabilities():
    torch.manual_seed(0)
    agent = ppo.Agent(gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(3), ppo.Args())
    with torch.no_grad():
        agent.actor[-1].weight.zero_()
        agent.actor[-1].bias.copy_(torch.tensor([0.0, 1.0, 2.0]))
        probs = torch.softmax(torch.tensor([0.0, 1.0, 2.0]), 0)
        n = 20_000
        actions = ppo.act(agent, torch.zeros(n, 1))[0]
        assert (ppo.act(agent, torch.zeros(5, 1), deterministic=True)[0] == 2).all()  # the most likely action
    frequencies = torch.bincount(actions, minlength=3) / n
    standard_error = (probs * (1 - probs) / n).sqrt()
    assert ((frequencies - probs).abs() < 5 * standard_error).all(), (frequencies, probs)


# --- the update on a hand-made batch ------------------------------------------------------------------


def batch_of(action_space: gym.Space, n: int = 64, **settings):
    """An agent, its Adam, a batch of n steps it sampled (random advantages and returns) and the args."""
    torch.manual_seed(0)
    args = ppo.Args(**settings)
    agent = ppo.Agent(gym.spaces.Box(-1, 1, (4,)), action_space, args)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5)
    generator = torch.Generator().manual_seed(1)
    obs = torch.randn(n, 4, generator=generator)
    with torch.no_grad():
        actions, logprobs, values = ppo.act(agent, obs)
    advantages, returns = torch.randn(n, generator=generator), torch.randn(n, generator=generator)
    return agent, optimizer, ppo.Batch(obs, actions, logprobs, values, advantages, returns), args


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "gaussian"])
def test_one_update_step_descends_the_papers_loss_at_the_old_policy(action_space):
    # One epoch of one minibatch: a single Adam step, whose loss is taken at the old policy, where the ratio is
    # 1: L = -mean(standardised A) - c2 * entropy + c1 * 1/2 (V - R)^2.
    agent, optimizer, batch, args = batch_of(action_space, update_epochs=1, minibatch_size=64, ent_coef=0.01,
                                             vf_coef=0.5)
    with torch.no_grad():
        _, entropy, value = agent.evaluate_actions(batch.obs, batch.actions)
    standardised = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    expected = -standardised.mean() - 0.01 * entropy.mean() + 0.5 * 0.5 * ((value - batch.returns) ** 2).mean()
    before = [p.detach().clone() for p in agent.parameters()]
    metrics = ppo.update(agent, optimizer, batch, args, clip_coef=0.2, kl_beta=1.0)
    assert metrics["loss"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert all(not torch.equal(b, p) for b, p in zip(before, agent.parameters()))  # every parameter moved


def test_update_takes_k_epochs_of_minibatch_steps_and_measures_the_whole_batch_after():
    agent, optimizer, batch, args = batch_of(gym.spaces.Discrete(3), update_epochs=3, minibatch_size=16)
    metrics = ppo.update(agent, optimizer, batch, args, clip_coef=0.2, kl_beta=1.0)
    assert all(optimizer.state[p]["step"].item() == 3 * 64 / 16 for p in agent.parameters())
    # The metrics are of the updated policy on the whole batch (the advantages as they are: the standardising
    # is per minibatch, for the steps).
    with torch.no_grad():
        new_logprob, entropy, value = agent.evaluate_actions(batch.obs, batch.actions)
        loss, kl, clip_fraction = ppo.policy_loss(new_logprob, batch.logprobs, batch.advantages, "clip", 0.2, 1.0)
    assert metrics["policy_loss"] == pytest.approx(loss.item()) and metrics["approx_kl"] == pytest.approx(kl.item())
    assert metrics["clipfrac"] == pytest.approx(clip_fraction.item()) and metrics["approx_kl"] > 0
    assert metrics["entropy"] == pytest.approx(entropy.mean().item())
    assert metrics["value_loss"] == pytest.approx(0.5 * ((value - batch.returns) ** 2).mean().item())


def test_the_kl_penalty_of_the_update_uses_the_beta_it_is_given():
    # At the old policy the KL and its gradient are 0: the first step cannot tell beta apart; after it they
    # can, so two betas give two different updates.
    results = []
    for kl_beta in (0.0, 100.0):
        agent, optimizer, batch, args = batch_of(gym.spaces.Discrete(3), surrogate="fixed-kl", update_epochs=4,
                                                 minibatch_size=64, learning_rate=1e-2)
        results.append(ppo.update(agent, optimizer, batch, args, clip_coef=0.2, kl_beta=kl_beta)["approx_kl"])
    assert results[1] < results[0]


def test_a_non_finite_advantage_makes_the_loss_of_the_update_non_finite():
    """What run.check_finite looks at to stop a run before a checkpoint holds the damage."""
    agent, optimizer, batch, args = batch_of(gym.spaces.Discrete(3))
    batch.advantages[5] = float("nan")
    assert not torch.isfinite(ppo.update(agent, optimizer, batch, args, clip_coef=0.2, kl_beta=1.0)["loss"])


def test_reward_normalisation_divides_by_the_running_std_of_the_discounted_return():
    # One env, gamma 0.5, rewards 2, 2, 2 with the episode ending after the second: the discounted returns are
    # 2, 3, then 2 again (reset after the episode's end); each reward is divided by the std of those seen so far
    # and clipped to 10 (the first: one return has next to no spread).
    rewards, dones = np.array([[2.0], [2.0], [2.0]]), np.array([[False], [True], [False]])
    rms, discounted_return = ppo.RunningMeanStd(), np.zeros(1)
    ppo.normalize_rewards(rewards, dones, discounted_return, rms, gamma=0.5)
    seen = [2.0, 3.0, 2.0]
    for t in range(3):  # the running variance after t + 1 returns, with the statistics' prior count of 1e-4
        count = 1e-4 + t + 1
        mean = sum(seen[: t + 1]) / count
        var = (1e-4 * (1 + mean**2) + sum((x - mean) ** 2 for x in seen[: t + 1])) / count
        assert rewards[t, 0] == pytest.approx(min(2.0 / math.sqrt(var + 1e-8), 10.0), rel=1e-6)
    assert rewards[0, 0] == 10.0 and rewards[1:, 0].tolist() == pytest.approx([4.0, 2 / math.sqrt(2 / 9)], rel=1e-3)
    assert discounted_return.tolist() == [2.0]  # carried over to the next rollout
