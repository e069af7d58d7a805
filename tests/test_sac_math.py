"""The math of algos/sac.py against values worked out by hand, and one whole update as main runs it. The
replay kit (buffer, Polyak update, what a run stores at an episode's end) is tested in
test_off_policy_checkpoints.py."""

import dataclasses
import math

import pytest
import torch

import sac
from helpers import parameters


# --- the squashed Gaussian -----------------------------------------------------------------------------


def test_squashed_log_prob_is_the_change_of_variables_formula():
    # a = tanh(u), u ~ N(mean, std): log p(a) = log N(u) - log |det da/du|, the Jacobian taken numerically
    # by autograd and its determinant by slogdet (not the diagonal formula the function uses).
    torch.manual_seed(0)
    mean = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    log_std = torch.tensor([-0.5, 0.2, 0.7], dtype=torch.float64)
    for _ in range(5):
        noise = torch.randn(3, dtype=torch.float64)
        action, log_prob = sac.squashed_gaussian(mean, log_std, noise)
        u = mean + log_std.exp() * noise
        jacobian = torch.autograd.functional.jacobian(torch.tanh, u)
        expected = torch.distributions.Normal(mean, log_std.exp()).log_prob(u).sum() - torch.linalg.slogdet(jacobian)[1]
        assert torch.allclose(action, torch.tanh(u))
        assert log_prob.item() == pytest.approx(expected.item(), rel=1e-9)


def test_squashed_density_integrates_to_one_over_the_action_interval():
    # 1-D: p(a) on a fine grid of (-1, 1), reached through u = atanh(a); the trapezoid rule gives about 1.
    mean, log_std = torch.tensor([0.4], dtype=torch.float64), torch.tensor([0.1], dtype=torch.float64)
    a = torch.linspace(-1, 1, 200_001, dtype=torch.float64)[1:-1]
    noise = (torch.atanh(a) - mean) / log_std.exp()
    _, log_prob = sac.squashed_gaussian(mean, log_std, noise[:, None])
    assert torch.trapezoid(log_prob.exp(), a).item() == pytest.approx(1.0, abs=1e-4)


def test_squashed_log_prob_stays_finite_where_tanh_rounds_to_one():
    # At u = 30, tanh(u) is 1.0 in float32 and log(1 - tanh^2) is -inf; the exact value is about
    # log 4 - 2u = log 4 - 60.
    action, log_prob = sac.squashed_gaussian(torch.tensor([30.0]), torch.tensor([0.0]), torch.tensor([0.0]))
    assert action.item() == 1.0
    assert log_prob.item() == pytest.approx(-0.5 * math.log(2 * math.pi) - (math.log(4) - 60), rel=1e-6)


# --- the losses -----------------------------------------------------------------------------------------


def test_soft_td_target_by_hand():
    # min Q' = [3, 1]; soft values [3 - 0.2 * 0.5, 1 - 0.2 * 2] = [2.9, 0.6]; the second transition
    # terminated, so y = [1 + 0.9 * 2.9, 2] = [3.61, 2].
    y = sac.soft_td_target(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 1.0]), torch.tensor([[3.0, 5.0], [4.0, 1.0]]),
                           torch.tensor([0.5, 2.0]), torch.tensor(0.2), 0.9)
    assert y.tolist() == pytest.approx([3.61, 2.0])


def test_critic_loss_by_hand():
    # Q1 errors [-1, 0]: mean square 0.5; Q2 errors [1, -2]: 2.5; J = 0.5 * (0.5 + 2.5) = 1.5.
    loss = sac.critic_loss(torch.tensor([[1.0, 2.0], [3.0, 0.0]]), torch.tensor([2.0, 2.0]))
    assert loss.item() == pytest.approx(1.5)


def test_policy_loss_by_hand_uses_the_smaller_q():
    # min Q = [1, 0]; alpha 0.5: [0.5 - 1, -0.5 - 0] -> mean -0.5.
    log_prob = torch.tensor([1.0, -1.0], requires_grad=True)
    q = torch.tensor([[2.0, 0.0], [1.0, 3.0]], requires_grad=True)
    loss = sac.policy_loss(log_prob, q, torch.tensor(0.5))
    assert loss.item() == pytest.approx(-0.5)
    loss.backward()
    assert log_prob.grad.tolist() == pytest.approx([0.25, 0.25])  # alpha / batch
    assert q.grad.flatten().tolist() == pytest.approx([0.0, -0.5, -0.5, 0.0])  # only the smaller Q of each pair


def test_temperature_loss_and_the_sign_of_its_gradient():
    # Entropy below the target (log pi = [1, 3], target -1: mean(log pi + H) = 1): loss = -0.3 * 1,
    # gradient in log alpha -1, so a descent step raises alpha.
    log_alpha = torch.tensor(0.3, requires_grad=True)
    log_prob = torch.tensor([1.0, 3.0], requires_grad=True)
    loss = sac.temperature_loss(log_alpha, log_prob, -1.0)
    assert loss.item() == pytest.approx(-0.3)
    loss.backward()
    assert log_alpha.grad.item() == pytest.approx(-1.0)
    assert log_prob.grad is None  # the temperature's loss does not move the policy
    torch.optim.SGD([log_alpha], lr=0.1).step()
    assert log_alpha.item() == pytest.approx(0.4)
    # Entropy above the target (log pi = [-5, -3]: mean(log pi + H) = -5): gradient +5, alpha falls.
    log_alpha = torch.tensor(0.3, requires_grad=True)
    sac.temperature_loss(log_alpha, torch.tensor([-5.0, -3.0]), -1.0).backward()
    assert log_alpha.grad.item() == pytest.approx(5.0)


# --- networks -----------------------------------------------------------------------------------------


def test_twin_q_is_two_independent_mlps():
    torch.manual_seed(0)
    net = sac.TwinQ(obs_dim=3, act_dim=2, hidden=8)
    obs, action = torch.randn(5, 3), torch.randn(5, 2)
    q = net(obs, action)
    x = torch.cat([obs, action], -1)
    for j in range(2):
        h = torch.relu(x @ net.w1[:, j * 8:(j + 1) * 8] + net.b1[j * 8:(j + 1) * 8])
        h = torch.relu(h @ net.w2[j] + net.b2[j])
        assert torch.allclose(q[j], (h @ net.w3[j] + net.b3[j]).squeeze(-1), atol=1e-6)


def test_frozen_twin_q_passes_gradients_to_the_action_only():
    torch.manual_seed(0)
    net = sac.TwinQ(obs_dim=3, act_dim=2, hidden=8)
    obs = torch.randn(5, 3)
    action = torch.randn(5, 2, requires_grad=True)
    net(obs, action, frozen=True).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    frozen_grad = action.grad.clone()
    action.grad = None
    net(obs, action).sum().backward()
    assert torch.allclose(action.grad, frozen_grad)


def test_an_agent_saved_with_the_action_bounds_still_loads():
    # Before the replay kit mapped actions onto the env's bounds, the agent held them (action_scale,
    # action_bias); a checkpoint or model of then loads, the bounds coming from the env as now.
    args = dataclasses.replace(sac.Args(), hidden_size=8)
    saved = {**sac.Agent(3, 2, args).state_dict(), "action_scale": torch.ones(2), "action_bias": torch.zeros(2)}
    agent = sac.Agent(3, 2, args)
    agent.load_state_dict(saved)
    assert torch.equal(agent.log_alpha, saved["log_alpha"]) and torch.equal(agent.critic.w1, saved["critic.w1"])


# --- one update, as main runs it --------------------------------------------------------------------------


def update_setup(**overrides):
    """An agent whose target Q networks differ from the online ones (as they do after some training), its
    optimiser as main makes it, settings, and a hand-made batch of 16 transitions, a third of them terminal."""
    torch.manual_seed(0)
    args = dataclasses.replace(sac.Args(), hidden_size=8, gamma=0.9, tau=0.25, **overrides)
    agent = sac.Agent(obs_dim=3, act_dim=2, args=args)
    with torch.no_grad():
        agent.log_alpha.fill_(-1.0)
        for p in agent.critic_target.parameters():
            p.add_(0.3 * torch.randn_like(p))
    temperature = [agent.log_alpha] if args.alpha is None else []
    optimizer = torch.optim.Adam([*agent.actor.parameters(), *agent.critic.parameters(), *temperature], lr=1e-2)
    batch = sac.Batch(torch.randn(16, 3), torch.rand(16, 2) * 2 - 1, torch.randn(16), torch.randn(16, 3),
                      (torch.arange(16) % 3 == 0).float())
    return agent, optimizer, args, batch


def test_one_update_by_hand():
    # From the same parameters and the same noise: the Q networks regress on y = r + gamma (1 - terminated)
    # (min_j Q'_j(s', a') - alpha log pi(a'|s')) of the target networks; the policy's loss is
    # alpha log pi(a|s) - min_j Q_j(s, a) with a reparameterised; the temperature's -log alpha (log pi + H),
    # H = -|A| = -2. The target Q networks then move tau towards the stepped ones.
    agent, optimizer, args, (obs, actions, rewards, next_obs, terminated) = update_setup()
    alpha = torch.exp(torch.tensor(-1.0))
    torch.manual_seed(1)
    with torch.no_grad():
        next_actions, next_log_prob = agent.actor.sample(next_obs)
        y = rewards + 0.9 * (1 - terminated) * (agent.critic_target(next_obs, next_actions).min(0).values
                                                - alpha * next_log_prob)
        q = agent.critic(obs, actions)
        expected_q_loss = 0.5 * (((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean())
        new_actions, log_prob = agent.actor.sample(obs)
        expected_policy_loss = (alpha * log_prob - agent.critic(obs, new_actions).min(0).values).mean()
        expected_alpha_loss = -(-1.0 * (log_prob - 2.0)).mean()
    critic_before, target_before = parameters(agent.critic), parameters(agent.critic_target)
    torch.manual_seed(1)
    metrics = sac.update(agent, optimizer, sac.Batch(obs, actions, rewards, next_obs, terminated), args)
    assert metrics["q_loss"].item() == pytest.approx(expected_q_loss.item(), rel=1e-5)
    assert metrics["policy_loss"].item() == pytest.approx(expected_policy_loss.item(), rel=1e-5)
    assert metrics["alpha_loss"].item() == pytest.approx(expected_alpha_loss.item(), rel=1e-5)
    assert metrics["loss"].item() == pytest.approx((expected_q_loss + expected_policy_loss + expected_alpha_loss).item(),
                                                   rel=1e-5)
    assert metrics["q_values"].item() == pytest.approx(q.mean().item(), rel=1e-5)
    assert metrics["entropy"].item() == pytest.approx(-log_prob.mean().item(), rel=1e-5)
    # Entropy below the target raises alpha, above it lowers it; either way it moved, and is reported after.
    assert metrics["alpha"].item() == pytest.approx(agent.log_alpha.exp().item()) and agent.log_alpha.item() != -1.0
    assert (agent.log_alpha.item() > -1.0) == (-log_prob.mean().item() < -2.0)
    for old, new, source in zip(target_before, agent.critic_target.parameters(), agent.critic.parameters()):
        assert torch.allclose(new, 0.75 * old + 0.25 * source.detach(), atol=1e-6)
        assert not new.requires_grad and new.grad_fn is None
    assert all(not torch.equal(a, b) for a, b in zip(critic_before, parameters(agent.critic)))


def test_each_loss_moves_only_its_own_parameters():
    # The one Adam step over the sum equals a step of each loss on its own part: the Q loss reaches the Q
    # networks only, the policy loss the policy only, the temperature loss log alpha only.
    agent, optimizer, args, batch = update_setup()
    captured = {}
    real_step = optimizer.step

    def step():
        captured.update({name: None if p.grad is None else p.grad.clone() for name, p in agent.named_parameters()})
        real_step()

    optimizer.step = step
    torch.manual_seed(1)
    sac.update(agent, optimizer, batch, args)
    fresh, _, _, _ = update_setup()  # again, each loss alone, from the same parameters and noise
    torch.manual_seed(1)
    with torch.no_grad():
        next_actions, next_log_prob = fresh.actor.sample(batch.next_obs)
        alpha = fresh.log_alpha.exp()
        y = sac.soft_td_target(batch.rewards, batch.terminated, fresh.critic_target(batch.next_obs, next_actions),
                               next_log_prob, alpha, args.gamma)
    q_loss = sac.critic_loss(fresh.critic(batch.obs, batch.actions), y)
    new_actions, log_prob = fresh.actor.sample(batch.obs)
    pi_loss = sac.policy_loss(log_prob, fresh.critic(batch.obs, new_actions, frozen=True), alpha)
    alpha_loss = sac.temperature_loss(fresh.log_alpha, log_prob, -2.0)
    for loss, part in ((q_loss, "critic."), (pi_loss, "actor."), (alpha_loss, "log_alpha")):
        named = [(name, p) for name, p in fresh.named_parameters() if name.startswith(part)]
        grads = torch.autograd.grad(loss, [p for _, p in named], retain_graph=True)
        for (name, _), grad in zip(named, grads):
            assert torch.allclose(captured[name], grad, atol=1e-6), name


def test_a_fixed_temperature_is_not_stepped():
    agent, optimizer, args, batch = update_setup(alpha=0.2)
    metrics = sac.update(agent, optimizer, batch, args)
    assert "alpha_loss" not in metrics and agent.log_alpha.item() == -1.0
    assert metrics["alpha"].item() == pytest.approx(0.2)
    assert metrics["loss"].item() == pytest.approx((metrics["q_loss"] + metrics["policy_loss"]).item())
