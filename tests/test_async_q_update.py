"""async_q.py's update() and worker loop pinned line by line to Mnih et al. (2016): Algorithm 1 (one-step Q),
its SARSA variant and Algorithm S2 (n-step Q). Networks with constant outputs (zero observations, zero hidden
biases and zero output weights: the hidden units are all 0, so Q(s, .) is the output bias and only that bias
has a gradient) make every number below one worked out by hand; a scripted environment whose observations
say where they come from, and the worker function called in this process with a stand-in for its link to
the main process, pin the worker's loop."""

import copy
import multiprocessing

import gymnasium as gym
import numpy as np
import pytest
import torch

import async_q as aq

ONLINE = (1.0, 2.0)  # Q(s, .; theta)
TARGET = (10.0, 30.0)  # Q(s, .; theta^-)


def constant_q(values) -> aq.QNetwork:
    torch.manual_seed(0)
    net = aq.QNetwork(gym.spaces.Box(-1, 1, (4,)), gym.spaces.Discrete(2))
    with torch.no_grad():
        net.net[-1].weight.zero_()
        net.net[-1].bias.copy_(torch.tensor(values))
    assert all(layer.bias.abs().sum().item() == 0 for layer in (net.net[0], net.net[2]))
    return net


def zero_segment(rewards=(1.0, 2.0, 3.0), actions=(0, 1, 1), next_actions=(0, 1, 0), terminated=(), truncated=()):
    """A segment of zero observations; terminated and truncated list the steps where an episode ended."""
    steps = len(rewards)
    return aq.Segment(obs=torch.zeros(steps, 4), actions=torch.tensor(actions), rewards=torch.tensor(rewards),
                      terminated=torch.tensor([t in terminated for t in range(steps)]),
                      truncated=torch.tensor([t in truncated for t in range(steps)]),
                      after=torch.zeros(steps, 4), next_actions=torch.tensor(next_actions))


def plain_args(**overrides) -> aq.Args:
    """RMSProp with decay 1 (v stays 0), epsilon 1 and lr 1 moves a weight by exactly -g: the shared weights'
    change is the worker's gradient."""
    settings = dict(gamma=0.9, learning_rate=1.0, rms_decay=1.0, rms_eps=1.0, anneal=False, total_timesteps=1000,
                    target_update=1000, run_dir="run")
    return aq.Args(**{**settings, **overrides})


def run_update(args, segment, start=0):
    """update() of a worker whose copy equals the shared network; returns (what it returned, the gradient that
    reached the shared output bias, the worker's copy, the shared network, the target network)."""
    q_net, target_net = constant_q(ONLINE), constant_q(TARGET)
    local = copy.deepcopy(q_net)
    learned = aq.update(local, q_net, target_net, aq.make_optimizer(args, q_net.parameters()), args, segment, start)
    before = constant_q(ONLINE)
    for name, p in q_net.named_parameters():  # only the output bias can have a gradient
        assert name == "net.4.bias" or torch.equal(p, dict(before.named_parameters())[name])
    return learned, (before.net[-1].bias - q_net.net[-1].bias).tolist(), local, q_net, target_net


def gradient(targets, actions=(0, 1, 1)):
    """d/d bias_a of sum_t (y_t - Q(s_t, a_t))^2 = sum over the steps that took a of 2 (Q_a - y_t)."""
    return [sum(2 * (ONLINE[a] - y) for y, taken in zip(targets, actions) if taken == a) for a in (0, 1)]


# Rewards (1, 2, 3), actions (0, 1, 1), a' = (0, 1, 0), gamma 0.9, Q' = (10, 30), no episode end:
TARGETS = {
    "one-step-q": [1 + 0.9 * 30, 2 + 0.9 * 30, 3 + 0.9 * 30],  # r + gamma max_a' Q'(s', a') = 28, 29, 30
    "one-step-sarsa": [1 + 0.9 * 10, 2 + 0.9 * 30, 3 + 0.9 * 10],  # r + gamma Q'(s', a') = 10, 29, 12
    # R = max Q'(s_3) = 30, R <- r + gamma R backwards: 3 + 27 = 30, 2 + 27 = 29, 1 + 0.9 * 29 = 27.1.
    "n-step-q": [1 + 0.9 * (2 + 0.9 * 30), 2 + 0.9 * 30, 3 + 0.9 * 30],
}


@pytest.mark.parametrize("method", TARGETS)
def test_update_targets_come_from_the_target_network(method):
    """Algorithm 1: y = r + gamma max_a' Q(s', a'; theta^-), the SARSA variant y = r + gamma Q(s', a'; theta^-),
    Algorithm S2: R = max_a Q(s_t, a; theta^-) then R <- r_i + gamma R; each step's error (y - Q(s, a; theta'))^2
    summed: d theta <- d theta + d(y - Q)^2 / d theta' over the segment, then one step on the shared theta. Were
    the online network (Q = (1, 2)) used, y would be r + 1.8."""
    learned, step, local, q_net, target_net = run_update(plain_args(method=method), zero_segment())
    targets = TARGETS[method]
    # Q(s, a_t) = (1, 2, 2): the loss is sum_t (y_t - Q_t)^2, and its gradient moves the shared bias.
    assert learned["q_taken"].tolist() == [1.0, 2.0, 2.0]
    assert learned["loss"].item() == pytest.approx(sum((y - q) ** 2 for y, q in zip(targets, (1, 2, 2))), rel=1e-6)
    assert step == pytest.approx(gradient(targets), rel=1e-6)
    # one-step Q: 2 (1 - 28) = -54 and 2 (2 - 29) + 2 (2 - 30) = -110.
    assert gradient(TARGETS["one-step-q"]) == pytest.approx([-54, -110])
    # The worker's copy waits for its next sync and the target network for I_target.
    assert local.net[-1].bias.tolist() == list(ONLINE) and target_net.net[-1].bias.tolist() == list(TARGET)


@pytest.mark.parametrize("method, targets", [
    # Step 0 truncated (a time limit): bootstrapped as usual from its final observation; step 1 terminated: y = r.
    ("one-step-q", [1 + 0.9 * 30, 2, 3 + 0.9 * 30]),
    ("one-step-sarsa", [1 + 0.9 * 10, 2, 3 + 0.9 * 10]),
    # n-step: R_2 = 3 + 27 = 30; R_1 = 2 (terminal: no future); R_0 = 1 + 0.9 * max Q'(final obs of step 0) = 28,
    # its return restarted at its own episode's end, not carried from step 1 (which would give 1 + 1.8).
    ("n-step-q", [1 + 0.9 * 30, 2, 3 + 0.9 * 30]),
])
def test_update_masks_terminal_states_and_bootstraps_truncated_ones(method, targets):
    """Algorithm 1: y = r for terminal s', r + gamma max Q'(s', .) otherwise; Algorithm S2: R = 0 for terminal
    s_t. A time limit is not a terminal state: the cut-off episode bootstraps from its final observation."""
    learned, step, *_ = run_update(plain_args(method=method), zero_segment(terminated=(1,), truncated=(0,)))
    assert learned["loss"].item() == pytest.approx(sum((y - q) ** 2 for y, q in zip(targets, (1, 2, 2))), rel=1e-6)
    assert step == pytest.approx(gradient(targets), rel=1e-6)


def test_sarsa_bootstraps_from_the_next_action_and_q_learning_from_the_best():
    """Algorithm 1 takes max_a' Q(s', a'; theta^-); one-step SARSA uses Q(s', a'; theta^-) of the action a'
    taken in s'. Here a' = 0 at every step, the worse action of Q' = (10, 30); gamma 1 and rewards 0 make every
    target the bootstrap b, so the loss is (b - Q(s, 0))^2 + 2 (b - Q(s, 1))^2 = (b - 1)^2 + 2 (b - 2)^2."""
    segment = zero_segment((0.0, 0.0, 0.0), next_actions=(0, 0, 0))
    for method, bootstrap in (("one-step-q", 30), ("n-step-q", 30), ("one-step-sarsa", 10)):
        learned, *_ = run_update(plain_args(method=method, gamma=1.0), segment)
        assert learned["loss"].item() == pytest.approx((bootstrap - 1) ** 2 + 2 * (bootstrap - 2) ** 2), method


@pytest.mark.parametrize("start, lr", [(0, 1.0), (250, 0.75), (1000, 0.0)])
def test_the_applied_step_uses_the_learning_rate_annealed_to_the_global_step(start, lr):
    """The paper's setup: the learning rate annealed linearly to 0 over the run, by the global step count."""
    learned, step, *_ = run_update(plain_args(anneal=True), zero_segment(), start=start)
    assert learned["lr"] == pytest.approx(lr)
    assert step == pytest.approx([lr * g for g in gradient(TARGETS["one-step-q"])], rel=1e-6, abs=1e-9)


def test_each_update_starts_from_cleared_gradients():
    """Algorithm 1: after each asynchronous update, "clear gradients d theta <- 0": a worker's second update
    applies only its second segment's gradient."""
    args = plain_args()
    q_net, target_net = constant_q(ONLINE), constant_q(TARGET)
    local, optimizer = copy.deepcopy(q_net), aq.make_optimizer(args, q_net.parameters())
    for expected in (1, 2):  # the same copy and segment twice: the same gradient, applied once each time
        aq.update(local, q_net, target_net, optimizer, args, zero_segment(), 0)
        assert (q_net.net[-1].bias - torch.tensor(ONLINE)).tolist() == pytest.approx([expected * 54, expected * 110])


def test_the_target_network_is_refreshed_every_I_target_global_steps():
    """Algorithm 1: "if T mod I_target == 0 then update the target network theta^- <- theta". Segments of 5
    steps from T = 0 with I_target = 10: the target takes the shared weights after the segments ending at
    T = 10, 20, 30, 40 (the 2nd, 4th, 6th, 8th), and keeps them, stale, in between."""
    args = plain_args(target_update=10, total_timesteps=40, learning_rate=0.01)
    q_net, target_net = constant_q(ONLINE), constant_q(TARGET)
    optimizer = aq.make_optimizer(args, q_net.parameters())
    synced, target_values = [], []
    for start in range(0, 40, 5):
        local = copy.deepcopy(q_net)
        aq.update(local, q_net, target_net, optimizer, args, zero_segment((0.0, 0.0, 0.0, 0.0, 0.0), (0, 1, 1, 0, 1),
                                                                          (0, 0, 0, 0, 0)), start)
        synced.append(torch.equal(target_net.net[-1].bias, q_net.net[-1].bias))
        target_values.append(target_net.net[-1].bias.tolist())
    assert synced == [False, True] * 4
    assert target_values[0] == list(TARGET)
    assert all(target_values[i] == target_values[i - 1] for i in (2, 4, 6))  # unchanged until the next multiple
    assert all(target_values[i] != target_values[i - 1] for i in (1, 3, 5, 7))


def test_the_papers_setup_in_the_atari_preset():
    """The paper's experimental setup: 16 threads, I_AsyncUpdate = 5, gamma 0.99, the target network every
    40,000 frames (10,000 steps of 4 frames), epsilon annealed over 4M frames (1M steps), shared RMSProp decay
    0.99 epsilon 0.1; final epsilons 0.1, 0.01, 0.5 with probabilities 0.4, 0.3, 0.3."""
    args = aq.PRESETS["atari"]
    assert (args.num_workers, args.async_update, args.gamma, args.target_update, args.epsilon_anneal_steps) == (
        16, 5, 0.99, 10_000, 1_000_000)
    assert (args.optimizer, args.rms_decay, args.rms_eps, args.anneal, args.max_grad_norm) == (
        "rmsprop", 0.99, 0.1, True, 0.0)
    assert aq.FINAL_EPSILONS == (0.1, 0.01, 0.5) and aq.FINAL_EPSILON_PROBS == (0.4, 0.3, 0.3)


# --- the worker's loop in a scripted env --------------------------------------------------------------------


class CounterEnv(gym.Env):
    """Observations (episode, step, 0, 0); reward 1 a step. Even episodes terminate at their 2nd step; odd ones
    run into the time limit of 3 steps (registered below), which truncates them."""

    metadata = {"render_modes": []}
    observation_space = gym.spaces.Box(-100, 100, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.episode, self.t = -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.array([self.episode, 0, 0, 0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return (np.array([self.episode, self.t, 0, 0], dtype=np.float32), 1.0, self.episode % 2 == 0 and self.t == 2,
                False, {})


COUNTER = "AsyncQTestCounter-v0"
if COUNTER not in gym.envs.registry:
    gym.register(COUNTER, entry_point=CounterEnv, max_episode_steps=3)


class FakeLink:
    """The worker's link to the main process, in this process: the real step claims on a counter of its own."""

    def __init__(self, start: int = 0, rank: int = 0):
        self.rank, self.step, self.asked = rank, start, []
        self.counter = multiprocessing.get_context("fork").Value("q", start)

    def safe_point(self, state=None) -> bool:
        return True

    def claim(self, num_steps: int, total: int):
        self.asked.append(num_steps)
        start, n = aq.claim_steps(self.counter, num_steps, total)
        self.step = start + n
        return start, n

    def episode(self, step, episodic_return, episodic_length):
        pass

    def report_due(self) -> bool:
        return False

    def report(self, metrics=None):
        pass


def weights(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def same(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a, b))


def run_worker(monkeypatch, start=0, rank=0, **overrides):
    """worker() in this process on the scripted env, with the real update() spied on. Returns (its final state,
    each update's segment copied with the start and whether the worker's copy equalled the shared weights as
    the previous update left them, the epsilons it acted with, the link, the optimiser)."""
    settings = dict(env_id=COUNTER, async_update=5, total_timesteps=start + 12, target_update=1000,
                    epsilon_anneal_steps=1000, learning_rate=0.01, rms_decay=0.99, rms_eps=0.1, run_dir="run")
    args = aq.Args(**{**settings, **overrides})
    torch.manual_seed(123)
    space = CounterEnv.observation_space, CounterEnv.action_space
    q_net, target_net = aq.QNetwork(*space), aq.QNetwork(*space)
    target_net.load_state_dict(q_net.state_dict())
    optimizer = aq.make_optimizer(args, q_net.parameters())
    expected, segments, epsilons = [weights(q_net)], [], []
    real_update, real_epsilon_greedy = aq.update, aq.epsilon_greedy

    def update(local, shared, target, optimizer_, args_, segment, start_, rank_):
        copied = aq.Segment(*(t.clone() for t in (segment.obs, segment.actions, segment.rewards, segment.terminated,
                                                  segment.truncated, segment.after, segment.next_actions)))
        in_sync = same(weights(local), expected[-1]) and same(weights(shared), expected[-1])
        segments.append((copied, start_, in_sync and shared is q_net and target is target_net))
        learned = real_update(local, shared, target, optimizer_, args_, segment, start_, rank_)
        expected.append(weights(q_net))
        return learned

    def epsilon_greedy(net, obs, epsilon, rng):
        epsilons.append(epsilon)
        return real_epsilon_greedy(net, obs, epsilon, rng)

    monkeypatch.setattr(aq, "update", update)
    monkeypatch.setattr(aq, "epsilon_greedy", epsilon_greedy)
    link = FakeLink(start, rank)
    state = aq.worker(link, args, q_net, target_net, optimizer, None, 5)
    return state, segments, epsilons, link, optimizer


def test_the_worker_copies_the_shared_weights_before_each_segment(monkeypatch):
    """Algorithm S2: "Synchronize thread-specific parameters theta' = theta" at the start of each segment (the
    script does it for all three methods): every update's gradient is taken at exactly the shared weights as
    the previous update left them (the first at the shared weights as given, not the worker's own init)."""
    _, segments, *_ = run_worker(monkeypatch, method="n-step-q")
    assert len(segments) == 3 and all(in_sync for *_, in_sync in segments)


def test_gradients_accumulate_over_I_AsyncUpdate_steps_then_update_once(monkeypatch):
    """Algorithm 1: "if t mod I_AsyncUpdate == 0 ... perform asynchronous update of theta using d theta": the
    worker claims I_AsyncUpdate = 5 global steps at a time and applies one update per segment; 12 steps are
    segments of 5, 5 and 2 (the last cut to the budget), three optimiser steps."""
    _, segments, _, link, optimizer = run_worker(monkeypatch)
    assert link.asked == [5, 5, 5, 5]
    assert [len(s.rewards) for s, *_ in segments] == [5, 5, 2] and [start for _, start, _ in segments] == [0, 5, 10]
    assert all(int(state["step"]) == 3 for state in optimizer.state.values())


def test_the_state_after_an_episode_end_is_its_final_observation(monkeypatch):
    """Algorithm 1: y = r for a terminal s', else r + gamma max Q'(s', .): s' is the state the step led to, the
    final observation where an episode ended (a time limit is not terminal and bootstraps from it). 12 steps of
    the scripted env: episodes of 2 (terminated), 3 (truncated), 2, 3, 2 steps."""
    _, segments, *_ = run_worker(monkeypatch)
    obs = torch.cat([s.obs for s, *_ in segments])[:, :2].tolist()
    after = torch.cat([s.after for s, *_ in segments])[:, :2].tolist()
    assert obs == [[0, 0], [0, 1], [1, 0], [1, 1], [1, 2], [2, 0], [2, 1], [3, 0], [3, 1], [3, 2], [4, 0], [4, 1]]
    assert after == [[0, 1], [0, 2], [1, 1], [1, 2], [1, 3], [2, 1], [2, 2], [3, 1], [3, 2], [3, 3], [4, 1], [4, 2]]
    terminated = torch.cat([s.terminated for s, *_ in segments]).nonzero().flatten().tolist()
    truncated = torch.cat([s.truncated for s, *_ in segments]).nonzero().flatten().tolist()
    assert terminated == [1, 6, 11] and truncated == [4, 9]


def test_sarsa_bootstraps_from_the_action_the_worker_takes_next(monkeypatch):
    """One-step SARSA: y = r + gamma Q(s', a'; theta^-) with a' the action the epsilon-greedy policy takes in s'.
    With epsilon about 1 (random actions) a' must be the next action taken, within a segment and across the
    segments' seam, wherever the episode goes on."""
    _, segments, *_ = run_worker(monkeypatch, method="one-step-sarsa", epsilon_anneal_steps=10**9,
                                 total_timesteps=30)
    actions = torch.cat([s.actions for s, *_ in segments]).tolist()
    next_actions = torch.cat([s.next_actions for s, *_ in segments]).tolist()
    ends = (torch.cat([s.terminated for s, *_ in segments]) | torch.cat([s.truncated for s, *_ in segments])).tolist()
    pairs = [(next_actions[t], actions[t + 1]) for t in range(len(actions) - 1) if not ends[t]]
    assert len(pairs) >= 15 and all(a == b for a, b in pairs)
    assert len(set(actions)) == 2  # the actions really are random, so a fresh draw would not match


def test_epsilon_anneals_by_the_global_step_to_the_workers_own_final_value(monkeypatch):
    """The paper's exploration: each thread's epsilon falls linearly from 1 to its own final value over the first
    frames of the run, counted globally: a worker whose first segment begins at T = 500 of a 1000-step anneal
    acts at epsilon 1 + 0.5 (final - 1), and at 1 + 0.505 (final - 1) in its next segment, from T = 505."""
    state, _, epsilons, *_ = run_worker(monkeypatch, start=500, total_timesteps=510)
    final = state["final_epsilon"]
    assert final in aq.FINAL_EPSILONS
    first, second = 1 + 0.5 * (final - 1), 1 + 0.505 * (final - 1)
    assert epsilons[0] == pytest.approx(first) and epsilons[-1] == pytest.approx(second)
    assert all(e == pytest.approx(first) or e == pytest.approx(second) for e in epsilons)


def test_workers_draw_their_own_final_epsilons(monkeypatch):
    """The paper: each thread samples its final epsilon from {0.1, 0.01, 0.5} (probabilities 0.4, 0.3, 0.3), so
    workers explore differently. Four workers of seed 1 (generators seeded 1 + k) do not all draw the same one."""
    finals = [run_worker(monkeypatch, start=12, rank=k, total_timesteps=12)[0]["final_epsilon"] for k in range(4)]
    assert set(finals) <= set(aq.FINAL_EPSILONS) and len(set(finals)) > 1
