"""The math of algos/trpo.py against values worked out by hand or by brute force (explicit matrices)."""

import math

import gymnasium as gym
import pytest
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

import trpo
from helpers import gae_of_lists


def gae(*args, **kwargs):
    return gae_of_lists(trpo.compute_gae, *args, **kwargs)


def test_gae_with_lambda_between_0_and_1_by_hand():
    # gamma 1, lambda 0.5, no episode end: deltas [1 + 1 - 0.5, 0 + 0.5 - 1, 2 + 2 - 0.5] = [1.5, -0.5, 3.5];
    # A_2 = 3.5, A_1 = -0.5 + 0.5 * 3.5 = 1.25, A_0 = 1.5 + 0.5 * 1.25 = 2.125; returns A + V.
    adv, ret = gae([1, 0, 2], [0.5, 1, 0.5], next_value=2.0, gamma=1.0, lam=0.5)
    assert adv == pytest.approx([2.125, 1.25, 3.5])
    assert ret == pytest.approx([2.625, 2.25, 4.0])


def test_gae_truncation_bootstraps_from_the_final_observation_and_termination_does_not():
    # gamma 0.9, lambda 0.5, V = 0, V(next) = 5; the episode ends at t = 1, its final observation worth 10.
    # Truncated: deltas [1, 1 + 9, 1 + 4.5]; A_2 = 5.5, A_1 = 10 (nothing flows back from t = 2),
    # A_0 = 1 + 0.45 * 10 = 5.5. Terminated: delta_1 = 1, so A_1 = 1 and A_0 = 1.45.
    truncated, _ = gae([1, 1, 1], [0, 0, 0], 5.0, truncated=[False, True, False], final_values=[0, 10.0, 0],
                       lam=0.5)
    assert truncated == pytest.approx([5.5, 10.0, 5.5])
    terminated, _ = gae([1, 1, 1], [0, 0, 0], 5.0, terminated=[False, True, False], final_values=[0, 10.0, 0],
                        lam=0.5)
    assert terminated == pytest.approx([1.45, 1.0, 5.5])


# --- conjugate gradient ----------------------------------------------------------------------------


def random_spd(n: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    a = torch.randn(n, n, generator=generator, dtype=torch.float64)
    return a @ a.T + 0.5 * torch.eye(n, dtype=torch.float64)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_conjugate_gradient_solves_a_random_spd_system(seed):
    # n = 8 <= 10 iterations: CG is exact up to rounding.
    a = random_spd(8, seed)
    b = torch.randn(8, generator=torch.Generator().manual_seed(100 + seed), dtype=torch.float64)
    x = trpo.conjugate_gradient(lambda v: a @ v, b, iters=10)
    torch.testing.assert_close(x, torch.linalg.solve(a, b), rtol=1e-8, atol=1e-8)
    assert torch.linalg.norm(a @ x - b) < 1e-8 * torch.linalg.norm(b)


def test_conjugate_gradient_by_hand_on_a_2x2_system():
    # A = [[4, 1], [1, 3]], b = [1, 2]: x = A^-1 b = [1, 7] / 11. Two iterations suffice.
    a = torch.tensor([[4.0, 1.0], [1.0, 3.0]], dtype=torch.float64)
    x = trpo.conjugate_gradient(lambda v: a @ v, torch.tensor([1.0, 2.0], dtype=torch.float64), iters=2)
    assert x.tolist() == pytest.approx([1 / 11, 7 / 11])


def test_conjugate_gradient_after_one_iteration_is_the_steepest_descent_step():
    # One iteration from 0: x = (b.b / b.Ab) b. With A = diag(1, 2), b = [1, 1]: (2 / 3) [1, 1].
    a = torch.diag(torch.tensor([1.0, 2.0], dtype=torch.float64))
    x = trpo.conjugate_gradient(lambda v: a @ v, torch.ones(2, dtype=torch.float64), iters=1)
    assert x.tolist() == pytest.approx([2 / 3, 2 / 3])


# --- KL and the Fisher-vector product ------------------------------------------------------------------


def test_categorical_kl_by_hand_and_zero_for_identical_policies():
    old = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    new = torch.log(torch.tensor([[0.25, 0.75], [0.9, 0.1]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert trpo.categorical_kl(old, new).tolist() == pytest.approx([expected, 0.0], abs=1e-7)
    # Logits are defined up to a constant: adding one changes nothing.
    assert trpo.categorical_kl(old, old + 3.0).abs().max().item() < 1e-6


def test_gaussian_kl_by_hand():
    # 1-D: KL(N(0, 1) || N(1, 2^2)) = log 2 + (1 + 1) / 8 - 1/2.
    kl = trpo.gaussian_kl(torch.zeros(1, 1), torch.zeros(1, 1), torch.ones(1, 1), torch.full((1, 1), math.log(2)))
    assert kl.item() == pytest.approx(math.log(2) + 2 / 8 - 0.5)
    # Two independent dimensions add up.
    kl2 = trpo.gaussian_kl(torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2), torch.full((1, 2), math.log(2)))
    assert kl2.item() == pytest.approx(2 * kl.item())


def small_agent(action_space: gym.Space) -> trpo.Agent:
    """A policy with a hidden layer, so that the Fisher matrix couples the parameters of both layers."""
    torch.manual_seed(0)
    agent = trpo.Agent(gym.spaces.Box(-1, 1, (3,)), action_space, trpo.Args(hidden_sizes=(4,), normalize_obs=False))
    agent = agent.double()
    with torch.no_grad():
        for p in agent.policy_parameters():  # away from the initial near-zero output layer and zero log std
            p.add_(0.5 * torch.randn_like(p))
    return agent


def kl_at(agent: trpo.Agent, obs: torch.Tensor, old_output: torch.Tensor, old_logstd, flat: torch.Tensor):
    """The mean KL(pi_old || pi_flat), as a function of a flat parameter vector (for explicit Hessians)."""
    params = agent.policy_parameters()
    shapes = [p.shape for p in params]
    pieces = flat.split([p.numel() for p in params])
    name_of = {id(p): name for name, p in agent.named_parameters()}
    names = [name_of[id(p)] for p in params]
    values = {name: piece.reshape(shape) for name, piece, shape in zip(names, pieces, shapes)}
    output = torch.func.functional_call(agent.actor, {k.removeprefix("actor."): v for k, v in values.items()
                                                      if k.startswith("actor.")}, (obs,))
    if agent.discrete:
        return trpo.categorical_kl(old_output, output).mean()
    logstd = values["actor_logstd"]
    return trpo.gaussian_kl(old_output, old_logstd.expand_as(old_output), output, logstd.expand_as(output)).mean()



def policy_at_old(action_space: gym.Space, seed: int):
    """A small float64 policy, a batch of observations, pi_old's outputs there (detached) and the mean
    KL(pi_old || pi) at the policy's current parameters, as a closure."""
    agent = small_agent(action_space)
    obs = torch.randn(16, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        old_output = agent.actor(obs)  # the actor itself: float64 and unnormalised
        old_logstd = None if agent.discrete else agent.actor_logstd.clone()

    def mean_kl():
        return agent.kl_from(old_output, old_logstd, agent.actor(obs)).mean()

    return agent, obs, old_output, old_logstd, mean_kl

@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "gaussian"])
def test_fisher_vector_product_matches_the_explicit_hessian_of_the_kl(action_space):
    agent, obs, old_output, old_logstd, mean_kl = policy_at_old(action_space, seed=1)
    params = agent.policy_parameters()
    theta = parameters_to_vector(params).detach()
    hessian = torch.autograd.functional.hessian(lambda flat: kl_at(agent, obs, old_output, old_logstd, flat), theta)
    # Non-diagonal structure: the layers interact, so H is far from diagonal.
    off_diagonal = hessian - torch.diag(torch.diag(hessian))
    assert off_diagonal.abs().max() > 0.1 * torch.diag(hessian).abs().max()
    assert torch.linalg.eigvalsh(hessian).min() > -1e-8  # a Fisher matrix: positive semi-definite
    for seed in range(3):
        v = torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
        torch.testing.assert_close(trpo.fisher_vector_product(mean_kl, params, v, damping=0.0), hessian @ v)
        torch.testing.assert_close(trpo.fisher_vector_product(mean_kl, params, v, damping=0.1), hessian @ v + 0.1 * v)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "gaussian"])
def test_the_kl_of_a_zero_step_is_zero_and_of_a_small_step_is_the_quadratic_form(action_space):
    agent, _, _, _, mean_kl = policy_at_old(action_space, seed=2)
    params = agent.policy_parameters()
    assert mean_kl().item() == 0.0
    theta = parameters_to_vector(params).detach()
    step = 1e-3 * torch.randn(len(theta), dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    quadratic = 0.5 * step @ trpo.fisher_vector_product(mean_kl, params, step, damping=0.0)
    vector_to_parameters(theta + step, params)
    with torch.no_grad():
        assert mean_kl().item() == pytest.approx(quadratic.item(), rel=1e-2)


def test_max_step_reaches_the_edge_of_the_quadratic_trust_region():
    # H = diag(2, 8), s = [1, 1]: s^T H s = 10, beta = sqrt(2 * 0.01 / 10); then 1/2 step^T H step = delta.
    h = torch.diag(torch.tensor([2.0, 8.0], dtype=torch.float64))
    s = torch.ones(2, dtype=torch.float64)
    step = trpo.max_step(s, h @ s, max_kl=0.01)
    assert step.tolist() == pytest.approx([math.sqrt(0.002)] * 2)
    assert (0.5 * step @ h @ step).item() == pytest.approx(0.01)


def test_surrogate_is_the_mean_advantage_at_the_old_policy_and_weighted_by_the_ratio_after():
    logprob = torch.log(torch.tensor([0.2, 0.5, 0.9]))
    advantages = torch.tensor([1.0, -2.0, 0.5])
    assert trpo.surrogate_loss(logprob, logprob, advantages).item() == pytest.approx(-0.5 / 3)
    new = torch.log(torch.tensor([0.4, 0.25, 0.9]))  # ratios 2, 0.5, 1
    assert trpo.surrogate_loss(new, logprob, advantages).item() == pytest.approx((2 - 1 + 0.5) / 3)


# --- the line search ---------------------------------------------------------------------------------


def quadratic_problem(g, h):
    """evaluate(params) for a surrogate g.x and a KL 1/2 x^T H x, and a log of the points it was asked about."""
    asked = []

    def evaluate(x):
        asked.append(x.clone())
        return float(g @ x), float(0.5 * x @ h @ x)

    return evaluate, asked


@pytest.mark.parametrize("full_step, backtracks", [
    (0.1, 0),  # KL of the full step 0.005 <= 0.01, surrogate 0.1 > 0: accepted at once
    (0.4, 2),  # KL 0.08, then 0.02 at half the step, then 0.005 at a quarter: the first to pass
], ids=["inside", "shrunk"])
def test_line_search_takes_the_first_step_that_improves_inside_the_region(full_step, backtracks):
    evaluate, asked = quadratic_problem(torch.tensor([1.0, 0.0]), torch.eye(2))
    result = trpo.line_search(evaluate, torch.zeros(2), torch.tensor([full_step, 0.0]), 0.0, max_kl=0.01,
                              backtrack_iters=10, backtrack_coeff=0.5)
    assert result.accepted and result.backtracks == backtracks and len(asked) == backtracks + 1
    assert result.params.tolist() == pytest.approx([0.1, 0.0])
    assert result.surrogate == pytest.approx(0.1) and result.kl == pytest.approx(0.005)


def test_line_search_rejects_a_step_that_worsens_the_surrogate_and_keeps_the_old_parameters():
    g, h = torch.tensor([1.0, 0.0]), torch.eye(2)
    evaluate, asked = quadratic_problem(g, h)
    old = torch.tensor([0.3, -0.2])
    # Every fraction of the step [-0.1, 0] lowers the surrogate below its old value 0.3.
    result = trpo.line_search(evaluate, old, torch.tensor([-0.1, 0.0]), 0.3, max_kl=100.0, backtrack_iters=5,
                              backtrack_coeff=0.5)
    assert not result.accepted and result.backtracks == 5 and len(asked) == 5
    assert torch.equal(result.params, old) and result.surrogate == 0.3 and result.kl == 0.0


def test_line_search_skips_non_finite_values():
    calls = iter([(float("nan"), 0.0), (1.0, float("inf")), (1.0, 0.0)])
    result = trpo.line_search(lambda x: next(calls), torch.zeros(1), torch.ones(1), 0.0, max_kl=0.01,
                              backtrack_iters=3, backtrack_coeff=0.5)
    assert result.accepted and result.backtracks == 2 and result.params.tolist() == [0.25]


# --- the policy update on a real batch ----------------------------------------------------------------


def batch_of(action_space, n=256):
    agent = small_agent(action_space).float()
    generator = torch.Generator().manual_seed(4)
    obs = torch.randn(n, 3, generator=generator)
    with torch.no_grad():
        actions = trpo.act(agent, obs)[0]
    advantages = torch.randn(n, generator=generator)
    return agent, obs, actions, advantages


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "gaussian"])
def test_a_trpo_update_improves_the_surrogate_within_the_kl_bound(action_space):
    agent, obs, actions, advantages = batch_of(action_space)
    critic_before = parameters_to_vector(agent.critic.parameters()).clone()
    stats = trpo.policy_update(agent, obs, actions, advantages, trpo.Args(max_kl=0.01))
    assert stats["accepted"] and stats["surrogate_after"] > stats["surrogate_before"]
    assert 0 < stats["kl"] <= 0.01
    assert torch.equal(parameters_to_vector(agent.critic.parameters()), critic_before)  # only the policy moves
    # The first-order prediction of the improvement is close to the real one for a step this small.
    improvement = stats["surrogate_after"] - stats["surrogate_before"]
    assert improvement == pytest.approx(stats["expected_improvement"], rel=0.5)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "gaussian"])
def test_the_natural_gradient_takes_the_full_step_past_the_bound_where_trpo_backtracks(action_space):
    # delta 0.1 with little damping: the quadratic model underestimates the KL of the full step (about 0.16
    # to 0.29 here). NPG takes it all the same; TRPO's line search shrinks it back inside the region.
    agent, obs, actions, advantages = batch_of(action_space)
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    settings = dict(max_kl=0.1, cg_damping=1e-3)
    npg = trpo.policy_update(agent, obs, actions, advantages, trpo.Args(**settings, line_search=False))
    agent.load_state_dict(state)
    trpo_stats = trpo.policy_update(agent, obs, actions, advantages, trpo.Args(**settings))
    assert npg["accepted"] and npg["backtracks"] == 0 and npg["kl"] > 0.1
    assert trpo_stats["accepted"] and trpo_stats["backtracks"] >= 1 and trpo_stats["kl"] <= 0.1
    assert trpo_stats["surrogate_after"] > trpo_stats["surrogate_before"]


def test_a_zero_gradient_leaves_the_policy_alone():
    agent, obs, actions, _ = batch_of(gym.spaces.Discrete(3))
    before = parameters_to_vector(agent.policy_parameters()).clone()
    stats = trpo.policy_update(agent, obs, actions, torch.zeros(len(obs)), trpo.Args())
    assert not stats["accepted"] and stats["kl"] == 0.0
    assert torch.equal(parameters_to_vector(agent.policy_parameters()), before)


def test_fit_value_regresses_the_value_net_on_the_returns_and_leaves_the_policy_alone():
    agent, obs, _, _ = batch_of(gym.spaces.Discrete(3))
    returns = obs[:, 0] * 2.0 + 1.0
    policy_before = parameters_to_vector(agent.policy_parameters()).clone()
    with torch.no_grad():
        loss_before = (0.5 * (agent.get_value(obs) - returns) ** 2).mean().item()
    optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    mean_step_loss, loss_after = trpo.fit_value(agent, optimizer, obs, returns, epochs=100, minibatch_size=64)
    assert loss_after < 0.1 * loss_before and loss_after < mean_step_loss.item() < loss_before
    assert all(optimizer.state[p]["step"].item() == 100 * 256 / 64 for p in agent.critic.parameters())
    assert torch.equal(parameters_to_vector(agent.policy_parameters()), policy_before)


# --- the whole update: the policy's step, then the value fit --------------------------------------------------


def whole_batch(action_space, **settings):
    agent, obs, actions, advantages = batch_of(action_space)
    returns = obs[:, 0] * 2.0 + 1.0
    with torch.no_grad():
        values = agent.get_value(obs)
    batch = trpo.Batch(obs, actions, torch.zeros(len(obs)), values, advantages, returns)
    return agent, torch.optim.Adam(agent.critic.parameters(), lr=1e-3), batch, trpo.Args(**settings)


@pytest.mark.parametrize("action_space", [gym.spaces.Discrete(3), gym.spaces.Box(-1, 1, (2,))],
                         ids=["discrete", "gaussian"])
def test_update_steps_the_policy_on_standardised_advantages_then_fits_the_value(action_space):
    agent, optimizer, batch, args = whole_batch(action_space)
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    # The policy's step by itself, on the advantages standardised over the batch.
    standardised = (batch.advantages - batch.advantages.mean()) / (batch.advantages.std() + 1e-8)
    alone = trpo.policy_update(agent, batch.obs, batch.actions, standardised, args)
    policy_alone = parameters_to_vector(agent.policy_parameters()).clone()
    agent.load_state_dict(state)
    critic_before = parameters_to_vector(agent.critic.parameters()).clone()
    # Scaling and shifting the advantages changes nothing but rounding: they are standardised. (Shifted and
    # not standardised, they would give another direction.)
    metrics = trpo.update(agent, optimizer, batch._replace(advantages=10 * batch.advantages + 3), args)
    torch.testing.assert_close(parameters_to_vector(agent.policy_parameters()), policy_alone, rtol=0, atol=1e-3)
    assert metrics["kl"] == pytest.approx(alone["kl"], rel=1e-3) and metrics["accepted"] and 0 < metrics["kl"] <= 0.01
    assert not torch.equal(parameters_to_vector(agent.critic.parameters()), critic_before)  # the value was fitted
    with torch.no_grad():
        assert metrics["value_loss"] == pytest.approx((0.5 * (agent.get_value(batch.obs) - batch.returns) ** 2).mean().item())
    assert math.isfinite(metrics["loss"])


def test_update_without_standardising_steps_on_the_advantages_as_they_are():
    agent, optimizer, batch, args = whole_batch(gym.spaces.Discrete(3), norm_adv=False)
    state = {k: v.clone() for k, v in agent.state_dict().items()}
    alone = trpo.policy_update(agent, batch.obs, batch.actions, batch.advantages, args)
    agent.load_state_dict(state)
    assert trpo.update(agent, optimizer, batch, args)["surrogate_after"] == pytest.approx(alone["surrogate_after"])


@pytest.mark.parametrize("line_search", [True, False], ids=["trpo", "npg"])
def test_a_non_finite_surrogate_makes_the_loss_of_the_update_non_finite(line_search):
    """What run.check_finite looks at to stop a run before a checkpoint holds the damage. The line search takes
    no step on it; the natural gradient's step is not finite either."""
    agent, optimizer, batch, args = whole_batch(gym.spaces.Discrete(3), line_search=line_search)
    batch.advantages[3] = float("nan")
    before = parameters_to_vector(agent.policy_parameters()).clone()
    metrics = trpo.update(agent, optimizer, batch, args)
    assert not torch.isfinite(torch.as_tensor(metrics["loss"]))
    if line_search:
        assert not metrics["accepted"] and torch.equal(parameters_to_vector(agent.policy_parameters()), before)
