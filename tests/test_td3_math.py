"""td3.py's math against hand-worked values: target policy smoothing, the TD target, the twin critic, and one
whole update as main runs it. The replay kit (buffer, Polyak update, what a run stores at an episode's end)
is tested in test_off_policy_checkpoints.py."""

import copy
import dataclasses

import pytest
import torch

import td3
from helpers import assert_targets_moved_by_tau, parameters


def test_target_policy_smoothing_by_hand():
    next_action = torch.tensor([0.9, 0.0, -0.2, 0.3])
    noise = torch.tensor([1.0, 10.0, -1.0, -10.0])  # sigma 0.2: 0.2, 2 -> 0.5, -0.2, -2 -> -0.5
    smoothed = td3.target_policy_action(next_action, noise, policy_noise=0.2, noise_clip=0.5)
    assert smoothed.tolist() == pytest.approx([1.0, 0.5, -0.4, -0.2])  # 0.9 + 0.2 clipped to the bound 1


def test_target_noise_stays_within_its_clip_and_actions_within_bounds():
    torch.manual_seed(0)
    next_action = torch.rand(10_000, 3) * 2 - 1
    smoothed = td3.target_policy_action(next_action, torch.randn(10_000, 3) * 5, policy_noise=0.2, noise_clip=0.5)
    assert smoothed.min() >= -1 and smoothed.max() <= 1
    assert (smoothed - next_action).abs().max() <= 0.5 + 1e-6
    assert (smoothed - next_action).abs().max() > 0.49  # the large noise did reach the clip


def test_td_target_bootstraps_unless_terminated():
    rewards, next_q = torch.tensor([1.0, 1.0, -2.0]), torch.tensor([10.0, 10.0, 4.0])
    terminated = torch.tensor([0.0, 1.0, 0.0])
    assert td3.td_target(rewards, terminated, next_q, 0.9).tolist() == pytest.approx([10.0, 1.0, 1.6])


def test_critic_loss_sums_the_two_critics_mean_squared_errors():
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]])
    target = torch.tensor([0.0, 2.0])
    assert td3.critic_loss(q, target).item() == pytest.approx((1 + 0) / 2 + (0 + 4) / 2)
    assert td3.actor_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_the_fused_twin_critic_is_two_independent_mlps():
    torch.manual_seed(0)
    critic = td3.TwinCritic(obs_dim=3, act_dim=2, hidden_sizes=(5, 4))
    obs, action = torch.randn(6, 3), torch.randn(6, 2)
    q = critic(obs, action)
    assert q.shape == (2, 6)
    for k in range(2):
        x = torch.cat([obs, action], -1)
        for i, (w, b) in enumerate(zip(critic.weights, critic.biases)):
            x = x @ w[k] + b[k]
            x = torch.relu(x) if i < 2 else x
        assert torch.allclose(q[k], x.squeeze(-1), atol=1e-6)
    assert torch.allclose(critic.q1(obs, action), q[0], atol=1e-6)
    # The actor's loss reaches the action through Q1 but leaves the critic's parameters without gradients.
    action.requires_grad_(True)
    critic.q1(obs, action).sum().backward()
    assert action.grad is not None and action.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())


# --- one update, as main runs it -----------------------------------------------------------------------


def update_setup(**overrides):
    """An agent whose target networks differ from the online ones (as they do after some training), its
    optimisers, settings, and a hand-made batch of 16 transitions, a third of them terminal."""
    torch.manual_seed(0)
    args = dataclasses.replace(td3.Args(), hidden_sizes=(8, 8), **overrides)
    agent = td3.Agent(obs_dim=3, act_dim=2, args=args)
    with torch.no_grad():
        for p in [*agent.actor_target.parameters(), *agent.critic_target.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=1e-2)
    critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    batch = td3.Batch(torch.randn(16, 3), torch.rand(16, 2) * 2 - 1, torch.randn(16), torch.randn(16, 3),
                      (torch.arange(16) % 3 == 0).float())
    return agent, actor_optimizer, critic_optimizer, args, batch


def test_update_regresses_both_critics_on_the_smaller_target_q_of_the_target_networks():
    # Without smoothing noise the target is y = r + gamma (1 - terminated) min_j Q'_j(s', mu'(s')), all from
    # the target networks; the critics' loss is the sum over both of their mean squared errors against it.
    agent, actor_optimizer, critic_optimizer, args, batch = update_setup(policy_noise=0.0, gamma=0.9)
    obs, actions, rewards, next_obs, terminated = batch
    with torch.no_grad():
        q_next = agent.critic_target(next_obs, agent.actor_target(next_obs))  # [2, 16]
        y = rewards + 0.9 * (1 - terminated) * torch.minimum(q_next[0], q_next[1])
        q = agent.critic(obs, actions)
        expected = ((q[0] - y) ** 2).mean() + ((q[1] - y) ** 2).mean()
    assert not torch.allclose(q_next[0], q_next[1])  # the minimum matters
    metrics = td3.update(agent, actor_optimizer, critic_optimizer, batch, args, update_actor=False)
    assert metrics["qf_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["qf_values"].item() == pytest.approx(q.mean().item(), rel=1e-6)
    assert torch.equal(metrics["loss"], metrics["qf_loss"])  # the loss watched: the critics' alone


def test_between_actor_updates_only_the_critics_move():
    agent, actor_optimizer, critic_optimizer, args, batch = update_setup()
    before = {name: parameters(getattr(agent, name)) for name in ("actor", "critic", "actor_target", "critic_target")}
    metrics = td3.update(agent, actor_optimizer, critic_optimizer, batch, args, update_actor=False)
    assert "actor_loss" not in metrics
    for name in ("actor", "actor_target", "critic_target"):
        assert all(torch.equal(a, b) for a, b in zip(before[name], parameters(getattr(agent, name)))), name
    assert all(not torch.equal(a, b) for a, b in zip(before["critic"], parameters(agent.critic)))


def test_an_actor_update_follows_the_new_q1_and_moves_every_target_by_tau():
    agent, actor_optimizer, critic_optimizer, args, batch = update_setup(tau=0.25)
    obs = batch[0]
    actor_before = copy.deepcopy(agent.actor)
    targets_before = {name: parameters(getattr(agent, name)) for name in ("actor_target", "critic_target")}
    metrics = td3.update(agent, actor_optimizer, critic_optimizer, batch, args, update_actor=True)
    with torch.no_grad():  # the actor's loss: -Q1(s, mu(s)) of the critics just stepped, the actor before its step
        expected = -agent.critic(obs, actor_before(obs))[0].mean()
    assert metrics["actor_loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert metrics["loss"].item() == pytest.approx((metrics["qf_loss"] + metrics["actor_loss"]).item())
    assert not all(torch.equal(a, b) for a, b in zip(parameters(actor_before), parameters(agent.actor)))
    assert_targets_moved_by_tau(agent, targets_before, tau=0.25)
