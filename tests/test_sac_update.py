"""SAC's update() and training loop against hand-worked values, with networks whose outputs are set by hand.

References are to Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (arXiv 1812.05905):
Eq. 3 (the soft value V(s') = E_a'[Q(s', a') - alpha log pi(a'|s')]), Eq. 5 (J_Q, the soft Bellman residual,
here with the minimum of two target Q networks), Eq. 7 (J_pi = E[alpha log pi(f(eps; s)|s) - Q(s, f(eps; s))],
reparameterised), Eq. 18 (J(alpha) = E[-alpha log pi(a|s) - alpha H]), Appendix C (the tanh log-likelihood
correction) and Algorithm 1 (one gradient step per environment step; the target update
theta' <- tau theta + (1 - tau) theta' after each).

The networks: with --hidden-size 1 every layer is set so that, on the inputs used here (all above -10),
    mean(s) = km s + cm,  log std(s) = ks s + cs        (the policy: first two layers pass s + 10 through)
    Q_j(s, a) = qs_j s + qa_j . a + qc_j                (each Q network: its ReLUs stay in their linear part)
and the policy's noise eps is fixed by patching torch.randn_like, so every quantity of the update is a
closed-form number. The expected values below are worked from the paper's equations with Python's math
module (the test never calls the script's own math functions to get them).
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

import sac

# --- networks with known outputs --------------------------------------------------------------------------

POLICY = dict(km=[0.5], cm=[-0.2], ks=[0.1], cs=[-2.0])
ONLINE_Q = [(1.0, [1.0], 2.0), (0.5, [-1.0], 1.0)]  # (qs, qa, qc) of Q_1 and Q_2
TARGET_Q = [(0.5, [1.0], 1.0), (-0.5, [2.0], 0.5)]  # of Q'_1 and Q'_2: other weights than the online ones
ALPHA = 0.5
# A batch of three transitions; the third terminated.
OBS, ACTIONS, REWARDS = [0.5, -1.0, 2.0], [0.3, -0.6, 0.1], [1.0, -2.0, 0.5]
NEXT_OBS, TERMINATED = [1.0, -2.0, 3.0], [0.0, 0.0, 1.0]
NEXT_EPS, EPS = [0.5, -1.0, 1.5], [-0.3, 0.8, 0.2]  # the noise of a' ~ pi(.|s') (drawn first) and of a ~ pi(.|s)


def set_policy(actor: sac.Actor, km, cm, ks, cs) -> None:
    first, _, second, _, last = actor.net
    with torch.no_grad():
        first.weight.fill_(1.0), first.bias.fill_(10.0)  # s + 10 > 0: the ReLU passes it
        second.weight.fill_(1.0), second.bias.fill_(0.0)
        k, c = torch.tensor([*km, *ks]), torch.tensor([*cm, *cs])
        last.weight.copy_(k[:, None]), last.bias.copy_(c - 10 * k)  # k (s + 10) + c - 10 k = k s + c


def set_twin_q(net: sac.TwinQ, q) -> None:
    with torch.no_grad():
        for j, (qs, qa, qc) in enumerate(q):
            net.w1[:, j] = torch.tensor([qs, *qa])
            net.b1[j] = 10.0  # keeps the first ReLU's input positive
            net.w2[j].fill_(1.0), net.b2[j].fill_(0.0), net.w3[j].fill_(1.0)
            net.b3[j].fill_(qc - 10.0)


def make_agent(policy=POLICY, online=ONLINE_Q, target=TARGET_Q, temperature=ALPHA, **overrides):
    """The hand-set agent, alpha = temperature, and its optimiser; overrides go to Args (alpha=... fixes it)."""
    act_dim = len(policy["km"])
    args = dataclasses.replace(sac.Args(), hidden_size=1, gamma=0.9, tau=0.25, **overrides)
    agent = sac.Agent(obs_dim=1, act_dim=act_dim, args=args)
    set_policy(agent.actor, **policy)
    set_twin_q(agent.critic, online)
    set_twin_q(agent.critic_target, target)
    with torch.no_grad():
        agent.log_alpha.fill_(math.log(temperature))
    # The optimiser as main makes it (lr 0.1, so that a step shows in the Polyak update's arithmetic).
    temperature = [agent.log_alpha] if args.alpha is None else []
    optimizer = torch.optim.Adam([*agent.actor.parameters(), *agent.critic.parameters(), *temperature], lr=0.1)
    return agent, optimizer, args


def column(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32).reshape(len(values), -1)


def batch(obs=OBS, actions=ACTIONS, rewards=REWARDS, next_obs=NEXT_OBS, terminated=TERMINATED) -> sac.Batch:
    return sac.Batch(column(obs), column(actions), torch.tensor(rewards), column(next_obs), torch.tensor(terminated))


@pytest.fixture
def fixed_noise(monkeypatch):
    """torch.randn_like returns the given noise rows, one list per call, in order (each row one sample)."""
    queue = []

    def randn_like(x):
        return torch.tensor(queue.pop(0), dtype=x.dtype).reshape(x.shape)

    monkeypatch.setattr(torch, "randn_like", randn_like)
    return queue


@pytest.fixture
def captured_grads():
    """Attach to an optimiser: records every parameter's gradient (by name) when step() is called."""
    def attach(agent, optimizer):
        steps = []
        real_step = optimizer.step

        def step(*args, **kwargs):
            steps.append({name: None if p.grad is None else p.grad.clone() for name, p in agent.named_parameters()})
            return real_step(*args, **kwargs)

        optimizer.step = step
        return steps

    return attach


# --- the paper's equations, by hand (plain floats) ----------------------------------------------------------


def policy_at(s: float, eps: list[float], policy=POLICY):
    """a = tanh(u), u = mean + std eps per action dimension, and log pi(a|s) = sum_i [log N(u_i; mean_i, std_i)
    - log(1 - tanh(u_i)^2)] (Appendix C). Also u and std, for the gradients."""
    u, std, log_pi = [], [], 0.0
    for i, e in enumerate(eps):
        mean = policy["km"][i] * s + policy["cm"][i]
        log_std = policy["ks"][i] * s + policy["cs"][i]
        std.append(math.exp(log_std))
        u.append(mean + std[-1] * e)
        log_pi += -0.5 * e * e - log_std - 0.5 * math.log(2 * math.pi) - math.log(1 - math.tanh(u[-1]) ** 2)
    return [math.tanh(x) for x in u], log_pi, u, std


def q_of(q, s: float, a: list[float]) -> list[float]:
    return [qs * s + sum(k * x for k, x in zip(qa, a)) + qc for qs, qa, qc in q]


def soft_targets() -> list[float]:
    """y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s') (Eqs. 3 and 5)."""
    ys = []
    for r, s2, done, e in zip(REWARDS, NEXT_OBS, TERMINATED, NEXT_EPS):
        a2, log_pi, _, _ = policy_at(s2, [e])
        ys.append(r + 0.9 * (1 - done) * (min(q_of(TARGET_Q, s2, a2)) - ALPHA * log_pi))
    return ys


# --- the critic: the soft Bellman target (Eqs. 3 and 5) ------------------------------------------------------


def test_worked_values_of_the_hand_set_networks():
    # The networks do compute the closed forms the other tests use: Q_1(0.5, 0.3) = 0.5 + 0.3 + 2 = 2.8,
    # Q_2 = 0.25 - 0.3 + 1 = 0.95; Q'_1 = 0.25 + 0.3 + 1 = 1.55, Q'_2 = -0.25 + 0.6 + 0.5 = 0.85; the policy at
    # s = 0.5: mean 0.25 - 0.2 = 0.05, log std 0.05 - 2 = -1.95.
    agent, _, _ = make_agent()
    s, a = torch.tensor([[0.5]]), torch.tensor([[0.3]])
    assert agent.critic(s, a).flatten().tolist() == pytest.approx([2.8, 0.95], abs=1e-6)
    assert agent.critic_target(s, a).flatten().tolist() == pytest.approx([1.55, 0.85], abs=1e-6)
    mean, log_std = agent.actor(s)
    assert (mean.item(), log_std.item()) == pytest.approx((0.05, -1.95), abs=1e-6)


def test_the_soft_target_uses_the_smaller_target_q_of_a_fresh_next_action_less_alpha_log_pi(fixed_noise, monkeypatch):
    # Eq. 5 with Eq. 3 and the clipped double Q of Algorithm 1: y = r + gamma (1 - d) (min_j Q'_j(s', a') -
    # alpha log pi(a'|s')), a' drawn now from pi at s' (not the stored action, not a draw at s), Q' the target
    # networks (not the online ones). Worked values at s' = 1, eps' = 0.5: mean 0.3, log std -1.9, std 0.1496,
    # u = 0.3748, a' = tanh(u) = 0.3582, Q' = [0.5 + 0.3582 + 1, -0.5 + 0.7163 + 0.5] = [1.8582, 0.7163],
    # log pi = -0.125 + 1.9 - 0.9189 - log(1 - 0.3582^2) = 0.8561 + 0.1373 = 0.9934, so
    # y_1 = 1 + 0.9 (0.7163 - 0.5 * 0.9934) = 1.1977. At s' = -2 the smaller is Q'_1 (Q'_2 at s' = 1); the
    # third transition terminated: y_3 = r_3 = 0.5.
    fixed_noise += [NEXT_EPS, EPS]
    seen = {}
    real_critic_loss = sac.critic_loss

    def critic_loss(q, target):
        seen["q"], seen["target"] = q.detach().clone(), target.clone()
        return real_critic_loss(q, target)

    monkeypatch.setattr(sac, "critic_loss", critic_loss)
    agent, optimizer, args = make_agent()
    metrics = sac.update(agent, optimizer, batch(), args)
    y = soft_targets()
    assert y[0] == pytest.approx(1.1977, abs=1e-4) and y[2] == 0.5
    a2 = policy_at(-2.0, [-1.0])[0]
    assert q_of(TARGET_Q, -2.0, a2)[0] < q_of(TARGET_Q, -2.0, a2)[1]  # the min switches between the Q's
    assert seen["target"].tolist() == pytest.approx(y, abs=1e-5)
    # J_Q = sum_j 1/2 mean_b (Q_j(s, a) - y)^2, on the online networks at the stored actions.
    q = [q_of(ONLINE_Q, s, [a]) for s, a in zip(OBS, ACTIONS)]
    assert seen["q"].T.flatten().tolist() == pytest.approx(sum(q, []), abs=1e-5)
    expected = sum(0.5 * sum((q[b][j] - y[b]) ** 2 for b in range(3)) / 3 for j in range(2))
    assert metrics["q_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert metrics["q_values"].item() == pytest.approx(sum(map(sum, q)) / 6, rel=1e-5)


def test_a_terminated_transition_does_not_bootstrap_and_a_truncated_one_does(fixed_noise, monkeypatch):
    # Eq. 5's (1 - terminated): a transition that did not terminate (a time-limit truncation is stored so)
    # bootstraps from s'; a terminated one has y = r.
    seen = []
    monkeypatch.setattr(sac, "critic_loss", lambda q, target: seen.append(target.clone()) or (q.sum() * 0))
    for done in (0.0, 1.0):
        fixed_noise += [NEXT_EPS, EPS]
        agent, optimizer, args = make_agent()
        sac.update(agent, optimizer, batch(terminated=[done, done, done]), args)
    bootstrapped = [r + 0.9 * (min(q_of(TARGET_Q, s2, policy_at(s2, [e])[0])) - ALPHA * policy_at(s2, [e])[1])
                    for r, s2, e in zip(REWARDS, NEXT_OBS, NEXT_EPS)]
    assert seen[0].tolist() == pytest.approx(bootstrapped, abs=1e-5)
    assert seen[1].tolist() == pytest.approx(REWARDS)


# --- the gradients of one update: each loss, its sign, its weights, the parameters it reaches ---------------


def test_one_update_steps_each_part_down_its_own_loss(fixed_noise, captured_grads):
    # Algorithm 1's three gradient lines (J_Q of Eq. 5, J_pi of Eq. 7, J(alpha) of Eq. 18), each checked on
    # the gradient it sends to its own parameters, worked by hand, with the signs the paper's descent needs.
    fixed_noise += [NEXT_EPS, EPS]
    agent, optimizer, args = make_agent()
    steps = captured_grads(agent, optimizer)
    log_alpha_before = agent.log_alpha.item()
    metrics = sac.update(agent, optimizer, batch(), args)
    assert len(steps) == 1  # one Adam step for the three losses (Algorithm 1's three gradient lines)
    grads = steps[0]
    y = soft_targets()

    # The critics (Eq. 5): dJ_Q/dqc_j = mean_b (Q_j(s_b, a_b) - y_b) through the last bias b3_j, and nothing
    # from the policy's loss (the policy is stepped against Q with the critics' weights held constant).
    q = [q_of(ONLINE_Q, s, [a]) for s, a in zip(OBS, ACTIONS)]
    expected_b3 = [sum(q[b][j] - y[b] for b in range(3)) / 3 for j in range(2)]
    assert grads["critic.b3"].flatten().tolist() == pytest.approx(expected_b3, abs=1e-5)
    assert grads["critic_target.b3"] is None

    # The policy (Eq. 7, reparameterised: a = tanh(u), u = mean(s) + std(s) eps, eps held fixed), with
    # Q = min_j Q_j of the online critics at the new action a and alpha a constant:
    #   d/dmean (alpha log pi - Q) = alpha 2 tanh(u) - dQ/da (1 - tanh(u)^2)
    #   d/dlog std (alpha log pi - Q) = alpha (-1 + 2 tanh(u) std eps) - dQ/da (1 - tanh(u)^2) std eps
    # (d/du -log(1 - tanh(u)^2) = 2 tanh(u), Appendix C), averaged over the batch; dQ/da is qa of the smaller Q.
    # The next action's draw, inside the target, reaches no gradient.
    g_mean = g_log_std = policy_loss = log_pi_sum = 0.0
    for s, e in zip(OBS, EPS):
        (a,), log_pi, (u,), (std,) = policy_at(s, [e])
        qs = q_of(ONLINE_Q, s, [a])
        dq_da = ONLINE_Q[qs.index(min(qs))][1][0]
        g_mean += (ALPHA * 2 * math.tanh(u) - dq_da * (1 - math.tanh(u) ** 2)) / 3
        g_log_std += (ALPHA * (-1 + 2 * math.tanh(u) * std * e) - dq_da * (1 - math.tanh(u) ** 2) * std * e) / 3
        policy_loss += (ALPHA * log_pi - min(qs)) / 3
        log_pi_sum += log_pi
    assert grads["actor.net.4.bias"].tolist() == pytest.approx([g_mean, g_log_std], abs=1e-5)
    assert metrics["policy_loss"].item() == pytest.approx(policy_loss, rel=1e-5)
    assert metrics["entropy"].item() == pytest.approx(-log_pi_sum / 3, rel=1e-5)

    # The temperature (Eq. 18, in log alpha): dJ/dlog alpha = -(mean log pi(a|s) + H), H = -|A| = -1, with
    # log pi of the actions drawn at s (not at s'); the other losses use alpha as a constant and add nothing.
    mean_log_pi = log_pi_sum / 3
    assert grads["log_alpha"].item() == pytest.approx(-(mean_log_pi - 1.0), abs=1e-5)
    assert metrics["alpha_loss"].item() == pytest.approx(-math.log(ALPHA) * (mean_log_pi - 1.0), rel=1e-5)
    # Descent raises alpha when the entropy -mean log pi is below the target (here: mean log pi = 1.226 > 1) ...
    assert mean_log_pi == pytest.approx(1.226, abs=1e-3)
    assert agent.log_alpha.item() == pytest.approx(log_alpha_before + 0.1, abs=1e-4)
    # ... and the policy stepped against the sign of its gradient: Adam's first step is lr * sign(g).
    assert agent.actor.net[4].bias.tolist() == pytest.approx(
        [-0.2 - 10 * 0.5 - 0.1 * math.copysign(1, g_mean), -2.0 - 10 * 0.1 - 0.1 * math.copysign(1, g_log_std)],
        abs=1e-4)


def test_the_temperature_aims_at_minus_the_action_dimension(fixed_noise, captured_grads):
    # Eq. 18 with the paper's target entropy H = -|A|: two action dimensions, so H = -2 (not -1, not the batch
    # size 3, not +2). The policy is set wide (log std 0.5 + 0.5 s, mean 0), so its entropy -mean log pi is
    # above -2: the gradient -(mean log pi + H) is positive and descent lowers alpha.
    wide = dict(km=[0.0, 0.0], cm=[0.0, 0.0], ks=[0.5, 0.5], cs=[0.5, 0.5])
    eps = [[0.1, -0.2], [0.3, 0.0], [-0.5, 0.4]]
    fixed_noise += [eps, eps]
    online = [(0.0, [1.0, 0.5], 0.0), (0.0, [-1.0, 0.5], 0.0)]
    agent, optimizer, args = make_agent(policy=wide, online=online, target=online)
    steps = captured_grads(agent, optimizer)
    data = sac.Batch(column(OBS), torch.zeros(3, 2), torch.tensor(REWARDS), column(NEXT_OBS), torch.tensor(TERMINATED))
    sac.update(agent, optimizer, data, args)
    mean_log_pi = sum(policy_at(s, e, wide)[1] for s, e in zip(OBS, eps)) / 3
    assert -mean_log_pi > -2.0
    assert steps[0]["log_alpha"].item() == pytest.approx(-(mean_log_pi - 2.0), abs=1e-5)
    assert agent.log_alpha.item() == pytest.approx(math.log(ALPHA) - 0.1, abs=1e-4)
    # --target-entropy overrides -|A|.
    fixed_noise += [eps, eps]
    agent, optimizer, args = make_agent(policy=wide, online=online, target=online, target_entropy=-5.0)
    steps = captured_grads(agent, optimizer)
    sac.update(agent, optimizer, data, args)
    assert steps[0]["log_alpha"].item() == pytest.approx(-(mean_log_pi - 5.0), abs=1e-5)


def test_a_fixed_alpha_weighs_the_entropy_terms_and_is_not_learned(fixed_noise, captured_grads, monkeypatch):
    # --alpha 0.2 (the original SAC): the same update with alpha = 0.2 in the target and the policy's loss,
    # log alpha neither in the optimiser nor stepped.
    fixed_noise += [NEXT_EPS, EPS]
    seen = {}
    real = sac.soft_td_target
    monkeypatch.setattr(sac, "soft_td_target", lambda *a: seen.setdefault("target", real(*a)))
    agent, optimizer, args = make_agent(temperature=1.0, alpha=0.2)
    steps = captured_grads(agent, optimizer)
    metrics = sac.update(agent, optimizer, batch(), args)
    y = [r + 0.9 * (1 - d) * (min(q_of(TARGET_Q, s2, policy_at(s2, [e])[0])) - 0.2 * policy_at(s2, [e])[1])
         for r, s2, d, e in zip(REWARDS, NEXT_OBS, TERMINATED, NEXT_EPS)]
    assert seen["target"].tolist() == pytest.approx(y, abs=1e-5)
    expected = sum(0.2 * policy_at(s, [e])[1] - min(q_of(ONLINE_Q, s, policy_at(s, [e])[0]))
                   for s, e in zip(OBS, EPS)) / 3
    assert metrics["policy_loss"].item() == pytest.approx(expected, rel=1e-5)
    assert "alpha_loss" not in metrics and steps[0]["log_alpha"] is None and agent.log_alpha.item() == 0.0


# --- the target networks: Polyak averaging after every gradient step (Algorithm 1, last line) ----------------


def test_the_target_networks_move_tau_towards_the_stepped_critics_after_every_update(fixed_noise):
    # theta'_i <- tau theta_i + (1 - tau) theta'_i with tau = 0.25, theta_i the critics after this update's
    # gradient step (not before it), at every update; the online critics stay as the step left them.
    agent, optimizer, args = make_agent()
    real_step = optimizer.step
    stepped = {}

    def step(*a, **k):  # the critics just after the gradient step, before anything else touches them
        result = real_step(*a, **k)
        stepped.update({name: p.detach().clone() for name, p in agent.critic.named_parameters()})
        return result

    optimizer.step = step
    for _ in range(2):
        fixed_noise += [NEXT_EPS, EPS]
        target_before = {name: p.detach().clone() for name, p in agent.critic_target.named_parameters()}
        b3_before = agent.critic.b3.detach().clone()
        sac.update(agent, optimizer, batch(), args)
        # Adam's first steps move the last biases by about lr = 0.1: averaging the critics from before the
        # step would put the targets 0.025 away from where they must be.
        assert (stepped["b3"] - b3_before).abs().min().item() > 0.05
        for name, new in agent.critic_target.named_parameters():
            assert torch.equal(getattr(agent.critic, name).detach(), stepped[name])
            assert torch.allclose(new, 0.75 * target_before[name] + 0.25 * stepped[name], atol=1e-6), name
            assert not new.requires_grad


# --- the training loop: when actions are random, when updates run, what the buffer stores ------------------


def test_the_kit_stores_terminated_not_done_and_the_true_last_observation():
    # Eq. 5's terminated flag and s', as the replay kit's env_step stores them (sac.py's copy of the kit):
    # a transition cut by the time limit bootstraps from its real last observation s' (the SAME_STEP env
    # returns the next episode's first one); only termination is stored as terminal.
    for env_id, terminal in (("TestCounterTruncated-v0", 0.0), ("TestCounterTerminates-v0", 1.0)):
        args = dataclasses.replace(sac.Args(), env_id=env_id)
        envs = sac.make_vector_env(args, 0, "")
        buffer = sac.ReplayBuffer(4, 1, 1, torch.device("cpu"))
        run = type("Run", (), {"episodes": lambda self, step, infos: None})()
        obs, _ = envs.reset(seed=0)
        ended = []
        for step in (1, 2, 3):
            obs, done = sac.env_step(run, envs, buffer, step, obs, np.full((1, 1), 0.5, np.float32))
            ended.append(bool(done[0]))
        envs.close()
        stored = buffer.rows(buffer.data[: buffer.size])
        assert ended == [False, True, False]
        assert stored.obs.flatten().tolist() == [0.0, 1.0, 0.0]
        assert stored.next_obs.flatten().tolist() == [1.0, 2.0, 1.0]  # 2.0: the last observation, not the reset's 0
        assert stored.terminated.tolist() == [0.0, terminal, 0.0]
        assert stored.actions.flatten().tolist() == [0.5, 0.5, 0.5]  # in [-1, 1], as the policy gave them


def test_random_actions_until_learning_starts_then_one_update_per_env_step(monkeypatch):
    # Algorithm 1 with the paper's initial exploration: steps 1..learning_starts act uniformly at random and
    # do not learn; from the next step on, each env step stores its transition, then takes one gradient step
    # (so the update at step t samples from t stored transitions) and the policy acts with a sample of pi
    # (not its mean).
    sizes, acted = [], []

    class Buffer(sac.ReplayBuffer):
        def sample(self, batch_size):
            sizes.append(self.size)
            return super().sample(batch_size)

    real_act = sac.Actor.act

    def act(self, obs, deterministic=False):
        acted.append(deterministic)
        return real_act(self, obs, deterministic)

    monkeypatch.setattr(sac, "ReplayBuffer", Buffer)
    monkeypatch.setattr(sac.Actor, "act", act)
    sac.main(sac.parse_args(["--env-id", "TestCounterTruncated-v0", "--total-timesteps", "7", "--learning-starts", "3",
                             "--batch-size", "2", "--hidden-size", "4", "--eval-episodes", "0", "--eval-every", "0",
                             "--run-dir", "run"]))
    assert sizes == [4, 5, 6, 7]
    assert acted == [False] * 4
