"""The math of algos/async_q.py against values worked out by hand: exploration, the targets of the three
methods, the loss, the learner's update() as the workers run it, and the shared optimisers (their state in
shared memory, one step, the step count across processes)."""

import copy
import math
import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
import torch

import async_q as aq


def col(xs, dtype=torch.float32):
    return torch.tensor(xs, dtype=dtype)


# --- exploration ---------------------------------------------------------------------------------


def test_final_epsilons_are_drawn_with_the_papers_odds():
    rng = np.random.default_rng(0)
    draws = [aq.sample_final_epsilon(rng) for _ in range(20_000)]
    assert set(draws) == {0.1, 0.01, 0.5}
    # Binomial standard deviations at n = 20,000 are about 0.0035: 0.01 is roughly three of them.
    assert draws.count(0.1) / len(draws) == pytest.approx(0.4, abs=0.01)
    assert draws.count(0.01) / len(draws) == pytest.approx(0.3, abs=0.01)
    assert draws.count(0.5) / len(draws) == pytest.approx(0.3, abs=0.01)


def test_epsilon_falls_linearly_from_one_to_the_final_value_then_stays():
    assert aq.epsilon_at(0, 0.1, 1000) == 1.0
    assert aq.epsilon_at(500, 0.1, 1000) == pytest.approx(0.55)  # halfway between 1 and 0.1
    assert aq.epsilon_at(250, 0.5, 1000) == pytest.approx(0.875)  # 1 - 0.25 * 0.5
    assert aq.epsilon_at(1000, 0.01, 1000) == pytest.approx(0.01)
    assert aq.epsilon_at(5000, 0.01, 1000) == pytest.approx(0.01)


# --- targets -------------------------------------------------------------------------------------


def test_q_learning_bootstraps_from_the_max_and_sarsa_from_the_next_action():
    target_q = torch.tensor([[1.0, 5.0, 2.0], [4.0, -1.0, 3.0]])
    next_actions = torch.tensor([2, 1])
    for method in ("one-step-q", "n-step-q"):
        assert aq.bootstrap_values(method, target_q, next_actions).tolist() == [5.0, 4.0]
    assert aq.bootstrap_values("one-step-sarsa", target_q, next_actions).tolist() == [2.0, -1.0]


def test_one_step_targets_mid_episode_terminal_and_truncated():
    # gamma 0.9. Step 0 continues: 1 + 0.9 * 10 = 10. Step 1 terminates: 2, its bootstrap 7 unused.
    # Step 2 is truncated: the bootstrap is the final observation's value 4, so 3 + 0.9 * 4 = 6.6.
    targets = aq.one_step_targets(col([1, 2, 3]), col([10, 7, 4]), col([False, True, False], torch.bool), 0.9)
    assert targets.tolist() == pytest.approx([10.0, 2.0, 6.6])


def nstep(rewards, bootstrap, terminated=None, truncated=None, gamma=0.5):
    T = len(rewards)
    return aq.nstep_q_targets(col(rewards), col(bootstrap), col(terminated or [False] * T, torch.bool),
                              col(truncated or [False] * T, torch.bool), gamma).tolist()


def test_nstep_targets_mid_rollout_look_ahead_to_the_end_of_the_segment():
    # gamma 0.5, max Q'(s_3) = 10: R_2 = 3 + 5 = 8, R_1 = 2 + 0.5 * 8 = 6, R_0 = 1 + 0.5 * 6 = 4. The
    # bootstraps of the inner steps (99) are not read: no episode ended there.
    assert nstep([1, 2, 3], [99, 99, 10]) == pytest.approx([4.0, 6.0, 8.0])


def test_nstep_targets_restart_after_a_terminal_step():
    # The episode terminates at step 1: R_1 = 2, R_0 = 1 + 0.5 * 2 = 2; step 2 is the next episode's:
    # R_2 = 3 + 0.5 * 10 = 8.
    assert nstep([1, 2, 3], [99, 99, 10], terminated=[False, True, False]) == pytest.approx([2.0, 2.0, 8.0])
    # Terminating on the last step: no bootstrap at all.
    assert nstep([1, 2], [99, 10], terminated=[False, True]) == pytest.approx([2.0, 2.0])


def test_nstep_targets_bootstrap_a_truncated_episode_from_its_final_observation():
    # Truncated after step 0 with max Q'(final obs) = 4: R_0 = 1 + 0.5 * 4 = 3, nothing from step 1,
    # which starts the next episode: R_1 = 1 + 0.5 * 10 = 6.
    assert nstep([1, 1], [4, 10], truncated=[True, False]) == pytest.approx([3.0, 6.0])
    # Truncated on the last step: the last bootstrap is that final observation's, as always.
    assert nstep([1, 1], [99, 4], truncated=[False, True]) == pytest.approx([1 + 0.5 * 3, 3.0])
    # Terminated and truncated at once (a time limit on the terminal step) counts as terminated.
    assert nstep([1, 1], [4, 10], terminated=[True, False], truncated=[True, False]) == pytest.approx([1.0, 6.0])


def test_the_loss_is_the_summed_squared_error_and_leaves_the_targets_alone():
    q_taken = torch.tensor([1.0, 2.0], requires_grad=True)
    targets = torch.tensor([2.0, 0.0], requires_grad=True)
    loss = aq.q_loss(q_taken, targets)
    assert loss.item() == pytest.approx(1.0 + 4.0)
    loss.backward()
    assert q_taken.grad.tolist() == pytest.approx([-2.0, 4.0])  # d/dQ (y - Q)^2 = -2 (y - Q)
    assert targets.grad is None


# --- the learner's update, the code the workers run ---------------------------------------------------


def update_args(**overrides) -> aq.Args:
    settings = dict(gamma=0.9, learning_rate=0.01, rms_decay=0.9, rms_eps=0.1, total_timesteps=100,
                    target_update=1000, run_dir="run")
    return aq.Args(**{**settings, **overrides})


def cartpole_q_net(seed: int) -> aq.QNetwork:
    torch.manual_seed(seed)
    return aq.QNetwork(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))


def hand_made_segment(rewards=(1.0, 2.0)) -> aq.Segment:
    """Two steps of CartPole-shaped observations; the episode terminates at the second."""
    generator = torch.Generator().manual_seed(0)
    return aq.Segment(obs=torch.randn(2, 4, generator=generator), actions=torch.tensor([0, 1]),
                      rewards=torch.tensor(rewards), terminated=torch.tensor([False, True]),
                      truncated=torch.tensor([False, False]), after=torch.randn(2, 4, generator=generator),
                      next_actions=torch.tensor([0, 1]))  # a' = 0 is not the greedy action of the target below


@pytest.mark.parametrize("method", ["one-step-q", "one-step-sarsa", "n-step-q"])
def test_update_applies_the_gradient_of_the_summed_squared_error_to_the_shared_weights(method):
    args = update_args(method=method)
    q_net, target_net = cartpole_q_net(0), cartpole_q_net(1)
    local, reference, target_before = copy.deepcopy(q_net), copy.deepcopy(q_net), copy.deepcopy(target_net)
    optimizer = aq.make_optimizer(args, q_net.parameters())
    segment = hand_made_segment()
    learned = aq.update(local, q_net, target_net, optimizer, args, segment, start=20)
    # By hand: the target network's value of the state after step 0 (its max, or for SARSA the Q of a' = 0);
    # step 1 terminates, so its target is its reward. n-step Q looks from step 0 to the end: 1 + 0.9 * 2.
    with torch.no_grad():
        after_q = target_net(segment.after[:1])[0]
    assert after_q[0] < after_q.max()
    bootstrap = after_q[0] if method == "one-step-sarsa" else after_q.max()
    targets = torch.stack([torch.tensor(2.8) if method == "n-step-q" else 1 + 0.9 * bootstrap, torch.tensor(2.0)])
    q_taken = reference(segment.obs)[[0, 1], [0, 1]]
    loss = ((targets - q_taken) ** 2).sum()
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    lr = 0.01 * (1 - 20 / 100)  # annealed to the segment's first global step
    assert learned["loss"].item() == pytest.approx(loss.item()) and learned["lr"] == pytest.approx(lr)
    for before, g, after in zip(reference.parameters(), grads, q_net.parameters()):  # one shared RMSProp step
        assert torch.allclose(after, before - lr * g / torch.sqrt(0.1 * g**2 + 0.1), atol=1e-6)
    # Only the shared weights moved: the worker's copy waits for its next sync, the target for I_target.
    assert all(torch.equal(p, q) for p, q in zip(local.parameters(), reference.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(target_net.parameters(), target_before.parameters()))


@pytest.mark.parametrize("start, refreshed", [(997, False), (998, True), (999, True), (1000, False)])
def test_update_refreshes_the_target_network_when_its_steps_cross_a_multiple_of_the_interval(start, refreshed):
    args = update_args(total_timesteps=2000, target_update=1000)
    q_net, target_net = cartpole_q_net(0), cartpole_q_net(1)
    target_before = copy.deepcopy(target_net)
    aq.update(copy.deepcopy(q_net), q_net, target_net, aq.make_optimizer(args, q_net.parameters()), args,
              hand_made_segment(), start=start)  # steps start and start + 1
    source = q_net if refreshed else target_before  # refreshed after the step: the updated weights
    assert all(torch.equal(p, q) for p, q in zip(target_net.parameters(), source.parameters()))


def test_update_refuses_a_non_finite_loss_before_anything_shared_changes():
    args = update_args()
    q_net, target_net = cartpole_q_net(0), cartpole_q_net(1)
    before = copy.deepcopy(q_net)
    optimizer = aq.make_optimizer(args, q_net.parameters())
    with pytest.raises(FloatingPointError, match=r"^the loss became nan at step 22 in worker 3; no checkpoint was"):
        aq.update(copy.deepcopy(q_net), q_net, target_net, optimizer, args, hand_made_segment((1.0, float("nan"))),
                  start=20, rank=3)
    assert all(torch.equal(p, q) for p, q in zip(q_net.parameters(), before.parameters()))
    assert all(int(state["step"]) == 0 for state in optimizer.state.values())


# --- the shared optimisers -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_every_piece_of_optimiser_state_is_in_shared_memory(name):
    param = torch.nn.Parameter(torch.ones(3))
    optimizer = aq.make_optimizer(aq.Args(optimizer=name), [param])
    state = optimizer.state[param]
    assert "step" in state and all(value.is_shared() for value in state.values())
    # load_state_dict replaces the tensors; share_memory() puts them back where the workers see them.
    optimizer.load_state_dict(optimizer.state_dict())
    optimizer.share_memory()
    assert all(value.is_shared() for value in optimizer.state[param].values())


def test_one_shared_rmsprop_step_by_hand():
    # v = 0.01 * g^2 = [0.0025, 0.01]; p -= 0.01 * g / sqrt(v + 0.1):
    # 1 - 0.005 / sqrt(0.1025) = 1 - 0.0156174 = 0.9843826; 2 + 0.01 / sqrt(0.11) = 2 + 0.0301511 = 2.0301511.
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = aq.SharedRMSprop([param], lr=0.01, decay=0.99, eps=0.1)
    param.grad = torch.tensor([0.5, -1.0])
    optimizer.step()
    assert param.tolist() == pytest.approx([0.9843826, 2.0301511], abs=1e-6)
    assert optimizer.state[param]["square_avg"].tolist() == pytest.approx([0.0025, 0.01])
    assert optimizer.state[param]["step"].item() == 1
    # The second step sees the first one's statistics: v = 0.99 * 0.0025 + 0.01 * 0.25 = 0.004975.
    optimizer.step()
    assert param[0].item() == pytest.approx(0.9843826 - 0.005 / math.sqrt(0.104975), abs=1e-6)


def test_one_shared_adam_step_by_hand():
    # First step: m = 0.1 g, v = 0.001 g^2; bias-corrected m / (sqrt(v) + eps) = g / (|g| + eps) = sign(g)
    # (up to eps), so p moves by lr against the gradient's sign.
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    optimizer = aq.SharedAdam([param], lr=0.01, eps=1e-8)
    param.grad = torch.tensor([0.5, -4.0])
    optimizer.step()
    assert param.tolist() == pytest.approx([0.99, 2.01], abs=1e-6)
    assert optimizer.state[param]["exp_avg"].tolist() == pytest.approx([0.05, -0.4])


def _step_in_a_child(optimizer, param):
    param.grad = torch.tensor([0.5, -1.0])
    optimizer.step()


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_the_step_count_and_statistics_advance_globally_across_processes(name):
    param = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    param.share_memory_()
    optimizer = aq.make_optimizer(aq.Args(optimizer=name, learning_rate=0.01), [param])
    child = multiprocessing.get_context("fork").Process(target=_step_in_a_child, args=(optimizer, param))
    child.start()
    child.join()
    assert child.exitcode == 0
    # The child's step is visible here: its update to the parameter and the shared state.
    state = optimizer.state[param]
    assert state["step"].item() == 1 and param[0].item() < 1.0
    after_child = param.detach().clone()
    param.grad = torch.tensor([0.5, -1.0])
    optimizer.step()
    assert state["step"].item() == 2
    if name == "rmsprop":  # the second step used the child's statistics: v = 0.99 * 0.0025 + 0.01 * 0.25
        assert state["square_avg"][0].item() == pytest.approx(0.004975)
        assert param[0].item() == pytest.approx(after_child[0].item() - 0.005 / math.sqrt(0.104975), abs=1e-6)
    else:  # bias corrections at t = 2: m_hat = g, v_hat = g^2, so again a step of lr against sign(g)
        assert param.tolist() == pytest.approx((after_child + torch.tensor([-0.01, 0.01])).tolist(), abs=1e-6)
