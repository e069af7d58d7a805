"""Soft Actor-Critic with a learned temperature (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications").

Off-policy maximum-entropy actor-critic for continuous actions. Two Q networks learn a soft Bellman target
built from the smaller of their slowly moving target copies; a tanh-squashed Gaussian policy learns to
maximise Q - alpha log pi; the temperature alpha is tuned so that the policy's entropy stays near a target
(-|A|). One gradient step per environment step on a minibatch from a replay buffer, after 10k steps of
uniformly random actions. `--alpha` fixes the temperature instead (the original SAC's setting).

    python algos/sac.py --env-id Hopper-v5
    python algos/sac.py --env-id Pendulum-v1 --learning-starts 1000 --total-timesteps 20000
    python algos/sac.py --env-id HalfCheetah-v5 --alpha 0.2
    python algos/sac.py evaluate runs/<run>/model.pt --episodes 10
"""

import copy
import csv
import dataclasses
import difflib
import glob
import json
import math
import os
import random
import signal
import sys
import time
import types
import typing
from collections import deque
from dataclasses import dataclass
from importlib import metadata
from typing import Annotated, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
import tyro
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "sac.py"  # names this script in messages, checkpoints and models


@dataclass
class Args:
    # --- common to every script ---
    preset: Literal["mujoco"] = "mujoco"
    """the paper's settings (its hyperparameter table, the same for every MuJoCo task; the only preset). Other flags override its values"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environment"""
    env_id: str = "Hopper-v5"
    """the gymnasium environment id (vector observations, a 1-D box of continuous actions)"""
    total_timesteps: int = 1_000_000
    """environment steps to train for (1M: where the paper's MuJoCo returns are usually read off its curves)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = True
    """use a CUDA GPU when one is present"""
    threads: int | None = None
    """torch CPU threads; default: torch's own count, one per core (on 2 cores, SAC's and TD3's batch-256 updates ran 1.3x faster on 2 threads than on 1). Give runs that share a machine a share each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "sac"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of the training env into RUN_DIR/videos"""
    save_model: bool = False
    """write RUN_DIR/model.pt at the end: the policy, the Q networks, the temperature and args"""
    run_dir: str | None = None
    """where the run writes its files; default runs/{env_id}__{exp_name}__{seed}__{timestamp}"""
    checkpoint_every: int = 0
    """write RUN_DIR/checkpoint.pt, replay buffer included, every this many env steps (0: only when interrupted)"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of each evaluation, the periodic ones and the final one written to summary.json (0 skips them all)"""
    eval_deterministic: bool = True
    """evaluate with the policy's mean action, tanh(mu), as the paper does; off: sample from the policy"""

    # --- SAC ---
    eval_every: int = 5_000
    """evaluate every this many env steps, logged under eval/ (our choice: the TD3 paper's protocol of 10 episodes every 5,000 steps; 0: only at the end)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (paper: 1e6). Allocated once, at most --total-timesteps"""
    learning_starts: int = 10_000
    """env steps of uniformly random actions before the first gradient step (paper: 10k initial random steps)"""
    batch_size: int = 256
    """transitions per gradient step (paper: 256)"""
    learning_rate: float = 3e-4
    """Adam step size of the policy, the Q networks and the temperature (paper: 3e-4 for all three)"""
    gamma: float = 0.99
    """discount factor (paper: 0.99)"""
    tau: float = 0.005
    """target smoothing coefficient of the Polyak update after every gradient step (paper: 0.005)"""
    hidden_size: int = 256
    """units in each of the two ReLU hidden layers of the policy and of each Q network (paper: 256)"""
    alpha: float | None = None
    """fix the temperature to this value instead of learning it (the original SAC, Haarnoja et al. 2018a, where it is the inverse of a per-task reward scale); default: learned, starting at 1 as in the authors' code"""
    target_entropy: float | None = None
    """the entropy the learned temperature aims for; default -|A|, minus the number of action dimensions (paper)"""


PRESETS = {"mujoco": Args()}


@dataclass
class EvalArgs:
    """Evaluate a model saved with --save-model."""

    model_path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL_PT")]
    """the model.pt file of a run"""
    episodes: int = 10
    """episodes to average over"""
    seed: int = 12345
    """seed of the evaluation environment"""
    deterministic: bool = True
    """act with the policy's mean action, tanh(mu); off: sample from the policy"""
    capture_video: bool = False
    """record the episodes next to the model, in videos/"""


class ConfigError(ValueError):
    """A setting that cannot work, found before training starts."""


def check_finite(args) -> None:
    """Refuse nan and inf in any float setting: `nan <= 0` is False, so the range checks alone let it through."""
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{field.name.replace('_', '-')} must be a finite number, got {value}")


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_finite(args)
    for name in ("total_timesteps", "buffer_size", "batch_size", "hidden_size"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    if not 0 < args.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {args.gamma}")
    if not 0 <= args.tau <= 1:
        raise ConfigError(f"--tau must be in [0, 1], got {args.tau}")
    if args.alpha is not None and args.alpha < 0:
        raise ConfigError(f"--alpha must be non-negative, got {args.alpha}")
    for name in ("learning_starts", "checkpoint_every", "eval_episodes", "eval_every"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be non-negative, got {getattr(args, name)}")


def check_env_id(env_id: str) -> None:
    """Refuse an unknown environment id, suggesting the closest registered ones, and an Atari game, naming the
    scripts that play those."""
    if env_id not in gym.envs.registry:
        try:  # Atari ids exist only once ale_py has registered them: register them to recognise one
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass
    if env_id not in gym.envs.registry:
        close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"
        raise ConfigError(f"unknown environment id {env_id!r}{hint}")
    if str(gym.spec(env_id).entry_point).startswith("ale_py"):
        raise ConfigError(f"{env_id} is an Atari game, which {SCRIPT} does not handle (it needs continuous actions "
                          "and vector observations); for Atari use ppo.py, trpo.py, a2c_atari.py, a3c_hogwild.py, "
                          "async_q.py or paac.py")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """SAC here needs a 1-D box of bounded continuous actions and 1-D vector observations."""
    if isinstance(action_space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        raise ConfigError(f"{SCRIPT} needs continuous (Box) actions, not {action_space}; for discrete actions "
                          "use ppo.py, a2c_atari.py or reinforce.py")
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(f"{SCRIPT} supports 1-D Box action spaces only, not {action_space}")
    if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise ConfigError(f"{SCRIPT} squashes actions into the box's bounds, which must be finite: {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"{SCRIPT} supports 1-D vector observations, not {observation_space}; for images use ppo.py")


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of env_id, from an env made and closed at once: the run's own env
    comes after every check, since its video recorder already makes the run directory."""
    env = gym.make(env_id)
    env.close()
    return env.observation_space, env.action_space


# --------------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------------


def make_env(env_id: str, capture_video: bool, video_dir: str):
    """A thunk for the one env, with episode statistics; MuJoCo needs no other wrappers."""

    def thunk():
        env = gym.make(env_id, render_mode="rgb_array" if capture_video else None)
        if capture_video:
            env = gym.wrappers.RecordVideo(env, video_dir)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def make_vector_env(args: Args, seed: int, video_dir: str):
    """One env behind the vector interface, resetting in the step that ends an episode (SAME_STEP): that
    step returns the next episode's first observation and the true last one in infos["final_obs"].
    The seed is given to reset() by the caller."""
    return gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.capture_video, video_dir)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def finished_episodes(infos: dict):
    """(returns, lengths) of the episodes that ended in this step of a SAME_STEP vector env."""
    final = infos.get("final_info")
    if final is None or "episode" not in final:
        return (), ()
    mask = final["_episode"]
    return final["episode"]["r"][mask], final["episode"]["l"][mask]


# --------------------------------------------------------------------------------------------------
# The replay buffer
# --------------------------------------------------------------------------------------------------


class ReplayBuffer:
    """A ring of transitions (s, a, r, terminated, s') in one preallocated float32 tensor, a row each, so
    that storing one is one copy and sampling a minibatch is one gather.

    It keeps `terminated`, not `done`: an episode cut off by a time limit still bootstraps from the value
    of its last observation. Rows [0, size) are filled; pos is where the next one goes, overwriting the
    oldest once the ring is full.
    """

    def __init__(self, capacity: int, obs_dim: int, action_dim: int, device: torch.device):
        self.capacity, self.obs_dim, self.action_dim = capacity, obs_dim, action_dim
        self.data = torch.zeros((capacity, self.row_size(obs_dim, action_dim)), dtype=torch.float32, device=device)
        self.pos, self.size = 0, 0

    @staticmethod
    def row_size(obs_dim: int, action_dim: int) -> int:
        return 2 * obs_dim + action_dim + 2

    @staticmethod
    def bytes_per_transition(obs_dim: int, action_dim: int) -> int:
        return 4 * ReplayBuffer.row_size(obs_dim, action_dim)

    def add(self, obs: np.ndarray, action: np.ndarray, reward: float, terminated: bool, next_obs: np.ndarray) -> None:
        row = np.concatenate([obs, action, (reward, terminated), next_obs], dtype=np.float32)
        self.data[self.pos] = torch.from_numpy(row)
        self.pos = (self.pos + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def split(self, rows: torch.Tensor):
        """(obs, actions, rewards, terminated, next_obs) views of a block of rows."""
        o, a = self.obs_dim, self.action_dim
        return rows[:, :o], rows[:, o:o + a], rows[:, o + a], rows[:, o + a + 1], rows[:, o + a + 2:]

    def sample(self, batch_size: int):
        """A minibatch drawn uniformly, with replacement, from the filled rows only."""
        index = torch.randint(self.size, (batch_size,), device=self.data.device)
        return self.split(self.data.index_select(0, index))

    def state_dict(self) -> dict:
        # Only the filled rows: a checkpoint early in a run stays small. clone(): a saved view would drag
        # the whole preallocated storage into the file.
        return {"data": self.data[: self.size].clone().cpu(), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        self.size, self.pos = state["size"], state["pos"]
        self.data[: self.size] = state["data"].to(self.data.device)


def store_step(buffer: ReplayBuffer, obs: np.ndarray, action: np.ndarray, reward: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray, next_obs: np.ndarray, infos: dict) -> None:
    """Store the transition of one step of a one-env SAME_STEP vector env. When the episode ended in this
    step, next_obs is already the next episode's first observation; the transition gets the true last
    one from infos["final_obs"] instead."""
    last_obs = infos["final_obs"][0] if terminated[0] or truncated[0] else next_obs[0]
    buffer.add(obs[0], action, float(reward[0]), bool(terminated[0]), last_obs)


# --------------------------------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------------------------------


def squashed_gaussian(mean: torch.Tensor, log_std: torch.Tensor,
                      noise: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The action a = tanh(u), u = mean + std * noise, and its log-density (the paper's appendix on
    bounded actions): log N(u; mean, std) - sum_i log(1 - tanh(u_i)^2). The correction is written as
    2 (log 2 - u - softplus(-2u)), equal to log(1 - tanh(u)^2) but finite where tanh(u) rounds to +-1."""
    u = mean + log_std.exp() * noise
    gaussian = (-0.5 * noise.pow(2) - log_std - 0.5 * math.log(2 * math.pi)).sum(-1)
    correction = (2 * (math.log(2) - u - F.softplus(-2 * u))).sum(-1)
    return torch.tanh(u), gaussian - correction


def soft_td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor,
                   next_log_prob: torch.Tensor, alpha: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) (min_j Q'_j(s', a') - alpha log pi(a'|s')), a' ~ pi(.|s'): the soft
    Bellman target with the smaller of the two target Q values (clipped double Q). next_q is [2, B]."""
    soft_value = torch.amin(next_q, 0) - alpha * next_log_prob
    return rewards + gamma * (1 - terminated) * soft_value


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """J_Q = 1/2 E[(Q_j(s, a) - y)^2], summed over the two Q networks (q is [2, B], target [B])."""
    return 0.5 * (q - target).pow(2).mean(1).sum()


def policy_loss(log_prob: torch.Tensor, q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """J_pi = E[alpha log pi(a|s) - min_j Q_j(s, a)], a ~ pi(.|s) reparameterised; q is [2, B]."""
    return (alpha * log_prob - torch.amin(q, 0)).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """J(alpha) = E[-alpha (log pi(a|s) + target entropy)], stepped in log alpha as in the authors' code:
    -log_alpha * (log pi + H).mean(). When the entropy -log pi is below the target, the gradient in
    log alpha is negative, so descent raises alpha and with it the weight of entropy."""
    return -(log_alpha * (log_prob.detach() + target_entropy)).mean()


def polyak_update(target: list[torch.Tensor], source: list[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) target + tau source, in place, in one fused call for all the tensors. Outside
    autograd: recorded, the in-place update would make the targets require grad and chain every update's
    graph onto the last one's, a leak that grows with each update."""
    with torch.no_grad():
        torch._foreach_lerp_(target, source, tau)


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def uniform_(tensor: torch.Tensor, fan_in: int) -> torch.Tensor:
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)): what nn.Linear gives its weights and biases by default."""
    bound = 1 / math.sqrt(fan_in)
    return nn.init.uniform_(tensor, -bound, bound)


class TwinQ(nn.Module):
    """The two Q networks, MLPs of (s, a) -> 256 -> 256 -> 1 with ReLU, as one module: each layer holds
    both networks' weights side by side, so one matrix product serves both (our choice for speed; the
    networks stay independent, each with its own weights)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        n_in = obs_dim + action_dim
        self.hidden = hidden
        self.w1 = nn.Parameter(uniform_(torch.empty(n_in, 2 * hidden), n_in))  # both first layers: [in, 2h]
        self.b1 = nn.Parameter(uniform_(torch.empty(2 * hidden), n_in))
        self.w2 = nn.Parameter(uniform_(torch.empty(2, hidden, hidden), hidden))
        self.b2 = nn.Parameter(uniform_(torch.empty(2, 1, hidden), hidden))
        self.w3 = nn.Parameter(uniform_(torch.empty(2, hidden, 1), hidden))
        self.b3 = nn.Parameter(uniform_(torch.empty(2, 1, 1), hidden))

    def forward(self, obs: torch.Tensor, action: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """[2, B]: Q_1 and Q_2 of each (s, a). frozen: use the weights as constants, so gradients reach
        the action but not the weights (the policy's loss)."""
        params = (self.w1, self.b1, self.w2, self.b2, self.w3, self.b3)
        w1, b1, w2, b2, w3, b3 = (p.detach() if frozen else p for p in params)
        x = torch.cat([obs, action], -1)
        h = torch.relu(torch.addmm(b1, x, w1)).view(-1, 2, self.hidden).transpose(0, 1)
        h = torch.relu(torch.baddbmm(b2, h, w2))
        return torch.baddbmm(b3, h, w3).squeeze(-1)


class Actor(nn.Module):
    """The policy: an MLP s -> 256 -> 256 -> (mean, log std) of a Gaussian whose samples are squashed by
    tanh into [-1, 1]^|A|; log std is clipped to [-20, 2] as in the authors' code."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(obs_dim, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, 2 * action_dim),
        )

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, log_std = self.net(obs).chunk(2, -1)
        return mean, log_std.clamp(-20, 2)

    def sample(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised actions in [-1, 1] with their log-probabilities."""
        mean, log_std = self(obs)
        return squashed_gaussian(mean, log_std, torch.randn_like(mean))

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return torch.tanh(self(obs)[0]) if deterministic else self.sample(obs)[0]


class Agent(nn.Module):
    """Everything SAC learns, in one state dict: the policy, the two Q networks, their target copies,
    log alpha, and the affine map from the policy's [-1, 1] to the env's action bounds."""

    def __init__(self, obs_dim: int, action_space: gym.spaces.Box, hidden: int):
        super().__init__()
        action_dim = action_space.shape[0]
        self.actor = Actor(obs_dim, action_dim, hidden)
        self.critic = TwinQ(obs_dim, action_dim, hidden)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.zeros(()))  # alpha = 1 at the start, as in the authors' code
        low, high = (torch.as_tensor(x, dtype=torch.float32) for x in (action_space.low, action_space.high))
        self.register_buffer("action_scale", (high - low) / 2)
        self.register_buffer("action_bias", (high + low) / 2)

    def env_action(self, action: torch.Tensor) -> torch.Tensor:
        """The policy's action in [-1, 1] mapped onto the env's bounds."""
        return self.action_bias + self.action_scale * action


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


def wait_past_event_files(run_dir: str) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second the file was
    made: a resumed run's file must sort after those of the attempt it replaces, or that attempt's events
    past the checkpoint are read last and escape purge_step. A resume within the same second waits for the
    next."""
    names = glob.glob("events.out.tfevents.*", root_dir=run_dir)
    seconds = [int(name.split(".")[3]) for name in names if name.split(".")[3].isdigit()]
    time.sleep(min(1.0, max(0.0, max(seconds, default=0) + 1 - time.time())))


def safe_to_resume(run_dir: str) -> str:
    """The end of a divergence message: which checkpoint, if any, holds the last finite state."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(path):
        return f"{path} holds the last finite state: resume with --resume {run_dir} (a lower --learning-rate may help)"
    return "no checkpoint was written (--checkpoint-every keeps one)"


def rng_state() -> dict:
    _, key, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": list(random.getstate()[1]),
        "numpy": [torch.from_numpy(key.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_state(state: dict) -> None:
    random.setstate((3, tuple(state["python"]), None))
    key, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", key.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])


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
    for package in ("torch", "gymnasium", "numpy", "mujoco", "tyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes in a fresh env, without learning."""
    envs = make_vector_env(args, seed, video_dir)
    device = agent.action_scale.device
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.inference_mode():
            action = agent.env_action(agent.actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device),
                                                      deterministic))
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_agent(model_path: str) -> tuple[Agent, Args]:
    """Rebuild the agent saved by --save-model."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    check_args(args)
    observation_space, action_space = env_spaces(args.env_id)
    check_spaces(observation_space, action_space)
    agent = Agent(observation_space.shape[0], action_space, args.hidden_size)
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent, args


def main_evaluate(eval_args: EvalArgs) -> dict:
    agent, args = load_agent(eval_args.model_path)
    args = dataclasses.replace(args, capture_video=eval_args.capture_video)
    video_dir = os.path.join(os.path.dirname(os.path.abspath(eval_args.model_path)), "videos")
    returns = evaluate(agent, args, eval_args.episodes, eval_args.seed, eval_args.deterministic, video_dir)
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
# Training
# --------------------------------------------------------------------------------------------------


def main(args: Args) -> dict:
    """Train SAC and return the summary that is also written to RUN_DIR/summary.json. A run stopped by
    SIGINT or SIGTERM returns {"interrupted": True, "global_step", "run_dir"} and writes no summary."""
    # Every check, and every read of a checkpoint, comes before anything is written.
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        path = os.path.join(args.resume, "checkpoint.pt")
        args = dataclasses.replace(args_from_saved(checkpoint, path), resume=args.resume, run_dir=args.resume)
    check_env_id(args.env_id)
    check_args(args)
    observation_space, action_space = env_spaces(args.env_id)
    check_spaces(observation_space, action_space)
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    obs_dim, action_dim = observation_space.shape[0], action_space.shape[0]
    agent = Agent(obs_dim, action_space, args.hidden_size).to(device)
    learn_alpha = args.alpha is None
    target_entropy = -float(action_dim) if args.target_entropy is None else args.target_entropy
    # One Adam for the three parts: Adam's state is per parameter, so this is three Adams with the same
    # settings, stepped in one fused call (fused: several times faster than the per-tensor loop on CPU).
    optimizer = torch.optim.Adam(
        [*agent.actor.parameters(), *agent.critic.parameters(), *([agent.log_alpha] if learn_alpha else [])],
        lr=args.learning_rate, fused=True)
    critic_params, target_params = list(agent.critic.parameters()), list(agent.critic_target.parameters())
    capacity = min(args.buffer_size, args.total_timesteps)  # a run never stores more than it steps
    buffer = ReplayBuffer(capacity, obs_dim, action_dim, device)
    global_step, elapsed_before, evaluations = 0, 0.0, []
    if checkpoint is not None:
        def load_state() -> None:
            nonlocal global_step, elapsed_before, evaluations
            agent.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            buffer.load_state_dict(checkpoint["buffer"])
            global_step, elapsed_before = int(checkpoint["global_step"]), float(checkpoint["elapsed"])
            evaluations = list(checkpoint["evaluations"])
            set_rng_state(checkpoint["rng"])

        restore(path, load_state)
    row_bytes = ReplayBuffer.bytes_per_transition(obs_dim, action_dim)
    print(f"replay buffer: {row_bytes} bytes a transition ({obs_dim}-dim observations twice, {action_dim}-dim "
          f"action, reward, terminated; float32), {row_bytes * 1e6 / 2**20:,.0f} MiB for 1M transitions; "
          f"{capacity:,} allocated = {row_bytes * capacity / 2**20:,.1f} MiB on {device}"
          + (f"; resumed with {buffer.size:,} stored, at step {global_step:,}" if checkpoint else ""), flush=True)

    # A resumed run cannot restore the environment's internal state: it starts a fresh episode, seeded
    # from the step it resumes at, so that resuming is itself reproducible.
    env_seed = args.seed + global_step
    envs = make_vector_env(args, env_seed, os.path.join(run_dir, "videos"))
    threads_before = torch.get_num_threads()  # restored at the end, for callers in the same process
    torch.set_num_threads(args.threads or threads_before)

    os.makedirs(run_dir, exist_ok=True)
    remove_stale_temporaries(run_dir)
    episode_file, episode_log = open_episode_log(run_dir, global_step if checkpoint else None)
    if args.track:  # wandb mirrors the TensorBoard logs; set WANDB_MODE=offline to stay off the network
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args),
                   name=os.path.basename(run_dir), dir=run_dir, id=os.path.basename(run_dir), resume="allow",
                   sync_tensorboard=True)
    # Everything logged at the checkpoint's step was logged before it was saved: a resumed run drops what
    # the interrupted one logged after that step, which it logs again.
    if checkpoint is not None:
        wait_past_event_files(run_dir)
    writer = SummaryWriter(run_dir, purge_step=global_step + 1 if checkpoint else None)
    if checkpoint is None:
        table = "\n".join(f"|{key}|{value}|" for key, value in vars(args).items())
        writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")

    stop_signal = []
    previous_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous_handlers[sig] = signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
        except ValueError:  # not the main thread: leave signals alone
            pass

    # The loss is checked for NaN or infinity without a host sync per step: the first non-finite one and
    # its step are kept on the device and read before every checkpoint and log, so no checkpoint ever holds
    # diverged weights.
    first_bad = torch.zeros((), device=device)  # the latest loss while all are finite, then the first that is not
    first_bad_step = torch.zeros((), dtype=torch.long, device=device)
    last = {}  # the latest step's losses, as tensors, read only when logged

    def watch(loss: torch.Tensor) -> None:
        nonlocal first_bad, first_bad_step
        finite_so_far = torch.isfinite(first_bad)
        first_bad = torch.where(finite_so_far, loss, first_bad)
        first_bad_step = torch.where(finite_so_far, global_step, first_bad_step)

    def check_losses() -> None:
        if not torch.isfinite(first_bad):
            raise FloatingPointError(
                f"the loss became {first_bad.item()} at step {first_bad_step.item():,} (the sum of the Q, policy "
                f"and temperature losses); {safe_to_resume(run_dir)}")

    def save_checkpoint() -> None:
        check_losses()
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(args), "model": agent.state_dict(),
            "optimizer": optimizer.state_dict(), "buffer": buffer.state_dict(), "global_step": global_step,
            "evaluations": evaluations, "elapsed": elapsed_before + time.time() - start_time, "rng": rng_state(),
        }, os.path.join(run_dir, "checkpoint.pt"))

    def run_evaluation() -> None:
        returns = evaluate(agent, dataclasses.replace(args, capture_video=False), args.eval_episodes,
                           args.seed + 100_000, args.eval_deterministic, "")
        evaluations.append([global_step, float(np.mean(returns)), float(np.std(returns))])
        writer.add_scalar("eval/mean_return", evaluations[-1][1], global_step)
        writer.add_scalar("eval/std_return", evaluations[-1][2], global_step)

    alpha = torch.tensor(args.alpha if not learn_alpha else 0.0, device=device)
    action_scale, action_bias = agent.action_scale.cpu().numpy(), agent.action_bias.cpu().numpy()
    log_every = 1000  # env steps between loss logs: reading losses back is the only per-log sync
    next_obs, _ = envs.reset(seed=env_seed)
    recent_returns: deque = deque(maxlen=20)
    start_time, start_step = time.time(), global_step
    progress = Progress(args.total_timesteps, global_step)
    try:
        while global_step < args.total_timesteps:
            obs = next_obs
            if global_step < args.learning_starts:
                action = np.random.uniform(-1.0, 1.0, action_dim).astype(np.float32)
            else:
                with torch.inference_mode():
                    action = agent.actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device))[0].cpu().numpy()
            env_action = action_bias + action_scale * action
            next_obs, reward, terminated, truncated, infos = envs.step(env_action[None])
            store_step(buffer, obs, action, reward, terminated, truncated, next_obs, infos)
            global_step += 1
            for episodic_return, episodic_length in zip(*finished_episodes(infos)):
                wall_time = elapsed_before + time.time() - start_time
                episode_log.writerow([global_step, float(episodic_return), int(episodic_length), round(wall_time, 3)])
                episode_file.flush()
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", episodic_length, global_step)
                recent_returns.append(float(episodic_return))

            if global_step > args.learning_starts:
                # One gradient step on all three losses, computed from the same parameters and taken
                # together, as the authors' code runs its Q, policy and temperature updates in one go.
                b_obs, b_actions, b_rewards, b_terminated, b_next_obs = buffer.sample(args.batch_size)
                if learn_alpha:
                    alpha = agent.log_alpha.detach().exp()
                with torch.no_grad():
                    next_actions, next_log_prob = agent.actor.sample(b_next_obs)
                    target = soft_td_target(b_rewards, b_terminated, agent.critic_target(b_next_obs, next_actions),
                                            next_log_prob, alpha, args.gamma)
                q = agent.critic(b_obs, b_actions)
                q_loss = critic_loss(q, target)
                new_actions, log_prob = agent.actor.sample(b_obs)
                pi_loss = policy_loss(log_prob, agent.critic(b_obs, new_actions, frozen=True), alpha)
                loss = q_loss + pi_loss
                if learn_alpha:
                    alpha_loss = temperature_loss(agent.log_alpha, log_prob, target_entropy)
                    loss = loss + alpha_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                polyak_update(target_params, critic_params, args.tau)
                watch(loss.detach())
                last = {"loss": loss.detach(), "q_loss": q_loss.detach(), "policy_loss": pi_loss.detach(),
                        "q": q.detach(), "log_prob": log_prob.detach()}
                if learn_alpha:
                    last["alpha_loss"] = alpha_loss.detach()

            if global_step % log_every == 0 or global_step == args.total_timesteps:
                if last:
                    check_losses()
                    for name, value in (
                        ("losses/q_loss", last["q_loss"]), ("losses/policy_loss", last["policy_loss"]),
                        ("losses/q_values", last["q"].mean()), ("losses/entropy", -last["log_prob"].mean()),
                        ("losses/alpha", agent.log_alpha.exp() if learn_alpha else alpha),
                        *((("losses/alpha_loss", last["alpha_loss"]),) if learn_alpha else ()),
                    ):
                        writer.add_scalar(name, value.item(), global_step)
                sps = int((global_step - start_step) / (time.time() - start_time))
                writer.add_scalar("charts/SPS", sps, global_step)
            if args.eval_every and args.eval_episodes and global_step % args.eval_every == 0:
                check_losses()
                run_evaluation()
            progress.update(global_step, recent_returns, force=global_step == args.total_timesteps)

            if stop_signal:
                save_checkpoint()
                print(f"\nstopped by signal {stop_signal[0]} at step {global_step}; resume with --resume {run_dir}")
                writer.close()
                return {"interrupted": True, "global_step": global_step, "run_dir": run_dir}
            if args.checkpoint_every and global_step % args.checkpoint_every == 0:
                save_checkpoint()
        check_losses()
    finally:
        progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        episode_file.close()
        envs.close()
        writer.flush()
        torch.set_num_threads(threads_before)

    if args.checkpoint_every and global_step % args.checkpoint_every:
        save_checkpoint()
    elapsed = elapsed_before + time.time() - start_time
    summary = {
        "algo": "sac", "env_id": args.env_id, "seed": args.seed, "total_steps": global_step,
        "sps": int((global_step - start_step) / (time.time() - start_time)), "wall_time": round(elapsed, 1),
        "buffer_size": buffer.size, "evaluations": evaluations,
        "args": dataclasses.asdict(args), "versions": package_versions(),
    }
    if args.save_model:
        save_torch({"script": SCRIPT, "args": dataclasses.asdict(args), "model": agent.state_dict()},
                   os.path.join(run_dir, "model.pt"))
    if args.eval_episodes:
        eval_returns = evaluate(agent, dataclasses.replace(args, capture_video=False), args.eval_episodes,
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
    print(f"done: {global_step:,} steps at {summary['sps']:,} steps/s in {run_dir}{result}")
    return summary


def parse_args(argv: list[str]) -> Args | EvalArgs:
    """`evaluate MODEL ...` gives EvalArgs. Anything else gives training Args: the preset named by
    --preset (default mujoco), with the other flags applied over it."""
    if argv[:1] == ["evaluate"]:
        return tyro.cli(EvalArgs, args=argv[1:], prog="sac.py evaluate")
    preset = "mujoco"
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
