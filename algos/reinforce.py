"""REINFORCE: Monte-Carlo policy gradient (Williams 1992; Sutton & Barto 2nd ed., Algorithms 13.3 and 13.4).

Play whole episodes with the current policy, then step along -G_t log pi(A_t|S_t), G_t the discounted
return: from step t on (reward to go, Sutton & Barto's form) or of the whole episode (Williams's original
estimator). With --baseline a learned state value v(S_t) is subtracted from G_t (Algorithm 13.4). Returns are
pure Monte Carlo: an episode cut by a time limit ends there, with no bootstrap.

    python algos/reinforce.py --env-id CartPole-v1 --baseline
    python algos/reinforce.py --env-id Pendulum-v1 --no-reward-to-go
    python algos/reinforce.py evaluate runs/<run>/model.pt --episodes 10
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
from typing import Annotated

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Normal
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "reinforce.py"  # names this script in messages, checkpoints and models


@dataclass
class Args:
    # --- common to every script ---
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environment"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id (classic control: vector observations, discrete or 1-D box actions)"""
    total_timesteps: int = 200_000
    """environment steps to train for; training stops after the first batch of whole episodes that reaches it (our choice for CartPole: with --baseline, seeds 1-3 pass a 20-episode mean of 400 well before)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = False
    """use a CUDA GPU when one is present (off by default: acting one step at a time, these small MLPs are faster on the CPU)"""
    threads: int = 1
    """torch CPU threads (small MLPs run fastest on one)"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "reinforce"
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
    """write RUN_DIR/checkpoint.pt after the first batch that crosses each multiple of this many env steps (0: only when interrupted)"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of the final evaluation written to summary.json (0 skips it)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action (or the Gaussian mean) instead of sampling"""

    # --- REINFORCE ---
    episodes_per_update: int = 4
    """whole episodes per gradient step; the gradient is their average (Williams 1992 and Sutton & Barto learn from one episode at a time, i.e. 1; 4 is our choice for CartPole, less noise at the same step count)"""
    learning_rate: float = 3e-3
    """Adam step size of the policy, alpha^theta of Algorithm 13.4 (our choice for CartPole; Sutton & Barto use plain SGD with a hand-picked alpha)"""
    value_learning_rate: float = 1e-2
    """Adam step size of the baseline v, alpha^w of Algorithm 13.4 (our choice for CartPole)"""
    value_epochs: int = 5
    """full-batch gradient steps on the baseline per batch (Algorithm 13.4 takes one per time step, i.e. one per sample; 5 is our choice)"""
    gamma: float = 0.99
    """discount factor. A variance reducer here: logged returns are undiscounted (0.99 is our choice; CartPole's own task is undiscounted)"""
    baseline: bool = False
    """subtract a learned state value v(S_t), fitted by MSE on G_t, from the return (Algorithm 13.4); off: Algorithm 13.3"""
    reward_to_go: bool = True
    """weight log pi(A_t|S_t) by the return from step t on, G_t (causality, G(PO)MDP; Sutton & Barto's G_t, without their gamma^t factor); off: by the whole episode's return G_0 (Williams 1992's original estimator). At --gamma 1 both estimate the same gradient, G_t with less variance"""
    hidden_size: int = 64
    """units in each of the two tanh hidden layers of the policy and of the baseline (our choice, as in ppo.py)"""


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
    """act with the most likely action (or the Gaussian mean) instead of sampling"""
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
    if args.total_timesteps <= 0 or args.episodes_per_update <= 0:
        raise ConfigError("--total-timesteps and --episodes-per-update must be positive")
    for name in ("learning_rate", "value_learning_rate"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.value_epochs <= 0 or args.hidden_size <= 0:
        raise ConfigError("--value-epochs and --hidden-size must be positive")
    if not 0 < args.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {args.gamma}")
    if args.checkpoint_every < 0 or args.eval_episodes < 0:
        raise ConfigError("--checkpoint-every and --eval-episodes must be non-negative")
    if args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")


def check_env_id(env_id: str) -> None:
    """Refuse an unknown environment id, suggesting the closest registered ones, and an Atari game."""
    if env_id not in gym.envs.registry:
        try:  # the Atari ids are registered by ale-py, which this script has no other use for
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass
    if env_id in gym.envs.registry:
        if "ale_py" in str(gym.spec(env_id).entry_point):
            raise ConfigError(f"{env_id} is an Atari game, which {SCRIPT} does not handle (it plays classic control "
                              "from vector observations); ppo.py, trpo.py, a2c_atari.py, a3c_hogwild.py, async_q.py "
                              "and paac.py do")
        return
    close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"
    raise ConfigError(f"unknown environment id {env_id!r}{hint}")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """REINFORCE here is for classic control: vector observations, discrete or box actions."""
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or (
        isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1
    ):
        raise ConfigError(f"reinforce.py supports Discrete and 1-D Box action spaces, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(
            f"reinforce.py supports 1-D vector observations (classic control), not {observation_space}; "
            "for images use ppo.py")


# --------------------------------------------------------------------------------------------------
# Environments
# --------------------------------------------------------------------------------------------------


def make_env(env_id: str, capture_video: bool, video_dir: str):
    """A thunk for the one env; classic control needs no wrappers."""

    def thunk():
        env = gym.make(env_id, render_mode="rgb_array" if capture_video else None)
        if capture_video:
            env = gym.wrappers.RecordVideo(env, video_dir)
        return env

    return thunk


def make_vector_env(args: Args, video_dir: str):
    """One env behind the vector interface (batched observations), resetting in the step that ends an
    episode (SAME_STEP), so the observation after the last step is already the next episode's first."""
    return gym.vector.SyncVectorEnv(
        [make_env(args.env_id, args.capture_video, video_dir)], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


# --------------------------------------------------------------------------------------------------
# The math
# --------------------------------------------------------------------------------------------------


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = R_{t+1} + gamma R_{t+2} + ... to the end of one whole episode, for every t (Sutton & Barto
    eq. 3.8; rewards[t] is R_{t+1}, the reward for the action at step t). Float64."""
    returns = np.zeros(len(rewards))
    running = 0.0
    for t in reversed(range(len(rewards))):
        running = rewards[t] + gamma * running
        returns[t] = running
    return returns


def return_weights(rewards: np.ndarray, gamma: float, reward_to_go: bool) -> np.ndarray:
    """What multiplies grad log pi(A_t|S_t) at each step t of one episode: the reward to go G_t
    (causality: an action cannot change the rewards before it; the G(PO)MDP estimator), or the whole
    episode's return G_0 at every step (Williams 1992).

    Undiscounted, both estimate the same gradient, and G_t has less variance: it drops the rewards
    before step t, terms of zero mean. With gamma < 1, G_0 = (rewards before t) + gamma^t G_t, whose
    expectation is Sutton & Barto's gamma^t G_t (the exact gradient of the discounted return from the
    start), while G_t alone is the common practice that treats every step as a start."""
    returns = discounted_returns(rewards, gamma)
    return returns if reward_to_go else np.full(len(rewards), returns[0] if len(rewards) else 0.0)


def policy_gradient_loss(logprobs: torch.Tensor, weights: torch.Tensor, num_episodes: int) -> torch.Tensor:
    """-sum_t weight_t log pi(A_t|S_t), averaged over the batch's episodes: its gradient is the
    Monte-Carlo estimate of -grad J(theta). weights are G_t, G_0 or G_t - v(S_t), and carry no gradient.

    Sutton & Barto's Algorithms 13.3-13.4 also scale step t by gamma^t; as in Williams 1992 and common
    practice, that factor is left out (it would all but silence the late steps of long episodes)."""
    return -(logprobs * weights.detach()).sum() / num_episodes


def value_loss(values: torch.Tensor, returns: torch.Tensor) -> torch.Tensor:
    """The baseline's mean squared error against the Monte-Carlo returns G_t (Algorithm 13.4's w update)."""
    return ((values - returns) ** 2).mean()


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than a constant."""
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases (as in ppo.py)."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def mlp(n_in: int, n_out: int, hidden: int, out_std: float) -> nn.Sequential:
    return nn.Sequential(
        layer_init(nn.Linear(n_in, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, hidden)), nn.Tanh(),
        layer_init(nn.Linear(hidden, n_out), std=out_std),
    )


class Agent(nn.Module):
    """The policy: softmax over the outputs of an MLP for discrete actions, or a Gaussian whose mean is
    the MLP's output and whose log std is a free, state-independent parameter for continuous ones. With
    a baseline, a separate MLP for v(s). The policy's last layer starts near zero: a near-uniform policy."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.Space, hidden: int, baseline: bool):
        super().__init__()
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        n_in = int(np.prod(observation_space.shape))
        n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.actor = mlp(n_in, n_out, hidden, out_std=0.01)
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(n_out))
        self.critic = mlp(n_in, 1, hidden, out_std=1.0) if baseline else None

    def policy_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if not name.startswith("critic.")]

    def distribution(self, obs: torch.Tensor):
        out = self.actor(obs.float())
        if self.discrete:
            return Categorical(logits=out, validate_args=False)
        return Normal(out, self.actor_logstd.exp().expand_as(out), validate_args=False)

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) and the entropy, per sample."""
        dist = self.distribution(obs)
        logprob, entropy = dist.log_prob(actions), dist.entropy()
        if not self.discrete:
            logprob, entropy = logprob.sum(-1), entropy.sum(-1)
        return logprob, entropy

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Sample actions (or take the most likely one, or the mean). This runs at every env step, so it
        skips the distribution objects, which cost more than the network at this size."""
        out = self.actor(obs.float())
        if self.discrete:
            if deterministic:
                return out.argmax(-1)
            # Gumbel-max: argmax(logits - log E), E ~ Exp(1), is a sample of softmax(logits).
            return (out - torch.empty_like(out).exponential_().log()).argmax(-1)
        return out if deterministic else out + self.actor_logstd.exp() * torch.randn_like(out)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs.float()).squeeze(-1)


@dataclass
class Episode:
    observations: np.ndarray  # [T, *obs_shape]
    actions: np.ndarray  # [T] or [T, action_dim], as sampled (before clipping to the bounds)
    rewards: np.ndarray  # [T], rewards[t] = R_{t+1}


def batch_seed(seed: int, step: int) -> int:
    """The env seed of the batch that starts at `step`: independent streams for every (seed, step)
    pair, where seed + step would give run 1 at step 1 the episodes of run 2 at step 0."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def play_episode(envs: gym.vector.VectorEnv, agent: Agent, obs: np.ndarray, deterministic: bool = False):
    """Play one whole episode in a one-env SAME_STEP vector env, starting from its current observation
    obs. Returns the Episode and the first observation of the next one. Box actions are clipped to the
    bounds for the env; the unclipped sample is what the policy's log-probability is of."""
    device = next(agent.parameters()).device
    space = envs.single_action_space
    observations, actions, rewards = [], [], []
    while True:
        with torch.inference_mode():
            action = agent.act(torch.as_tensor(obs, device=device), deterministic).cpu().numpy()
        observations.append(obs[0])
        actions.append(action[0])
        obs, reward, terminated, truncated, _ = envs.step(action if agent.discrete else np.clip(action, space.low, space.high))
        rewards.append(float(reward[0]))
        # Terminated or truncated (a time limit), the episode is over: a Monte-Carlo return has no bootstrap.
        if terminated[0] or truncated[0]:
            return Episode(np.stack(observations), np.stack(actions), np.array(rewards)), obs


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
    for package in ("torch", "gymnasium", "numpy", "tyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes."""
    envs = make_vector_env(args, video_dir)
    obs, _ = envs.reset(seed=seed)
    returns = []
    for _ in range(episodes):
        episode, obs = play_episode(envs, agent, obs, deterministic)
        returns.append(float(episode.rewards.sum()))
    envs.close()
    return returns


def load_agent(model_path: str) -> tuple[Agent, Args]:
    """Rebuild the agent saved by --save-model from its weights and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    envs = make_vector_env(dataclasses.replace(args, capture_video=False), "")
    agent = Agent(envs.single_observation_space, envs.single_action_space, args.hidden_size, args.baseline)
    envs.close()
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
        eta = max(self.total - step, 0) / max(sps, 1e-9)
        recent = f"{np.mean(recent_returns):9.2f}" if recent_returns else "      n/a"
        line = (f"step {step:>10,}/{self.total:,} ({100 * min(step / self.total, 1):5.1f}%) | {sps:7,.0f} steps/s | "
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
    """Train REINFORCE and return the summary that is also written to RUN_DIR/summary.json. A run stopped
    by SIGINT or SIGTERM returns {"interrupted": True, "global_step", "run_dir"} and writes no summary."""
    checkpoint, checkpoint_path = None, ""
    if args.resume:
        checkpoint_path = os.path.join(args.resume, "checkpoint.pt")
        checkpoint = load_checkpoint(args.resume)
        args = dataclasses.replace(args_from_saved(checkpoint, checkpoint_path), resume=args.resume,
                                   run_dir=args.resume)
    # Every check before anything is written; the env id first, since the other messages assume it exists.
    check_env_id(args.env_id)
    check_args(args)
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir)

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # No video yet: RecordVideo makes its folder at once, and nothing is written before every check passes.
    envs = make_vector_env(dataclasses.replace(args, capture_video=False), "")
    try:
        check_spaces(envs.single_observation_space, envs.single_action_space)
    except ConfigError:
        envs.close()
        raise
    threads_before = torch.get_num_threads()  # restored at the end, for callers in the same process
    torch.set_num_threads(args.threads)

    agent = Agent(envs.single_observation_space, envs.single_action_space, args.hidden_size, args.baseline).to(device)
    param_groups = [{"params": agent.policy_parameters(), "lr": args.learning_rate}]
    if args.baseline:
        param_groups.append({"params": list(agent.critic.parameters()), "lr": args.value_learning_rate})
    optimizer = torch.optim.Adam(param_groups)
    global_step, update, elapsed_before = 0, 0, 0.0
    if checkpoint is not None:
        def load_state() -> None:
            nonlocal global_step, update, elapsed_before
            agent.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            global_step, update = int(checkpoint["global_step"]), int(checkpoint["update"])
            elapsed_before = float(checkpoint["elapsed"])
            set_rng_state(checkpoint["rng"])

        try:
            restore(checkpoint_path, load_state)
        except ConfigError:
            envs.close()
            torch.set_num_threads(threads_before)
            raise
    if args.capture_video:
        envs.close()
        envs = make_vector_env(args, os.path.join(run_dir, "videos"))

    os.makedirs(run_dir, exist_ok=True)
    remove_stale_temporaries(run_dir)
    episode_file, episode_log = open_episode_log(run_dir, global_step if checkpoint else None)
    if args.track:  # wandb mirrors the TensorBoard logs; set WANDB_MODE=offline to stay off the network
        import wandb

        wandb.init(project=args.wandb_project_name, entity=args.wandb_entity, config=vars(args),
                   name=os.path.basename(run_dir), dir=run_dir, id=os.path.basename(run_dir), resume="allow",
                   sync_tensorboard=True)
    # Everything logged up to the checkpoint's step was logged before it was saved: what a killed attempt
    # logged after it is dropped, as it is logged again.
    if checkpoint:
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

    def save_checkpoint() -> None:
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(args), "model": agent.state_dict(),
            "optimizer": optimizer.state_dict(),
            "global_step": global_step, "update": update, "elapsed": elapsed_before + time.time() - start_time,
            "rng": rng_state(),
        }, os.path.join(run_dir, "checkpoint.pt"))

    recent_returns: deque = deque(maxlen=20)
    start_time, start_step = time.time(), global_step
    progress = Progress(args.total_timesteps, global_step)
    try:
        while global_step < args.total_timesteps:
            update += 1
            batch_start_step = global_step
            # Each batch starts fresh episodes, seeded by the seed and the step count, so that a resumed
            # run plays exactly the episodes the uninterrupted one would have.
            obs, _ = envs.reset(seed=batch_seed(args.seed, global_step))
            episodes = []
            for _ in range(args.episodes_per_update):
                episode, obs = play_episode(envs, agent, obs)
                episodes.append(episode)
                global_step += len(episode.rewards)
                wall_time = elapsed_before + time.time() - start_time
                episodic_return, episodic_length = float(episode.rewards.sum()), len(episode.rewards)
                episode_log.writerow([global_step, episodic_return, episodic_length, round(wall_time, 3)])
                episode_file.flush()
                writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                writer.add_scalar("charts/episodic_length", episodic_length, global_step)
                recent_returns.append(episodic_return)

            b_obs = torch.as_tensor(np.concatenate([e.observations for e in episodes]), device=device)
            b_actions = torch.as_tensor(np.concatenate([e.actions for e in episodes]), device=device)
            b_returns = torch.as_tensor(np.concatenate([discounted_returns(e.rewards, args.gamma) for e in episodes]),
                                        dtype=torch.float32, device=device)
            b_weights = torch.as_tensor(
                np.concatenate([return_weights(e.rewards, args.gamma, args.reward_to_go) for e in episodes]),
                dtype=torch.float32, device=device)

            # The baseline of Algorithm 13.4: the policy uses G - v(S_t) with v from before this batch's
            # update of v, then v takes its steps towards G_t.
            v_loss, explained = None, None
            if args.baseline:
                with torch.no_grad():
                    values = agent.get_value(b_obs)
                b_weights = b_weights - values
                explained = explained_variance(values, b_returns)
            logprob, entropy = agent.log_prob(b_obs, b_actions)
            pg_loss = policy_gradient_loss(logprob, b_weights, len(episodes))
            loss = pg_loss
            if args.baseline:
                v_loss = value_loss(agent.get_value(b_obs), b_returns)
                loss = loss + v_loss
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} at step {global_step:,}; "
                                         f"{safe_to_resume(run_dir)}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            for _ in range(args.value_epochs - 1 if args.baseline else 0):  # the baseline's further steps
                v_loss = value_loss(agent.get_value(b_obs), b_returns)
                optimizer.zero_grad(set_to_none=True)
                v_loss.backward()
                optimizer.step()
            # A gradient that overflowed turns the weights to nan or inf even though the loss before the
            # step was finite: stop here, before a checkpoint of them, not one batch later.
            if not all_finite(agent.state_dict()):
                raise FloatingPointError(f"the weights became nan or inf at step {global_step:,} (the loss was "
                                         f"finite); {safe_to_resume(run_dir)}")

            sps = int((global_step - start_step) / (time.time() - start_time))
            metrics = [("charts/SPS", sps), ("losses/policy_loss", pg_loss.item()),
                       ("losses/entropy", entropy.mean().item())]
            if args.baseline:
                metrics += [("losses/value_loss", v_loss.item()), ("losses/explained_variance", explained)]
            for name, value in metrics:
                writer.add_scalar(name, value, global_step)
            progress.update(global_step, recent_returns, force=global_step >= args.total_timesteps)

            if stop_signal:
                save_checkpoint()
                print(f"\nstopped by signal {stop_signal[0]} at step {global_step}; resume with --resume {run_dir}")
                writer.close()
                return {"interrupted": True, "global_step": global_step, "run_dir": run_dir}
            if args.checkpoint_every and global_step // args.checkpoint_every > batch_start_step // args.checkpoint_every:
                save_checkpoint()
    finally:
        progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        episode_file.close()
        envs.close()
        writer.flush()
        torch.set_num_threads(threads_before)

    if args.checkpoint_every:
        save_checkpoint()
    elapsed = elapsed_before + time.time() - start_time
    summary = {
        "algo": "reinforce", "env_id": args.env_id, "seed": args.seed, "total_steps": global_step,
        "updates": update, "sps": int((global_step - start_step) / (time.time() - start_time)),
        "wall_time": round(elapsed, 1), "args": dataclasses.asdict(args), "versions": package_versions(),
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
    """`evaluate MODEL ...` gives EvalArgs; anything else gives training Args."""
    if argv[:1] == ["evaluate"]:
        return tyro.cli(EvalArgs, args=argv[1:], prog="reinforce.py evaluate")
    return tyro.cli(Args, args=argv, description=__doc__)


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
