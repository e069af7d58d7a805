"""What the tests of every script share: reading a run directory and driving a script as a process."""

import csv
import os
import subprocess
import sys
import time
import warnings

import gymnasium as gym
import numpy as np
import torch

ALGOS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "algos")


def script_path(name: str) -> str:
    return os.path.join(ALGOS, f"{name}.py")


def read_episodes(run_dir: str) -> list[dict]:
    with open(os.path.join(run_dir, "episodes.csv"), newline="") as f:
        return list(csv.DictReader(f))


def returns_of(run_dir: str) -> list[tuple]:
    """The episodes of a run without their wall times, to compare two runs."""
    return [(r["global_step"], r["episodic_return"], r["episodic_length"]) for r in read_episodes(run_dir)]


def start_run(name: str, *flags: str, run_dir: str = "run") -> subprocess.Popen:
    """Start algos/<name>.py as a process, without the final evaluation. A first flag that is a word (a preset)
    stays first."""
    first = list(flags[:1]) if flags and not flags[0].startswith("-") else []
    flags = flags[len(first):]
    return subprocess.Popen([sys.executable, script_path(name), *first, "--run-dir", run_dir, "--eval-episodes", "0",
                             *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def run_cli(name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, script_path(name), *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "COLUMNS": "200"})


def wait_for(condition, process: subprocess.Popen, timeout: float = 90.0) -> None:
    """Poll until condition() holds; fail if the process exits or time runs out first."""
    deadline = time.time() + timeout
    while not condition():
        assert process.poll() is None, process.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


def live_processes_where(field: int, value: int) -> list[int]:
    """The live processes whose /proc/PID/stat field (after the name: 1 = parent, 2 = process group) is
    value; zombies not yet reaped count as gone."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[field]) == value and fields[0] != "Z":
                found.append(int(entry))
    return found


def children_of(pid: int) -> list[int]:
    return live_processes_where(1, pid)


def processes_in_group(pgid: int) -> list[int]:
    return live_processes_where(2, pgid)


def gae_of_lists(compute_gae, rewards, values, next_value, terminated=None, truncated=None, final_values=None,
                 gamma=0.9, lam=1.0):
    """A script's compute_gae on plain lists of one env's [T] steps, for tests with hand-worked values."""
    T = len(rewards)
    col = lambda xs, dtype=torch.float32: torch.tensor(xs, dtype=dtype).reshape(T, 1)  # noqa: E731
    terminated = col(terminated or [False] * T, torch.bool)
    truncated = col(truncated or [False] * T, torch.bool)
    final_values = col(final_values or [0.0] * T)
    adv, ret = compute_gae(col(rewards), col(values), torch.tensor([next_value]), terminated, truncated,
                           final_values, gamma, lam)
    return adv.flatten().tolist(), ret.flatten().tolist()


def mean_of_last_episodes(run_dir: str, n: int = 20) -> float:
    """The learning tests' measure: the mean return of the run's last n episodes."""
    returns = [float(row["episodic_return"]) for row in read_episodes(run_dir)]
    assert len(returns) >= n
    return float(np.mean(returns[-n:]))


class FixedSpacesEnv(gym.Env):
    """An env that does nothing, with the spaces it is given: for checking which spaces a script refuses."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space, render_mode=None):
        self.observation_space, self.action_space, self.render_mode = observation_space, action_space, render_mode

    def reset(self, seed=None, options=None):
        return np.zeros(self.observation_space.shape, self.observation_space.dtype), {}

    def step(self, action):
        return np.zeros(self.observation_space.shape, self.observation_space.dtype), 0.0, True, False, {}


gym.register("TestMultiBinaryActions-v0", entry_point=FixedSpacesEnv,
             kwargs=dict(observation_space=gym.spaces.Box(-1, 1, (3,)), action_space=gym.spaces.MultiBinary(2)))
gym.register("TestImageObservations-v0", entry_point=FixedSpacesEnv,
             kwargs=dict(observation_space=gym.spaces.Box(0, 255, (84, 84, 3), np.uint8),
                         action_space=gym.spaces.Discrete(2)))


def best_mean_of_episodes(run_dir: str, n: int = 20) -> float:
    """The best mean return over n consecutive episodes of a run: for methods whose runs learn and then
    wobble (Hogwild, Q-learning without replay), where the last n episodes would measure the wobble."""
    returns = [float(row["episodic_return"]) for row in read_episodes(run_dir)]
    assert len(returns) >= n
    return float(max(np.convolve(returns, np.ones(n) / n, mode="valid")))


class Counter(gym.Env):
    """Observation [t], one continuous action; terminates after step 2 (terminate=True) or runs until a time
    limit: for checking what a real run stores at an episode's end."""

    observation_space = gym.spaces.Box(-100, 100, (1,))
    action_space = gym.spaces.Box(-1, 1, (1,))

    def __init__(self, terminate: bool, render_mode=None):
        self.terminate, self.render_mode = terminate, render_mode

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], dtype=np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], dtype=np.float32), 1.0, self.terminate and self.t == 2, False, {}


gym.register("TestCounterTerminates-v0", entry_point=Counter, kwargs=dict(terminate=True), max_episode_steps=2)
gym.register("TestCounterTruncated-v0", entry_point=Counter, kwargs=dict(terminate=False), max_episode_steps=2)


def parameters(module: torch.nn.Module) -> list[torch.Tensor]:
    """Copies of a module's parameters, to compare with after an update."""
    return [p.detach().clone() for p in module.parameters()]


def assert_targets_moved_by_tau(agent, targets_before: dict, tau: float) -> None:
    """Each target network (actor_target, critic_target) moved tau of the way to its online network, outside
    autograd (a recorded Polyak update would chain every update's graph)."""
    for target, online in (("actor_target", "actor"), ("critic_target", "critic")):
        for old, new, source in zip(targets_before[target], getattr(agent, target).parameters(),
                                    getattr(agent, online).parameters()):
            assert torch.allclose(new, (1 - tau) * old + tau * source.detach(), atol=1e-6)
            assert not new.requires_grad and new.grad_fn is None


class SecondChanceUsed(UserWarning):
    """A learning test's first seed fell short and a later one passed."""


def learns_with_one_of(seeds: tuple[int, ...], train, passes) -> list:
    """Train with each seed in turn, stopping at the first whose result passes; fail, listing every
    result, when none does. For learning tests whose fixed seed is not enough to pin a run down: CPU
    float kernels differ between machines (the same seed's CartPole run ended at 495 on one of ours and
    220 on another), and a run that diverges from the one we tuned on can fall short by chance. With a
    second seed, a test fails only when two independent runs both do. train(seed) returns a result,
    passes(result) says whether it reached the bar."""
    results = []
    for seed in seeds:
        results.append((seed, train(seed)))
        if passes(results[-1][1]):
            if len(results) > 1:  # shown in pytest's warnings summary, so second chances are counted
                warnings.warn(f"passed on a later seed; (seed, result): {results}", SecondChanceUsed)
            return results
    raise AssertionError(f"no seed reached the bar; (seed, result): {results}")
