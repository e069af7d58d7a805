"""The math and the replay buffer of algos/sac.py against values worked out by hand."""

import math

import gymnasium as gym
import numpy as np
import pytest
import torch

import sac


# --- Polyak update -----------------------------------------------------------------------------------


def test_polyak_update_at_tau_0_keeps_the_target_and_at_tau_1_copies_the_source():
    source = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    target = [torch.tensor([5.0, -2.0]), torch.tensor([[7.0]])]
    sac.polyak_update(target, source, 0.0)
    assert [t.tolist() for t in target] == [[5.0, -2.0], [[7.0]]]
    sac.polyak_update(target, source, 1.0)
    assert [t.tolist() for t in target] == [[1.0, 2.0], [[3.0]]]


def test_polyak_update_in_between():
    # tau 0.25: 0.75 * 4 + 0.25 * 8 = 5
    target = [torch.tensor([4.0])]
    sac.polyak_update(target, [torch.tensor([8.0])], 0.25)
    assert target[0].item() == pytest.approx(5.0)


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
    net = sac.TwinQ(obs_dim=3, action_dim=2, hidden=8)
    obs, action = torch.randn(5, 3), torch.randn(5, 2)
    q = net(obs, action)
    x = torch.cat([obs, action], -1)
    for j in range(2):
        h = torch.relu(x @ net.w1[:, j * 8:(j + 1) * 8] + net.b1[j * 8:(j + 1) * 8])
        h = torch.relu(h @ net.w2[j] + net.b2[j])
        assert torch.allclose(q[j], (h @ net.w3[j] + net.b3[j]).squeeze(-1), atol=1e-6)


def test_frozen_twin_q_passes_gradients_to_the_action_only():
    torch.manual_seed(0)
    net = sac.TwinQ(obs_dim=3, action_dim=2, hidden=8)
    obs = torch.randn(5, 3)
    action = torch.randn(5, 2, requires_grad=True)
    net(obs, action, frozen=True).sum().backward()
    assert all(p.grad is None for p in net.parameters())
    frozen_grad = action.grad.clone()
    action.grad = None
    net(obs, action).sum().backward()
    assert torch.allclose(action.grad, frozen_grad)


def test_actions_are_mapped_onto_the_env_bounds():
    agent = sac.Agent(3, gym.spaces.Box(np.array([-2.0, 0.0], np.float32), np.array([2.0, 1.0], np.float32)), hidden=8)
    assert agent.env_action(torch.tensor([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0]])).tolist() == [
        [-2.0, 0.0], [2.0, 1.0], [0.0, 0.5]]


# --- the replay buffer ----------------------------------------------------------------------------------


def add(buffer, i):
    buffer.add(np.array([i, i], dtype=np.float32), np.array([i / 10]), float(i), i % 2 == 1,
               np.array([i + 1, i + 1], dtype=np.float32))


def test_buffer_wraps_around_and_overwrites_the_oldest():
    buffer = sac.ReplayBuffer(capacity=3, obs_dim=2, action_dim=1, device=torch.device("cpu"))
    for i in range(5):
        add(buffer, i)
    assert (buffer.size, buffer.pos) == (3, 2)
    obs, actions, rewards, terminated, next_obs = buffer.split(buffer.data)
    assert rewards.tolist() == [3.0, 4.0, 2.0]  # slots 0 and 1 overwritten by transitions 3 and 4
    assert obs[:, 0].tolist() == [3.0, 4.0, 2.0] and next_obs[:, 0].tolist() == [4.0, 5.0, 3.0]
    assert actions[:, 0].tolist() == pytest.approx([0.3, 0.4, 0.2])
    assert terminated.tolist() == [1.0, 0.0, 0.0]


def test_buffer_samples_only_filled_slots():
    torch.manual_seed(0)
    buffer = sac.ReplayBuffer(capacity=100, obs_dim=2, action_dim=1, device=torch.device("cpu"))
    for i in range(1, 6):
        add(buffer, i)
    _, _, rewards, _, _ = buffer.sample(1000)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}  # never an empty (all-zero) slot


def test_buffer_state_round_trip_keeps_only_the_filled_rows():
    buffer = sac.ReplayBuffer(capacity=10, obs_dim=2, action_dim=1, device=torch.device("cpu"))
    for i in range(4):
        add(buffer, i)
    state = buffer.state_dict()
    assert state["data"].shape == (4, sac.ReplayBuffer.row_size(2, 1)) and (state["pos"], state["size"]) == (4, 4)
    copy = sac.ReplayBuffer(capacity=10, obs_dim=2, action_dim=1, device=torch.device("cpu"))
    copy.load_state_dict(state)
    assert torch.equal(copy.data, buffer.data) and (copy.pos, copy.size) == (4, 4)


def test_bytes_per_transition():
    # Hopper: 11-dim observations twice, 3-dim action, reward, terminated: 27 float32 = 108 bytes.
    assert sac.ReplayBuffer.bytes_per_transition(11, 3) == 108


class CountingEnv(gym.Env):
    """Observation t after t steps (100 after a reset), reward t; terminates after `terminate_at` steps."""

    observation_space = gym.spaces.Box(-1000, 1000, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, terminate_at: int = 0):
        self.terminate_at, self.t = terminate_at, 0

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.array([100.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), float(self.t), self.t == self.terminate_at, False, {}


def play(terminate_at: int, time_limit: int, steps: int) -> sac.ReplayBuffer:
    """Step a SAME_STEP vector env of one CountingEnv as main does, storing each step with store_step."""
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(CountingEnv(terminate_at), time_limit)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    buffer = sac.ReplayBuffer(capacity=10, obs_dim=1, action_dim=1, device=torch.device("cpu"))
    next_obs, _ = envs.reset(seed=0)
    for _ in range(steps):
        obs, action = next_obs, np.zeros(1, dtype=np.float32)
        next_obs, reward, terminated, truncated, infos = envs.step(action[None])
        sac.store_step(buffer, obs, action, reward, terminated, truncated, next_obs, infos)
    envs.close()
    return buffer


@pytest.mark.parametrize("terminate_at, time_limit, stored_terminated", [
    (3, 10, 1.0),  # terminated at step 3: no bootstrap
    (0, 3, 0.0),  # cut off by the time limit at step 3: bootstrap from the last observation
    (3, 3, 1.0),  # both at once: the episode terminated
])
def test_the_final_step_stores_the_true_last_observation_and_terminated_not_done(terminate_at, time_limit,
                                                                                stored_terminated):
    buffer = play(terminate_at, time_limit, steps=4)
    obs, _, rewards, terminated, next_obs = buffer.split(buffer.data[: buffer.size])
    assert obs[:, 0].tolist() == [100.0, 1.0, 2.0, 100.0]  # the 4th step starts the next episode
    assert next_obs[:, 0].tolist() == [1.0, 2.0, 3.0, 1.0]  # step 3's next_obs is its last one, not the reset's 100
    assert rewards.tolist() == [1.0, 2.0, 3.0, 1.0]
    assert terminated.tolist() == [0.0, 0.0, stored_terminated, 0.0]
