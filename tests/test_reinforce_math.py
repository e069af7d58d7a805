"""The math of algos/reinforce.py: returns against hand-worked values, reward to go against the full
return, and statistical checks that a state-dependent baseline (and the causality of reward to go)
change the gradient estimate's variance but not its expectation."""

import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

import reinforce


def test_discounted_returns_of_a_three_step_episode():
    # gamma 0.9, rewards 1, 2, 3: G_2 = 3; G_1 = 2 + 0.9 * 3 = 4.7; G_0 = 1 + 0.9 * 4.7 = 5.23.
    returns = reinforce.discounted_returns(np.array([1.0, 2.0, 3.0]), 0.9)
    assert returns == pytest.approx([5.23, 4.7, 3.0])


def test_gamma_1_gives_the_undiscounted_sums_to_the_end():
    assert reinforce.discounted_returns(np.array([1.0, 2.0, 3.0]), 1.0) == pytest.approx([6.0, 5.0, 3.0])


def test_reward_to_go_versus_the_full_return():
    rewards = np.array([1.0, 2.0, 3.0])
    # Reward to go: G_t at step t. Full return (Williams 1992): G_0 = 5.23 at every step.
    assert reinforce.return_weights(rewards, 0.9, reward_to_go=True) == pytest.approx([5.23, 4.7, 3.0])
    assert reinforce.return_weights(rewards, 0.9, reward_to_go=False) == pytest.approx([5.23, 5.23, 5.23])
    # The two agree at the first step, and on a one-step episode.
    one = np.array([7.0])
    assert reinforce.return_weights(one, 0.9, True) == reinforce.return_weights(one, 0.9, False) == pytest.approx([7.0])


def test_policy_gradient_loss_is_the_weighted_log_likelihood_per_episode():
    logprobs = torch.tensor([-0.5, -1.0, -2.0], requires_grad=True)
    weights = torch.tensor([5.23, 4.7, 3.0])
    loss = reinforce.policy_gradient_loss(logprobs, weights, num_episodes=2)
    # -(5.23 * -0.5 + 4.7 * -1 + 3 * -2) / 2 = (2.615 + 4.7 + 6) / 2 = 6.6575
    assert loss.item() == pytest.approx(6.6575)
    loss.backward()
    assert logprobs.grad.tolist() == pytest.approx([-5.23 / 2, -4.7 / 2, -3.0 / 2])
    # The weights carry no gradient, even when they come from a network (the baseline).
    weights = torch.tensor([1.0, 1.0, 1.0], requires_grad=True)
    reinforce.policy_gradient_loss(logprobs.detach().requires_grad_(), weights, 1).backward()
    assert weights.grad is None


def test_value_loss_is_the_mean_squared_error():
    assert reinforce.value_loss(torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.0])).item() == pytest.approx(2.0)


def test_gaussian_log_prob_sums_over_action_dimensions():
    agent = reinforce.Agent(gym.spaces.Box(-1, 1, (3,)), gym.spaces.Box(-2, 2, (2,)), hidden=8, baseline=False)
    obs, actions = torch.randn(5, 3), torch.randn(5, 2)
    logprob, entropy = agent.log_prob(obs, actions)
    mean = agent.actor(obs)
    expected = torch.distributions.Normal(mean, agent.actor_logstd.exp()).log_prob(actions).sum(-1)
    assert logprob.shape == (5,) and torch.allclose(logprob, expected)
    assert torch.allclose(entropy, torch.full((5,), 2 * (0.5 + 0.5 * np.log(2 * np.pi))))  # log std 0


def episodes_of(lengths: list[int], seed: int = 0) -> list:
    """Hand-made episodes of CartPole's shapes: 4-D observations, actions 0 or 1, rewards in [0, 1)."""
    rng = np.random.default_rng(seed)
    return [reinforce.Episode(rng.standard_normal((n, 4)).astype(np.float32), rng.integers(0, 2, n), rng.random(n))
            for n in lengths]


@pytest.mark.parametrize("baseline", [False, True])
def test_update_takes_one_policy_step_on_returns_less_the_baseline_from_before_the_batch(baseline):
    torch.manual_seed(0)
    args = dataclasses.replace(reinforce.Args(), baseline=baseline, value_epochs=3, gamma=0.9)
    agent = reinforce.Agent(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Discrete(2), hidden=8, baseline=baseline)
    groups = [{"params": agent.policy_parameters(), "lr": args.learning_rate}]
    if baseline:
        groups.append({"params": list(agent.critic.parameters()), "lr": args.value_learning_rate})
    optimizer = torch.optim.Adam(groups)
    episodes = episodes_of([3, 5])
    obs = torch.as_tensor(np.concatenate([e.observations for e in episodes]))
    actions = torch.as_tensor(np.concatenate([e.actions for e in episodes]))
    returns = torch.tensor(np.concatenate([reinforce.discounted_returns(e.rewards, 0.9) for e in episodes]),
                           dtype=torch.float32)
    # What the policy's step should follow: G_t - v(S_t) with v before any step of this batch (0 without one).
    with torch.no_grad():
        values = agent.get_value(obs) if baseline else torch.zeros(len(obs))
    logprob, entropy = agent.log_prob(obs, actions)
    expected_loss = reinforce.policy_gradient_loss(logprob, returns - values, num_episodes=2)
    gradients = torch.autograd.grad(expected_loss, agent.policy_parameters(), retain_graph=True)
    # (The baseline matters here: with G_t alone, some of the gradient's signs differ.)
    without = torch.autograd.grad(reinforce.policy_gradient_loss(logprob, returns, 2), agent.policy_parameters())
    assert any((a.sign() != b.sign()).any() for a, b in zip(gradients, without)) == baseline
    before = [p.detach().clone() for p in agent.policy_parameters()]

    metrics = reinforce.update(agent, optimizer, episodes, args)
    assert metrics["policy_loss"].item() == pytest.approx(expected_loss.item())
    assert metrics["entropy"].item() == pytest.approx(entropy.mean().item())
    # Adam's first step moves each weight by the step size against the sign of its gradient: the policy took
    # exactly one step (the baseline's further steps leave it alone), along this gradient.
    for weight, old, gradient in zip(agent.policy_parameters(), before, gradients):
        clear = gradient.abs() > 1e-5
        assert clear.any()
        assert torch.allclose((weight - old)[clear], -args.learning_rate * gradient.sign()[clear], rtol=1e-3)
    if baseline:
        first_value_loss = reinforce.value_loss(values, returns).item()
        assert metrics["loss"].item() == pytest.approx(metrics["policy_loss"].item() + first_value_loss)
        assert metrics["explained_variance"] == pytest.approx(reinforce.explained_variance(values, returns))
        # The baseline's three steps fitted v towards G_t.
        assert reinforce.value_loss(agent.get_value(obs), returns).item() < first_value_loss
        assert metrics["value_loss"].item() < first_value_loss
    else:
        assert set(metrics) == {"loss", "policy_loss", "entropy"} and agent.critic is None


# --- the baseline and reward to go: same expectation, different variance ----------------------------


def sampled_gradients(weightings: dict, gamma: float, num_batches: int = 4000, seed: int = 0) -> dict:
    """Gradient estimates of a fixed softmax policy on a fixed batch of states, over many sampled batches.

    The batch: 8 episodes of 3 steps whose states are fixed (they do not depend on the actions). Each
    draw samples the actions from the policy and rewards r = 1 + s[0] (2a - 1) + noise, then takes the
    gradient of policy_gradient_loss for each weighting, a function (rewards [M, E, T], states [E, T, 4],
    actions [M, E, T], gamma) -> weights [M, E, T], all on the same draws (paired comparisons).

    The loss is linear in the weights, so the gradient of draw m is -(1/E) sum_j w_mj grad log pi(a_mj|s_j):
    the score vectors of the 24 states x 2 actions are computed once, and checked against autograd
    through policy_gradient_loss on the first draw. Returns {name: [num_batches, num_params]}."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    episodes, steps = 8, 3
    agent = reinforce.Agent(gym.spaces.Box(-5, 5, (4,)), gym.spaces.Discrete(2), hidden=8, baseline=False)
    params = agent.policy_parameters()

    def flat_grad(loss):
        return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params)]).double()

    states = torch.randn(episodes, steps, 4)
    flat_states = states.reshape(-1, 4)
    n = len(flat_states)
    scores = [torch.stack([flat_grad(agent.log_prob(flat_states[j:j + 1], torch.tensor([k]))[0].sum())
                           for j in range(n)]) for k in (0, 1)]  # [n, P] for actions 0 and 1
    with torch.no_grad():
        actions = agent.act(flat_states.expand(num_batches, n, 4))  # [M, n]
    a = actions.reshape(num_batches, episodes, steps).numpy()
    rewards = 1.0 + states[..., 0].numpy() * (2 * a - 1) + 0.5 * rng.standard_normal(a.shape)
    grads = {}
    for name, weighting in weightings.items():
        w = torch.as_tensor(weighting(rewards, states.numpy(), a, gamma), dtype=torch.float64).reshape(num_batches, n)
        taken = actions.double()
        grads[name] = -((w * (1 - taken)) @ scores[0] + (w * taken) @ scores[1]) / episodes
        logprob, _ = agent.log_prob(flat_states, actions[0])
        direct = flat_grad(reinforce.policy_gradient_loss(logprob, w[0].float(), episodes))
        assert torch.allclose(direct, grads[name][0], rtol=1e-4, atol=1e-6)
    return grads


def returns_to_go(rewards, states, actions, gamma):
    return np.stack([[reinforce.return_weights(r, gamma, True) for r in draw] for draw in rewards])


def full_returns(rewards, states, actions, gamma):
    return np.stack([[reinforce.return_weights(r, gamma, False) for r in draw] for draw in rewards])


def state_baseline(states):
    """Fixed and arbitrary, but a function of the state only: roughly the mean return still to come
    (1 per step left, gamma 0.9) plus a term in the state."""
    steps_left = np.array([2.71, 1.9, 1.0])  # 1 + 0.9 + 0.81, 1 + 0.9, 1
    return steps_left + 0.3 * states[..., 1]


def max_z_of_mean_difference(a: torch.Tensor, b: torch.Tensor) -> float:
    """The largest |mean / standard error| of the paired differences a - b over the coordinates
    that vary."""
    diff = a - b
    se = diff.std(0) / np.sqrt(len(diff))
    varying = se > 1e-12
    return float((diff.mean(0)[varying] / se[varying]).abs().max())


def total_variance(g: torch.Tensor) -> float:
    return float(g.var(0).sum())


@pytest.fixture(scope="module")
def gradients():
    return sampled_gradients({
        "rtg": returns_to_go,
        "rtg_baseline": lambda r, s, a, g: returns_to_go(r, s, a, g) - state_baseline(s),
        # Not a baseline: it depends on the action taken, and so biases the gradient. The control that
        # shows the test can tell.
        "action_dependent": lambda r, s, a, g: returns_to_go(r, s, a, g) - state_baseline(s) - 1.0 * a,
    }, gamma=0.9)


def test_a_state_dependent_baseline_keeps_the_expectation_and_lowers_the_variance(gradients):
    # 130 coordinates; |z| below 4.5 for all of them is what unbiasedness gives (under a normal
    # approximation about 1 in 150,000 false alarms per coordinate).
    assert max_z_of_mean_difference(gradients["rtg_baseline"], gradients["rtg"]) < 4.5
    # ... while each draw's gradient changes (the baseline is not a no-op) and the variance drops.
    assert not torch.allclose(gradients["rtg_baseline"], gradients["rtg"])
    assert total_variance(gradients["rtg_baseline"]) < 0.5 * total_variance(gradients["rtg"])


def test_an_action_dependent_baseline_would_be_caught(gradients):
    assert max_z_of_mean_difference(gradients["action_dependent"], gradients["rtg"]) > 8


def test_reward_to_go_keeps_the_expectation_of_the_full_return_and_lowers_the_variance():
    # Undiscounted, the two estimate the same gradient: the rewards before step t add terms of zero mean.
    grads = sampled_gradients({"rtg": returns_to_go, "full": full_returns}, gamma=1.0)
    assert max_z_of_mean_difference(grads["rtg"], grads["full"]) < 4.5
    assert total_variance(grads["rtg"]) < 0.8 * total_variance(grads["full"])


def test_discounted_the_full_return_is_reward_to_go_scaled_by_gamma_to_the_t():
    # With gamma < 1, G_0 at step t has the mean of gamma^t G_t (Sutton & Barto's Algorithm 13.3 factor),
    # not of G_t: the reward-to-go loss without that factor (ours, and common practice) is a different
    # direction. The test sees both facts.
    discount = np.array([1.0, 0.9, 0.81])
    grads = sampled_gradients({
        "rtg": returns_to_go,
        "full": full_returns,
        "rtg_discounted": lambda r, s, a, g: returns_to_go(r, s, a, g) * discount,
    }, gamma=0.9)
    assert max_z_of_mean_difference(grads["rtg_discounted"], grads["full"]) < 4.5
    assert max_z_of_mean_difference(grads["rtg"], grads["full"]) > 8
