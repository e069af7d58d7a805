"""ddpg.py's math against hand-worked values: Ornstein-Uhlenbeck noise, the TD target, the paper's critic
(action at the second layer) and initialisation, and one whole update as main runs it. The replay kit
(buffer, Polyak update, what a run stores at an episode's end) is tested in test_off_policy_checkpoints.py."""

import copy
import dataclasses

import pytest
import torch

import ddpg
from helpers import assert_targets_moved_by_tau, parameters


def test_ou_step_by_hand():
    x = ddpg.ou_step(torch.tensor([1.0, 0.0]), torch.tensor([0.5, -1.0]), theta=0.15, sigma=0.2)
    assert x.tolist() == pytest.approx([0.85 + 0.1, -0.2])


def test_ou_noise_statistics():
    # x' = (1 - theta) x + sigma eps is AR(1): stationary mean 0, variance sigma^2 / (1 - (1 - theta)^2)
    # = 0.04 / 0.2775 = 0.1441, and lag-1 autocorrelation 1 - theta = 0.85.
    torch.manual_seed(0)
    x = torch.zeros(4000)
    for _ in range(100):  # burn-in: (0.85)^200 of the start remains
        x = ddpg.ou_step(x, torch.randn(4000), 0.15, 0.2)
    samples = []
    for _ in range(200):
        x = ddpg.ou_step(x, torch.randn(4000), 0.15, 0.2)
        samples.append(x)
    samples = torch.stack(samples)  # [time, process]
    assert samples.mean().item() == pytest.approx(0.0, abs=0.01)
    assert samples.var().item() == pytest.approx(0.04 / (1 - 0.85**2), rel=0.03)
    lag1 = (samples[1:] * samples[:-1]).mean() / samples.var()
    assert lag1.item() == pytest.approx(0.85, abs=0.01)


def test_td_target_and_losses():
    target = ddpg.td_target(torch.tensor([1.0, 1.0]), torch.tensor([0.0, 1.0]), torch.tensor([10.0, 10.0]), 0.99)
    assert target.tolist() == pytest.approx([10.9, 1.0])
    assert ddpg.critic_loss(torch.tensor([1.0, 2.0]), torch.tensor([0.0, 4.0])).item() == pytest.approx(2.5)
    assert ddpg.actor_loss(torch.tensor([1.0, 3.0])).item() == -2.0


def test_the_paper_critic_takes_the_action_at_its_second_layer_and_starts_its_outputs_small():
    torch.manual_seed(0)
    agent = ddpg.Agent(obs_dim=11, act_dim=3, args=ddpg.Args())
    first, second, last = agent.critic.layers
    assert (first.in_features, second.in_features, last.in_features) == (11, 403, 300)
    assert agent.actor.net[0].in_features == 11
    for layer in (last, agent.actor.net[-1]):
        assert layer.weight.abs().max() <= 3e-3 and layer.bias.abs().max() <= 3e-3
        assert layer.weight.abs().max() > 2.9e-3  # drawn from the whole interval
    assert first.weight.abs().max() <= 1 / 11**0.5 and first.weight.abs().max() > 0.9 / 11**0.5  # U(+-1/sqrt(f))
    # The tuned DDPG of the TD3 paper: the action joins the state at the input.
    tuned = ddpg.Agent(obs_dim=11, act_dim=3, args=ddpg.PRESETS["our-ddpg"])
    assert tuned.critic.layers[0].in_features == 14 and tuned.critic.layers[1].in_features == 400


def test_the_actor_loss_leaves_the_critic_without_gradients():
    torch.manual_seed(0)
    critic = ddpg.Critic(obs_dim=3, act_dim=2, hidden_sizes=(8, 8), action_layer=2, final_layer_init=3e-3)
    obs, action = torch.randn(5, 3), torch.randn(5, 2, requires_grad=True)
    assert torch.equal(critic(obs, action), critic(obs, action, detach_params=True))
    critic(obs, action, detach_params=True).sum().backward()
    assert action.grad.abs().sum() > 0 and all(p.grad is None for p in critic.parameters())


# --- one update, as main runs it -----------------------------------------------------------------------


def test_one_update_by_hand():
    # The critic regresses on y = r + gamma (1 - terminated) Q'(s', mu'(s')) of the target networks; the
    # actor then follows -Q(s, mu(s)) of the critic just stepped; both targets then move tau towards theirs.
    torch.manual_seed(0)
    args = dataclasses.replace(ddpg.Args(), hidden_sizes=(8, 8), gamma=0.9, tau=0.25)
    agent = ddpg.Agent(obs_dim=3, act_dim=2, args=args)
    with torch.no_grad():  # targets that differ from the online networks, as they do after some training
        for p in [*agent.actor_target.parameters(), *agent.critic_target.parameters()]:
            p.add_(0.3 * torch.randn_like(p))
    actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=1e-2)
    critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=1e-2)
    obs, actions, rewards, next_obs = torch.randn(16, 3), torch.rand(16, 2) * 2 - 1, torch.randn(16), torch.randn(16, 3)
    terminated = (torch.arange(16) % 3 == 0).float()
    with torch.no_grad():
        y = rewards + 0.9 * (1 - terminated) * agent.critic_target(next_obs, agent.actor_target(next_obs))
        expected_critic_loss = ((agent.critic(obs, actions) - y) ** 2).mean()
    actor_before = copy.deepcopy(agent.actor)
    targets_before = {name: parameters(getattr(agent, name)) for name in ("actor_target", "critic_target")}

    batch = ddpg.Batch(obs, actions, rewards, next_obs, terminated)
    metrics = ddpg.update(agent, actor_optimizer, critic_optimizer, batch, args)
    assert metrics["qf_loss"].item() == pytest.approx(expected_critic_loss.item(), rel=1e-5)
    with torch.no_grad():
        expected_actor_loss = -agent.critic(obs, actor_before(obs)).mean()
    assert metrics["actor_loss"].item() == pytest.approx(expected_actor_loss.item(), rel=1e-5)
    assert metrics["loss"].item() == pytest.approx((metrics["qf_loss"] + metrics["actor_loss"]).item())
    assert not all(torch.equal(a, b) for a, b in zip(parameters(actor_before), parameters(agent.actor)))
    assert_targets_moved_by_tau(agent, targets_before, tau=0.25)
