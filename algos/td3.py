"""Twin Delayed Deep Deterministic policy gradient, TD3 (Fujimoto et al. 2018, "Addressing Function
Approximation Error in Actor-Critic Methods").

DDPG with three changes against overestimation: two critics whose minimum forms the target (clipped double
Q), clipped Gaussian noise on the target action (target policy smoothing), and the actor and target networks
updated once every two critic updates (delayed policy updates). One gradient step per env step, from a
replay buffer; Gaussian exploration noise.

    python algos/td3.py --env-id Hopper-v5                      # the paper's settings (Table 3)
    python algos/td3.py --preset authors --env-id Walker2d-v5   # the authors' current code
    python algos/td3.py --env-id Pendulum-v1 --learning-starts 1000 --total-timesteps 20000
    python algos/td3.py evaluate runs/<run>/model.pt --episodes 10
"""

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
import tyro
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "td3.py"  # names this script in messages, checkpoints and models


@dataclass
class Args:
    # --- common to every script ---
    preset: Literal["paper", "authors"] = "paper"
    """paper: the settings of the paper (Table 3 and Section 6.1: 400-300 units, Adam 1e-3, batch 100, 1,000 random start steps); authors: those of the authors' current code (github.com/sfujim/TD3: 256-256 units, Adam 3e-4, batch 256, 25,000 random start steps). Other flags override its values; `--preset authors --help` shows its defaults"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    env_id: str = "Hopper-v5"
    """the gymnasium environment id (continuous actions, vector observations: MuJoCo, Pendulum-v1, ...)"""
    total_timesteps: int = 1_000_000
    """environment steps to train for (the paper: 1M)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = True
    """use a CUDA GPU when one is present"""
    threads: int | None = None
    """torch CPU threads; default: torch's own count, one per core (on 2 cores, SAC's and TD3's batch-256 updates ran 1.3x faster on 2 threads than on 1). Give runs that share a machine a share each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "td3"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of the training env into RUN_DIR/videos"""
    save_model: bool = False
    """write RUN_DIR/model.pt at the end: weights and args"""
    run_dir: str | None = None
    """where the run writes its files; default runs/{env_id}__{exp_name}__{seed}__{timestamp}"""
    checkpoint_every: int = 0
    """write RUN_DIR/checkpoint.pt, replay buffer included, every this many env steps (0: only when interrupted)"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of each evaluation, the periodic ones and the final one in summary.json (0 skips them). Section 6.1: 10"""
    eval_deterministic: bool = True
    """evaluate the policy without exploration noise, as the paper does (False adds the training noise)"""
    eval_every: int = 5_000
    """evaluate every this many env steps, logged as eval/mean_return (0: only at the end). Section 6.1: 5,000"""

    # --- TD3 ---
    learning_starts: int = 1_000
    """env steps of uniformly random actions before the first update. Section 6.1: 1,000 (10,000 for HalfCheetah and Ant); authors' code: 25,000"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions (authors' code: 1M, the whole run)"""
    hidden_sizes: tuple[int, ...] = (400, 300)
    """units of the hidden ReLU layers of actor and critics; the critics take state and action at the first layer. Paper: 400 300; authors' code: 256 256"""
    learning_rate: float = 1e-3
    """Adam step size of the critics, and of the actor unless --actor-learning-rate is given. Table 3: 1e-3; authors' code: 3e-4"""
    actor_learning_rate: float | None = None
    """Adam step size of the actor (default: --learning-rate, as in the paper and the authors' code)"""
    batch_size: int = 100
    """transitions per gradient step, sampled uniformly from the buffer. Table 3: 100; authors' code: 256"""
    gamma: float = 0.99
    """discount factor. Table 3: 0.99"""
    tau: float = 0.005
    """target networks move this fraction towards the online ones at each actor update. Table 3: 0.005"""
    exploration_noise: float = 0.1
    """std of the Gaussian noise added to actions while training, in units of half the action range. Table 3: 0.1"""
    policy_noise: float = 0.2
    """std of the target policy smoothing noise, in units of half the action range. Section 6.1: 0.2"""
    noise_clip: float = 0.5
    """the smoothing noise is clipped to +-this, in units of half the action range. Section 6.1: 0.5"""
    policy_delay: int = 2
    """update the actor and the targets once every this many critic updates. Section 5.2: 2"""


PRESETS = {
    "paper": Args(),
    "authors": Args(preset="authors", hidden_sizes=(256, 256), learning_rate=3e-4, batch_size=256,
                    learning_starts=25_000),
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
    deterministic: bool = True
    """act without exploration noise (False adds the training noise)"""
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
    if args.total_timesteps <= 0 or args.batch_size <= 0 or args.buffer_size <= 0:
        raise ConfigError("--total-timesteps, --batch-size and --buffer-size must be positive")
    for name in ("learning_rate", "actor_learning_rate"):
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    if not 0 < args.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {args.gamma}")
    if not 0 < args.tau <= 1:
        raise ConfigError(f"--tau must be in (0, 1], got {args.tau}")
    if min(args.exploration_noise, args.policy_noise, args.noise_clip) < 0:
        raise ConfigError("--exploration-noise, --policy-noise and --noise-clip must be non-negative")
    if args.policy_delay <= 0:
        raise ConfigError(f"--policy-delay must be positive, got {args.policy_delay}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise ConfigError(f"--hidden-sizes needs one or more positive sizes, got {args.hidden_sizes}")
    if min(args.learning_starts, args.checkpoint_every, args.eval_episodes, args.eval_every) < 0:
        raise ConfigError("--learning-starts, --checkpoint-every, --eval-episodes and --eval-every must be non-negative")
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")


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
    """TD3 needs bounded continuous actions (its actor outputs them) and vector observations."""
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(
            f"{SCRIPT} needs a 1-D Box (continuous) action space, not {action_space}; for discrete actions "
            "use ppo.py, a2c_atari.py or reinforce.py")
    if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise ConfigError(f"{SCRIPT} needs finite action bounds (its actor ends in tanh), not {action_space}")
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
    """A thunk for the one env; MuJoCo and classic control need no wrappers here."""

    def thunk():
        env = gym.make(env_id, render_mode="rgb_array" if capture_video else None)
        if capture_video:
            env = gym.wrappers.RecordVideo(env, video_dir)
        return gym.wrappers.RecordEpisodeStatistics(env)

    return thunk


def make_vector_env(args: Args, seed: int, video_dir: str):
    """One env behind the vector interface, resetting in the step that ends an episode (SAME_STEP): that
    step's observation is already the next episode's first, and the true last one is in infos["final_obs"]."""
    envs = gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.capture_video, video_dir)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    envs.single_action_space.seed(seed)
    return envs


def finished_episodes(infos: dict):
    """(returns, lengths) of the episodes that ended in this step of a SAME_STEP vector env."""
    final = infos.get("final_info")
    if final is None or "episode" not in final:
        return (), ()
    mask = final["_episode"]
    return final["episode"]["r"][mask], final["episode"]["l"][mask]


def transition_next_obs(next_obs: np.ndarray, infos: dict) -> np.ndarray:
    """The observation each env's step led to. Where an episode ended, a SAME_STEP vector env returns the
    next episode's first observation in next_obs and the true last one in infos["final_obs"]: the
    transition needs the last one (to bootstrap from after a truncation)."""
    if "_final_obs" not in infos or not infos["_final_obs"].any():
        return next_obs
    real = next_obs.copy()
    for i in np.flatnonzero(infos["_final_obs"]):
        real[i] = infos["final_obs"][i]
    return real


# --------------------------------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------------------------------


def polyak_update(targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta' for each pair, in place (the target update of Algorithm 1)."""
    with torch.no_grad():
        torch._foreach_lerp_(targets, sources, tau)  # one fused kernel for all the tensors


def target_policy_action(next_action: torch.Tensor, noise: torch.Tensor, policy_noise: float,
                         noise_clip: float) -> torch.Tensor:
    """Target policy smoothing (Eq. 14): mu'(s') + clip(sigma eps, -c, c), eps ~ N(0, 1), then clipped to the
    action bounds, here [-1, 1] (actions are kept in units of half the range, centred)."""
    return (next_action + (noise * policy_noise).clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) Q'(s', a'). Only a true termination stops the bootstrap: after a time-limit
    truncation s' is the episode's final observation and its value counts."""
    return rewards + gamma * (1.0 - terminated) * next_q


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The sum over the critics of their mean squared TD errors; q is [critics, batch], target [batch]."""
    return ((q - target) ** 2).mean(-1).sum()


def actor_loss(q1: torch.Tensor) -> torch.Tensor:
    """The deterministic policy gradient's objective, -Q1(s, mu(s)) averaged over the batch."""
    return -q1.mean()


class ReplayBuffer:
    """A ring buffer of transitions, allocated once. It keeps `terminated`, not `done`: a transition cut by a
    time limit still bootstraps. next_obs is the true next observation, the final one at an episode's end."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.pos, self.size = capacity, 0, 0
        self.obs = torch.zeros((capacity, obs_dim), device=device)
        self.next_obs = torch.zeros((capacity, obs_dim), device=device)
        self.actions = torch.zeros((capacity, act_dim), device=device)
        self.rewards = torch.zeros(capacity, device=device)
        self.terminated = torch.zeros(capacity, device=device)

    @staticmethod
    def bytes_per_transition(obs_dim: int, act_dim: int) -> int:
        """float32 obs, next obs, action, reward and terminated flag."""
        return 4 * (2 * obs_dim + act_dim + 2)

    def add(self, obs: torch.Tensor, action: torch.Tensor, reward: torch.Tensor, next_obs: torch.Tensor,
            terminated: torch.Tensor) -> None:
        """Store a batch of transitions, one per env (a leading dimension on each), overwriting the oldest."""
        for i in range(len(obs)):
            self.obs[self.pos], self.actions[self.pos], self.next_obs[self.pos] = obs[i], action[i], next_obs[i]
            self.rewards[self.pos], self.terminated[self.pos] = reward[i], terminated[i]
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> tuple[torch.Tensor, ...]:
        """batch_size transitions drawn uniformly, with replacement, from the filled slots: (obs, actions,
        rewards, next_obs, terminated). The indices come from torch's generator on the device, no host sync."""
        indices = torch.randint(0, self.size, (batch_size,), device=self.obs.device)
        return (self.obs[indices], self.actions[indices], self.rewards[indices], self.next_obs[indices],
                self.terminated[indices])

    def state_dict(self) -> dict:
        """Copies of the filled rows only, so a checkpoint early in a run stays small: torch.save writes a
        view's whole underlying storage, so saving self.obs[:n] itself would write every allocated row."""
        n = self.size
        return {"pos": self.pos, "size": n, "obs": self.obs[:n].clone(), "actions": self.actions[:n].clone(),
                "rewards": self.rewards[:n].clone(), "next_obs": self.next_obs[:n].clone(),
                "terminated": self.terminated[:n].clone()}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ConfigError(f"the checkpoint's replay buffer holds {n} transitions, more than --buffer-size {self.capacity}")
        for name in ("obs", "actions", "rewards", "next_obs", "terminated"):
            getattr(self, name)[:n] = state[name]
        self.pos, self.size = state["pos"], n


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


class Actor(nn.Module):
    """mu(s): ReLU hidden layers and a tanh output in [-1, 1] (PyTorch's default initialisation, as the
    authors' code)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        layers, n_in = [], obs_dim
        for n_out in hidden_sizes:
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
            n_in = n_out
        self.net = nn.Sequential(*layers, nn.Linear(n_in, act_dim), nn.Tanh())

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net(obs)


class TwinCritic(nn.Module):
    """Q1 and Q2 as one network: each layer's weights are stacked [2, in, out] and a batched matrix product
    evaluates both critics at once. State and action enter at the first layer (Section 6.1). Each critic's
    layers are initialised like PyTorch's nn.Linear, U(+-1/sqrt(fan_in))."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        sizes = [obs_dim + act_dim, *hidden_sizes, 1]
        self.weights, self.biases = nn.ParameterList(), nn.ParameterList()
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            bound = 1 / np.sqrt(n_in)
            self.weights.append(nn.Parameter(torch.empty(2, n_in, n_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(2, 1, n_out).uniform_(-bound, bound)))

    def forward(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[2, batch]: Q1 and Q2 of each (s, a)."""
        x = torch.cat([obs, action], -1).expand(2, -1, -1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.baddbmm(bias, x, weight)
            if i < last:
                x = torch.relu(x)
        return x.squeeze(-1)

    def q1(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """[batch]: Q1 alone, its parameters held fixed (detached), for the actor's loss: the gradient flows to
        the action only, and no critic gradients are computed that would be thrown away."""
        x = torch.cat([obs, action], -1)
        last = len(self.weights) - 1
        for i, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            x = torch.addmm(bias[0].detach(), x, weight[0].detach())
            if i < last:
                x = torch.relu(x)
        return x.squeeze(-1)


class Agent(nn.Module):
    """The actor, the twin critic, and their target copies. Actions are in [-1, 1]; the env sees them
    mapped linearly onto its bounds."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...]):
        super().__init__()
        self.actor = Actor(obs_dim, act_dim, hidden_sizes)
        self.critic = TwinCritic(obs_dim, act_dim, hidden_sizes)
        self.actor_target = Actor(obs_dim, act_dim, hidden_sizes)
        self.critic_target = TwinCritic(obs_dim, act_dim, hidden_sizes)
        self.actor_target.load_state_dict(self.actor.state_dict())
        self.critic_target.load_state_dict(self.critic.state_dict())
        for p in [*self.actor_target.parameters(), *self.critic_target.parameters()]:
            p.requires_grad_(False)


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


def evaluate(actor: Actor, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes of the policy, without exploration noise when
    deterministic (with the training noise otherwise)."""
    envs = make_vector_env(args, seed, video_dir)
    device = next(actor.parameters()).device
    space = envs.single_action_space
    scale, centre = (space.high - space.low) / 2, (space.high + space.low) / 2
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.no_grad():
            action = actor(torch.as_tensor(obs, dtype=torch.float32, device=device))
            if not deterministic:
                action = (action + args.exploration_noise * torch.randn_like(action)).clamp(-1.0, 1.0)
        obs, _, _, _, infos = envs.step(centre + scale * action.cpu().numpy())
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_agent(model_path: str) -> tuple[Actor, Args]:
    """Rebuild the policy saved by --save-model from its weights and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    args = dataclasses.replace(args, hidden_sizes=tuple(args.hidden_sizes))
    check_env_id(args.env_id)
    check_args(args)
    observation_space, action_space = env_spaces(args.env_id)
    check_spaces(observation_space, action_space)
    agent = Agent(observation_space.shape[0], action_space.shape[0], args.hidden_sizes)
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent.actor, args


def main_evaluate(eval_args: EvalArgs) -> dict:
    actor, args = load_agent(eval_args.model_path)
    args = dataclasses.replace(args, capture_video=eval_args.capture_video)
    video_dir = os.path.join(os.path.dirname(os.path.abspath(eval_args.model_path)), "videos")
    returns = evaluate(actor, args, eval_args.episodes, eval_args.seed, eval_args.deterministic, video_dir)
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
        eta = max(self.total - step, 0) / max(sps, 1e-9)
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


def update(agent: Agent, actor_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer,
           batch: tuple[torch.Tensor, ...], args: Args, update_actor: bool) -> dict[str, torch.Tensor]:
    """One update of Algorithm 1 on a batch (obs, actions, rewards, next_obs, terminated): a step of both
    critics towards the clipped double-Q target of the smoothed target action, then, when update_actor (every
    --policy-delay updates), a step of the actor on Q1 and the Polyak update of every target network.
    Returns qf_loss, q (the critics' values, [2, batch]) and, when the actor moved, actor_loss: detached
    tensors left on the device, so that no step waits for it."""
    obs, actions, rewards, next_obs, terminated = batch
    with torch.no_grad():
        next_actions = target_policy_action(agent.actor_target(next_obs), torch.randn_like(actions),
                                            args.policy_noise, args.noise_clip)
        next_q = agent.critic_target(next_obs, next_actions).min(0).values  # clipped double Q
        target = td_target(rewards, terminated, next_q, args.gamma)
    q = agent.critic(obs, actions)
    qf_loss = critic_loss(q, target)
    critic_optimizer.zero_grad(set_to_none=True)
    qf_loss.backward()
    critic_optimizer.step()
    metrics = {"qf_loss": qf_loss.detach(), "q": q.detach()}
    if update_actor:
        pg_loss = actor_loss(agent.critic.q1(obs, agent.actor(obs)))
        actor_optimizer.zero_grad(set_to_none=True)
        pg_loss.backward()
        actor_optimizer.step()
        polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)
        polyak_update(list(agent.critic_target.parameters()), list(agent.critic.parameters()), args.tau)
        metrics["actor_loss"] = pg_loss.detach()
    return metrics


def main(args: Args) -> dict:
    """Train TD3 and return the summary that is also written to RUN_DIR/summary.json. A run stopped by
    SIGINT or SIGTERM returns {"interrupted": True, "global_step", "run_dir"} and writes no summary."""
    # Every check, and every read of a checkpoint, comes before anything is written.
    checkpoint = None
    if args.resume:
        checkpoint = load_checkpoint(args.resume)
        path = os.path.join(args.resume, "checkpoint.pt")
        args = dataclasses.replace(args_from_saved(checkpoint, path), resume=args.resume, run_dir=args.resume)
    args = dataclasses.replace(args, hidden_sizes=tuple(args.hidden_sizes))
    check_env_id(args.env_id)
    check_args(args)
    observation_space, action_space = env_spaces(args.env_id)
    check_spaces(observation_space, action_space)
    obs_dim, act_dim = observation_space.shape[0], action_space.shape[0]
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    agent = Agent(obs_dim, act_dim, args.hidden_sizes).to(device)
    fused = dict(fused=True)  # one kernel for all parameters: several times faster than the loop on CPU
    actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=args.actor_learning_rate or args.learning_rate, **fused)
    critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate, **fused)
    capacity = min(args.buffer_size, args.total_timesteps)
    buffer = ReplayBuffer(capacity, obs_dim, act_dim, device)
    per_transition = ReplayBuffer.bytes_per_transition(obs_dim, act_dim)
    print(f"replay buffer: {per_transition} bytes a transition of {args.env_id}; 1M transitions take "
          f"{per_transition * 1e6 / 2**20:,.0f} MiB; this run's {capacity:,} take {per_transition * capacity / 2**20:,.1f} MiB")
    global_step, updates, elapsed_before, evaluations = 0, 0, 0.0, []
    if checkpoint is not None:
        def load_state() -> None:
            nonlocal global_step, updates, elapsed_before, evaluations
            agent.load_state_dict(checkpoint["model"])
            actor_optimizer.load_state_dict(checkpoint["actor_optimizer"])
            critic_optimizer.load_state_dict(checkpoint["critic_optimizer"])
            buffer.load_state_dict(checkpoint["buffer"])
            global_step, updates = int(checkpoint["global_step"]), int(checkpoint["updates"])
            elapsed_before, evaluations = float(checkpoint["elapsed"]), list(checkpoint["evaluations"])
            set_rng_state(checkpoint["rng"])

        restore(path, load_state)

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

    # Losses stay on the device; the first non-finite one and its step are kept there and read only where
    # the run stops to log or to save, so that no step waits for the device.
    qf_loss = pg_loss = q_mean = torch.zeros((), device=device)
    first_bad = torch.zeros((), device=device)  # the latest loss while all are finite, then the first that is not
    first_bad_step = torch.zeros((), dtype=torch.long, device=device)

    def watch(loss: torch.Tensor) -> None:
        nonlocal first_bad, first_bad_step
        finite_so_far = torch.isfinite(first_bad)
        first_bad = torch.where(finite_so_far, loss, first_bad)
        first_bad_step = torch.where(finite_so_far, global_step, first_bad_step)

    def check_losses() -> None:
        if not torch.isfinite(first_bad):
            raise FloatingPointError(
                f"the loss became {first_bad.item()} at step {first_bad_step.item():,} (the critics' or the "
                f"actor's loss); {safe_to_resume(run_dir)}")

    def save_checkpoint() -> None:
        check_losses()
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(args), "model": agent.state_dict(),
            "actor_optimizer": actor_optimizer.state_dict(), "critic_optimizer": critic_optimizer.state_dict(),
            "buffer": buffer.state_dict(), "global_step": global_step, "updates": updates,
            "elapsed": elapsed_before + time.time() - start_time, "evaluations": evaluations, "rng": rng_state(),
        }, os.path.join(run_dir, "checkpoint.pt"))

    def run_evaluation() -> tuple[float, float]:
        returns = evaluate(agent.actor, dataclasses.replace(args, capture_video=False), args.eval_episodes,
                           args.seed + 100_000, args.eval_deterministic, "")
        mean, std = float(np.mean(returns)), float(np.std(returns))
        writer.add_scalar("eval/mean_return", mean, global_step)
        writer.add_scalar("eval/std_return", std, global_step)
        return mean, std

    space = envs.single_action_space
    scale, centre = (space.high - space.low) / 2, (space.high + space.low) / 2
    obs_np, _ = envs.reset(seed=env_seed)
    obs = torch.as_tensor(obs_np, dtype=torch.float32, device=device)
    recent_returns: deque = deque(maxlen=20)
    start_time, start_step = time.time(), global_step
    learn_start_time, learn_start_step = None, None
    progress = Progress(args.total_timesteps, global_step)
    try:
        while global_step < args.total_timesteps:
            global_step += 1
            if global_step <= args.learning_starts:
                action = torch.rand((1, act_dim), device=device) * 2 - 1
            else:
                with torch.no_grad():
                    action = agent.actor(obs)
                    action = (action + args.exploration_noise * torch.randn_like(action)).clamp(-1.0, 1.0)
            next_obs_np, reward, terminated, truncated, infos = envs.step(centre + scale * action.cpu().numpy())
            real_next_obs = transition_next_obs(next_obs_np, infos)
            buffer.add(obs, action, torch.as_tensor(reward, dtype=torch.float32),
                       torch.as_tensor(real_next_obs, dtype=torch.float32), torch.as_tensor(terminated, dtype=torch.float32))
            obs = torch.as_tensor(next_obs_np, dtype=torch.float32, device=device)
            for episodic_return, episodic_length in zip(*finished_episodes(infos)):
                wall_time = elapsed_before + time.time() - start_time
                episode_log.writerow([global_step, float(episodic_return), int(episodic_length), round(wall_time, 3)])
                episode_file.flush()
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", episodic_length, global_step)
                recent_returns.append(float(episodic_return))

            if global_step > args.learning_starts:
                if learn_start_time is None:
                    learn_start_time, learn_start_step = time.time(), global_step - 1
                updates += 1
                metrics = update(agent, actor_optimizer, critic_optimizer, buffer.sample(args.batch_size), args,
                                 update_actor=updates % args.policy_delay == 0)
                qf_loss = metrics["qf_loss"]
                watch(qf_loss)
                if "actor_loss" in metrics:
                    pg_loss = metrics["actor_loss"]
                    watch(pg_loss)
                if global_step % 1000 == 0:
                    q_mean = metrics["q"].mean()

            if global_step % 1000 == 0 or global_step == args.total_timesteps:
                check_losses()
                sps = int((global_step - start_step) / (time.time() - start_time))
                for name, value in (("losses/qf_loss", qf_loss.detach()), ("losses/actor_loss", pg_loss.detach()),
                                    ("losses/qf_values", q_mean), ("charts/SPS", sps)):
                    writer.add_scalar(name, float(value), global_step)
            if args.eval_every and args.eval_episodes and global_step % args.eval_every == 0:
                check_losses()
                evaluations.append([global_step, run_evaluation()[0]])
            progress.update(global_step, recent_returns, force=global_step == args.total_timesteps)

            if stop_signal:
                save_checkpoint()
                print(f"\nstopped by signal {stop_signal[0]} at step {global_step}; resume with --resume {run_dir}")
                writer.close()
                return {"interrupted": True, "global_step": global_step, "run_dir": run_dir}
            if args.checkpoint_every and global_step % args.checkpoint_every == 0:
                save_checkpoint()
    finally:
        progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        episode_file.close()
        envs.close()
        writer.flush()
        torch.set_num_threads(threads_before)

    check_losses()
    if args.checkpoint_every:
        save_checkpoint()
    now = time.time()
    summary = {
        "algo": "td3", "env_id": args.env_id, "seed": args.seed, "total_steps": global_step,
        "sps": int((global_step - start_step) / (now - start_time)),
        # env steps/s once updates run, one per step: the figure that compares off-policy implementations
        "learning_sps": int((global_step - learn_start_step) / (now - learn_start_time)) if learn_start_time else None,
        "wall_time": round(elapsed_before + now - start_time, 1), "buffer_size": buffer.size,
        "evaluations": evaluations, "args": dataclasses.asdict(args), "versions": package_versions(),
    }
    if args.save_model:
        save_torch({"script": SCRIPT, "args": dataclasses.asdict(args), "model": agent.state_dict()},
                   os.path.join(run_dir, "model.pt"))
    if args.eval_episodes:
        torch.set_num_threads(args.threads or threads_before)
        mean, std = run_evaluation()
        torch.set_num_threads(threads_before)
        summary["eval"] = {"episodes": args.eval_episodes, "deterministic": args.eval_deterministic,
                           "mean_return": mean, "std_return": std}
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
    --preset (default paper), with the other flags applied over it."""
    if argv[:1] == ["evaluate"]:
        return tyro.cli(EvalArgs, args=argv[1:], prog="td3.py evaluate")
    preset = "paper"
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
