"""a3c_hogwild.py's math against values worked out by hand: n-step returns, the learning-rate schedule,
the shared optimisers (one step each, their state in shared memory, a step count that two processes
advance together), the loss, the step claims of the global counter, and the LSTM's resets."""

import math
import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
import torch

import a3c_hogwild as a3c

GAMMA = 0.5
REWARDS = torch.tensor([1.0, 1.0, 1.0])
NEXT_VALUE = torch.tensor(8.0)


def returns_with(terminated=(), truncated=(), final_values=(0.0, 0.0, 0.0)):
    term = torch.tensor([t in terminated for t in range(3)])
    trunc = torch.tensor([t in truncated for t in range(3)])
    return a3c.nstep_returns(REWARDS, NEXT_VALUE, term, trunc, torch.tensor(final_values), GAMMA).tolist()


def test_nstep_returns_bootstrap_from_the_value_after_the_rollout():
    # R2 = 1 + 0.5 * 8 = 5, R1 = 1 + 0.5 * 5 = 3.5, R0 = 1 + 0.5 * 3.5 = 2.75
    assert returns_with() == [2.75, 3.5, 5.0]


def test_nstep_returns_restart_after_a_termination_mid_rollout():
    # The episode ends at step 1 with no future: R1 = 1, R0 = 1 + 0.5 = 1.5; step 2 starts a new episode.
    assert returns_with(terminated=(1,)) == [1.5, 1.0, 5.0]


def test_nstep_returns_bootstrap_from_the_final_observation_after_a_truncation_mid_rollout():
    # Cut off at step 1, its final observation worth 4: R1 = 1 + 0.5 * 4 = 3, R0 = 1 + 1.5 = 2.5.
    assert returns_with(truncated=(1,), final_values=(0.0, 4.0, 0.0)) == [2.5, 3.0, 5.0]


def test_nstep_returns_at_the_rollouts_last_step():
    # Terminated at the last step: V(next obs) (the next episode's) is not used: 1, 1.5, 1.75.
    assert returns_with(terminated=(2,)) == [1.75, 1.5, 1.0]
    # Truncated there, final observation worth 6: R2 = 1 + 3 = 4, R1 = 3, R0 = 2.5.
    assert returns_with(truncated=(2,), final_values=(0.0, 0.0, 6.0)) == [2.5, 3.0, 4.0]
    # Both flags: terminated wins.
    term, trunc = torch.tensor([False, False, True]), torch.tensor([False, False, True])
    assert a3c.nstep_returns(REWARDS, NEXT_VALUE, term, trunc, torch.tensor([0.0, 0.0, 6.0]), GAMMA).tolist() == [1.75, 1.5, 1.0]


def test_the_learning_rate_falls_linearly_to_zero_by_the_global_step():
    assert a3c.annealed_lr(1e-3, 0, 100) == 1e-3
    assert a3c.annealed_lr(1e-3, 25, 100) == pytest.approx(7.5e-4)
    assert a3c.annealed_lr(1e-3, 100, 100) == 0.0
    assert a3c.annealed_lr(1e-3, 105, 100) == 0.0  # never negative


def one_parameter():
    return torch.nn.Parameter(torch.tensor([1.0, -2.0]))


def test_one_shared_rmsprop_step_by_hand():
    p = one_parameter()
    optimizer = a3c.SharedRMSprop([p], lr=0.1, decay=0.9, eps=0.1)
    p.grad = torch.tensor([0.5, 0.1])
    optimizer.step()
    # v = 0.1 * g^2 = [0.025, 0.001]; p -= 0.1 * g / sqrt(v + 0.1): 1 - 0.05 / sqrt(0.125) = 0.858579,
    # -2 - 0.01 / sqrt(0.101) = -2.031466 (epsilon inside the root, TensorFlow's form).
    assert optimizer.state[p]["square_avg"].tolist() == pytest.approx([0.025, 0.001])
    assert p.tolist() == pytest.approx([0.858579, -2.031466], abs=1e-6)
    # A second step with gradient [0.5, 0.1] again: v = 0.9 * 0.025 + 0.1 * 0.25 = 0.0475, p -= 0.05 / sqrt(0.1475).
    optimizer.step()
    assert optimizer.state[p]["square_avg"][0].item() == pytest.approx(0.0475)
    assert p[0].item() == pytest.approx(0.858579 - 0.05 / math.sqrt(0.1475), abs=1e-6)
    assert int(optimizer.state[p]["step"]) == 2


def test_one_shared_adam_step_by_hand():
    p = one_parameter()
    optimizer = a3c.SharedAdam([p], lr=0.1, eps=1e-8)
    p.grad = torch.tensor([0.5, 0.1])
    optimizer.step()
    # m = 0.1 g, v = 0.001 g^2; bias-corrected m = g, v = g^2: the step is lr * g / |g| = 0.1 * sign(g).
    assert optimizer.state[p]["exp_avg"].tolist() == pytest.approx([0.05, 0.01])
    assert optimizer.state[p]["exp_avg_sq"].tolist() == pytest.approx([0.00025, 0.00001])
    assert p.tolist() == pytest.approx([0.9, -2.1], abs=1e-6)


@pytest.mark.parametrize("name", ["rmsprop", "adam"])
def test_every_piece_of_optimiser_state_is_in_shared_memory(name):
    model = torch.nn.Linear(3, 2)
    args = a3c.Args(optimizer=name)
    optimizer = a3c.make_optimizer(args, model.parameters())
    states = [tensor for state in optimizer.state.values() for tensor in state.values()]
    # The state exists before any step (so it can be shared before the workers start), step count included.
    assert len(optimizer.state) == 2 and all("step" in state for state in optimizer.state.values())
    assert not any(tensor.is_shared() for tensor in states)
    optimizer.share_memory()
    assert all(tensor.is_shared() for tensor in states)


def _steps_in_a_child(optimizer, param, steps):
    param.grad = torch.tensor([0.5, 0.1])
    for _ in range(steps):
        optimizer.step()


def test_the_step_count_and_statistics_advance_globally_across_two_processes():
    p = one_parameter()
    p.share_memory_()
    optimizer = a3c.SharedRMSprop([p], lr=0.1, decay=0.9, eps=0.1).share_memory()
    context = multiprocessing.get_context("fork")
    for steps in (3, 2):  # one process after the other, each with its own handle on the shared state
        child = context.Process(target=_steps_in_a_child, args=(optimizer, p, steps))
        child.start()
        child.join(timeout=30)
        assert child.exitcode == 0
    # The parent took no step itself, yet sees five: the count, the mean square and the weights are shared.
    assert int(optimizer.state[p]["step"]) == 5
    assert optimizer.state[p]["square_avg"][0].item() == pytest.approx(0.25 * (1 - 0.9 ** 5))
    expected = 1.0
    for k in range(1, 6):
        expected -= 0.1 * 0.5 / math.sqrt(0.25 * (1 - 0.9 ** k) + 0.1)
    assert p[0].item() == pytest.approx(expected, abs=1e-6)


def test_the_loss_by_hand():
    logprob = torch.tensor([-1.0, -2.0])
    value = torch.tensor([1.0, 3.0])
    returns = torch.tensor([2.0, 1.0])
    entropy = torch.tensor([0.5, 0.7])
    loss, pg, v, ent = a3c.actor_critic_loss(logprob, entropy, value, returns, ent_coef=0.01, vf_coef=0.5)
    # advantages [1, -2]: pg = -(-1 * 1 + -2 * -2) / 2 = -1.5; v = (1 + 4) / 2 = 2.5; entropy 0.6
    assert (pg.item(), v.item(), ent.item()) == pytest.approx((-1.5, 2.5, 0.6))
    assert loss.item() == pytest.approx(-1.5 - 0.006 + 1.25)


def test_the_loss_gradient_does_not_reach_v_through_the_advantage():
    value = torch.tensor([1.0], requires_grad=True)
    loss = a3c.actor_critic_loss(torch.tensor([-1.0]), torch.tensor([0.0]), value, torch.tensor([2.0]), 0.0, 0.5)[0]
    loss.backward()
    assert value.grad.item() == pytest.approx(0.5 * 2 * (1.0 - 2.0))  # d/dV of 0.5 (R - V)^2 only


def test_give_gradients_points_the_global_parameters_at_the_workers_gradients():
    local, shared = torch.nn.Linear(2, 1), torch.nn.Linear(2, 1)
    local(torch.ones(1, 2)).sum().backward()
    a3c.give_gradients(local, shared)
    assert all(s.grad is l.grad for s, l in zip(shared.parameters(), local.parameters()))


def test_claims_on_the_global_counter_add_up_to_the_total_exactly():
    counter = multiprocessing.get_context("fork").Value("q", 8)
    assert a3c.claim_steps(counter, 5, 10) == (8, 2)  # the last claim is cut to what is left
    assert a3c.claim_steps(counter, 5, 10) == (10, 0)
    assert counter.value == 10


def _claim_until_done(counter, claims):
    while a3c.claim_steps(counter, 5, 10_003)[1]:
        with claims.get_lock():
            claims.value += 1


def test_two_processes_claiming_at_once_take_every_step_once():
    context = multiprocessing.get_context("fork")
    counter, claims = context.Value("q", 0), context.Value("q", 0)
    children = [context.Process(target=_claim_until_done, args=(counter, claims)) for _ in range(2)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=60)
    assert counter.value == 10_003 and claims.value == 2001  # 2000 claims of 5 and one of 3


def test_the_lstm_replays_a_rollout_with_its_state_reset_where_episodes_begin():
    torch.manual_seed(0)
    agent = a3c.Agent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2), lstm=True, lstm_size=8)
    obs = torch.randn(4, 1, 4)
    starts = torch.tensor([False, False, True, False])
    first_state = (torch.randn(1, 8), torch.randn(1, 8))
    # Step by step as a worker acts: the state carried in, zeroed before step 2 (a new episode).
    state, values = first_state, []
    for t in range(4):
        if starts[t]:
            state = agent.initial_state(1)
        values.append(agent.get_value(obs[t], state).item())
        state = agent.core(obs[t], state)[1]
    _, _, replayed = agent.evaluate_rollout(obs[:, 0], torch.zeros(4, dtype=torch.long), first_state, starts)
    assert replayed.tolist() == pytest.approx(values, abs=1e-6)
    # Without the reset the third value differs: the state really is carried and really is reset.
    _, _, carried = agent.evaluate_rollout(obs[:, 0], torch.zeros(4, dtype=torch.long), first_state, torch.zeros(4, dtype=torch.bool))
    assert carried[:2].tolist() == pytest.approx(values[:2], abs=1e-6) and carried[2].item() != pytest.approx(values[2])


def test_log_probabilities_and_entropy_of_the_rollout_match_the_softmax():
    torch.manual_seed(0)
    agent = a3c.Agent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3))
    obs, actions = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    logprob, entropy, _ = agent.evaluate_rollout(obs, actions, None, torch.zeros(5, dtype=torch.bool))
    probs = torch.softmax(agent.actor(obs), -1)
    assert logprob.tolist() == pytest.approx(probs[torch.arange(5), actions].log().tolist(), abs=1e-6)
    assert entropy.tolist() == pytest.approx((-(probs * probs.log()).sum(-1)).tolist(), abs=1e-6)
    assert np.all(np.isfinite(entropy.detach().numpy()))
