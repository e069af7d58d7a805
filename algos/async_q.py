"""Asynchronous one-step Q-learning, one-step SARSA and n-step Q-learning (Mnih et al. 2016, "Asynchronous
Methods for Deep Reinforcement Learning", Algorithm 1, its SARSA variant and Algorithm S2).

Several actor-learner processes share one Q-network and one target network in shared memory. Each acts
epsilon-greedily in its own environment with its own final epsilon, accumulates the gradient of the
squared error to its targets over I_AsyncUpdate steps, and applies it to the shared parameters with a
shared RMSProp, without locks (Hogwild!). The target network is refreshed every so many global steps.

    python algos/async_q.py --env-id CartPole-v1 --method n-step-q --num-workers 2
    python algos/async_q.py --preset atari --env-id BreakoutNoFrameskip-v4 --method one-step-q
    python algos/async_q.py evaluate runs/<run>/model.pt --episodes 10

The global_step of an episode (episodes.csv, TensorBoard) is the global step of its last step: workers claim
their steps from one shared counter, so it counts the steps all workers had claimed when that episode ended.
The main process writes each episode only once no worker can still report one that ended earlier, so the
column never decreases; when a checkpoint is written, episodes.csv holds every episode up to its step.
"""

import csv
import dataclasses
import difflib
import glob
import heapq
import json
import math
import os
import queue as queue_module
import random
import signal
import sys
import time
import traceback
import types
import typing
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Literal

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.multiprocessing as mp
import torch.nn as nn
import tyro
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "async_q.py"  # names this script in messages, checkpoints and models

gym.register_envs(ale_py)  # the ALE/ and *NoFrameskip-v4 ids; the ROMs ship inside ale-py

# The paper's per-thread exploration: each worker's final epsilon is one of these, with these odds.
FINAL_EPSILONS = (0.1, 0.01, 0.5)
FINAL_EPSILON_PROBS = (0.4, 0.3, 0.3)


@dataclass
class Args:
    # --- common to every script ---
    preset: Literal["classic", "atari"] = "classic"
    """settings for a family of environments: classic (classic control, tuned here: the paper has no such table), atari (the paper's Atari settings). Other flags override its values; `--preset atari --help` shows its defaults"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environments (worker k gets seed + k)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 500_000
    """environment steps to train for, summed over the workers (on Atari a step is 4 frames)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic (kept for the common interface: the workers run on CPU, and with more than one worker Hogwild updates are not reproducible anyway; one worker is)"""
    cuda: bool = True
    """kept for the common interface: the paper's method runs on CPU cores, and so does this script"""
    threads: int | None = None
    """torch CPU threads of the main process (logging and the final evaluation); default 1. Each worker always uses 1"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "async-q"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of worker 0's env into RUN_DIR/videos"""
    save_model: bool = False
    """write RUN_DIR/model.pt at the end: weights and args"""
    run_dir: str | None = None
    """where the run writes its files; default runs/{env_id}__{exp_name}__{seed}__{timestamp}"""
    checkpoint_every: int = 0
    """write RUN_DIR/checkpoint.pt every this many env steps (0: only when interrupted)"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of the final evaluation written to summary.json (0 skips it)"""
    eval_deterministic: bool = True
    """evaluate with the greedy action; off: epsilon-greedy with --eval-epsilon"""

    # --- asynchronous Q methods ---
    method: Literal["one-step-q", "one-step-sarsa", "n-step-q"] = "one-step-q"
    """one-step-q (Algorithm 1), one-step-sarsa (Algorithm 1 with the target r + gamma Q'(s', a')), n-step-q (Algorithm S2)"""
    num_workers: int = 16
    """actor-learner processes, one env each. Paper: 16 threads. Use no more than the CPU cores (os.cpu_count()): extra workers only take turns and add staleness; more than 4 per core needs --oversubscribe"""
    oversubscribe: bool = False
    """allow more than 4 worker processes per core; without it a larger --num-workers is refused"""
    async_update: int = 5
    """steps each worker takes between updates of the shared network, I_AsyncUpdate (and t_max of n-step Q). Paper: 5"""
    target_update: int = 40_000
    """global env steps between refreshes of the shared target network, I_target. Paper: every 40,000 frames, which is 40,000 steps here except on Atari, where a step is 4 frames (atari preset: 10,000); classic: 2,000"""
    learning_rate: float = 7e-4
    """shared optimiser step size, annealed linearly to 0 by the global step. The paper samples LogUniform(1e-4, 1e-2) per run; 7e-4 is the A3C authors' value; classic: 1e-3"""
    anneal: bool = True
    """anneal the learning rate linearly to 0 over the run (paper's experimental setup)"""
    gamma: float = 0.99
    """discount factor. Paper: 0.99"""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """the shared optimiser: RMSProp with shared statistics (paper), or Adam (betas 0.9, 0.999; eps --adam-eps) with shared moments and step count"""
    rms_decay: float = 0.99
    """RMSProp decay of the mean square. Paper: 0.99"""
    rms_eps: float = 0.1
    """RMSProp epsilon, added inside the square root (TensorFlow's placement). Paper: 0.1; classic: 0.01"""
    adam_eps: float = 1e-8
    """Adam epsilon (Kingma & Ba's default); only with --optimizer adam"""
    max_grad_norm: float = 0.0
    """clip each update's gradient to this global norm (0: no clipping, as in the paper)"""
    epsilon_anneal_steps: int = 4_000_000
    """global env steps over which each worker's epsilon falls linearly from 1 to its final value. Paper: the first 4M frames (atari preset: 1M steps of 4 frames). Scale it down with the run's length: about 10-40% of --total-timesteps (classic: 40,000)"""
    eval_epsilon: float = 0.05
    """epsilon of the evaluation when --eval-deterministic is off (DQN's evaluation epsilon, Mnih et al. 2015)"""


PRESETS = {
    # The paper has no classic-control settings. Chosen here for CartPole-v1 with 2 workers and checked
    # on 3 seeds (tests/test_async_q_learning.py), not swept: a target refreshed every 2,000 steps and
    # epsilon annealed over 40,000 (the paper's 40,000 and 4M frames are for runs of tens of millions of
    # frames), RMSProp epsilon 0.01 (a CartPole-sized gradient is far below sqrt(0.1)) and lr 1e-3. The
    # paper's I_AsyncUpdate, gamma, decay, annealing and epsilon distribution stay.
    "classic": Args(target_update=2_000, epsilon_anneal_steps=40_000, learning_rate=1e-3, rms_eps=0.01),
    # The paper's Atari settings: 16 workers, target every 40,000 frames = 10,000 agent steps, epsilon
    # annealed over 4M frames = 1M steps; 80M frames (the paper's training curves) = 20M steps.
    "atari": Args(preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=20_000_000,
                  target_update=10_000, epsilon_anneal_steps=1_000_000),
}


@dataclass
class EvalArgs:
    """Evaluate a model saved with --save-model."""

    model_path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL_PT")]
    """the model.pt file of a run"""
    episodes: int = 10
    """episodes to average over"""
    seed: int = 12345
    """seed of the evaluation environments"""
    deterministic: bool = True
    """act greedily; off: epsilon-greedy with the run's --eval-epsilon"""
    capture_video: bool = False
    """record the episodes next to the model, in videos/"""


class ConfigError(ValueError):
    """A setting that cannot work, found before training starts."""


def check_worker_count(num_workers: int, oversubscribe: bool) -> None:
    """Refuse more than 4 worker processes per core unless asked for: a typo such as --num-workers 100000
    would otherwise fork until the machine stalls."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if num_workers > 4 * cores and not oversubscribe:
        raise ConfigError(f"--num-workers {num_workers} is more than 4 per core ({4 * cores} here); "
                          "use at most that, or add --oversubscribe if you mean it")


def check_finite(args) -> None:
    """Refuse nan and inf in any float setting: `nan <= 0` is False, so the range checks alone let it through."""
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{field.name.replace('_', '-')} must be a finite number, got {value}")


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_finite(args)
    if args.total_timesteps <= 0 or args.num_workers <= 0 or args.async_update <= 0:
        raise ConfigError("--total-timesteps, --num-workers and --async-update must be positive")
    if args.target_update <= 0 or args.epsilon_anneal_steps <= 0:
        raise ConfigError("--target-update and --epsilon-anneal-steps must be positive")
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("gamma", "rms_decay"):
        value = getattr(args, name)
        if not 0 < value <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {value}")
    if args.rms_eps <= 0 or args.adam_eps <= 0:
        raise ConfigError(f"--rms-eps and --adam-eps must be positive, got {args.rms_eps} and {args.adam_eps}")
    if args.max_grad_norm < 0:
        raise ConfigError(f"--max-grad-norm must be non-negative (0 turns clipping off), got {args.max_grad_norm}")
    if not 0 <= args.eval_epsilon <= 1:
        raise ConfigError(f"--eval-epsilon must be in [0, 1], got {args.eval_epsilon}")
    if args.checkpoint_every < 0 or args.eval_episodes < 0:
        raise ConfigError("--checkpoint-every and --eval-episodes must be non-negative")
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")
    check_worker_count(args.num_workers, args.oversubscribe)


def check_env_id(env_id: str) -> None:
    """Refuse an unknown environment id, suggesting the closest registered ones, and an Atari id that skips
    frames or makes actions sticky on its own."""
    if env_id not in gym.envs.registry:
        close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"
        raise ConfigError(f"unknown environment id {env_id!r}{hint}")
    if is_atari(env_id):
        check_atari_frameskip(env_id)


def check_atari_frameskip(env_id: str) -> None:
    """The DQN wrappers repeat each action over 4 frames themselves, as the papers did; an id that also skips
    frames (ALE/*-v5, *-v4 without NoFrameskip) or makes actions sticky would silently play 16 frames a step."""
    kwargs = gym.spec(env_id).kwargs
    if kwargs.get("frameskip", 1) != 1 or kwargs.get("repeat_action_probability", 0.0) != 0.0:
        game = "".join(part.capitalize() for part in str(kwargs.get("game", "pong")).split("_"))
        raise ConfigError(f"{env_id} skips frames (frameskip={kwargs.get('frameskip')}) or makes actions sticky "
                          f"(p={kwargs.get('repeat_action_probability')}) on top of the 4-frame skip of the "
                          f"papers' wrappers; use {game}NoFrameskip-v4")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Q-learning needs a finite set of actions to take the max over: Discrete only."""
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"{SCRIPT} supports Discrete action spaces only, not {action_space}; for continuous "
                          "actions use ddpg.py, td3.py, sac.py, ppo.py or trpo.py")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"{SCRIPT} supports 1-D vector or stacked-image observations, not {observation_space}")


# --------------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------------

def is_atari(env_id: str) -> bool:
    return "ale_py" in str(gym.spec(env_id).entry_point)


def make_env(env_id: str, idx: int, capture_video: bool, video_dir: str):
    """A thunk for one env. Atari gets the DQN preprocessing the paper used (Mnih et al. 2015): 30 no-op
    starts, 4-frame skip with a max over the last two, life loss as episode end, fire on reset, rewards
    clipped to their sign, 84x84 greyscale, 4 frames stacked."""

    def thunk():
        render_mode = "rgb_array" if capture_video and idx == 0 else None
        # ALE renders greyscale itself, a third of the work of RGB then conversion (as EnvPool does).
        env = gym.make(env_id, render_mode=render_mode, **({"obs_type": "grayscale"} if is_atari(env_id) else {}))
        if capture_video and idx == 0:
            env = gym.wrappers.RecordVideo(env, video_dir)
        if not is_atari(env_id):
            return gym.wrappers.RecordEpisodeStatistics(env)
        from stable_baselines3.common.atari_wrappers import (
            ClipRewardEnv, EpisodicLifeEnv, FireResetEnv, MaxAndSkipEnv, NoopResetEnv,
        )

        env = NoopResetEnv(env, noop_max=30)
        env = MaxAndSkipEnv(env, skip=4)
        # Inside the life-loss and reward-clip wrappers: it records the real game score, per whole game,
        # with lengths in agent steps.
        env = gym.wrappers.RecordEpisodeStatistics(env)
        env = EpisodicLifeEnv(env)
        if "FIRE" in env.unwrapped.get_action_meanings():
            env = FireResetEnv(env)
        env = ClipRewardEnv(env)
        env = gym.wrappers.ResizeObservation(env, (84, 84))
        return gym.wrappers.FrameStackObservation(env, 4)

    return thunk


def make_worker_env(args: Args, idx: int, video_dir: str, capture_video: bool | None = None):
    """One worker's env as a one-env SAME_STEP vector env: the final observation of an episode comes in
    infos["final_obs"], its statistics in infos["final_info"], and obs is already the next episode's."""
    capture = args.capture_video if capture_video is None else capture_video
    return gym.vector.SyncVectorEnv([make_env(args.env_id, idx, capture, video_dir)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def finished_episodes(infos: dict):
    """(returns, lengths) of the episodes that ended in this step of a SAME_STEP vector env."""
    final = infos.get("final_info")
    if final is None or "episode" not in final:
        return (), ()
    mask = final["_episode"]
    return final["episode"]["r"][mask], final["episode"]["l"][mask]


# --------------------------------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------------------------------


def sample_final_epsilon(rng: np.random.Generator) -> float:
    """A worker's final epsilon: 0.1, 0.01 or 0.5 with probabilities 0.4, 0.3, 0.3 (the paper's
    experimental setup)."""
    return float(rng.choice(FINAL_EPSILONS, p=FINAL_EPSILON_PROBS))


def epsilon_at(step: int, final_epsilon: float, anneal_steps: int) -> float:
    """Epsilon after `step` global steps: linear from 1 to final_epsilon over anneal_steps, then flat."""
    fraction = min(step / anneal_steps, 1.0)
    return 1.0 + fraction * (final_epsilon - 1.0)


def bootstrap_values(method: str, target_q: torch.Tensor, next_actions: torch.Tensor) -> torch.Tensor:
    """The target network's value of the state after each step, from its Q-values target_q [T, A] there:
    max_a Q'(s', a) for Q-learning (Algorithm 1 and S2), Q'(s', a') for SARSA, where a' is the action the
    worker's epsilon-greedy policy chose in s' (the one it then takes, unless the episode ended)."""
    if method == "one-step-sarsa":
        return target_q.gather(1, next_actions[:, None]).squeeze(1)
    return target_q.max(1).values


def one_step_targets(rewards: torch.Tensor, bootstrap: torch.Tensor, terminated: torch.Tensor, gamma: float) -> torch.Tensor:
    """y_t = r_t + gamma * bootstrap_t, or r_t when the episode terminated at step t (Algorithm 1).
    bootstrap_t is the value of the state after step t: when the episode was truncated there, that is
    its final observation's, so a time limit is bootstrapped through and a real end is not."""
    return rewards + gamma * bootstrap * (~terminated)


def nstep_q_targets(
    rewards: torch.Tensor, bootstrap: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor, gamma: float,
) -> torch.Tensor:
    """The n-step targets of Algorithm S2 over one worker's segment of T steps: R = max_a Q'(s_T, a)
    after the last step, then R_t = r_t + gamma R_{t+1} backwards, so step t looks T - t steps ahead.

    Where an episode ends inside the segment at step t, the return restarts from that episode's end:
    0 if it terminated, the final observation's bootstrap_t if it was truncated. Only bootstrap[T - 1]
    and the bootstraps at episode ends are read. Terminated and truncated together count as terminated.
    """
    targets = torch.zeros_like(rewards)
    future = bootstrap[-1]
    for t in reversed(range(rewards.shape[0])):
        if t < rewards.shape[0] - 1 and truncated[t]:
            future = bootstrap[t]
        if terminated[t]:
            future = torch.zeros_like(future)
        future = rewards[t] + gamma * future
        targets[t] = future
    return targets


def q_loss(q_taken: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """sum_t (y_t - Q(s_t, a_t))^2 over the segment: Algorithm 1 accumulates the gradient of each step's
    squared error over I_AsyncUpdate steps, which is the gradient of this sum. Targets are constants."""
    return ((targets.detach() - q_taken) ** 2).sum()


class SharedRMSprop(torch.optim.Optimizer):
    """RMSProp with one set of statistics shared by every worker (the paper's "shared RMSProp"), in
    TensorFlow's form, which the paper used (epsilon inside the root):

        v <- decay * v + (1 - decay) * g^2
        p <- p - lr * g / sqrt(v + eps)

    The state is created at once and moved into shared memory, the step count included, so processes
    forked or spawned after share_memory() see and update the same tensors. v starts at 0 (as torch's
    RMSprop; TF1's started it at 1). Updates are lock-free, as in the paper.
    """

    def __init__(self, params, lr: float = 7e-4, decay: float = 0.99, eps: float = 0.1):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = {"step": torch.zeros(()), "square_avg": torch.zeros_like(p, memory_format=torch.preserve_format)}
        self.share_memory()

    def share_memory(self) -> "SharedRMSprop":
        """Move every state tensor into shared memory (again after load_state_dict, which replaces them)."""
        for state in self.state.values():
            for value in state.values():
                value.share_memory_()
        return self

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                square_avg = state["square_avg"]
                square_avg.mul_(group["decay"]).addcmul_(p.grad, p.grad, value=1 - group["decay"])
                p.addcdiv_(p.grad, (square_avg + group["eps"]).sqrt_(), value=-group["lr"])


class SharedAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015) with its moments and step count in shared memory: one set for all workers.
    The bias corrections read the shared step count, which counts the updates of every worker."""

    def __init__(self, params, lr: float = 7e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p] = {"step": torch.zeros(()), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
        self.share_memory()

    def share_memory(self) -> "SharedAdam":
        for state in self.state.values():
            for value in state.values():
                value.share_memory_()
        return self

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                step = float(state["step"])
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denominator = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**step))


def make_optimizer(args: Args, params) -> torch.optim.Optimizer:
    if args.optimizer == "adam":
        return SharedAdam(params, lr=args.learning_rate, eps=args.adam_eps)
    return SharedRMSprop(params, lr=args.learning_rate, decay=args.rms_decay, eps=args.rms_eps)


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases, as in the authors' baselines code."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class QNetwork(nn.Module):
    """Q(s, .) for every action at once.
    - Images: the 2013 DQN network (Mnih et al. 2013) that the paper used: 16 8x8 stride 4, 32 4x4
      stride 2, 256 dense, ReLU; uint8 pixels scaled to [0, 1].
    - Vector observations: an MLP of 64-64 ReLU units."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Discrete):
        super().__init__()
        shape = observation_space.shape
        self.image = len(shape) == 3
        n_actions = int(action_space.n)
        if self.image:
            body = nn.Sequential(
                layer_init(nn.Conv2d(shape[0], 16, 8, stride=4)), nn.ReLU(),
                layer_init(nn.Conv2d(16, 32, 4, stride=2)), nn.ReLU(),
                nn.Flatten(),
            )
            with torch.no_grad():
                n_flat = body(torch.zeros(1, *shape)).shape[1]
            self.net = nn.Sequential(body, layer_init(nn.Linear(n_flat, 256)), nn.ReLU(),
                                     layer_init(nn.Linear(256, n_actions), std=1.0))
        else:
            self.net = nn.Sequential(
                layer_init(nn.Linear(int(np.prod(shape)), 64)), nn.ReLU(),
                layer_init(nn.Linear(64, 64)), nn.ReLU(),
                layer_init(nn.Linear(64, n_actions), std=1.0),
            )

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        return self.net(x)


# --------------------------------------------------------------------------------------------------
# Run directory, checkpoints, evaluation
# --------------------------------------------------------------------------------------------------


def atomic_write(path: str, write) -> None:
    """Write through a temporary file and rename it over path, so readers never see half a file."""
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


def all_finite(state) -> bool:
    """Whether every float in a saved state (nested dicts, lists and tensors) is finite."""
    if isinstance(state, torch.Tensor):
        return not state.is_floating_point() or bool(torch.isfinite(state).all())
    if isinstance(state, dict):
        return all(all_finite(value) for value in state.values())
    if isinstance(state, (list, tuple)):
        return all(all_finite(value) for value in state)
    return not isinstance(state, float) or math.isfinite(state)


def save_torch(obj, path: str) -> None:
    """Write a checkpoint or model atomically, and never one holding nan or inf: the file already there,
    written before training diverged, is the one to resume from."""
    if not all_finite(obj):
        raise FloatingPointError(f"training diverged: {path} would hold nan or inf, so it was not written")
    atomic_write(path, lambda tmp: torch.save(obj, tmp))


def write_json(path: str, obj: dict) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    atomic_write(path, write)


def load_saved(path: str) -> dict:
    """A checkpoint or model of this script, loaded without running any code in the file (weights_only).
    Anything else is refused in one line. torch's own message advises weights_only=False, which would run
    the file's code: it is never passed on."""
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # missing, truncated, foreign or unsafe: say which kind, nothing more
        raise ConfigError(f"{path} is not a checkpoint or model of {SCRIPT} ({type(error).__name__})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("args"), dict):
        raise ConfigError(f"{path} is not a checkpoint or model of {SCRIPT}")
    writer = saved.get("script", SCRIPT)
    if writer != SCRIPT:
        raise ConfigError(f"{path} was written by {writer}, not {SCRIPT}: use {writer} for it")
    if not all_finite(saved):
        raise ConfigError(f"{path} holds nan or inf: it was written by a run that diverged")
    return saved


def load_checkpoint(run_dir: str) -> dict:
    path = os.path.join(run_dir, "checkpoint.pt")
    if not os.path.isfile(path):
        raise ConfigError(f"--resume {run_dir}: no checkpoint.pt there (was it run with --checkpoint-every?)")
    return load_saved(path)


def value_fits(value, hint) -> bool:
    """Whether a saved setting has its field's type (a float field takes an int as well)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(value_fits(value, option) for option in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (tuple, list):
        return isinstance(value, (tuple, list))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def args_from_saved(saved: dict, path: str) -> "Args":
    """The Args a checkpoint or model was saved with, refused in one line if this script's Args cannot
    hold them (a field unknown or missing, or a value of the wrong type: an edited file)."""
    hints = typing.get_type_hints(Args)
    unknown, missing = set(saved["args"]) - set(hints), set(hints) - set(saved["args"])
    if unknown or missing:
        raise ConfigError(f"{path} does not hold the settings of {SCRIPT} (unknown: {sorted(unknown)}, "
                          f"missing: {sorted(missing)})")
    for name, value in saved["args"].items():
        if not value_fits(value, hints[name]):
            raise ConfigError(f"{path}: the saved setting {name} = {value!r} is not of type {hints[name]}")
    return Args(**saved["args"])


def restore(path: str, load) -> None:
    """Run load(), which copies a checkpoint or model into this run; a file that does not fit it (another
    env or network size, a missing entry) is refused in one line instead of a traceback."""
    try:
        load()
    except ConfigError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{path} does not fit this run of {SCRIPT} ({type(error).__name__}: {reason})") from None


def remove_stale_temporaries(run_dir: str) -> None:
    """A run killed while saving leaves a half-written *.tmp beside the file it was replacing: remove it."""
    for path in glob.glob(os.path.join(glob.escape(run_dir), "*.tmp")):
        os.remove(path)


def safe_to_resume(run_dir: str) -> str:
    """The end of a divergence message: which checkpoint, if any, holds the last finite state."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(path):
        return f"{path} holds the last finite state: resume with --resume {run_dir} (a lower --learning-rate may help)"
    return "no checkpoint was written (--checkpoint-every keeps one)"


def wait_past_event_files(run_dir: str) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second the file was
    made: a resumed run's file must sort after those of the attempt it replaces, or that attempt's events
    past the checkpoint are read last and escape purge_step. A resume within the same second waits for the
    next."""
    names = glob.glob("events.out.tfevents.*", root_dir=run_dir)
    seconds = [int(name.split(".")[3]) for name in names if name.split(".")[3].isdigit()]
    time.sleep(min(1.0, max(0.0, max(seconds, default=0) + 1 - time.time())))


def rng_state(generator: np.random.Generator) -> dict:
    """A worker's random state: python's, torch's and its numpy Generator's, in plain Python types: it
    travels through the message queue (a tensor there would need its sender alive to be received) and
    PCG64's 128-bit integers are kept as text, which torch.load(weights_only=True) accepts."""
    bits = generator.bit_generator.state
    return {
        "python": list(random.getstate()[1]),
        "torch": torch.get_rng_state().tolist(),
        "numpy": [str(bits["state"]["state"]), str(bits["state"]["inc"]), bits["has_uint32"], bits["uinteger"]],
    }


def set_rng_state(state: dict, generator: np.random.Generator) -> None:
    random.setstate((3, tuple(state["python"]), None))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    key, inc, has_uint32, uinteger = state["numpy"]
    generator.bit_generator.state = {"bit_generator": "PCG64", "state": {"state": int(key), "inc": int(inc)},
                                     "has_uint32": has_uint32, "uinteger": uinteger}


EPISODE_FIELDS = ["global_step", "episodic_return", "episodic_length", "wall_time"]


def open_episode_log(run_dir: str, keep_until_step: int | None):
    """Open episodes.csv for appending. On resume, first drop the rows written after the checkpoint:
    those episodes are replayed, and keeping both would duplicate them."""
    path = os.path.join(run_dir, "episodes.csv")
    if keep_until_step is not None and os.path.exists(path):
        with open(path, newline="") as f:
            rows = [row for row in csv.DictReader(f) if int(row["global_step"]) <= keep_until_step]

        def write(tmp):
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, EPISODE_FIELDS)
                writer.writeheader()
                writer.writerows(rows)

        atomic_write(path, write)
    new = not os.path.exists(path)
    f = open(path, "a", newline="")
    writer = csv.writer(f)
    if new:
        writer.writerow(EPISODE_FIELDS)
    return f, writer


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "gymnasium", "numpy", "ale-py", "tyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def evaluate(q_net: QNetwork, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari), acting greedily
    (or epsilon-greedily with args.eval_epsilon when not deterministic)."""
    envs = make_worker_env(args, 0, video_dir)
    rng = np.random.default_rng(seed)
    n_actions = int(envs.single_action_space.n)
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        if not deterministic and rng.random() < args.eval_epsilon:
            action = int(rng.integers(n_actions))
        else:
            with torch.inference_mode():
                action = int(q_net(torch.as_tensor(obs)).argmax(1))
        obs, _, _, _, infos = envs.step(np.array([action]))
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_q_network(model_path: str) -> tuple[QNetwork, Args]:
    """Rebuild the network saved by --save-model: weights and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    envs = make_worker_env(args, 0, "", capture_video=False)
    check_spaces(envs.single_observation_space, envs.single_action_space)
    q_net = QNetwork(envs.single_observation_space, envs.single_action_space)
    envs.close()
    restore(model_path, lambda: q_net.load_state_dict(saved["model"]))
    return q_net, args


def main_evaluate(eval_args: EvalArgs) -> dict:
    q_net, args = load_q_network(eval_args.model_path)
    args = dataclasses.replace(args, capture_video=eval_args.capture_video)
    video_dir = os.path.join(os.path.dirname(os.path.abspath(eval_args.model_path)), "videos")
    returns = evaluate(q_net, args, eval_args.episodes, eval_args.seed, eval_args.deterministic, video_dir)
    result = {"episodes": len(returns), "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
    print(json.dumps(result))
    return result


class Progress:
    """One status line: rewritten in place on a terminal, printed every `every` seconds otherwise."""

    def __init__(self, total: int, start_step: int, every: float = 30.0):
        self.total, self.start_step, self.every = total, start_step, every
        self.tty = sys.stdout.isatty()
        self.start = self.last = time.time()

    def update(self, step: int, recent_returns, force: bool = False) -> None:
        now = time.time()
        if not force and now - self.last < (0.5 if self.tty else self.every):
            return
        self.last = now
        sps = (step - self.start_step) / max(now - self.start, 1e-9)
        eta = (self.total - step) / max(sps, 1e-9)
        recent = f"{np.mean(recent_returns):9.2f}" if recent_returns else "      n/a"
        line = (f"step {step:>10,}/{self.total:,} ({100 * step / self.total:5.1f}%) | {sps:7,.0f} steps/s | "
                f"return (last {len(recent_returns)}) {recent} | ETA {time.strftime('%H:%M:%S', time.gmtime(eta))}")
        if self.tty:
            print(f"\r{line}", end="", flush=True)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.tty:
            print()


# --------------------------------------------------------------------------------------------------
# The workers
# --------------------------------------------------------------------------------------------------


@dataclass
class Shared:
    """What the main process and the workers share: networks and optimiser state in shared memory, the
    global step counter (with its lock), the episode queue, and the controls of checkpoints and stops."""

    q_net: QNetwork
    target_net: QNetwork
    optimizer: torch.optim.Optimizer
    global_step: "mp.sharedctypes.Synchronized"
    messages: "mp.Queue"
    stop: "mp.synchronize.Event"
    pause_requested: "mp.sharedctypes.Synchronized"  # the number of the checkpoint asked for
    pause_released: "mp.sharedctypes.Synchronized"   # the number of the last checkpoint written


def die_with_parent() -> None:
    """Ask Linux to kill this process when its parent dies, even by SIGKILL: no orphans."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the parent-pid check in the loop still applies
        pass


def worker(k: int, args: Args, shared: Shared, start_state: dict | None, env_seed: int, video_dir: str) -> None:
    """Worker k: an actor-learner process. It sends ("episode", k, step, return, length) for each episode that
    ends, ("progress", k, step) now and then (none of its episodes will end at or below that step), ("stats",
    ...) from worker 0, ("paused", k, checkpoint number, state), ("done", k, state), and ("nan", k, message)
    for a diverged loss. Any other exception goes to the main process as text."""
    parent = os.getppid()
    die_with_parent()
    # Ctrl-C reaches the whole process group, and so does SIGTERM from `timeout` or a cluster's scheduler:
    # the main process decides, pausing the workers for a checkpoint, then stopping them.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    torch.set_num_threads(1)
    try:
        run_worker(k, args, shared, start_state, env_seed, video_dir, parent)
    except FloatingPointError as error:
        shared.messages.put(("nan", k, str(error)))
    except Exception:
        shared.messages.put(("error", k, traceback.format_exc()))
        sys.exit(1)


def run_worker(k: int, args: Args, shared: Shared, start_state: dict | None, env_seed: int, video_dir: str,
               parent: int) -> None:
    rng = np.random.default_rng(args.seed + k)
    random.seed(args.seed + k)
    torch.manual_seed(args.seed + k)
    final_epsilon = sample_final_epsilon(rng)
    if start_state is not None:
        set_rng_state(start_state["rng"], rng)
        final_epsilon = start_state["final_epsilon"]
    crash_at = int(os.environ.get("ASYNC_Q_CRASH_WORKER_AT", "-1")) if k == 1 else -1  # hook for the tests

    envs = make_worker_env(args, k, video_dir)
    try:
        train_worker(k, args, shared, envs, rng, final_epsilon, crash_at, env_seed, parent)
    finally:
        envs.close()  # and, with --capture-video, the last video written


def train_worker(k: int, args: Args, shared: Shared, envs, rng: np.random.Generator, final_epsilon: float,
                 crash_at: int, env_seed: int, parent: int) -> None:
    """The actor-learner loop of Algorithm 1 / S2: claim up to I_AsyncUpdate global steps, act, compute
    the targets with the shared target network, apply the summed gradient with the shared optimiser."""
    n_actions = int(envs.single_action_space.n)
    local_net = QNetwork(envs.single_observation_space, envs.single_action_space)
    local_params, global_params = list(local_net.parameters()), list(shared.q_net.parameters())
    n = args.async_update
    obs_dtype = torch.uint8 if envs.single_observation_space.dtype == np.uint8 else torch.float32
    obs_buf = torch.zeros((n, *envs.single_observation_space.shape), dtype=obs_dtype)
    after_buf = torch.zeros_like(obs_buf)  # the state after each step (the final observation at an episode end)
    action_buf, next_action_buf = torch.zeros(n, dtype=torch.long), torch.zeros(n, dtype=torch.long)
    reward_buf = torch.zeros(n)
    terminated_buf, truncated_buf = torch.zeros(n, dtype=torch.bool), torch.zeros(n, dtype=torch.bool)

    def choose(observation: np.ndarray, epsilon: float) -> int:
        if rng.random() < epsilon:
            return int(rng.integers(n_actions))
        with torch.inference_mode():
            return int(local_net(torch.as_tensor(observation)).argmax(1))

    obs, _ = envs.reset(seed=env_seed + k)
    envs.single_action_space.seed(env_seed + k)
    action = None
    checkpoint_seen, updates, last_report = shared.pause_released.value, 0, time.monotonic()
    while True:
        # A safe point between updates: stop, or wait while the main process writes a checkpoint.
        if shared.stop.is_set() or os.getppid() != parent:
            return
        requested = shared.pause_requested.value
        if requested > checkpoint_seen:
            checkpoint_seen = requested
            shared.messages.put(("paused", k, requested, {"rng": rng_state(rng), "final_epsilon": final_epsilon}))
            while shared.pause_released.value < requested:
                if shared.stop.is_set() or os.getppid() != parent:
                    return
                time.sleep(0.005)
        with shared.global_step.get_lock():
            start = shared.global_step.value
            steps = min(n, args.total_timesteps - start)
            shared.global_step.value = start + max(steps, 0)
        if steps <= 0:  # the budget is spent; the state goes with the news, for the final checkpoint
            shared.messages.put(("done", k, {"rng": rng_state(rng), "final_epsilon": final_epsilon}))
            return
        if updates == crash_at:
            raise RuntimeError(f"simulated crash of worker {k} (ASYNC_Q_CRASH_WORKER_AT={crash_at})")

        for local, shared_param in zip(local_params, global_params):  # theta' <- theta
            local.data.copy_(shared_param.data)
        epsilon = epsilon_at(start, final_epsilon, args.epsilon_anneal_steps)
        if action is None:
            action = choose(obs, epsilon)
        for t in range(steps):
            obs_buf[t] = torch.as_tensor(obs[0])
            action_buf[t] = action
            next_obs, reward, terminated, truncated, infos = envs.step(np.array([action]))
            done = terminated[0] or truncated[0]
            after = infos["final_obs"][0] if done else next_obs[0]
            after_buf[t] = torch.as_tensor(after)
            reward_buf[t], terminated_buf[t], truncated_buf[t] = float(reward[0]), bool(terminated[0]), bool(truncated[0])
            action = choose(next_obs, epsilon)
            # SARSA's a' in s': the action taken next, or, at an episode end, the one the policy would take
            # in the final observation.
            next_action_buf[t] = choose(after[None], epsilon) if done and args.method == "one-step-sarsa" else action
            for episodic_return, episodic_length in zip(*finished_episodes(infos)):
                shared.messages.put(("episode", k, start + t + 1, float(episodic_return), int(episodic_length)))
            obs = next_obs

        with torch.no_grad():
            target_q = shared.target_net(after_buf[:steps])
        bootstrap = bootstrap_values(args.method, target_q, next_action_buf[:steps])
        if args.method == "n-step-q":
            targets = nstep_q_targets(reward_buf[:steps], bootstrap, terminated_buf[:steps], truncated_buf[:steps], args.gamma)
        else:
            targets = one_step_targets(reward_buf[:steps], bootstrap, terminated_buf[:steps], args.gamma)
        q_taken = local_net(obs_buf[:steps]).gather(1, action_buf[:steps, None]).squeeze(1)
        loss = q_loss(q_taken, targets)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at step {start + steps:,} in worker {k}; "
                                     f"{safe_to_resume(args.run_dir)}")
        local_net.zero_grad(set_to_none=True)
        loss.backward()
        if args.max_grad_norm:
            nn.utils.clip_grad_norm_(local_params, args.max_grad_norm)
        for local, shared_param in zip(local_params, global_params):
            shared_param.grad = local.grad
        end = start + steps
        lr_scale = 1.0 - start / args.total_timesteps if args.anneal else 1.0
        shared.optimizer.param_groups[0]["lr"] = lr_scale * args.learning_rate
        shared.optimizer.step()
        if end // args.target_update > start // args.target_update:  # this worker's steps crossed I_target
            for target, shared_param in zip(shared.target_net.parameters(), global_params):
                target.data.copy_(shared_param.data)
        updates += 1
        if k == 0 and updates % 200 == 0:  # losses for TensorBoard, from one worker, now and then
            shared.messages.put(("stats", k, end, loss.item() / steps, float(q_taken.detach().mean()), epsilon,
                                 shared.optimizer.param_groups[0]["lr"]))
        if time.monotonic() - last_report > 0.2:  # lets the main process write other workers' episodes in step order
            shared.messages.put(("progress", k, end))  # none of this worker's episodes will end at or below end
            last_report = time.monotonic()


def child_pids(pid: int) -> list[int]:
    """The live child processes of pid, from /proc (Linux); [] elsewhere."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def main(args: Args) -> dict:
    """Train with asynchronous workers and return the summary that is also written to RUN_DIR/summary.json.
    A run stopped by SIGINT or SIGTERM returns {"interrupted": True, "global_step", "run_dir"} and writes
    no summary. A worker's exception stops every worker and is raised here with the worker's traceback;
    a worker's diverged loss is raised as a FloatingPointError with its one-line message."""
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        path = os.path.join(args.resume, "checkpoint.pt")
        args = dataclasses.replace(args_from_saved(checkpoint, path), resume=args.resume, run_dir=args.resume)
    check_env_id(args.env_id)
    check_args(args)
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir)
    probe = make_worker_env(args, 1, "", capture_video=False)
    observation_space, action_space = probe.single_observation_space, probe.single_action_space
    probe.close()
    check_spaces(observation_space, action_space)
    if args.num_workers > (os.cpu_count() or 1):
        print(f"note: {args.num_workers} workers on {os.cpu_count()} cores: they will take turns; "
              "--num-workers at most the core count runs fastest")

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    threads_before = torch.get_num_threads()  # restored at the end, for callers in the same process
    torch.set_num_threads(args.threads or 1)
    try:
        q_net = QNetwork(observation_space, action_space)
        target_net = QNetwork(observation_space, action_space)
        target_net.load_state_dict(q_net.state_dict())
        q_net.share_memory()
        target_net.share_memory()
        optimizer = make_optimizer(args, q_net.parameters())
        global_step, elapsed_before, worker_states = 0, 0.0, [None] * args.num_workers
        if checkpoint is not None:
            def load_state() -> None:
                nonlocal global_step, elapsed_before, worker_states
                q_net.load_state_dict(checkpoint["model"])  # copied into the shared tensors
                target_net.load_state_dict(checkpoint["target"])
                optimizer.load_state_dict(checkpoint["optimizer"])
                optimizer.share_memory()  # load_state_dict put the state in fresh, private tensors
                global_step, elapsed_before = int(checkpoint["global_step"]), float(checkpoint["elapsed"])
                worker_states = list(checkpoint["workers"])
                if len(worker_states) != args.num_workers or not all(
                        state is None or {"rng", "final_epsilon"} <= set(state) for state in worker_states):
                    raise ValueError(f"it holds {len(worker_states)} worker states, not the {args.num_workers} "
                                     "of its --num-workers")

            restore(path, load_state)
    except BaseException:
        torch.set_num_threads(threads_before)
        raise

    os.makedirs(run_dir, exist_ok=True)
    remove_stale_temporaries(run_dir)
    episode_file, episode_log = open_episode_log(run_dir, global_step if checkpoint else None)
    # fork: workers start in a fraction of a second and share the tensors above without copying. Where
    # fork is unsafe or missing (macOS, Windows), spawn.
    context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
    shared = Shared(q_net, target_net, optimizer, context.Value("q", global_step), context.Queue(), context.Event(),
                    context.Value("i", 0, lock=False), context.Value("i", 0, lock=False))
    # A resumed run cannot restore the environments' internal states: it starts fresh episodes, seeded
    # from the step it resumes at, so that resuming is itself reproducible.
    env_seed = args.seed + global_step
    video_dir = os.path.join(run_dir, "videos")
    workers = [context.Process(target=worker, args=(k, args, shared, worker_states[k], env_seed, video_dir), daemon=True)
               for k in range(args.num_workers)]

    writer = None
    stop_signal = []
    previous_handlers = {}
    recent_returns: deque = deque(maxlen=20)
    start_time, start_step = time.time(), global_step
    progress = Progress(args.total_timesteps, global_step)
    finished: set[int] = set()  # workers whose "done" arrived
    paused: dict[int, dict] = {}  # worker -> its state, for the checkpoint being written
    # Episodes wait here, as (step, arrival, return, length), until no worker can report an earlier one:
    # each worker's messages arrive in the order it sent them, and its "progress" says that none of its
    # episodes will end at or below that step.
    pending: list = []
    reported = [global_step] * args.num_workers
    arrivals = 0
    checkpoint_number = 0
    last_check = time.time()

    def handle(message) -> None:
        nonlocal arrivals
        kind = message[0]
        if kind == "episode":
            _, _, step, episodic_return, episodic_length = message
            heapq.heappush(pending, (step, arrivals, episodic_return, episodic_length))
            arrivals += 1
        elif kind == "progress":
            reported[message[1]] = message[2]
        elif kind == "stats":
            _, k, step, loss, mean_q, epsilon, lr = message
            reported[k] = step
            for name, scalar in (("losses/td_loss", loss), ("losses/q_values", mean_q), ("charts/epsilon", epsilon),
                                 ("charts/learning_rate", lr),
                                 ("charts/SPS", (shared.global_step.value - start_step) / (time.time() - start_time))):
                writer.add_scalar(name, scalar, step)
        elif kind == "paused":
            if message[2] == checkpoint_number:
                paused[message[1]] = message[3]
        elif kind == "done":
            finished.add(message[1])
            worker_states[message[1]] = message[2]
        elif kind == "nan":
            raise FloatingPointError(message[2])
        elif kind == "error":
            raise RuntimeError(f"worker {message[1]} failed:\n{message[2]}")

    def release(everything: bool = False) -> None:
        """Write the waiting episodes that no worker can precede any more, in step order."""
        frontier = math.inf if everything else min(
            (step for k, step in enumerate(reported) if k not in finished), default=math.inf)
        while pending and pending[0][0] <= frontier:
            step, _, episodic_return, episodic_length = heapq.heappop(pending)
            episode_log.writerow([step, episodic_return, episodic_length, round(elapsed_before + time.time() - start_time, 3)])
            episode_file.flush()
            writer.add_scalar("charts/episodic_return", episodic_return, step)
            writer.add_scalar("charts/episodic_length", episodic_length, step)
            recent_returns.append(episodic_return)

    def receive(timeout: float) -> None:
        """Handle the messages waiting (waiting up to timeout for the first) and write the episodes they
        release; about every half second, make sure that no worker has died without a word (killed from
        outside, say)."""
        nonlocal last_check
        try:
            handle(shared.messages.get(timeout=timeout))
            for _ in range(1000):  # what else has arrived, without waiting
                handle(shared.messages.get_nowait())
        except queue_module.Empty:
            pass
        release()
        if time.time() - last_check < 0.5:
            return
        last_check = time.time()
        for k, process in enumerate(workers):
            if k in finished or process.exitcode is None:
                continue
            deadline = time.time() + 2.0  # its last messages may still be on their way
            while k not in finished and time.time() < deadline:
                try:
                    handle(shared.messages.get(timeout=0.1))
                except queue_module.Empty:
                    pass
            if k not in finished:
                raise RuntimeError(f"worker {k} died with exit code {process.exitcode}")

    def save_checkpoint(stop_after: bool = False) -> int:
        """Pause every worker at its next safe point, write what they and the shared state hold, release
        them (or, with stop_after, stop them: no step is taken past the checkpoint). Each worker's "paused"
        follows its episodes in the queue, so every episode up to the checkpoint's step is in episodes.csv
        before checkpoint.pt names that step. Returns that step."""
        nonlocal checkpoint_number
        checkpoint_number += 1
        paused.clear()
        shared.pause_requested.value = checkpoint_number
        while any(k not in paused and k not in finished for k in range(args.num_workers)):
            receive(0.05)
        release(everything=True)  # no worker takes a step until released: none can report an earlier episode
        states = [paused.get(k) or worker_states[k] for k in range(args.num_workers)]  # finished: as it ended
        step = shared.global_step.value
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(args), "model": q_net.state_dict(),
            "target": target_net.state_dict(), "optimizer": optimizer.state_dict(), "global_step": step,
            "elapsed": elapsed_before + time.time() - start_time, "workers": states,
        }, os.path.join(run_dir, "checkpoint.pt"))
        if stop_after:
            shared.stop.set()  # seen by the paused workers before the release below
        shared.pause_released.value = checkpoint_number
        return step

    next_checkpoint = (global_step // args.checkpoint_every + 1) * args.checkpoint_every if args.checkpoint_every else None
    saved_step = None
    try:
        # The workers start before any logging thread exists in this process (safer with fork).
        for process in workers:
            process.start()
        if args.track:  # wandb mirrors the TensorBoard logs; set WANDB_MODE=offline to stay off the network
            import wandb

            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args),
                       name=os.path.basename(run_dir), dir=run_dir, id=os.path.basename(run_dir), resume="allow",
                       sync_tensorboard=True)
        # Everything logged at steps up to the checkpoint's was logged before it was written; what a killed
        # attempt logged after it is purged, as this run logs those steps again.
        if checkpoint is not None:
            wait_past_event_files(run_dir)
        writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint is not None else None)
        if checkpoint is None:
            table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
            writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous_handlers[sig] = signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
            except ValueError:  # not the main thread: leave signals alone
                pass

        while len(finished) < args.num_workers:
            receive(0.05)
            step = shared.global_step.value
            progress.update(min(step, args.total_timesteps), recent_returns)
            if stop_signal:
                saved_step = save_checkpoint(stop_after=True)
                break
            if next_checkpoint is not None and step >= next_checkpoint and len(finished) < args.num_workers:
                save_checkpoint()
                next_checkpoint = (shared.global_step.value // args.checkpoint_every + 1) * args.checkpoint_every
        release(everything=True)
    except BaseException:
        if writer is not None:
            writer.close()  # its thread would keep the process alive
        raise
    finally:
        # Stop whatever still runs: at once after an error or a signal, and in any case within seconds.
        shared.stop.set()
        shared.pause_released.value = checkpoint_number + 1
        deadline = time.time() + 5
        while any(process.is_alive() for process in workers) and time.time() < deadline:
            try:  # keep the queue drained, so that no worker blocks on exit flushing it
                shared.messages.get(timeout=0.05)
            except queue_module.Empty:
                pass
        for process in workers:
            if process.is_alive():
                process.kill()
            if process.pid is not None:  # started
                process.join()
        shared.messages.close()
        progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        episode_file.close()
        if writer is not None:
            writer.flush()
        torch.set_num_threads(threads_before)

    if saved_step is not None:
        print(f"\nstopped by signal {stop_signal[0]} at step {saved_step}; resume with --resume {run_dir}")
        writer.close()
        return {"interrupted": True, "global_step": saved_step, "run_dir": run_dir}
    global_step = shared.global_step.value
    progress.update(global_step, recent_returns, force=True)
    if args.checkpoint_every:
        save_checkpoint()
    elapsed = elapsed_before + time.time() - start_time
    summary = {
        "algo": "async_q", "method": args.method, "env_id": args.env_id, "seed": args.seed,
        "num_workers": args.num_workers, "total_steps": global_step,
        "sps": int((global_step - start_step) / (time.time() - start_time)), "wall_time": round(elapsed, 1),
        "args": dataclasses.asdict(args), "versions": package_versions(),
    }
    if args.save_model:
        save_torch({"script": SCRIPT, "args": dataclasses.asdict(args), "model": q_net.state_dict()},
                   os.path.join(run_dir, "model.pt"))
    if args.eval_episodes:
        torch.set_num_threads(args.threads or 1)
        eval_returns = evaluate(q_net, dataclasses.replace(args, capture_video=False), args.eval_episodes,
                                args.seed + 100_000, args.eval_deterministic, "")
        torch.set_num_threads(threads_before)
        summary["eval"] = {"episodes": len(eval_returns), "deterministic": args.eval_deterministic,
                           "mean_return": float(np.mean(eval_returns)), "std_return": float(np.std(eval_returns))}
        writer.add_scalar("eval/mean_return", summary["eval"]["mean_return"], global_step)
    write_json(os.path.join(run_dir, "summary.json"), summary)
    writer.close()
    if args.track:
        wandb.finish()
    result = (f"; evaluation: {summary['eval']['mean_return']:.2f} +- {summary['eval']['std_return']:.2f} over "
              f"{args.eval_episodes} episodes" if args.eval_episodes else "")
    print(f"done: {global_step:,} steps at {summary['sps']:,} steps/s in {run_dir}{result}")
    return summary


def parse_args(argv: list[str]) -> Args | EvalArgs:
    """`evaluate MODEL ...` gives EvalArgs. Anything else gives training Args: the preset named by
    --preset (default classic), with the other flags applied over it."""
    if argv[:1] == ["evaluate"]:
        return tyro.cli(EvalArgs, args=argv[1:], prog=f"{SCRIPT} evaluate")
    preset = "classic"
    for i, arg in enumerate(argv):
        if arg == "--preset" and i + 1 < len(argv):
            preset = argv[i + 1]
        elif arg.startswith("--preset="):
            preset = arg.split("=", 1)[1]
    if preset not in PRESETS:
        raise ConfigError(f"unknown --preset {preset!r}; choose one of {', '.join(PRESETS)}")
    return tyro.cli(Args, default=PRESETS[preset], args=argv, description=__doc__)


def cli(argv: list[str]) -> None:
    """The command line: train, or `evaluate MODEL`. A bad setting or a diverged run ends in one line on
    stderr and a non-zero exit, never a traceback."""
    try:
        args = parse_args(argv)
        main_evaluate(args) if isinstance(args, EvalArgs) else main(args)
    except ConfigError as error:
        sys.exit(f"{SCRIPT}: error: {error}")
    except FloatingPointError as error:
        sys.exit(f"{SCRIPT}: stopped: {error}")


if __name__ == "__main__":
    cli(sys.argv[1:])
