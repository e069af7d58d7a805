"""a3c_hogwild.py's math against values worked out by hand: n-step returns, the learning-rate schedule,
the shared optimisers (one step each, their state in shared memory, a step count that two processes
advance together), the loss, the worker's update and rollout as it runs them, the step claims of the
global counter, and the LSTM's resets."""

import copy
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
def test_main_builds_the_agent_and_every_piece_of_optimiser_state_in_shared_memory(name):
    model, optimizer = a3c.build_shared(a3c.Args(optimizer=name))
    # The optimiser's state exists before any step, step count included, so that it is shared before the
    # workers start.
    params = list(model.parameters())
    assert len(optimizer.state) == len(params) and all("step" in state for state in optimizer.state.values())
    assert all(p.is_shared() for p in params)
    assert all(tensor.is_shared() for state in optimizer.state.values() for tensor in state.values())


# --- the worker's update and rollout, the code the workers run ---------------------------------------


def args_for_update(**overrides) -> a3c.Args:
    settings = dict(gamma=GAMMA, learning_rate=0.01, rms_decay=0.9, rms_eps=0.1, max_grad_norm=0.5, ent_coef=0.01,
                    vf_coef=0.5, total_timesteps=100, run_dir="run")
    settings.update(overrides)
    return a3c.Args(**settings)


def hand_made_rollout(rewards=REWARDS) -> a3c.Rollout:
    """Three steps of CartPole-shaped observations, no episode end, V after the last = 8: with gamma 0.5
    the returns are [2.75, 3.5, 5.0] (the first test above)."""
    generator = torch.Generator().manual_seed(0)
    no = torch.zeros(3, dtype=torch.bool)
    return a3c.Rollout(obs=torch.randn(3, 4, generator=generator), actions=torch.tensor([0, 1, 1]), rewards=rewards,
                       terminated=no, truncated=no, final_values=torch.zeros(3), starts=no, first_state=None,
                       next_value=NEXT_VALUE)


def cartpole_agent(seed: int = 0) -> a3c.Agent:
    torch.manual_seed(seed)
    return a3c.Agent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))


@pytest.mark.parametrize("anneal, lr", [(True, 0.01 * (1 - 25 / 100)), (False, 0.01)])
def test_update_applies_the_clipped_gradient_of_the_loss_to_the_global_weights(anneal, lr):
    args = args_for_update(anneal=anneal)
    model = cartpole_agent()
    local, reference = copy.deepcopy(model), copy.deepcopy(model)
    optimizer = a3c.make_optimizer(args, model.parameters())
    rollout = hand_made_rollout()
    learned = a3c.update(local, model, optimizer, args, rollout, start=25)
    assert learned["returns"].tolist() == [2.75, 3.5, 5.0] and learned["lr"] == pytest.approx(lr)
    # By hand: the paper's loss, advantage R - V with V held fixed, its gradient clipped to norm 0.5, and
    # one shared RMSProp step from zero statistics: p - lr g / sqrt((1 - 0.9) g^2 + 0.1).
    logprob, entropy, value = reference.evaluate_rollout(rollout.obs, rollout.actions, None, rollout.starts)
    returns = torch.tensor([2.75, 3.5, 5.0])
    loss = (-(logprob * (returns - value.detach())).mean() - 0.01 * entropy.mean()
            + 0.5 * ((returns - value) ** 2).mean())
    grads = torch.autograd.grad(loss, list(reference.parameters()))
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert norm > 0.5  # the clip bites
    for before, g, after in zip(reference.parameters(), grads, model.parameters()):
        g = g * 0.5 / norm
        assert torch.allclose(after, before - lr * g / torch.sqrt(0.1 * g**2 + 0.1), atol=1e-6)
    # Only the global weights moved; the worker's copy waits for its next sync.
    assert all(torch.equal(p, q) for p, q in zip(local.parameters(), reference.parameters()))
    assert all(int(state["step"]) == 1 for state in optimizer.state.values())


def test_update_refuses_a_non_finite_loss_before_anything_global_changes():
    args = args_for_update()
    model = cartpole_agent()
    before = copy.deepcopy(model)
    optimizer = a3c.make_optimizer(args, model.parameters())
    rollout = hand_made_rollout(rewards=torch.tensor([1.0, float("nan"), 1.0]))
    with pytest.raises(FloatingPointError, match=r"^the loss became nan at step 28 in worker 3; no checkpoint was"):
        a3c.update(copy.deepcopy(model), model, optimizer, args, rollout, start=25, rank=3)
    assert all(torch.equal(p, q) for p, q in zip(model.parameters(), before.parameters()))
    assert all(int(state["step"]) == 0 for state in optimizer.state.values())


def _updates_in_a_child(local, model, optimizer, args, rollout, count):
    for _ in range(count):
        a3c.update(local, model, optimizer, args, rollout, start=0)


def test_updates_from_two_processes_advance_one_step_count_and_one_set_of_statistics():
    args = args_for_update(max_grad_norm=40.0)
    torch.manual_seed(0)
    model, optimizer = a3c.build_shared(args)  # as main() makes them, before forking the workers
    reference = copy.deepcopy(model)
    reference_optimizer = a3c.make_optimizer(args, reference.parameters())
    local, rollout = copy.deepcopy(model), hand_made_rollout()
    context = multiprocessing.get_context("fork")
    for count in (3, 2):  # one process after the other, each with its own handle on the shared state
        child = context.Process(target=_updates_in_a_child, args=(local, model, optimizer, args, rollout, count))
        child.start()
        child.join(timeout=60)
        assert child.exitcode == 0
    # Five updates of the same gradient (the workers' copies never sync here) in one process give the same
    # weights and statistics: the children's steps all landed in the shared ones, the step count included.
    _updates_in_a_child(copy.deepcopy(local), reference, reference_optimizer, args, rollout, 5)
    assert all(int(state["step"]) == 5 for state in optimizer.state.values())
    for p, q in zip(model.parameters(), reference.parameters()):
        assert torch.allclose(p, q, atol=1e-6) and optimizer.state[p]["square_avg"].allclose(
            reference_optimizer.state[q]["square_avg"], atol=1e-9)


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


def test_the_lstm_replays_a_rollout_with_the_state_it_acted_with_reset_where_episodes_begin():
    # CartPole cut off every 3 steps, so that episodes begin inside rollouts of 5 steps.
    gym.register("TestThreeStepCartPole-v1", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                 max_episode_steps=3)
    envs = a3c.make_worker_env("TestThreeStepCartPole-v1", 0, False, "")
    torch.manual_seed(0)
    agent = a3c.Agent(envs.single_observation_space, envs.single_action_space, lstm=True, lstm_size=8)
    acted = []  # the value of each observation under the state the agent acted with
    real_act = agent.act

    def act(obs, state):
        acted.append(agent.get_value(obs, state).item())
        return real_act(obs, state)

    agent.act = act
    next_obs, state, episode_start = torch.as_tensor(envs.reset(seed=0)[0]), agent.initial_state(1), True
    ends = []
    for _ in range(2):  # the second rollout starts from the state the first one ended with
        acted.clear()
        rollout, next_obs, state, episode_start, episodes = a3c.collect_rollout(
            agent, envs, 5, next_obs, state, episode_start)
        _, _, replayed = agent.evaluate_rollout(rollout.obs, rollout.actions, rollout.first_state, rollout.starts)
        assert replayed.tolist() == pytest.approx(acted, abs=1e-6)
        ends.append([(t, length) for t, _, length in episodes])
    envs.close()
    # Episodes of 3 steps end at global steps 2, 5 and 8: step 2 of the first rollout, 0 and 3 of the second.
    assert ends == [[(2, 3)], [(0, 3), (3, 3)]]
    assert rollout.starts.tolist() == [False, True, False, False, True]
    assert rollout.truncated.tolist() == [True, False, False, True, False]
    truncated = rollout.truncated
    assert (rollout.final_values[truncated] != 0).all() and (rollout.final_values[~truncated] == 0).all()
    assert rollout.first_state[0].abs().sum() > 0  # carried in from the first rollout
    # Without the reset the replay differs from step 1 on: the state really is carried and really is reset.
    no_starts = torch.zeros(5, dtype=torch.bool)
    _, _, carried = agent.evaluate_rollout(rollout.obs, rollout.actions, rollout.first_state, no_starts)
    assert carried[0].item() == pytest.approx(acted[0], abs=1e-6) and carried[1].item() != pytest.approx(acted[1])


def test_log_probabilities_and_entropy_of_the_rollout_match_the_softmax():
    torch.manual_seed(0)
    agent = a3c.Agent(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(3))
    obs, actions = torch.randn(5, 4), torch.tensor([0, 1, 2, 1, 0])
    logprob, entropy, _ = agent.evaluate_rollout(obs, actions, None, torch.zeros(5, dtype=torch.bool))
    probs = torch.softmax(agent.actor(obs), -1)
    assert logprob.tolist() == pytest.approx(probs[torch.arange(5), actions].log().tolist(), abs=1e-6)
    assert entropy.tolist() == pytest.approx((-(probs * probs.log()).sum(-1)).tolist(), abs=1e-6)
    assert np.all(np.isfinite(entropy.detach().numpy()))
