"""Asynchronous advantage actor-critic, A3C (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement
Learning", Algorithm S3), with lock-free Hogwild! updates (Recht et al. 2011) of one shared network.

Each worker process has its own environment and a local copy of the network. It copies the global weights,
takes t_max steps, computes n-step returns bootstrapped from its value estimate, and applies the gradient
of the policy, value and entropy terms to the global weights through one RMSProp whose statistics all the
workers share. No locks guard the weights; only the global step counter has one.

    python algos/a3c_hogwild.py --env-id CartPole-v1 --num-workers 2
    python algos/a3c_hogwild.py --preset atari --env-id BreakoutNoFrameskip-v4 --num-workers 16
    python algos/a3c_hogwild.py --preset atari --env-id PongNoFrameskip-v4 --lstm
    python algos/a3c_hogwild.py evaluate runs/<run>/model.pt --episodes 10

Give it no more workers than the machine has cores: each worker is a process with one torch thread, and
a worker that waits for a core slows every update it shares weights with (more than 4 per core is refused
without --oversubscribe).

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
from torch.distributions import Categorical
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "a3c_hogwild.py"  # names this script in messages, checkpoints and models

gym.register_envs(ale_py)  # the ALE/ and *NoFrameskip-v4 ids; the ROMs ship inside ale-py
try:  # the MinAtar/*-v1 ids (Young & Tian 2019), when the minatar package is installed
    import minatar.gym

    if "MinAtar/Breakout-v1" not in gym.envs.registry:
        minatar.gym.register_envs()
except ImportError:
    pass


@dataclass
class Args:
    # --- common to every script ---
    preset: Literal["classic", "atari"] = "classic"
    """settings for a family of environments: classic (classic control: a2c_atari.py's classic values, as the paper has no such table), atari (the paper's Atari settings). Other flags override its values; `--preset atari --help` shows its defaults"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of the main process; worker k seeds random, numpy, torch and its environment with seed + k"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 500_000
    """environment steps to train for, summed over the workers (on Atari a step is 4 frames)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic. No effect here: the workers run on CPU. A run with one worker repeats exactly; with more, Hogwild's lock-free updates interleave differently every time"""
    cuda: bool = True
    """kept for the common interface; A3C's workers are CPU processes, as in the paper, so no GPU is used"""
    threads: int | None = None
    """torch CPU threads of the main process, which only evaluates at the end (default 1). Each worker always uses 1"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "a3c"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of worker 0's episodes into RUN_DIR/videos"""
    save_model: bool = False
    """write RUN_DIR/model.pt at the end: weights and args"""
    run_dir: str | None = None
    """where the run writes its files; default runs/{env_id}__{exp_name}__{seed}__{timestamp}"""
    checkpoint_every: int = 0
    """write RUN_DIR/checkpoint.pt every this many env steps (0: only when interrupted); the workers pause while it is written"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of the final evaluation written to summary.json (0 skips it)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action instead of sampling"""

    # --- A3C ---
    num_workers: int = 16
    """actor-learner processes. Paper: 16 threads. Use at most one per core; more than 4 per core needs --oversubscribe"""
    oversubscribe: bool = False
    """allow more than 4 worker processes per core; without it a larger --num-workers is refused"""
    num_steps: int = 5
    """steps per worker between updates, t_max. Paper: 5 (t_max = I_AsyncUpdate)"""
    learning_rate: float = 7e-4
    """step size of the shared optimiser. 7e-4: the A3C authors' value (the paper samples LogUniform(1e-4, 1e-2)); classic: 1e-3"""
    anneal: bool = True
    """anneal the learning rate linearly to 0 by the global step count (paper's experimental setup)"""
    gamma: float = 0.99
    """discount factor. Paper: 0.99"""
    ent_coef: float = 0.01
    """entropy bonus beta. Paper: 0.01"""
    vf_coef: float = 0.5
    """weight of the value loss (R - V)^2: the paper scales the value gradient by 0.5"""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """shared RMSProp (the paper's: one set of statistics for all workers) or shared Adam (same learning rate)"""
    rms_decay: float = 0.99
    """RMSProp decay alpha of the mean square. Paper: 0.99"""
    rms_eps: float = 0.1
    """RMSProp epsilon, added inside the square root (TensorFlow's placement). Paper: 0.1"""
    adam_eps: float = 1e-8
    """Adam epsilon (Kingma & Ba 2015's default); Adam's betas are theirs too, 0.9 and 0.999"""
    max_grad_norm: float = 40.0
    """clip each worker's gradient to this global norm. The paper is silent; OpenAI's universe-starter-agent A3C: 40"""
    lstm: bool = False
    """a recurrent agent: an LSTM after the dense layer (paper's A3C LSTM), its state carried across updates and reset at episode ends"""
    lstm_size: int = 256
    """units of the LSTM. Paper: 256"""


PRESETS = {
    # The paper has no classic-control settings. a2c_atari.py's classic values, which worked at once on
    # CartPole-v1 with 2 workers (tests/test_a3c_learning.py: seeds 1-3 reached a 20-episode mean of 450
    # after 34k-69k steps): RMSProp epsilon 1e-5 (a CartPole gradient is far smaller than sqrt(0.1)), lr
    # 1e-3, no entropy bonus. The recurrent agent on CartPole wanted beta 0.01 and the value loss weighted
    # 0.25, as its LSTM feeds both heads (tests/test_a3c_learning.py says what was measured).
    "classic": Args(learning_rate=1e-3, rms_eps=1e-5, ent_coef=0.0),
    # The paper's Atari settings (its experimental setup) with its 16 workers. 10M steps = 40M frames is a
    # budget chosen here; the paper's "1 day" is about 320M frames over its 16 threads.
    "atari": Args(preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=10_000_000),
}


@dataclass
class EvalArgs:
    """Evaluate a model saved with --save-model."""

    model_path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL_PT")]
    """the model.pt file of a run"""
    episodes: int = 10
    """episodes to average over"""
    seed: int = 12345
    """seed of the evaluation environment"""
    deterministic: bool = False
    """act with the most likely action instead of sampling"""
    capture_video: bool = False
    """record the episodes next to the model, in videos/"""


class ConfigError(ValueError):
    """A setting that cannot work, found before training starts."""


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


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
    if args.total_timesteps <= 0 or args.num_workers <= 0 or args.num_steps <= 0:
        raise ConfigError("--total-timesteps, --num-workers and --num-steps must be positive")
    if args.total_timesteps < args.num_workers * args.num_steps:
        raise ConfigError(
            f"--total-timesteps {args.total_timesteps} is less than one update per worker, --num-workers x "
            f"--num-steps = {args.num_workers * args.num_steps}; raise it or use fewer workers")
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("gamma", "rms_decay"):
        value = getattr(args, name)
        if not 0 < value <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {value}")
    if args.rms_eps <= 0 or args.adam_eps <= 0 or args.max_grad_norm <= 0:
        raise ConfigError("--rms-eps, --adam-eps and --max-grad-norm must be positive")
    if args.ent_coef < 0 or args.vf_coef < 0:
        raise ConfigError("--ent-coef and --vf-coef must be non-negative")
    if args.lstm_size <= 0:
        raise ConfigError(f"--lstm-size must be positive, got {args.lstm_size}")
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
    """A3C here handles vector or image observations, and discrete actions (a softmax policy)."""
    if isinstance(action_space, gym.spaces.Box):
        raise ConfigError(f"{SCRIPT} supports Discrete action spaces only, not {action_space}; "
                          "for continuous actions use ppo.py, trpo.py, ddpg.py, td3.py or sac.py")
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"{SCRIPT} supports Discrete action spaces only, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"{SCRIPT} supports 1-D vector or image observations, not {observation_space}")


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
        # ALE renders greyscale itself, a third of the work of RGB then conversion.
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


def make_vector_env(args: Args, seed: int, video_dir: str, num_envs: int = 1, capture_video: bool | None = None):
    """Each worker steps one env; a SAME_STEP vector env of one gives the final observation and the
    episode statistics in the same form as the other scripts."""
    capture = args.capture_video if capture_video is None else capture_video
    return gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, capture, video_dir) for i in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


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


def nstep_returns(
    rewards: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The n-step bootstrapped returns of a rollout of T steps (Algorithm S3 of the paper's supplement):
    R = V(s_T) after the last step, then R_t = r_t + gamma * R_{t+1} backwards, so step t looks ahead
    T - t steps. Shapes [T] or [T, N]; next_value has the shape of one step.

    An episode that ends at step t restarts the return: terminated means no future (R_{t+1} = 0),
    truncated means it was cut off, so bootstrap from final_values[t], the value of its final
    observation. Terminated and truncated together count as terminated.
    """
    returns = torch.zeros_like(rewards)
    future = next_value
    for t in reversed(range(rewards.shape[0])):
        future = torch.where(truncated[t], final_values[t], future)
        future = torch.where(terminated[t], torch.zeros_like(future), future)
        future = rewards[t] + gamma * future
        returns[t] = future
    return returns


def annealed_lr(learning_rate: float, global_step: int, total_timesteps: int) -> float:
    """The paper's schedule: the learning rate falls linearly from its initial value to 0 at the last
    global step, whichever worker takes it."""
    return learning_rate * max(0.0, 1.0 - global_step / total_timesteps)


class SharedRMSprop(torch.optim.Optimizer):
    """RMSProp with one set of statistics shared by every worker (the paper's "shared RMSProp", section
    S2), in TensorFlow's form, which the paper's code used: epsilon inside the root.

        v <- decay * v + (1 - decay) * g^2
        p <- p - lr * g / sqrt(v + eps)

    The state (mean square and step count of each parameter) is made when the optimiser is built, so
    that share_memory() can move all of it to shared memory before the workers start; each worker then
    steps its own handle on the same tensors. torch.optim.RMSprop makes its state lazily, per process,
    which would give each worker private statistics, and places eps outside the root. The step count is
    not used by the update; it is kept for inspection and checkpoints, and increments without a lock
    (two workers stepping at the same instant can count once).
    """

    def __init__(self, params, lr: float = 7e-4, decay: float = 0.99, eps: float = 0.1):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = torch.zeros((), dtype=torch.int64)
                self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def share_memory(self) -> "SharedRMSprop":
        for state in self.state.values():
            for tensor in state.values():
                tensor.share_memory_()
        return self

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads, states = [p.grad for p in params], [self.state[p] for p in params]
            square_avgs = [state["square_avg"] for state in states]
            # torch's _foreach ops: one call for every parameter instead of one per parameter.
            torch._foreach_add_([state["step"] for state in states], 1)
            torch._foreach_mul_(square_avgs, group["decay"])
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - group["decay"])
            denominators = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])


class SharedAdam(torch.optim.Optimizer):
    """Adam (Kingma & Ba 2015) with its moments and step count in shared memory, one set for all
    workers. The step count drives the bias correction, so a per-process count would make each worker
    correct as if it were the only one; here it is shared (incremented without a lock, as the moments)."""

    def __init__(self, params, lr: float = 7e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = torch.zeros((), dtype=torch.int64)
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)

    def share_memory(self) -> "SharedAdam":
        for state in self.state.values():
            for tensor in state.values():
                tensor.share_memory_()
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
                step = int(state["step"])
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denominator = (state["exp_avg_sq"] / (1 - beta2 ** step)).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1 ** step))


def make_optimizer(args: Args, params) -> torch.optim.Optimizer:
    if args.optimizer == "adam":
        return SharedAdam(params, lr=args.learning_rate, eps=args.adam_eps)
    return SharedRMSprop(params, lr=args.learning_rate, decay=args.rms_decay, eps=args.rms_eps)


def actor_critic_loss(
    logprob: torch.Tensor, entropy: torch.Tensor, value: torch.Tensor, returns: torch.Tensor,
    ent_coef: float, vf_coef: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The A3C loss of one rollout: policy gradient with advantage R - V (V not differentiated there),
    minus beta times the entropy, plus vf_coef times the squared error of V. Averaged over the rollout's
    steps (the paper sums them; with a fixed t_max that only rescales the learning rate). Returns (loss,
    policy loss, value loss, entropy)."""
    advantages = returns - value.detach()
    pg_loss = -(logprob * advantages).mean()
    v_loss = ((returns - value) ** 2).mean()
    entropy_mean = entropy.mean()
    return pg_loss - ent_coef * entropy_mean + vf_coef * v_loss, pg_loss, v_loss, entropy_mean


def give_gradients(local: nn.Module, shared: nn.Module) -> None:
    """Point the global parameters' gradients at the worker's own (the parameters' .grad is a per-process
    attribute, so this neither copies nor touches what other workers see)."""
    for shared_param, local_param in zip(shared.parameters(), local.parameters()):
        shared_param.grad = local_param.grad


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than a constant."""
    if target.numel() < 2:
        return float("nan")
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases, as in the authors' baselines code."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def is_channel_last(shape: tuple[int, ...]) -> bool:
    """Image observations come as C x H x W from the Atari chain (4 x 84 x 84) but as H x W x C from
    MinAtar (10 x 10 x C). Read as channel-last when the last axis is no longer than either of the first
    two; such observations are transposed before the convolutions."""
    return len(shape) == 3 and shape[2] <= min(shape[0], shape[1])


class Agent(nn.Module):
    """Policy and value heads on one trunk, as in the paper:
    - Atari-sized images: the 2013 DQN network (Mnih et al. 2013): 16 8x8 stride 4, 32 4x4 stride 2,
      256 dense, ReLU; images smaller than 20x20: MinAtar's 16 3x3 stride 1, 128 dense;
    - vector observations: 64-64 tanh units, one MLP for the policy and one for the value (separate, so
      the value error's scale cannot disturb the policy's features);
    - `lstm`: an LSTM of lstm_size units after the dense layer (the paper's A3C LSTM) feeding both heads;
      on vector observations one 64-unit tanh layer comes before it, shared by the heads.
    The recurrent state is (h, c), each [batch, lstm_size]; the feed-forward agent takes and gives None."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Discrete,
                 lstm: bool = False, lstm_size: int = 256):
        super().__init__()
        shape = observation_space.shape
        self.image = len(shape) == 3
        self.channel_last = is_channel_last(shape)
        self.recurrent = lstm
        self.lstm_size = lstm_size
        n_out = int(action_space.n)
        if self.image:
            channels, height, width = (shape[2], shape[0], shape[1]) if self.channel_last else shape
            if min(height, width) >= 20:
                convs = [layer_init(nn.Conv2d(channels, 16, 8, stride=4)), nn.ReLU(),
                         layer_init(nn.Conv2d(16, 32, 4, stride=2)), nn.ReLU()]
                hidden = 256
            else:
                convs, hidden = [layer_init(nn.Conv2d(channels, 16, 3, stride=1)), nn.ReLU()], 128
            body = nn.Sequential(*convs, nn.Flatten())
            with torch.no_grad():
                n_flat = body(torch.zeros(1, channels, height, width)).shape[1]
            self.trunk = nn.Sequential(body, layer_init(nn.Linear(n_flat, hidden)), nn.ReLU())
        elif lstm:
            hidden = 64
            self.trunk = nn.Sequential(layer_init(nn.Linear(int(np.prod(shape)), hidden)), nn.Tanh())
        if self.image or lstm:
            if lstm:
                self.lstm = nn.LSTMCell(hidden, lstm_size)
                nn.init.constant_(self.lstm.bias_ih, 0.0)
                nn.init.constant_(self.lstm.bias_hh, 0.0)
                hidden = lstm_size
            self.actor = layer_init(nn.Linear(hidden, n_out), std=0.01)
            self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)
        else:
            n_in = int(np.prod(shape))
            self.trunk = nn.Identity()
            self.actor = nn.Sequential(
                layer_init(nn.Linear(n_in, 64)), nn.Tanh(),
                layer_init(nn.Linear(64, 64)), nn.Tanh(),
                layer_init(nn.Linear(64, n_out), std=0.01),
            )
            self.critic = nn.Sequential(
                layer_init(nn.Linear(n_in, 64)), nn.Tanh(),
                layer_init(nn.Linear(64, 64)), nn.Tanh(),
                layer_init(nn.Linear(64, 1), std=1.0),
            )

    def initial_state(self, batch: int = 1):
        if not self.recurrent:
            return None
        return torch.zeros(batch, self.lstm_size), torch.zeros(batch, self.lstm_size)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float()
        if self.image:
            if obs.dtype == torch.uint8:
                x = x / 255.0
            if self.channel_last:
                x = x.permute(0, 3, 1, 2)
        return self.trunk(x)

    def core(self, obs: torch.Tensor, state):
        """The features both heads read, and the next recurrent state, for one step of a batch."""
        hidden = self.features(obs)
        if self.recurrent:
            state = self.lstm(hidden, state)
            hidden = state[0]
        return hidden, state

    def act(self, obs: torch.Tensor, state):
        """Sample actions (Gumbel-max: argmax(log p - log E), E ~ Exp(1), no distribution object) for one
        step; returns (action, next state)."""
        hidden, state = self.core(obs, state)
        log_probs = self.actor(hidden).log_softmax(-1)
        action = (log_probs - torch.empty_like(log_probs).exponential_().log()).argmax(-1)
        return action, state

    def get_value(self, obs: torch.Tensor, state) -> torch.Tensor:
        return self.critic(self.core(obs, state)[0]).squeeze(-1)

    def evaluate_rollout(self, obs: torch.Tensor, actions: torch.Tensor, state, starts: torch.Tensor):
        """Log-probabilities, entropies and values of a rollout of T steps of one env, with gradients.
        The recurrent agent replays the rollout from its first state, zeroing the state before each step
        that begins an episode (starts[t]); the feed-forward one takes the whole rollout as one batch."""
        if self.recurrent:
            keep = (~starts).float().unsqueeze(-1)
            features, outputs = self.features(obs), []
            for t in range(obs.shape[0]):
                state = (state[0] * keep[t], state[1] * keep[t])
                state = self.lstm(features[t : t + 1], state)
                outputs.append(state[0])
            hidden = torch.cat(outputs)
        else:
            hidden = self.features(obs)
        log_probs = self.actor(hidden).log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1), entropy, self.critic(hidden).squeeze(-1)

    def policy(self, obs: torch.Tensor, state, deterministic: bool = False):
        """Actions for evaluation: sampled, or the most likely; returns (action, next state)."""
        hidden, state = self.core(obs, state)
        dist = Categorical(logits=self.actor(hidden), validate_args=False)
        return (dist.probs.argmax(-1) if deterministic else dist.sample()), state


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


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


EPISODE_FIELDS = ["global_step", "episodic_return", "episodic_length", "wall_time"]


def open_episode_log(run_dir: str, keep_until_step: int | None):
    """Open episodes.csv for appending. On resume, first drop the rows written after the checkpoint:
    those steps are taken again, and keeping both would duplicate them."""
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
    for package in ("torch", "gymnasium", "numpy", "ale-py", "minatar", "tyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari), in one env."""
    envs = make_vector_env(args, seed, video_dir)
    obs, _ = envs.reset(seed=seed)
    state = agent.initial_state(1)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.inference_mode():
            action, state = agent.policy(torch.as_tensor(obs), state, deterministic)
        obs, _, terminated, truncated, infos = envs.step(action.numpy())
        if state is not None and (terminated[0] or truncated[0]):
            state = agent.initial_state(1)
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def build_agent(args: Args) -> Agent:
    """The agent for args' environment, built from the spaces of a throwaway env."""
    envs = make_vector_env(args, args.seed, "", capture_video=False)
    try:
        check_spaces(envs.single_observation_space, envs.single_action_space)
        return Agent(envs.single_observation_space, envs.single_action_space, args.lstm, args.lstm_size)
    finally:
        envs.close()


def load_agent(model_path: str) -> tuple[Agent, Args]:
    """Rebuild the agent saved by --save-model: weights and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    agent = build_agent(args)
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent, args


def main_evaluate(eval_args: EvalArgs) -> dict:
    agent, args = load_agent(eval_args.model_path)
    args = dataclasses.replace(args, capture_video=eval_args.capture_video)
    video_dir = os.path.join(os.path.dirname(os.path.abspath(eval_args.model_path)), "videos")
    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        returns = evaluate(agent, args, eval_args.episodes, eval_args.seed, eval_args.deterministic, video_dir)
    finally:
        torch.set_num_threads(threads_before)
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
    """What the main process and the workers share. The counter holds the global step: a worker claims
    its next rollout's steps from it under its lock, so the steps taken add up to total_timesteps exactly.
    pause/go let the main process stop every worker between updates (for a consistent checkpoint); stop
    ends them. Workers report to the main process through `messages` and never write files."""

    counter: object  # mp.Value("q")
    messages: object  # mp.Queue
    pause: object  # mp.Event
    go: object  # mp.Event
    stop: object  # mp.Event
    parent_pid: int


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this worker if the main process dies, even by SIGKILL (Linux); elsewhere the
    worker notices at its next update that its parent changed."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent_pid:
        os._exit(1)


def claim_steps(counter, num_steps: int, total: int) -> tuple[int, int]:
    """Claim the next rollout's steps from the global counter: (first global step, number of steps)."""
    with counter.get_lock():
        start = counter.value
        n = min(num_steps, total - start)
        counter.value = start + n
    return start, n


@dataclass
class Rollout:
    """What update() learns from: n steps of one worker's env (n <= t_max), each step's observation, action,
    reward and episode end, the value of the final observation where an episode was cut off (0 elsewhere),
    which steps begin an episode (the LSTM's state is zeroed before them), the recurrent state before the
    first step (None without --lstm) and V(s_n), the value after the last step."""

    obs: torch.Tensor  # [n, *observation shape]
    actions: torch.Tensor  # [n], long
    rewards: torch.Tensor  # [n]
    terminated: torch.Tensor  # [n], bool
    truncated: torch.Tensor  # [n], bool
    final_values: torch.Tensor  # [n]
    starts: torch.Tensor  # [n], bool
    first_state: tuple | None = None
    next_value: torch.Tensor | None = None

    @classmethod
    def allocate(cls, observation_space: gym.spaces.Box, t_max: int) -> "Rollout":
        """Storage for t_max steps, made once per worker; uint8 frames stay uint8."""
        dtypes = {np.dtype(np.uint8): torch.uint8, np.dtype(bool): torch.bool}
        dtype = dtypes.get(np.dtype(observation_space.dtype), torch.float32)
        return cls(torch.zeros((t_max, *observation_space.shape), dtype=dtype), torch.zeros(t_max, dtype=torch.long),
                   torch.zeros(t_max), torch.zeros(t_max, dtype=torch.bool), torch.zeros(t_max, dtype=torch.bool),
                   torch.zeros(t_max), torch.zeros(t_max, dtype=torch.bool))

    def first(self, n: int) -> "Rollout":
        """The first n steps, as views of the storage."""
        return Rollout(self.obs[:n], self.actions[:n], self.rewards[:n], self.terminated[:n], self.truncated[:n],
                       self.final_values[:n], self.starts[:n], self.first_state, self.next_value)


def collect_rollout(local: Agent, envs, storage: Rollout, n: int, next_obs: torch.Tensor, state, episode_start: bool):
    """The acting half of Algorithm S3: n steps of the worker's env with its local agent, written into
    storage. Returns (the rollout of those n steps, the next observation, the recurrent state and whether
    the next step begins an episode, all three to carry into the next rollout, and the episodes that
    ended as (index of their last step in the rollout, return, length))."""
    storage.first_state = state
    storage.final_values.zero_()
    episodes = []
    for t in range(n):
        storage.obs[t], storage.starts[t] = next_obs[0], episode_start
        with torch.no_grad():
            action, state = local.act(next_obs, state)
        obs_np, reward, terminated, truncated, infos = envs.step(action.numpy())
        next_obs = torch.as_tensor(obs_np)
        storage.actions[t], storage.rewards[t] = action[0], float(reward[0])
        storage.terminated[t], storage.truncated[t] = bool(terminated[0]), bool(truncated[0])
        if truncated[0]:  # the value of the cut-off episode's final observation
            with torch.no_grad():
                storage.final_values[t] = local.get_value(torch.as_tensor(infos["final_obs"][0][None]), state)[0]
        episode_start = bool(terminated[0] or truncated[0])
        if episode_start:
            state = local.initial_state(1)
            episodes.extend((t, float(r), int(length)) for r, length in zip(*finished_episodes(infos)))
    with torch.no_grad():
        storage.next_value = local.get_value(next_obs, state)[0]
    return storage.first(n), next_obs, state, episode_start, episodes


def update(local: Agent, model: Agent, optimizer: torch.optim.Optimizer, args: Args, rollout: Rollout, start: int,
           rank: int = 0) -> dict:
    """The learning half of Algorithm S3, for a rollout whose steps were claimed from global step `start`:
    n-step returns, the loss and its gradient in the local agent, clipped to --max-grad-norm, then applied
    to the global weights by the shared optimiser at the learning rate annealed to `start`. A loss that is
    not finite raises FloatingPointError before anything global changes. Returns what is worth logging:
    the learning rate, the loss terms (tensors), the values and the returns."""
    returns = nstep_returns(rollout.rewards, rollout.next_value, rollout.terminated, rollout.truncated,
                            rollout.final_values, args.gamma)
    logprob, entropy, value = local.evaluate_rollout(rollout.obs, rollout.actions, rollout.first_state, rollout.starts)
    loss, pg_loss, v_loss, entropy_mean = actor_critic_loss(logprob, entropy, value, returns,
                                                            args.ent_coef, args.vf_coef)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss.item()} at step {start + len(returns):,} in worker {rank}; "
                                 f"{safe_to_resume(args.run_dir)}")
    local.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)
    give_gradients(local, model)
    lr = annealed_lr(args.learning_rate, start, args.total_timesteps) if args.anneal else args.learning_rate
    optimizer.param_groups[0]["lr"] = lr
    optimizer.step()
    return {"lr": lr, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy_mean, "value": value.detach(),
            "returns": returns}


def worker(rank: int, args: Args, model: Agent, optimizer: torch.optim.Optimizer, shared: Shared, seed: int) -> None:
    """One actor-learner: Algorithm S3 of the paper, looping until the global counter reaches the total.
    Sends ("episode", rank, step, return, length) for each finished episode, ("progress", rank, step, stats)
    now and then (no episode of this worker will come at or below that step), ("paused", rank, step),
    ("done", rank, step) and, on an exception, ("error", rank, type name, message, traceback)."""
    messages = shared.messages
    try:
        die_with_parent(shared.parent_pid)
        for sig in (signal.SIGINT, signal.SIGTERM):  # the main process decides when workers stop
            signal.signal(sig, signal.SIG_IGN)
        torch.set_num_threads(1)
        seed_everything(seed)
        envs = make_vector_env(args, seed, os.path.join(args.run_dir, "videos"), capture_video=args.capture_video and rank == 0)
        local = Agent(envs.single_observation_space, envs.single_action_space, args.lstm, args.lstm_size)
        local_params, shared_params = list(local.parameters()), list(model.parameters())
        storage = Rollout.allocate(envs.single_observation_space, args.num_steps)

        next_obs = torch.as_tensor(envs.reset(seed=seed)[0])
        state, episode_start = local.initial_state(1), True
        last_report, step = time.monotonic(), 0
        while not shared.stop.is_set():
            if shared.pause.is_set():
                messages.put(("paused", rank, step))
                shared.go.wait()
                continue
            if os.getppid() != shared.parent_pid:
                return
            start, n = claim_steps(shared.counter, args.num_steps, args.total_timesteps)
            if n == 0:
                break
            with torch.no_grad():  # sync: the global weights, as they are now (other workers keep writing)
                for local_param, shared_param in zip(local_params, shared_params):
                    local_param.copy_(shared_param)
            rollout, next_obs, state, episode_start, episodes = collect_rollout(
                local, envs, storage, n, next_obs, state, episode_start)
            for t, episodic_return, episodic_length in episodes:
                messages.put(("episode", rank, start + t + 1, episodic_return, episodic_length))
            step = start + n
            learned = update(local, model, optimizer, args, rollout, start, rank)

            now = time.monotonic()
            if now - last_report > 0.2:  # lets the main process write other workers' episodes in step order
                stats = None
                if rank == 0:  # one worker's losses stand for all
                    stats = {"charts/learning_rate": learned["lr"], "losses/policy_loss": learned["pg_loss"].item(),
                             "losses/value_loss": learned["v_loss"].item(), "losses/entropy": learned["entropy"].item(),
                             "losses/explained_variance": explained_variance(learned["value"], learned["returns"])}
                messages.put(("progress", rank, step, stats))
                last_report = now
        messages.put(("done", rank, step))
        envs.close()
    except BaseException as error:  # reported to the main process, which stops the others and raises
        messages.put(("error", rank, type(error).__name__, str(error), traceback.format_exc()))
        sys.exit(1)


class WorkerFailed(RuntimeError):
    """A worker process raised or died."""


class Coordinator:
    """The main process's side of the workers: it starts them, reads their messages, writes their
    episodes to episodes.csv in global-step order (each is held until every running worker has reported
    progress past its step), pauses them for checkpoints, and stops them, killing any that do not exit."""

    def __init__(self, args: Args, model: Agent, optimizer, start_step: int, on_episode, on_stats):
        context = mp.get_context("fork" if sys.platform.startswith("linux") else "spawn")
        self.shared = Shared(counter=context.Value("q", start_step), messages=context.Queue(),
                             pause=context.Event(), go=context.Event(), stop=context.Event(),
                             parent_pid=os.getpid())
        self.on_episode, self.on_stats = on_episode, on_stats
        self.num_workers = args.num_workers
        self.progress = [start_step] * args.num_workers
        self.finished: set[int] = set()
        self.pending: list = []  # heap of (step, arrival, return, length)
        self.arrivals = 0
        worker_seed = args.seed + (start_step if start_step else 0)  # a resumed run starts fresh episodes
        self.processes = [
            context.Process(target=worker, name=f"a3c-worker-{rank}", daemon=True,
                            args=(rank, args, model, optimizer, self.shared, worker_seed + rank))
            for rank in range(args.num_workers)
        ]
        try:
            for process in self.processes:
                process.start()
        except BaseException:  # a fork that failed (out of memory or processes): stop those already started
            self.close()
            raise

    @property
    def global_step(self) -> int:
        return self.shared.counter.value

    def running(self) -> bool:
        return len(self.finished) < self.num_workers

    def handle(self, message) -> str:
        kind, rank = message[0], message[1]
        if kind == "episode":
            heapq.heappush(self.pending, (message[2], self.arrivals, message[3], message[4]))
            self.arrivals += 1
        elif kind == "progress":
            self.progress[rank] = message[2]
            if message[3]:
                self.on_stats(message[3], message[2])
        elif kind in ("paused", "done"):
            self.progress[rank] = message[2]
            if kind == "done":
                self.finished.add(rank)
        elif kind == "error":
            _, _, name, text, trace = message
            if name == "FloatingPointError":  # a diverged loss, not a bug: its one-line message says it all
                raise FloatingPointError(text)
            print(f"a3c worker {rank} failed:\n{trace}", file=sys.stderr, flush=True)
            raise WorkerFailed(f"worker {rank} raised {name}: {text}")
        return kind

    def release(self, everything: bool = False) -> None:
        """Hand the held episodes that no worker can precede any more to on_episode, in step order."""
        frontier = math.inf if everything else min(
            (p for rank, p in enumerate(self.progress) if rank not in self.finished), default=math.inf)
        while self.pending and self.pending[0][0] <= frontier:
            step, _, episodic_return, episodic_length = heapq.heappop(self.pending)
            self.on_episode(step, episodic_return, episodic_length)

    def poll(self, timeout: float = 0.1) -> str | None:
        """Handle the messages waiting (at most `timeout` seconds for the first); check the workers live."""
        kind = None
        try:
            kind = self.handle(self.shared.messages.get(timeout=timeout))
            while True:
                kind = self.handle(self.shared.messages.get_nowait())
        except queue_module.Empty:
            pass
        self.release()
        for rank, process in enumerate(self.processes):
            if rank not in self.finished and process.exitcode is not None:
                self.drain_after_exit(rank, process)
        return kind

    def drain_after_exit(self, rank: int, process) -> None:
        """A worker exited without saying done: read what it sent last (its error, if any), else fail."""
        deadline = time.monotonic() + 2.0
        while rank not in self.finished and time.monotonic() < deadline:
            try:
                self.handle(self.shared.messages.get(timeout=0.1))
            except queue_module.Empty:
                pass
        if rank not in self.finished:
            raise WorkerFailed(f"worker {rank} died with exit code {process.exitcode} without reporting an error")

    def pause(self) -> None:
        """Return once every worker waits between updates: the weights, the optimiser's statistics and
        the counter are then consistent, and every episode up to the counter has been handed on."""
        self.shared.go.clear()
        self.shared.pause.set()
        waiting: set[int] = set()
        while len(waiting | self.finished) < self.num_workers:
            try:
                message = self.shared.messages.get(timeout=0.1)
            except queue_module.Empty:
                for rank, process in enumerate(self.processes):
                    if rank not in self.finished and process.exitcode is not None:
                        self.drain_after_exit(rank, process)
                continue
            if self.handle(message) == "paused":
                waiting.add(message[1])
        self.shared.pause.clear()
        self.release(everything=True)

    def go(self) -> None:
        self.shared.go.set()

    def close(self, grace: float = 5.0) -> None:
        """Stop every worker: ask, wait up to `grace` seconds (reading their messages meanwhile, so none
        blocks on a full pipe), then kill the rest. Nothing is left running."""
        self.shared.stop.set()
        self.shared.go.set()
        deadline = time.monotonic() + grace
        while any(p.is_alive() for p in self.processes) and time.monotonic() < deadline:
            try:
                self.shared.messages.get(timeout=0.05)
            except (queue_module.Empty, OSError, EOFError):
                pass
        for process in self.processes:
            if process.is_alive():
                process.kill()
            if process.pid is not None:  # started
                process.join(timeout=5)
        self.shared.messages.close()
        self.shared.messages.cancel_join_thread()


# --------------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------------


def main(args: Args) -> dict:
    """Train A3C and return the summary that is also written to RUN_DIR/summary.json. A run stopped by
    SIGINT or SIGTERM returns {"interrupted": True, "global_step", "run_dir"} and writes no summary."""
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        path = os.path.join(args.resume, "checkpoint.pt")
        args = dataclasses.replace(args_from_saved(checkpoint, path), resume=args.resume, run_dir=args.resume)
    check_env_id(args.env_id)
    check_args(args)
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir)
    if args.num_workers > available_cores():
        print(f"{SCRIPT}: warning: {args.num_workers} workers on {available_cores()} cores; workers that "
              f"wait for a core slow the others down (use --num-workers {available_cores()} or fewer)",
              file=sys.stderr, flush=True)

    threads_before = torch.get_num_threads()  # restored at the end, for callers in the same process
    torch.set_num_threads(args.threads or 1)
    try:
        seed_everything(args.seed)
        model, optimizer = build_shared(args)
        global_step, elapsed_before = 0, 0.0
        if checkpoint is not None:
            def load_state() -> None:
                nonlocal global_step, elapsed_before
                model.load_state_dict(checkpoint["model"])  # copied into the shared tensors
                optimizer.load_state_dict(checkpoint["optimizer"])
                optimizer.share_memory()  # load_state_dict put the optimiser's state in new, private tensors
                global_step, elapsed_before = int(checkpoint["global_step"]), float(checkpoint["elapsed"])

            restore(path, load_state)
        os.makedirs(run_dir, exist_ok=True)
        remove_stale_temporaries(run_dir)
        return train(args, model, optimizer, checkpoint, global_step, elapsed_before)
    finally:
        torch.set_num_threads(threads_before)


def build_shared(args: Args) -> tuple[Agent, torch.optim.Optimizer]:
    """The global agent and the shared optimiser, both in shared memory (the optimiser's statistics and step
    count included), so that every worker forked or spawned afterwards updates the same tensors."""
    model = build_agent(args)
    optimizer = make_optimizer(args, model.parameters())
    model.share_memory()
    optimizer.share_memory()
    return model, optimizer


def train(args: Args, model: Agent, optimizer, checkpoint, start_step: int, elapsed_before: float) -> dict:
    run_dir = args.run_dir
    episode_file, episode_log = open_episode_log(run_dir, start_step if checkpoint else None)
    recent_returns: deque = deque(maxlen=20)
    writer = None
    start_time = time.time()

    def on_episode(step: int, episodic_return: float, episodic_length: int) -> None:
        wall_time = elapsed_before + time.time() - start_time
        episode_log.writerow([step, episodic_return, episodic_length, round(wall_time, 3)])
        episode_file.flush()
        writer.add_scalar("charts/episodic_return", episodic_return, step)
        writer.add_scalar("charts/episodic_length", episodic_length, step)
        recent_returns.append(episodic_return)

    def on_stats(stats: dict, step: int) -> None:
        for name, value in stats.items():
            writer.add_scalar(name, value, step)
        writer.add_scalar("charts/SPS", int((step - start_step) / max(time.time() - start_time, 1e-9)), step)

    def save_checkpoint(step: int) -> None:
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(args), "model": model.state_dict(),
            "optimizer": optimizer.state_dict(), "global_step": step,
            "elapsed": elapsed_before + time.time() - start_time,
        }, os.path.join(run_dir, "checkpoint.pt"))

    stop_signal = []
    previous_handlers = {}
    # The workers are forked before any other thread (TensorBoard's, wandb's) exists in this process.
    try:
        workers = Coordinator(args, model, optimizer, start_step, on_episode, on_stats)
    except BaseException:
        episode_file.close()
        raise
    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous_handlers[sig] = signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
            except ValueError:  # not the main thread: leave signals alone
                pass
        if args.track:  # wandb mirrors the TensorBoard logs; set WANDB_MODE=offline to stay off the network
            import wandb

            wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args),
                       name=os.path.basename(run_dir), dir=run_dir, id=os.path.basename(run_dir), resume="allow",
                       sync_tensorboard=True)
        # Everything logged at steps up to the checkpoint's was logged before it was written; what a killed
        # attempt logged after it is purged, as this run logs those steps again.
        if checkpoint is not None:
            wait_past_event_files(run_dir)
        writer = SummaryWriter(run_dir, purge_step=start_step + 1 if checkpoint is not None else None)
        if checkpoint is None:
            table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
            writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        progress = Progress(args.total_timesteps, start_step)
        last_checkpoint = start_step
        try:
            while workers.running():
                workers.poll()
                step = workers.global_step
                progress.update(step, recent_returns)
                if stop_signal:
                    workers.pause()  # the workers stay paused until close() stops them: no step past the checkpoint
                    saved_step = workers.global_step
                    save_checkpoint(saved_step)
                    print(f"\nstopped by signal {stop_signal[0]} at step {saved_step}; "
                          f"resume with --resume {run_dir}", flush=True)
                    return {"interrupted": True, "global_step": saved_step, "run_dir": run_dir}
                if args.checkpoint_every and step // args.checkpoint_every > last_checkpoint // args.checkpoint_every:
                    workers.pause()
                    last_checkpoint = workers.global_step
                    save_checkpoint(last_checkpoint)
                    workers.go()
            workers.release(everything=True)
            global_step = workers.global_step
            progress.update(global_step, recent_returns, force=True)
        finally:
            progress.close()
    finally:
        workers.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        episode_file.close()
        if writer is not None:
            writer.flush()

    sps = int((global_step - start_step) / max(time.time() - start_time, 1e-9))
    if args.checkpoint_every:
        save_checkpoint(global_step)
    elapsed = elapsed_before + time.time() - start_time
    summary = {
        "algo": "a3c_hogwild", "env_id": args.env_id, "seed": args.seed, "total_steps": global_step,
        "sps": sps, "wall_time": round(elapsed, 1), "num_workers": args.num_workers,
        "args": dataclasses.asdict(args), "versions": package_versions(),
    }
    if args.save_model:
        save_torch({"script": SCRIPT, "args": dataclasses.asdict(args), "model": model.state_dict()},
                   os.path.join(run_dir, "model.pt"))
    if args.eval_episodes:
        eval_returns = evaluate(model, dataclasses.replace(args, capture_video=False), args.eval_episodes,
                                args.seed + 100_000, args.eval_deterministic, "")
        summary["eval"] = {"episodes": len(eval_returns), "deterministic": args.eval_deterministic,
                           "mean_return": float(np.mean(eval_returns)), "std_return": float(np.std(eval_returns))}
        writer.add_scalar("eval/mean_return", summary["eval"]["mean_return"], global_step)
    write_json(os.path.join(run_dir, "summary.json"), summary)
    writer.close()
    if args.track:
        wandb.finish()
    result = (f"; evaluation: {summary['eval']['mean_return']:.2f} +- {summary['eval']['std_return']:.2f} over "
              f"{args.eval_episodes} episodes" if args.eval_episodes else "")
    print(f"done: {global_step:,} steps at {summary['sps']:,} steps/s with {args.num_workers} workers in {run_dir}{result}")
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
