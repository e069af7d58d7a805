"""td3.py's math against hand-worked values: the Polyak update, target policy smoothing, the TD target, the
twin critic, and the replay buffer (wrap-around, filled slots only, terminated versus truncated)."""

import gymnasium as gym
import numpy as np
import pytest
import torch

import td3


def test_polyak_update_at_tau_0_keeps_the_target_and_at_tau_1_copies_the_source():
    source = [torch.tensor([1.0, 2.0]), torch.tensor([[3.0]])]
    target = [torch.tensor([5.0, -2.0]), torch.tensor([[7.0]])]
    td3.polyak_update(target, source, 0.0)
    assert target[0].tolist() == [5.0, -2.0] and target[1].tolist() == [[7.0]]
    td3.polyak_update(target, source, 0.25)  # 0.25 * source + 0.75 * target
    assert target[0].tolist() == [4.0, -1.0] and target[1].tolist() == [[6.0]]
    td3.polyak_update(target, source, 1.0)
    assert target[0].tolist() == [1.0, 2.0] and target[1].tolist() == [[3.0]]


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


def transition(value: float):
    return (torch.full((1, 2), value), torch.full((1, 1), value), torch.tensor([value]), torch.full((1, 2), value + 0.5),
            torch.tensor([0.0]))


def test_replay_buffer_wraps_around_over_the_oldest_transitions():
    buffer = td3.ReplayBuffer(capacity=3, obs_dim=2, act_dim=1, device=torch.device("cpu"))
    for value in (1.0, 2.0, 3.0, 4.0, 5.0):
        buffer.add(*transition(value))
    assert buffer.size == 3 and buffer.pos == 2
    assert buffer.obs[:, 0].tolist() == [4.0, 5.0, 3.0]
    assert buffer.rewards.tolist() == [4.0, 5.0, 3.0] and buffer.next_obs[:, 1].tolist() == [4.5, 5.5, 3.5]


def test_replay_buffer_samples_only_filled_slots():
    torch.manual_seed(0)
    buffer = td3.ReplayBuffer(capacity=100, obs_dim=2, act_dim=1, device=torch.device("cpu"))
    for value in (1.0, 2.0, 3.0):
        buffer.add(*transition(value))
    obs, actions, rewards, next_obs, terminated = buffer.sample(3000)
    assert set(rewards.tolist()) == {1.0, 2.0, 3.0}  # all three drawn, never an empty (zero) slot
    assert torch.equal(obs[:, 0], rewards) and torch.equal(next_obs[:, 0], rewards + 0.5)


def test_replay_buffer_state_round_trips_after_wrapping():
    cpu = torch.device("cpu")
    buffer = td3.ReplayBuffer(capacity=3, obs_dim=2, act_dim=1, device=cpu)
    for value in (1.0, 2.0, 3.0, 4.0):
        buffer.add(*transition(value))
    restored = td3.ReplayBuffer(capacity=3, obs_dim=2, act_dim=1, device=cpu)
    restored.load_state_dict(buffer.state_dict())
    assert (restored.pos, restored.size) == (1, 3) and torch.equal(restored.obs, buffer.obs)
    partial = td3.ReplayBuffer(capacity=10, obs_dim=2, act_dim=1, device=cpu)
    partial.add(*transition(7.0))
    assert partial.state_dict()["obs"].shape == (1, 2)  # only the filled part is saved
    with pytest.raises(td3.ConfigError, match="more than --buffer-size 1"):
        td3.ReplayBuffer(capacity=1, obs_dim=2, act_dim=1, device=cpu).load_state_dict(buffer.state_dict())


def test_memory_estimate_for_hopper():
    # 11 observation numbers twice, 3 action numbers, reward and flag: 27 float32 = 108 bytes.
    assert td3.ReplayBuffer.bytes_per_transition(obs_dim=11, act_dim=3) == 108


class Counter(gym.Env):
    """Observation [t]; terminates after step 2 (terminate=True) or runs until a time limit."""

    observation_space = gym.spaces.Box(-100, 100, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, terminate: bool):
        self.terminate = terminate

    def reset(self, seed=None, options=None):
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, self.terminate and self.t == 2, False, {}


@pytest.mark.parametrize("terminate", [True, False])
def test_the_final_step_stores_the_true_final_observation_and_only_termination_as_terminal(terminate):
    envs = gym.vector.SyncVectorEnv([lambda: gym.wrappers.TimeLimit(Counter(terminate), max_episode_steps=2)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    buffer = td3.ReplayBuffer(capacity=10, obs_dim=1, act_dim=1, device=torch.device("cpu"))
    obs, _ = envs.reset(seed=0)
    for _ in range(3):
        action = np.zeros((1, 1), dtype=np.float32)
        next_obs, reward, terminated, truncated, infos = envs.step(action)
        real = td3.transition_next_obs(next_obs, infos)
        buffer.add(torch.as_tensor(obs), torch.as_tensor(action), torch.as_tensor(reward, dtype=torch.float32),
                   torch.as_tensor(real), torch.as_tensor(terminated, dtype=torch.float32))
        obs = next_obs
    # Steps: 0 -> 1, 1 -> 2 (the episode's end: terminated, or truncated by the limit), then the new episode 0 -> 1.
    assert buffer.obs[:3, 0].tolist() == [0.0, 1.0, 0.0]
    assert buffer.next_obs[:3, 0].tolist() == [1.0, 2.0, 1.0]  # 2.0, not the reset observation 0.0
    assert buffer.terminated[:3].tolist() == [0.0, 1.0 if terminate else 0.0, 0.0]
    envs.close()
