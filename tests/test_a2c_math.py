"""The math of algos/a2c_atari.py against values worked out by hand."""

import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import a2c_atari as a2c


def returns_of(rewards, next_value, terminated=None, truncated=None, final_values=None, gamma=0.5):
    """nstep_returns on plain lists of a single env ([T] lists, one env)."""
    T = len(rewards)
    col = lambda xs, dtype=torch.float32: torch.tensor(xs, dtype=dtype).reshape(T, 1)  # noqa: E731
    out = a2c.nstep_returns(col(rewards), torch.tensor([next_value]), col(terminated or [False] * T, torch.bool),
                            col(truncated or [False] * T, torch.bool), col(final_values or [0.0] * T), gamma)
    return out.flatten().tolist()


def test_nstep_returns_bootstrap_from_the_value_after_the_rollout():
    # gamma 0.5, V(s_3) = 10: R_2 = 3 + 5 = 8, R_1 = 2 + 0.5 * 8 = 6, R_0 = 1 + 0.5 * 6 = 4. The first step
    # looks 3 steps ahead, the last one 1 (the paper's Algorithm S3).
    assert returns_of([1, 2, 3], 10.0) == pytest.approx([4.0, 6.0, 8.0])


def test_nstep_returns_restart_after_a_terminated_episode():
    # The episode terminates at step 1: R_1 = 2 (no future), R_0 = 1 + 0.5 * 2 = 2; step 2 belongs to
    # the next episode and bootstraps from V = 10: R_2 = 3 + 5 = 8.
    assert returns_of([1, 2, 3], 10.0, terminated=[False, True, False]) == pytest.approx([2.0, 2.0, 8.0])


def test_truncation_bootstraps_from_the_final_observation_and_termination_does_not():
    # The episode ends after step 0; its final observation is worth 4; step 1 starts the next episode
    # and sees V(next) = 10. gamma 0.5.
    truncated = returns_of([1, 1], 10.0, truncated=[True, False], final_values=[4.0, 0.0])
    assert truncated == pytest.approx([1 + 0.5 * 4, 1 + 0.5 * 10])  # [3, 6]: nothing flows from step 1
    terminated = returns_of([1, 1], 10.0, terminated=[True, False], final_values=[4.0, 0.0])
    assert terminated == pytest.approx([1.0, 6.0])
    # Both flags (a time limit reached on the terminal step): the episode terminated, no bootstrap.
    both = returns_of([1, 1], 10.0, terminated=[True, False], truncated=[True, False], final_values=[4.0, 0.0])
    assert both == pytest.approx([1.0, 6.0])


def test_nstep_returns_of_two_envs_with_different_episode_ends():
    # gamma 0.9, T = 3. Env 0: rewards 1, 0, 2, truncated at step 1 with final value 5, V(next) = 1.
    #   R_2 = 2 + 0.9 * 1 = 2.9; R_1 = 0 + 0.9 * 5 = 4.5; R_0 = 1 + 0.9 * 4.5 = 5.05.
    # Env 1: rewards 0, 1, 1, terminated at step 2, V(next) = 7 (ignored).
    #   R_2 = 1; R_1 = 1 + 0.9 = 1.9; R_0 = 0 + 0.9 * 1.9 = 1.71.
    rewards = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0]])
    terminated = torch.tensor([[False, False], [False, False], [False, True]])
    truncated = torch.tensor([[False, False], [True, False], [False, False]])
    final_values = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 0.0]])
    out = a2c.nstep_returns(rewards, torch.tensor([1.0, 7.0]), terminated, truncated, final_values, 0.9)
    assert out[:, 0].tolist() == pytest.approx([5.05, 4.5, 2.9])
    assert out[:, 1].tolist() == pytest.approx([1.71, 1.9, 1.0])


def test_one_step_returns_are_the_td_target():
    # t_max = 1 (one-step actor-critic): R = r + gamma * V(s'), so R - V(s) is the TD error delta of
    # Sutton & Barto's Algorithm 13.5.
    assert returns_of([2.0], 3.0, gamma=0.9) == pytest.approx([2.0 + 0.9 * 3.0])
    assert returns_of([2.0], 3.0, terminated=[True], gamma=0.9) == pytest.approx([2.0])


def test_tensorflow_rmsprop_step_by_hand():
    # Minimise p^2 from p = 1: g = 2p. decay 0.9, eps 0.1, lr 0.01.
    # Step 1: v = 0.1 * 4 = 0.4; p = 1 - 0.01 * 2 / sqrt(0.4 + 0.1) = 1 - 0.02 / 0.70711 = 0.97171573.
    # Step 2: g = 1.94343146; v = 0.9 * 0.4 + 0.1 * 1.94343146^2 = 0.36 + 0.37769258 = 0.73769258;
    #         p = 0.97171573 - 0.01 * 1.94343146 / sqrt(0.83769258) = 0.97171573 - 0.02123376 = 0.95048197.
    p = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    optimizer = a2c.RMSpropTF([p], lr=0.01, decay=0.9, eps=0.1)
    expected = [0.97171573, 0.95048197]
    for value in expected:
        optimizer.zero_grad()
        (p**2).sum().backward()
        optimizer.step()
        assert p.item() == pytest.approx(value, abs=1e-7)
    assert optimizer.state[p]["square_avg"].item() == pytest.approx(0.73769258, abs=1e-7)


def test_tensorflow_rmsprop_differs_from_torch_rmsprop_where_epsilon_matters():
    # torch: p = 1 - 0.01 * 2 / (sqrt(0.4) + 0.1) = 1 - 0.02 / 0.73246 = 0.97269459; ours gives 0.97171573.
    p_torch = torch.nn.Parameter(torch.tensor([1.0], dtype=torch.float64))
    torch_optimizer = torch.optim.RMSprop([p_torch], lr=0.01, alpha=0.9, eps=0.1)
    (p_torch**2).sum().backward()
    torch_optimizer.step()
    assert p_torch.item() == pytest.approx(0.97269459, abs=1e-7)
    # With a negligible epsilon the two agree.
    p_tf, p_pt = (torch.nn.Parameter(torch.tensor([1.0, -3.0], dtype=torch.float64)) for _ in range(2))
    tf_opt = a2c.RMSpropTF([p_tf], lr=0.01, decay=0.99, eps=1e-20)
    pt_opt = torch.optim.RMSprop([p_pt], lr=0.01, alpha=0.99, eps=1e-20)
    for _ in range(3):
        for p, opt in ((p_tf, tf_opt), (p_pt, pt_opt)):
            opt.zero_grad()
            (p**2).sum().backward()
            opt.step()
    assert p_tf.tolist() == pytest.approx(p_pt.tolist(), rel=1e-9)


def test_rmsprop_state_round_trips_through_a_checkpoint():
    p = torch.nn.Parameter(torch.ones(3))
    optimizer = a2c.RMSpropTF([p], lr=0.1)
    (p**2).sum().backward()
    optimizer.step()
    restored = a2c.RMSpropTF([torch.nn.Parameter(torch.ones(3))], lr=0.1)
    restored.load_state_dict(optimizer.state_dict())
    assert torch.equal(next(iter(restored.state.values()))["square_avg"], optimizer.state[p]["square_avg"])


def test_actor_critic_loss_gradients():
    # One sample, R = 3, V = 1, so the advantage is 2: d loss / d logprob = -2 (the value is not
    # differentiated through the policy term); d loss / d V = vf_coef * -2 (R - V) = 0.5 * -4 = -2;
    # d loss / d entropy = -beta.
    logprob = torch.tensor([math.log(0.5)], requires_grad=True)
    entropy = torch.tensor([0.7], requires_grad=True)
    value = torch.tensor([1.0], requires_grad=True)
    loss, pg_loss, v_loss, ent = a2c.actor_critic_loss(logprob, entropy, value, torch.tensor([3.0]), 0.01, 0.5)
    loss.backward()
    assert logprob.grad.item() == pytest.approx(-2.0)
    assert value.grad.item() == pytest.approx(-2.0)
    assert entropy.grad.item() == pytest.approx(-0.01)
    assert v_loss.item() == pytest.approx(4.0) and pg_loss.item() == pytest.approx(-2 * math.log(0.5))
    assert loss.item() == pytest.approx(-2 * math.log(0.5) - 0.01 * 0.7 + 0.5 * 4.0)


def test_one_step_update_takes_the_td_error_as_the_advantage():
    # Sutton & Barto's Algorithm 13.5 through the real update(): one env, one step, reward 2, gamma 0.9. The
    # return is R = 2 + 0.9 V(s'), so the policy loss is -log pi(a|s) (R - V(s)), the TD error times the
    # score, and the value loss (R - V(s))^2, both measured before the RMSProp step, which moves every weight.
    torch.manual_seed(0)
    space = gym.spaces.Box(-1, 1, (4,))
    agent = a2c.Agent(space, gym.spaces.Discrete(2))
    optimizer = a2c.RMSpropTF(agent.parameters(), lr=1e-3, eps=1e-5)
    args = dataclasses.replace(a2c.PRESETS["classic"], num_envs=1, num_steps=1, gamma=0.9, ent_coef=0.01)
    obs, next_obs = torch.tensor([[0.1, -0.2, 0.3, 0.0]]), torch.tensor([[0.2, 0.1, -0.1, 0.4]])
    rollout = a2c.Rollout(1, 1, torch.device("cpu"), space)
    rollout.obs[0] = obs
    with torch.inference_mode():
        action, _, value = agent.act(obs)
    rollout.record(0, agent, action, value, np.array([2.0]), np.array([False]), np.array([False]), {})
    with torch.no_grad():
        _, logprob, entropy, v = agent.get_action_and_value(obs, action)
        td_error = 2.0 + 0.9 * agent.get_value(next_obs) - v
    before = [p.clone() for p in agent.parameters()]
    metrics = a2c.update(agent, optimizer, rollout, next_obs, args)
    assert metrics["policy_loss"].item() == pytest.approx((-logprob * td_error).item(), rel=1e-5)
    assert metrics["value_loss"].item() == pytest.approx((td_error**2).item(), rel=1e-5)
    assert metrics["entropy"].item() == pytest.approx(entropy.item(), rel=1e-5)
    expected = metrics["policy_loss"] - 0.01 * metrics["entropy"] + 0.5 * metrics["value_loss"]
    assert metrics["loss"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert math.isnan(metrics["explained_variance"])  # undefined on a batch of one
    assert all(not torch.equal(p, q) for p, q in zip(before, agent.parameters()))


@pytest.mark.parametrize("shape, channel_last", [((4, 84, 84), False), ((10, 10, 4), True), ((10, 10, 10), True)])
def test_image_layout_detection(shape, channel_last):
    assert a2c.is_channel_last(shape) == channel_last


def test_networks_for_each_observation_kind():
    actions = gym.spaces.Discrete(3)
    atari = a2c.Agent(gym.spaces.Box(0, 255, (4, 84, 84), dtype="uint8"), actions)
    convs = [m for m in atari.trunk.modules() if isinstance(m, torch.nn.Conv2d)]
    # The 2013 DQN network: 16 8x8 stride 4, 32 4x4 stride 2, then 256 units.
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(16, (8, 8), (4, 4)), (32, (4, 4), (2, 2))]
    assert atari.actor.in_features == 256
    _, logprob, entropy, value = atari.get_action_and_value(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
    assert logprob.shape == entropy.shape == value.shape == (2,)
    minatar = a2c.Agent(gym.spaces.Box(0, 1, (10, 10, 6), dtype=bool), actions)
    action, logits, value = minatar.act(torch.zeros(5, 10, 10, 6, dtype=torch.bool))
    assert action.shape == value.shape == (5,) and logits.shape == (5, 3) and minatar.actor.in_features == 128
    vector = a2c.Agent(gym.spaces.Box(-1, 1, (4,)), actions)
    assert vector.get_value(torch.zeros(7, 4)).shape == (7,)
