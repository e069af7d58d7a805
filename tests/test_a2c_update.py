"""algos/a2c_atari.py's update() and training loop on hand-made batches, with networks whose outputs are set.

The agent is the script's own Agent with its two heads replaced by single linear layers whose weights the
test sets: logits = W o + b with W = 0 (so the policy is the same at every observation) and V(o) = o[0] (so
every observation's value is its first number). Every expected number below is worked out by hand from
the A3C paper's Algorithm S3 (Mnih et al. 2016, supplement): R = V(s_T) (0 at a terminal state), then
R <- r_i + gamma R backwards; d theta = grad log pi(a_i|s_i) (R - V(s_i)) + beta grad H(pi(s_i)) (the
advantage a constant there); d theta_v = d (R - V(s_i))^2 / d theta_v, weighted by vf_coef (0.5: the
gradient of 0.5 (R - V)^2); one RMSProp step with the paper's TensorFlow form, g = alpha g + (1 - alpha)
d theta^2, theta <- theta - eta d theta / sqrt(g + eps), shared by every parameter.
"""

import copy
import dataclasses
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn as nn

import a2c_atari as a2c

SPACE = gym.spaces.Box(-1e3, 1e3, (2,), np.float32)
ACTIONS = gym.spaces.Discrete(2)
CPU = torch.device("cpu")


def linear_agent(logits=(0.0, 0.0)) -> a2c.Agent:
    """The script's Agent, heads replaced: logits = 0 * o + logits (the same policy everywhere), V(o) = o[0]."""
    agent = a2c.Agent(SPACE, ACTIONS)
    agent.actor, agent.critic = nn.Linear(2, 2), nn.Linear(2, 1)
    with torch.no_grad():
        agent.actor.weight.zero_()
        agent.actor.bias.copy_(torch.tensor(logits))
        agent.critic.weight.copy_(torch.tensor([[1.0, 0.0]]))
        agent.critic.bias.zero_()
    return agent


def rollout_of(agent, obs, actions, rewards, terminated=None, truncated=None, final_obs=None) -> a2c.Rollout:
    """A Rollout filled step by step as main() fills it: obs [T][N] of 2-number observations, each step
    recorded with the values the agent gives; final_obs {(t, n): observation} for the episodes that ended at
    step t, given to record() in infos["final_obs"] as a SAME_STEP vector env gives them."""
    T, N = len(rewards), len(rewards[0])
    terminated = np.array(terminated if terminated is not None else [[False] * N] * T)
    truncated = np.array(truncated if truncated is not None else [[False] * N] * T)
    rollout = a2c.Rollout(T, N, CPU, SPACE)
    for t in range(T):
        rollout.obs[t] = torch.tensor(obs[t], dtype=torch.float32)
        with torch.inference_mode():
            value = agent.get_value(rollout.obs[t])
        infos = {}
        ended = [n for n in range(N) if (t, n) in (final_obs or {})]
        if ended:
            infos = {"final_obs": np.empty(N, dtype=object), "_final_obs": np.isin(np.arange(N), ended)}
            for n in ended:
                infos["final_obs"][n] = np.array(final_obs[(t, n)], dtype=np.float32)
        rollout.record(t, agent, torch.tensor(actions[t]), value, np.array(rewards[t], dtype=np.float32),
                       terminated[t], truncated[t], infos)
    return rollout


def args_for(rollout, **changes) -> a2c.Args:
    settings = dict(num_envs=rollout.actions.shape[1], num_steps=rollout.actions.shape[0], gamma=0.5,
                    ent_coef=0.0, vf_coef=0.5, max_grad_norm=1e6)
    return dataclasses.replace(a2c.PRESETS["classic"], **{**settings, **changes})


def params_of(agent):
    return {name: p.detach().clone() for name, p in agent.named_parameters()}


def change_of(agent, before):
    return {name: p.detach() - before[name] for name, p in agent.named_parameters()}


# The batch of most tests: t_max 2, 2 envs, gamma 0.5, no episode end. Observations [[1, 2], [3, 4]] (first
# number; [t][env]), so V = 1, 2 at t 0 and 3, 4 at t 1; the observations after the rollout 5 and 6.
# Rewards [[1, 2], [0, 1]]. Returns, backwards from V(s_2):
#   env 0: R_1 = 0 + 0.5 * 5 = 2.5, R_0 = 1 + 0.5 * 2.5 = 2.25;  env 1: R_1 = 1 + 0.5 * 6 = 4, R_0 = 2 + 0.5 * 4 = 4.
# Advantages R - V in the batch order (t 0 env 0, t 0 env 1, t 1 env 0, t 1 env 1): 1.25, 2, -0.5, 0.
# Actions [[0, 1], [1, 0]].
OBS = [[[1.0, 0.0], [2.0, 0.0]], [[3.0, 0.0], [4.0, 0.0]]]
NEXT_OBS = torch.tensor([[5.0, 0.0], [6.0, 0.0]])
REWARDS = [[1.0, 2.0], [0.0, 1.0]]
CHOSEN = [[0, 1], [1, 0]]


def test_returns_bootstrap_from_the_value_of_the_observation_after_the_rollout():
    """Algorithm S3: R = V(s_t) of the state after the last step, then R <- r_i + gamma R; the value loss is
    the mean of (R - V(s_i))^2 over the t_max x N steps, each return beside its own step's value."""
    agent = linear_agent()
    rollout = rollout_of(agent, OBS, CHOSEN, REWARDS)
    metrics = a2c.update(agent, torch.optim.SGD(agent.parameters(), lr=0.0), rollout, NEXT_OBS, args_for(rollout))
    # (1.25^2 + 2^2 + 0.5^2 + 0^2) / 4 = (1.5625 + 4 + 0.25) / 4
    assert metrics["value_loss"].item() == pytest.approx(5.8125 / 4)
    # Uniform policy, log pi = log 0.5 for every action: -mean(A) log 0.5 = 0.6875 log 2.
    assert metrics["policy_loss"].item() == pytest.approx(0.6875 * math.log(2))
    assert metrics["entropy"].item() == pytest.approx(math.log(2))


def test_terminated_and_truncated_episodes_inside_the_rollout():
    """Algorithm S3's 'R = 0 for terminal s_t': env 0 terminates at t 0, so R_0 = r_0 = 1 whatever its final
    observation (7) is worth; env 1 is cut off by a time limit at t 0, so its return bootstraps from the value
    of its final observation, V = 10 (recorded from infos["final_obs"]), not from the next episode:
    R_0 = 2 + 0.5 * 10 = 7. The steps at t 1 start new episodes: env 0 R_1 = 0 + 0.5 * 5 = 2.5, env 1
    R_1 = 1 + 0.5 * 6 = 4. Errors R - V: 0, 5, -0.5, 0."""
    agent = linear_agent()
    rollout = rollout_of(agent, OBS, CHOSEN, REWARDS, terminated=[[True, False], [False, False]],
                         truncated=[[False, True], [False, False]], final_obs={(0, 0): [7.0, 0.0], (0, 1): [10.0, 0.0]})
    assert rollout.final_values[0, 1].item() == pytest.approx(10.0)
    metrics = a2c.update(agent, torch.optim.SGD(agent.parameters(), lr=0.0), rollout, NEXT_OBS, args_for(rollout))
    assert metrics["value_loss"].item() == pytest.approx((0 + 25 + 0.25 + 0) / 4)


def test_policy_gradient_with_the_advantage_held_constant_and_the_value_weight():
    """Algorithm S3's two accumulations, the mean over the batch: d theta = grad log pi(a_i|s_i) (R - V(s_i))
    with R - V a constant (no gradient reaches the value through the policy term), d theta_v =
    vf_coef * d (R - V)^2 / d theta_v; the step (plain SGD at lr 1 here, clip far away) is minus the gradient.

    Policy: uniform, so d log pi(a) / d logits = onehot(a) - 0.5 and d loss / d logits_i = -A_i (onehot(a_i)
    - 0.5) / 4: t0e0 (a 0, A 1.25): (-0.15625, 0.15625); t0e1 (a 1, A 2): (0.25, -0.25); t1e0 (a 1,
    A -0.5): (-0.0625, 0.0625); t1e1: 0. Bias gradient: the sum, (0.03125, -0.03125); weight gradient
    (first input): the sum times o = 1, 2, 3: -0.15625 + 0.5 - 0.1875 = 0.15625, and -0.15625.
    Value: d loss / d V_i = 0.5 * 2 (V_i - R_i) / 4 = -0.3125, -0.5, 0.125, 0. Bias: -0.6875; weight
    (first input): -0.3125 - 1 + 0.375 = -0.9375."""
    agent = linear_agent()
    rollout = rollout_of(agent, OBS, CHOSEN, REWARDS)
    before = params_of(agent)
    a2c.update(agent, torch.optim.SGD(agent.parameters(), lr=1.0), rollout, NEXT_OBS, args_for(rollout))
    step = change_of(agent, before)
    assert step["actor.bias"].tolist() == pytest.approx([-0.03125, 0.03125])
    assert step["actor.weight"].flatten().tolist() == pytest.approx([-0.15625, 0.0, 0.15625, 0.0])
    assert step["critic.bias"].tolist() == pytest.approx([0.6875])
    assert step["critic.weight"].flatten().tolist() == pytest.approx([0.9375, 0.0])


def test_entropy_bonus_pushes_the_policy_toward_uniform_with_weight_beta():
    """The paper's entropy regularisation, + beta grad H(pi(s_t)) in the policy's ascent direction (beta 0.1
    here). One step, 2 envs, observations 1 and 2, the next ones both 2, gamma 0.5, rewards 0 and 1: the
    returns 1 and 2 equal the values, so the advantages and the value error are 0 and only the entropy moves
    the weights. Logits (0, ln 3): pi = (1/4, 3/4), H = ln 4 - (3/4) ln 3 = 0.5623351;
    dH/dlogit_k = -pi_k (ln pi_k + H) = 0.2059900 and -0.2059900. The loss is -beta H: the SGD step on the
    bias is +beta dH/dlogits = (0.0205990, -0.0205990) (towards uniform); on the weight, summed with
    o = 1, 2 over the mean of 2: 1.5 times that."""
    agent = linear_agent(logits=(0.0, math.log(3)))
    rollout = rollout_of(agent, [[[1.0, 0.0], [2.0, 0.0]]], [[0, 1]], [[0.0, 1.0]])
    before = params_of(agent)
    metrics = a2c.update(agent, torch.optim.SGD(agent.parameters(), lr=1.0), rollout,
                         torch.tensor([[2.0, 0.0], [2.0, 0.0]]), args_for(rollout, ent_coef=0.1))
    entropy = math.log(4) - 0.75 * math.log(3)
    assert metrics["entropy"].item() == pytest.approx(entropy)
    assert metrics["value_loss"].item() == pytest.approx(0.0) and metrics["policy_loss"].item() == pytest.approx(0.0)
    assert metrics["loss"].item() == pytest.approx(-0.1 * entropy)
    step = change_of(agent, before)
    assert step["actor.bias"].tolist() == pytest.approx([0.0205990, -0.0205990], abs=1e-6)
    assert step["actor.weight"][:, 0].tolist() == pytest.approx([0.0308985, -0.0308985], abs=1e-6)
    assert step["critic.bias"].abs().max().item() == pytest.approx(0.0, abs=1e-7)


def test_gradient_clipped_by_its_global_norm_before_the_step():
    """--max-grad-norm (baselines a2c's clip_grad_norm): the whole gradient is rescaled by one factor,
    max_norm / ||g|| over all parameters together, and the step uses the clipped gradient. The gradient of
    test_policy_gradient_with_the_advantage_held_constant_and_the_value_weight has
    ||g||^2 = 2 * 0.03125^2 + 2 * 0.15625^2 + 0.9375^2 + 0.6875^2 = 1.40234375; clipped to 0.5, every
    component shrinks by 0.5 / sqrt(1.40234375) = 0.4222241."""
    agent = linear_agent()
    rollout = rollout_of(agent, OBS, CHOSEN, REWARDS)
    before = params_of(agent)
    a2c.update(agent, torch.optim.SGD(agent.parameters(), lr=1.0), rollout, NEXT_OBS,
               args_for(rollout, max_grad_norm=0.5))
    step = change_of(agent, before)
    factor = 0.5 / math.sqrt(1.40234375)
    assert step["actor.bias"].tolist() == pytest.approx([-0.03125 * factor, 0.03125 * factor], rel=1e-5)
    assert step["actor.weight"][:, 0].tolist() == pytest.approx([-0.15625 * factor, 0.15625 * factor], rel=1e-5)
    assert step["critic.bias"].item() == pytest.approx(0.6875 * factor, rel=1e-5)
    assert step["critic.weight"][0, 0].item() == pytest.approx(0.9375 * factor, rel=1e-5)


def test_max_grad_norm_zero_takes_the_whole_gradient():
    """--max-grad-norm 0 turns clipping off (the one-step preset: Sutton & Barto's Alg. 13.5 clips nothing):
    the step is the whole gradient of the test above, whose norm sqrt(1.40234375) = 1.18 is above 0.5."""
    agent = linear_agent()
    rollout = rollout_of(agent, OBS, CHOSEN, REWARDS)
    before = params_of(agent)
    a2c.update(agent, torch.optim.SGD(agent.parameters(), lr=1.0), rollout, NEXT_OBS,
               args_for(rollout, max_grad_norm=0.0))
    step = change_of(agent, before)
    assert step["actor.bias"].tolist() == pytest.approx([-0.03125, 0.03125], rel=1e-5)
    assert step["critic.bias"].item() == pytest.approx(0.6875, rel=1e-5)
    assert step["critic.weight"][0, 0].item() == pytest.approx(0.9375, rel=1e-5)


def test_two_updates_take_tensorflow_rmsprop_steps_with_statistics_kept_between_them():
    """The paper's RMSProp (supplement, 'Optimization details'): g <- alpha g + (1 - alpha) d theta^2,
    theta <- theta - eta d theta / sqrt(g + eps), epsilon inside the root, no momentum, g kept from one update
    to the next. alpha 0.9, eps 0.01, eta 0.01. Each update's gradient is read back from p.grad (what the
    step used) and the steps are worked out from it: the second update's g holds the first's. Each update's
    gradient is its own batch's (zeroed before), the first one the hand-worked gradient of the policy-gradient
    test."""
    agent = linear_agent()
    rollout = rollout_of(agent, OBS, CHOSEN, REWARDS)
    args = args_for(rollout)
    optimizer = a2c.RMSpropTF(agent.parameters(), lr=0.01, decay=0.9, eps=0.01)
    square = {name: torch.zeros_like(p) for name, p in agent.named_parameters()}
    steps = []
    for update in range(2):
        fresh = copy.deepcopy(agent)  # the gradient of this batch alone, at these weights
        for p in fresh.parameters():
            p.grad = None
        a2c.update(fresh, torch.optim.SGD(fresh.parameters(), lr=0.0), rollout, NEXT_OBS, args)
        before = params_of(agent)
        a2c.update(agent, optimizer, rollout, NEXT_OBS, args)
        step = change_of(agent, before)
        for p, q in zip(agent.parameters(), fresh.parameters()):
            assert torch.allclose(p.grad, q.grad), update  # zeroed before each update, not accumulated
        if update == 0:  # the gradient of the policy-gradient test above
            assert agent.critic.bias.grad.item() == pytest.approx(-0.6875)
            assert agent.actor.bias.grad.tolist() == pytest.approx([0.03125, -0.03125])
        for name, p in agent.named_parameters():
            g = p.grad.detach()
            square[name] = 0.9 * square[name] + 0.1 * g**2
            expected = -0.01 * g / torch.sqrt(square[name] + 0.01)
            assert torch.allclose(step[name], expected, rtol=1e-4, atol=1e-8), (update, name)
        steps.append(step)
    # The first update's critic bias step, by hand: g = -0.6875, square 0.1 * 0.47265625 = 0.047265625,
    # step = 0.01 * 0.6875 / sqrt(0.047265625 + 0.01) = 0.0287295 (torch's RMSprop: 0.0302322).
    assert steps[0]["critic.bias"].item() == pytest.approx(0.0287295, rel=1e-5)
    assert torch.allclose(optimizer.state[agent.critic.bias]["square_avg"], square["critic.bias"])


def test_actions_are_sampled_from_the_policy():
    """Algorithm S3: a_t is drawn from pi(a|s_t). Agent.act samples by Gumbel-max,
    argmax(log pi - log E) with E ~ Exp(1); over 30,000 draws from pi = (0.6, 0.3, 0.1) each action's frequency
    is its probability within 0.015 (4 standard deviations at most; argmax(log pi + log E), not a sample of
    pi, gives (0.63, 0.31, 0.06))."""
    torch.manual_seed(0)
    agent = a2c.Agent(SPACE, gym.spaces.Discrete(3))
    agent.actor = nn.Linear(2, 3)
    with torch.no_grad():
        agent.actor.weight.zero_()
        agent.actor.bias.copy_(torch.tensor([0.6, 0.3, 0.1]).log())
        action, logits, _ = agent.act(torch.zeros(30_000, 2))
    assert torch.allclose(logits.softmax(-1)[0], torch.tensor([0.6, 0.3, 0.1]))
    frequencies = torch.bincount(action, minlength=3) / 30_000
    assert frequencies.tolist() == pytest.approx([0.6, 0.3, 0.1], abs=0.015)


# --- the training loop: main() on scripted environments ------------------------------------------------------


class ScriptedEnvs:
    """Stands in for the vector env main() makes: N envs whose observation after step k (k = 0: the reset)
    is [k + n / 10, n] for env n, reward k + n, and episode ends where `ends` {(k, n): "terminated" or
    "truncated"} says; an env whose episode ends at step k shows the first observation of its next one,
    [-k - n / 10, n], and gives its final observation [100 + k + n / 10, n] in infos["final_obs"] (gymnasium's
    SAME_STEP autoreset). Keeps everything it showed and got."""

    single_observation_space = SPACE
    single_action_space = ACTIONS

    def __init__(self, num_envs: int, ends: dict):
        self.num_envs, self.ends, self.k = num_envs, ends, 0
        self.shown, self.actions, self.rewards, self.terminated, self.truncated = [], [], [], [], []
        self.final_obs = {}

    def obs(self, k, n):
        return [k + n / 10, n]

    def reset(self, seed=None):
        self.shown.append(np.array([self.obs(0, n) for n in range(self.num_envs)], dtype=np.float32))
        return self.shown[-1].copy(), {}

    def step(self, actions):
        self.k += 1
        k, N = self.k, self.num_envs
        terminated = np.array([self.ends.get((k, n)) == "terminated" for n in range(N)])
        truncated = np.array([self.ends.get((k, n)) == "truncated" for n in range(N)])
        obs = np.array([self.obs(k, n) for n in range(N)], dtype=np.float32)
        infos = {}
        if (terminated | truncated).any():
            infos = {"final_obs": np.empty(N, dtype=object), "_final_obs": terminated | truncated}
            for n in np.flatnonzero(terminated | truncated):
                self.final_obs[(k, n)] = np.array([100 + k + n / 10, n], dtype=np.float32)
                infos["final_obs"][n] = self.final_obs[(k, n)]
                obs[n] = [-k - n / 10, n]
        self.actions.append(np.array(actions))
        self.rewards.append(np.array([k + n for n in range(N)], dtype=np.float32))
        self.terminated.append(terminated)
        self.truncated.append(truncated)
        self.shown.append(obs)
        return obs.copy(), self.rewards[-1].copy(), terminated, truncated, infos

    def close(self):
        pass


def run_main_with_spy(monkeypatch, envs, args):
    """main(args) on envs and a linear agent; each call of update() is recorded (its inputs, copied, and the
    learning rate set for it, with what the agent gave for the env's observations at that time) before the
    real update runs."""
    agent = linear_agent()
    monkeypatch.setattr(a2c, "make_vector_env", lambda *a, **k: envs)
    monkeypatch.setattr(a2c, "make_agent", lambda *a, **k: agent)
    calls = []
    real_update = a2c.update

    def spy(agent_, optimizer, rollout, next_obs, args_):
        with torch.no_grad():
            shown_values = [agent.get_value(torch.as_tensor(obs)).clone() for obs in envs.shown]
            final_values = {key: agent.get_value(torch.as_tensor(obs)[None]).item()
                            for key, obs in envs.final_obs.items()}
        calls.append(dict(agent=agent_, optimizer=optimizer, lr=optimizer.param_groups[0]["lr"],
                          state=set(optimizer.state), obs=rollout.obs.clone(), actions=rollout.actions.clone(),
                          values=rollout.values.clone(), final_values=rollout.final_values.clone(),
                          rewards=rollout.rewards.copy(), terminated=rollout.terminated.copy(),
                          truncated=rollout.truncated.copy(), next_obs=next_obs.clone(), shown_values=shown_values,
                          env_final_values=final_values))
        return real_update(agent_, optimizer, rollout, next_obs, args_)

    monkeypatch.setattr(a2c, "update", spy)
    a2c.main(args)
    return agent, calls


MAIN_ARGS = dict(num_envs=2, num_steps=3, total_timesteps=24, learning_rate=0.02, rms_decay=0.95, rms_eps=0.05,
                 eval_episodes=0, run_dir="run", cuda=False)
ENDS = {(2, 0): "terminated", (4, 1): "truncated", (6, 0): "truncated", (6, 1): "terminated"}


def test_the_rollout_holds_each_step_where_the_loop_saw_it_and_bootstraps_from_the_next_observation(monkeypatch):
    """Algorithm S3's rollout: for t = t_start .. t_start + t_max - 1, act in s_t, receive r_t and s_{t+1};
    then bootstrap from V(s_{t_max}), the observation after the last step (not the last one acted in). 2 envs,
    t_max 3, 4 updates: update i holds env steps 3(i - 1) + 1 .. 3i. Each step's observation is the one the
    action was chosen in, its value V of that observation, its action the one sent to the env, its reward and
    episode ends the env's own, terminated and truncated kept apart (a time limit at step 4 and at step 6,
    the last of a rollout); a truncated step's final value is V of its final observation."""
    envs = ScriptedEnvs(2, ENDS)
    agent, calls = run_main_with_spy(monkeypatch, envs, dataclasses.replace(a2c.PRESETS["classic"], **MAIN_ARGS))
    assert len(calls) == 4
    for i, call in enumerate(calls):
        for t in range(3):
            k = 3 * i + t  # the env steps before this one
            assert torch.equal(call["obs"][t], torch.as_tensor(envs.shown[k])), (i, t)
            assert torch.allclose(call["values"][t], call["shown_values"][k]), (i, t)
            assert call["actions"][t].tolist() == envs.actions[k].tolist(), (i, t)
            assert call["rewards"][t].tolist() == envs.rewards[k].tolist(), (i, t)
            assert call["terminated"][t].tolist() == envs.terminated[k].tolist(), (i, t)
            assert call["truncated"][t].tolist() == envs.truncated[k].tolist(), (i, t)
            for n in np.flatnonzero(envs.truncated[k]):
                assert call["final_values"][t, n].item() == pytest.approx(call["env_final_values"][(k + 1, n)])
        assert torch.equal(call["next_obs"], torch.as_tensor(envs.shown[3 * i + 3])), i
    # Step 6 ends update 2: env 0's bootstrap is V of its final observation [106, 0], env 1's nothing.
    assert calls[1]["truncated"][2].tolist() == [True, False] and calls[1]["terminated"][2].tolist() == [False, True]


def test_one_tensorflow_rmsprop_over_all_weights_and_the_learning_rate_annealed_linearly(monkeypatch):
    """The paper's optimiser: one RMSProp (TensorFlow's, epsilon inside the root) over every weight of the
    network, policy and value alike, with --rms-decay and --rms-eps, built once, so its mean squares carry
    over from update to update; the learning rate annealed linearly to 0 over the run (the paper's
    experimental setup; baselines a2c's linear schedule): update i of 4 at lr (1 - (i - 1) / 4), 1, 0.75, 0.5,
    0.25 times --learning-rate 0.02."""
    envs = ScriptedEnvs(2, {})
    agent, calls = run_main_with_spy(monkeypatch, envs, dataclasses.replace(a2c.PRESETS["classic"], **MAIN_ARGS))
    assert [call["lr"] for call in calls] == pytest.approx([0.02, 0.015, 0.01, 0.005])
    optimizer = calls[0]["optimizer"]
    assert type(optimizer) is a2c.RMSpropTF
    assert all(call["optimizer"] is optimizer and call["agent"] is agent for call in calls)
    assert optimizer.defaults["decay"] == 0.95 and optimizer.defaults["eps"] == 0.05
    assert {id(p) for group in optimizer.param_groups for p in group["params"]} == {id(p) for p in agent.parameters()}
    assert calls[0]["state"] == set() and all(call["state"] == set(agent.parameters()) for call in calls[1:])


def test_the_atari_preset_is_the_papers_setting():
    """The A3C paper's Atari setup (its experimental section and supplement), as the atari preset gives it to
    update(): 16 actor-learners (here parallel envs) of t_max 5 steps, gamma 0.99, entropy weight beta 0.01, the
    value gradient scaled by 0.5, RMSProp decay 0.99 and epsilon 0.1, lr 7e-4 annealed linearly to 0;
    baselines a2c's clip of 0.5 (the paper gives none)."""
    args = a2c.PRESETS["atari"]
    assert (args.num_envs, args.num_steps, args.gamma, args.ent_coef, args.vf_coef) == (16, 5, 0.99, 0.01, 0.5)
    assert (args.rms_decay, args.rms_eps, args.learning_rate, args.anneal) == (0.99, 0.1, 7e-4, True)
    assert args.max_grad_norm == 0.5
