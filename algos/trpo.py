"""Trust Region Policy Optimization (Schulman et al. 2015, "Trust Region Policy Optimization"), with GAE
(Schulman et al. 2016, "High-Dimensional Continuous Control Using Generalized Advantage Estimation").

Collect a batch with the current policy and estimate advantages with GAE. Take the gradient g of the
importance-sampled surrogate, solve H x = g for the Fisher matrix H (the Hessian of the mean KL, applied by
double backprop) with conjugate gradient, scale x to the edge of the trust region KL <= delta, and
backtrack along it until the surrogate improves inside the region. `--no-line-search` takes the scaled
step as it is: the natural policy gradient (Kakade 2002). A separate value network is fitted by Adam.

    python algos/trpo.py --env-id Hopper-v5
    python algos/trpo.py --preset classic --env-id CartPole-v1
    python algos/trpo.py --preset atari --env-id BreakoutNoFrameskip-v4
    python algos/trpo.py --env-id Hopper-v5 --no-line-search        # natural policy gradient
    python algos/trpo.py evaluate runs/<run>/model.pt --episodes 10
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
from typing import Annotated, Callable, Literal, NamedTuple

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "trpo.py"  # names this script in messages, checkpoints and models

gym.register_envs(ale_py)  # the ALE/ and *NoFrameskip-v4 ids; the ROMs ship inside ale-py


@dataclass
class Args:
    # --- common to every script ---
    preset: Literal["mujoco", "classic", "atari"] = "mujoco"
    """settings for a family of environments: mujoco (the authors' baselines trpo_mpi MuJoCo settings), classic (classic control: mujoco's without observation normalisation), atari (baselines' Atari settings, delta 0.001). Other flags override its values; `--preset atari --help` shows its defaults"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environments (env i gets seed + i)"""
    env_id: str = "Hopper-v5"
    """the gymnasium environment id"""
    total_timesteps: int = 1_000_000
    """environment steps to train for, summed over the parallel envs and rounded down to whole batches (on Atari a step is 4 frames). baselines run_mujoco: 1M"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = True
    """use a CUDA GPU when one is present"""
    threads: int | None = None
    """torch CPU threads; default: 1 for vector observations (small MLPs run fastest on one), torch's own choice for images (all cores, or OMP_NUM_THREADS). Give runs that share a machine 1 each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "trpo"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of env 0 into RUN_DIR/videos"""
    save_model: bool = False
    """write RUN_DIR/model.pt at the end: weights, observation statistics and args"""
    run_dir: str | None = None
    """where the run writes its files; default runs/{env_id}__{exp_name}__{seed}__{timestamp}"""
    checkpoint_every: int = 0
    """write RUN_DIR/checkpoint.pt every this many env steps (0: only when interrupted)"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of the final evaluation written to summary.json (0 skips it)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action (or the Gaussian mean) instead of sampling"""

    # --- TRPO ---
    env_backend: Literal["gymnasium", "envpool"] = "gymnasium"
    """gymnasium vector envs, or EnvPool (Atari only, the `envpool` extra; several times faster)"""
    num_envs: int = 1
    """parallel environments. baselines trpo_mpi: 1 per MPI worker (run_mujoco: 1 worker)"""
    num_steps: int = 1024
    """steps per env per batch. baselines trpo_mpi defaults: 1024 (MuJoCo), 512 per worker (Atari)"""
    max_kl: float = 0.01
    """delta, the trust region: the bound on the mean KL(pi_old || pi_new). The paper: 0.01; baselines: 0.01 (MuJoCo), 0.001 (Atari)"""
    line_search: bool = True
    """backtrack along the step until the surrogate improves with KL <= delta (TRPO); --no-line-search takes the full step, the natural policy gradient"""
    backtrack_iters: int = 10
    """step fractions tried by the line search: 1, c, c^2, ... (baselines trpo_mpi: 10)"""
    backtrack_coeff: float = 0.5
    """c, the factor that shrinks the step between tries (baselines trpo_mpi: 0.5; Spinning Up: 0.8)"""
    cg_iters: int = 10
    """conjugate-gradient iterations for H^-1 g (the paper and baselines: 10)"""
    cg_damping: float = 0.1
    """added to the Fisher matrix, H + damping I, to keep the solve well-conditioned. baselines: 0.1 (MuJoCo), 1e-3 (Atari)"""
    fvp_every: int = 1
    """compute the Fisher-vector products on every k-th sample of the batch. baselines uses every 5th (arr[::5]) to save time; 1 (all) here for MLPs, where it is cheap"""
    gamma: float = 0.99
    """discount factor. baselines: 0.99 (MuJoCo), 0.98 (Atari)"""
    gae_lambda: float = 0.98
    """GAE lambda. baselines: 0.98 (MuJoCo), 1.0 (Atari); the GAE paper's best were about 0.97-0.98"""
    norm_adv: bool = True
    """standardise the advantages of each batch (baselines trpo_mpi)"""
    learning_rate: float = 1e-3
    """Adam step size of the value network. baselines: 1e-3 (MuJoCo), 1e-4 (Atari)"""
    value_epochs: int = 5
    """passes of the value fit over each batch. baselines vf_iters: 5 (MuJoCo), 3 (Atari)"""
    value_minibatch_size: int = 64
    """samples per Adam step of the value fit (baselines: 64)"""
    hidden_sizes: tuple[int, ...] = (32, 32)
    """tanh hidden layers of the policy MLP and, separately, of the value MLP (baselines run_mujoco: 32-32). Ignored for images: the Nature CNN"""
    normalize_obs: bool = True
    """normalise observations by running mean and std, clipped to +-10; saved with the model (baselines: on for MuJoCo)"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


PRESETS = {
    # OpenAI baselines trpo_mpi, defaults.py mujoco() and run_mujoco.py: 1M steps on one worker.
    "mujoco": Args(),
    # The same without observation normalisation (the paper has no classic-control table).
    "classic": Args(preset="classic", env_id="CartPole-v1", total_timesteps=500_000, normalize_obs=False),
    # baselines trpo_mpi Atari (defaults.py atari(), run_atari.py) on ppo.py's Atari layout of 8 envs x 128
    # steps (baselines ran 16 workers x 512), with the Nature CNN; 40M frames = 10M agent steps.
    "atari": Args(
        preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=10_000_000, num_envs=8, num_steps=128,
        max_kl=0.001, cg_damping=1e-3, fvp_every=5, gamma=0.98, gae_lambda=1.0, learning_rate=1e-4,
        value_epochs=3, normalize_obs=False,
    ),
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
    if args.total_timesteps <= 0 or args.num_envs <= 0 or args.num_steps <= 0:
        raise ConfigError("--total-timesteps, --num-envs and --num-steps must be positive")
    if args.total_timesteps < args.batch_size:
        raise ConfigError(
            f"--total-timesteps {args.total_timesteps} is less than one batch of --num-envs x --num-steps "
            f"= {args.batch_size}; raise it or shrink the batch"
        )
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("value_epochs", "value_minibatch_size", "cg_iters", "backtrack_iters", "fvp_every"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if args.max_kl <= 0:
        raise ConfigError(f"--max-kl must be positive, got {args.max_kl}")
    if args.cg_damping < 0:
        raise ConfigError(f"--cg-damping must be non-negative, got {args.cg_damping}")
    if not 0 < args.backtrack_coeff < 1:
        raise ConfigError(f"--backtrack-coeff must be in (0, 1), got {args.backtrack_coeff}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise ConfigError(f"--hidden-sizes must be one or more positive sizes, got {args.hidden_sizes}")
    for name in ("gamma", "gae_lambda"):
        value = getattr(args, name)
        if not 0 < value <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {value}")
    if args.checkpoint_every < 0 or args.eval_episodes < 0:
        raise ConfigError("--checkpoint-every and --eval-episodes must be non-negative")
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")


def check_env_id(env_id: str) -> None:
    """Refuse an unknown environment id, suggesting the closest registered ones, and an Atari id that skips
    frames itself."""
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
    """TRPO here handles vector or image observations, and discrete or box actions."""
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or (
        isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1
    ):
        raise ConfigError(f"trpo.py supports Discrete and 1-D Box action spaces, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"trpo.py supports 1-D vector or stacked-image observations, not {observation_space}")


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


class EnvPoolVecEnv:
    """EnvPool's Atari behind the interface of a SAME_STEP gymnasium vector env.

    EnvPool resets an env on the step *after* its episode ends (ignoring that action). Here that
    reset step is taken at once for the finished envs only, so the caller sees the final observation in
    infos["final_obs"] and the first one of the next episode in obs, as from gymnasium. Statistics are
    of whole games and true scores (EnvPool's info["reward"] is unclipped), like the gymnasium chain.
    """

    def __init__(self, env_id: str, num_envs: int, seed: int):
        import envpool

        task = env_id.removesuffix("NoFrameskip-v4").removeprefix("ALE/").split("-")[0] + "-v5"
        # EnvPool's defaults differ from the DQN chain: no episodic life, no reward clip, sticky actions.
        self.envs = envpool.make(
            task, env_type="gymnasium", num_envs=num_envs, seed=seed, episodic_life=True, reward_clip=True,
            repeat_action_probability=0.0, noop_max=30, frame_skip=4, stack_num=4, img_height=84, img_width=84,
        )
        self.num_envs = num_envs
        self.single_observation_space = self.envs.observation_space
        self.single_action_space = self.envs.action_space
        self.episode_returns = np.zeros(num_envs)
        self.episode_lengths = np.zeros(num_envs, dtype=np.int64)

    def reset(self, seed: int | None = None):
        self.episode_returns[:] = 0
        self.episode_lengths[:] = 0
        obs, _ = self.envs.reset()
        return obs, {}

    def step(self, actions: np.ndarray):
        obs, rewards, terminated, truncated, info = self.envs.step(actions)
        self.episode_returns += info["reward"]
        self.episode_lengths += 1
        infos = {}
        done = terminated | truncated
        if done.any():
            ids = np.flatnonzero(done)
            infos["final_obs"], infos["_final_obs"] = obs.copy(), done
            obs[ids] = self.envs.step(np.zeros(len(ids), dtype=actions.dtype), ids)[0]
            # A game is over at its last life or at the time limit; a lost life is not an episode.
            game_over = done & ((info["terminated"] == 1) | truncated)
            if game_over.any():
                infos["final_info"] = {
                    "_episode": game_over,
                    "episode": {"r": self.episode_returns.copy(), "l": self.episode_lengths.copy()},
                }
                self.episode_returns[game_over] = 0
                self.episode_lengths[game_over] = 0
        return obs, rewards, terminated, truncated, infos

    def close(self):
        self.envs.close()


def make_vector_env(args: Args, seed: int, video_dir: str, num_envs: int | None = None):
    num_envs = num_envs or args.num_envs
    if args.env_backend == "envpool":
        return EnvPoolVecEnv(args.env_id, num_envs, seed)
    return gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, video_dir) for i in range(num_envs)],
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


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates (Schulman et al. 2016) and the value targets, for a [T, N] rollout.

    values[t] is V(s_t); next_value is V of the observation after the last step. When an episode ends
    at step t, the state after it is the episode's final observation: terminated means no future
    (bootstrap 0), truncated means the episode was cut off, so bootstrap from final_values[t], the value
    of that final observation. Either way no advantage flows back across the episode boundary.
    """
    next_values = torch.cat([values[1:], next_value[None]])
    next_values = torch.where(truncated, final_values, next_values)
    next_values = next_values * (~terminated)
    deltas = rewards + gamma * next_values - values
    continues = (~(terminated | truncated)).float()
    advantages = torch.zeros_like(rewards)
    last = torch.zeros_like(rewards[0])
    for t in reversed(range(rewards.shape[0])):
        last = deltas[t] + gamma * gae_lambda * continues[t] * last
        advantages[t] = last
    return advantages, advantages + values


def surrogate_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """The importance-sampled surrogate L(theta) = mean[pi_theta(a|s) / pi_old(a|s) A] (the paper's sample-based objective),
    to be maximised. At theta = theta_old its gradient is the policy gradient."""
    return ((new_logprob - old_logprob).exp() * advantages).mean()


def categorical_kl(old_logits: torch.Tensor, new_logits: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi_new) of categorical distributions given by logits, one value per row."""
    old_logp, new_logp = old_logits.log_softmax(-1), new_logits.log_softmax(-1)
    return (old_logp.exp() * (old_logp - new_logp)).sum(-1)


def gaussian_kl(old_mean: torch.Tensor, old_logstd: torch.Tensor, new_mean: torch.Tensor,
                new_logstd: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi_new) of diagonal Gaussians, one value per row: the sum over action dimensions of
    log(s_new / s_old) + (s_old^2 + (m_old - m_new)^2) / (2 s_new^2) - 1/2."""
    old_var, new_var = (2 * old_logstd).exp(), (2 * new_logstd).exp()
    per_dim = new_logstd - old_logstd + (old_var + (old_mean - new_mean) ** 2) / (2 * new_var) - 0.5
    return per_dim.sum(-1)


def flat_grad(output: torch.Tensor, params: list[torch.Tensor], create_graph: bool = False) -> torch.Tensor:
    """d output / d params as one flat vector (zeros for parameters that output does not depend on)."""
    grads = torch.autograd.grad(output, params, create_graph=create_graph, allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1) for g, p in zip(grads, params)])


def fisher_vector_product(kl_fn: Callable[[], torch.Tensor], params: list[torch.Tensor], vector: torch.Tensor,
                          damping: float) -> torch.Tensor:
    """(H + damping I) v, H the Hessian of the mean KL(pi_old || pi_theta) at theta = theta_old, which is the
    Fisher information matrix (the paper's practical algorithm). Two backward passes and no matrix: the gradient of the
    KL, kept differentiable, dotted with v, differentiated again. kl_fn computes the mean KL with pi_old's
    outputs detached, at the current parameters."""
    grad = flat_grad(kl_fn(), params, create_graph=True)
    return flat_grad(grad @ vector, params) + damping * vector


def conjugate_gradient(matrix_vector: Callable[[torch.Tensor], torch.Tensor], b: torch.Tensor, iters: int,
                       residual_tol: float = 1e-10) -> torch.Tensor:
    """x ~ A^-1 b for a symmetric positive-definite A known only through v -> A v (Hestenes and Stiefel;
    Nocedal and Wright, Algorithm 5.2), starting from x = 0. Exact after n iterations for an n x n A, in
    exact arithmetic; TRPO stops after a few (10)."""
    x = torch.zeros_like(b)
    residual, direction = b.clone(), b.clone()
    residual_sq = residual @ residual
    for _ in range(iters):
        if residual_sq < residual_tol:
            break
        a_direction = matrix_vector(direction)
        alpha = residual_sq / (direction @ a_direction)
        x += alpha * direction
        residual -= alpha * a_direction
        new_residual_sq = residual @ residual
        direction = residual + (new_residual_sq / residual_sq) * direction
        residual_sq = new_residual_sq
    return x


def max_step(direction: torch.Tensor, h_direction: torch.Tensor, max_kl: float) -> torch.Tensor:
    """The multiple beta s of the search direction s on the edge of the quadratic trust region
    1/2 (beta s)^T H (beta s) = delta: beta = sqrt(2 delta / s^T H s), as in the paper."""
    return math.sqrt(2 * max_kl / max(float(direction @ h_direction), 1e-12)) * direction


class LineSearchResult(NamedTuple):
    params: torch.Tensor  # the accepted parameters, or the old ones when no step passed
    accepted: bool
    backtracks: int  # shrinkings before the accepted step (backtrack_iters when none was accepted)
    surrogate: float  # the surrogate at params
    kl: float  # the mean KL(pi_old || pi) at params


def line_search(evaluate: Callable[[torch.Tensor], tuple[float, float]], old_params: torch.Tensor,
                full_step: torch.Tensor, old_surrogate: float, max_kl: float, backtrack_iters: int,
                backtrack_coeff: float) -> LineSearchResult:
    """Backtracking line search of TRPO: try old + c^k full_step for
    k = 0, 1, ... and accept the first that improves the surrogate while keeping the mean KL <= delta.
    evaluate(params) gives (surrogate, KL) at params. If no try passes, keep the old parameters."""
    for k in range(backtrack_iters):
        params = old_params + backtrack_coeff**k * full_step
        surrogate, kl = evaluate(params)
        if math.isfinite(surrogate) and math.isfinite(kl) and kl <= max_kl and surrogate > old_surrogate:
            return LineSearchResult(params, True, k, surrogate, kl)
    return LineSearchResult(old_params, False, backtrack_iters, old_surrogate, 0.0)


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than a constant."""
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


class RunningMeanStd(nn.Module):
    """Running mean and variance (parallel algorithm of Chan et al.), kept as buffers so they are saved
    with the model and restored on resume."""

    def __init__(self, shape: tuple[int, ...] = ()):
        super().__init__()
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(1e-4, dtype=torch.float64))

    def update(self, batch: torch.Tensor) -> None:
        batch = batch.double()
        batch_mean, batch_var, batch_count = batch.mean(0), batch.var(0, unbiased=False), batch.shape[0]
        delta = batch_mean - self.mean
        total = self.count + batch_count
        self.mean += delta * batch_count / total
        self.var.copy_((self.var * self.count + batch_var * batch_count + delta**2 * self.count * batch_count / total) / total)
        self.count.copy_(total)


# --------------------------------------------------------------------------------------------------
# The updates
# --------------------------------------------------------------------------------------------------


def policy_update(agent: "Agent", obs: torch.Tensor, actions: torch.Tensor, advantages: torch.Tensor, args: Args,
                  step: int) -> dict:
    """One TRPO step of the policy on a batch (or, with --no-line-search, one natural-gradient step).

    g = grad of the surrogate at theta_old; s = CG solution of (H + damping I) s = g on every
    fvp_every-th sample; full step = sqrt(2 delta / s^T H s) s; then the line search, over the whole batch.
    Returns what is logged: the surrogate before and after, its first-order (expected) improvement, the
    KL reached, the backtracks taken, whether a step was taken, and the entropy before the step.
    """
    params = agent.policy_parameters()
    with torch.no_grad():
        old_output = agent.policy_output(obs)
        old_logprob = agent.log_prob(old_output, actions)
        old_logstd = None if agent.discrete else agent.actor_logstd.detach().clone()
        entropy = agent.entropy(old_output).mean().item()
    fvp_obs, fvp_old_output = obs[:: args.fvp_every], old_output[:: args.fvp_every]

    def mean_kl() -> torch.Tensor:
        return agent.kl_from(fvp_old_output, old_logstd, agent.policy_output(fvp_obs)).mean()

    def fvp(vector: torch.Tensor) -> torch.Tensor:
        return fisher_vector_product(mean_kl, params, vector, args.cg_damping)

    def evaluate(vector: torch.Tensor) -> tuple[float, float]:
        vector_to_parameters(vector, params)
        with torch.no_grad():
            output = agent.policy_output(obs)
            surrogate = surrogate_loss(agent.log_prob(output, actions), old_logprob, advantages)
            return surrogate.item(), agent.kl_from(old_output, old_logstd, output).mean().item()

    surrogate = surrogate_loss(agent.log_prob(agent.policy_output(obs), actions), old_logprob, advantages)
    if not torch.isfinite(surrogate):
        raise FloatingPointError(f"the loss became {surrogate.item()} at step {step:,} (a smaller --max-kl or a "
                                 "larger --cg-damping may help)")
    old_params = parameters_to_vector(params).detach()
    gradient = flat_grad(surrogate, params)
    stats = dict(surrogate_before=surrogate.item(), entropy=entropy)
    if not gradient.any():  # nothing to follow (all advantages 0): keep the policy
        return {**stats, "surrogate_after": surrogate.item(), "expected_improvement": 0.0, "kl": 0.0,
                "backtracks": 0, "accepted": False}
    direction = conjugate_gradient(fvp, gradient, args.cg_iters)
    full_step = max_step(direction, fvp(direction), args.max_kl)
    if args.line_search:
        result = line_search(evaluate, old_params, full_step, surrogate.item(), args.max_kl, args.backtrack_iters,
                             args.backtrack_coeff)
    else:  # the natural policy gradient: the full step, whatever KL it reaches
        result = LineSearchResult(old_params + full_step, True, 0, *evaluate(old_params + full_step))
    vector_to_parameters(result.params, params)
    if not math.isfinite(result.surrogate) or not math.isfinite(result.kl):
        raise FloatingPointError(f"the loss became {result.surrogate} (KL {result.kl}) after the step at step "
                                 f"{step:,} (a smaller --max-kl may help)")
    return {**stats, "surrogate_after": result.surrogate, "expected_improvement": float(gradient @ full_step),
            "kl": result.kl, "backtracks": result.backtracks, "accepted": result.accepted}


def fit_value(agent: "Agent", optimizer: torch.optim.Optimizer, obs: torch.Tensor, returns: torch.Tensor,
              epochs: int, minibatch_size: int, step: int) -> float:
    """Regress the value network on the returns: epochs of minibatch Adam on 1/2 (V(s) - R)^2."""
    for _ in range(epochs):
        for minibatch in torch.randperm(len(obs), device=obs.device).split(minibatch_size):
            loss = 0.5 * ((agent.get_value(obs[minibatch]) - returns[minibatch]) ** 2).mean()
            if not torch.isfinite(loss):
                raise FloatingPointError(f"the loss became {loss.item()} in the value fit at step {step:,}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        return (0.5 * (agent.get_value(obs) - returns) ** 2).mean().item()


# --------------------------------------------------------------------------------------------------
# Networks
# --------------------------------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases, as in the authors' baselines code."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


def make_network(observation_space: gym.spaces.Box, hidden_sizes: tuple[int, ...], n_out: int, out_std: float) -> nn.Module:
    """Images: the Nature CNN (Mnih et al. 2015). Vectors: an MLP of tanh layers of the given sizes."""
    if len(observation_space.shape) == 3:
        return nn.Sequential(
            layer_init(nn.Conv2d(observation_space.shape[0], 32, 8, stride=4)), nn.ReLU(),
            layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
            layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
            nn.Flatten(),
            layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
            layer_init(nn.Linear(512, n_out), std=out_std),
        )
    layers, n_in = [], int(np.prod(observation_space.shape))
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(n_in, size)), nn.Tanh()]
        n_in = size
    return nn.Sequential(*layers, layer_init(nn.Linear(n_in, n_out), std=out_std))


class Agent(nn.Module):
    """A policy network and a separate value network of the same shape (baselines trpo_mpi keeps them
    apart, its Atari CNN included, so that fitting the value cannot move the policy outside its trust
    region). Discrete actions: softmax over the policy's logits. Continuous: a Gaussian whose mean is the
    policy's output and whose log std is a free parameter, one per action dimension."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.Space, hidden_sizes: tuple[int, ...],
                 normalize_obs: bool):
        super().__init__()
        self.image = len(observation_space.shape) == 3
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.normalize_obs = normalize_obs
        self.obs_rms = RunningMeanStd(observation_space.shape)
        n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.actor = make_network(observation_space, hidden_sizes, n_out, out_std=0.01)
        self.critic = make_network(observation_space, hidden_sizes, 1, out_std=1.0)
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(n_out))

    def policy_parameters(self) -> list[nn.Parameter]:
        """The parameters that the trust-region step moves (the value network's are fitted apart)."""
        return list(self.actor.parameters()) + ([] if self.discrete else [self.actor_logstd])

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if self.image:
            return obs.float() / 255.0
        obs = obs.float()
        if self.normalize_obs:
            obs = ((obs - self.obs_rms.mean) / torch.sqrt(self.obs_rms.var + 1e-8)).clamp(-10, 10).float()
        return obs

    def policy_output(self, obs: torch.Tensor) -> torch.Tensor:
        """Logits (discrete) or the Gaussian mean (continuous)."""
        return self.actor(self.features(obs))

    def log_prob(self, output: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            return output.log_softmax(-1).gather(-1, action.long()[:, None]).squeeze(-1)
        z = (action - output) * (-self.actor_logstd).exp()
        return (-0.5 * z**2 - self.actor_logstd - 0.5 * np.log(2 * np.pi)).sum(-1)

    def entropy(self, output: torch.Tensor) -> torch.Tensor:
        if self.discrete:
            logp = output.log_softmax(-1)
            return -(logp.exp() * logp).sum(-1)
        return (self.actor_logstd + 0.5 * np.log(2 * np.pi * np.e)).sum(-1).expand(output.shape[0])

    def kl_from(self, old_output: torch.Tensor, old_logstd: torch.Tensor | None, output: torch.Tensor) -> torch.Tensor:
        """KL(pi_old || pi) per sample, pi_old given by its (detached) outputs, pi by the current ones."""
        if self.discrete:
            return categorical_kl(old_output, output)
        return gaussian_kl(old_output, old_logstd.expand_as(old_output), output, self.actor_logstd.expand_as(output))

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Actions (sampled, or the most likely / the mean) and the values of a batch of observations."""
        hidden = self.features(obs)
        out = self.actor(hidden)
        if self.discrete:
            if deterministic:
                action = out.argmax(-1)
            else:  # Gumbel-max: argmax(log p - log E), E ~ Exp(1), is a sample of p
                action = (out.log_softmax(-1) - torch.empty_like(out).exponential_().log()).argmax(-1)
        else:
            action = out if deterministic else out + self.actor_logstd.exp() * torch.randn_like(out)
        return action, self.critic(hidden).squeeze(-1)


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
    for package in ("torch", "gymnasium", "numpy", "ale-py", "mujoco", "envpool", "tyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari)."""
    envs = make_vector_env(args, seed, video_dir, num_envs=1)
    device = next(agent.parameters()).device
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.inference_mode():
            action = agent.act(torch.as_tensor(obs, device=device), deterministic)[0]
        action = action.cpu().numpy()
        if not agent.discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, _, _, infos = envs.step(action)
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_agent(model_path: str) -> tuple[Agent, Args]:
    """Rebuild the agent saved by --save-model: weights, observation statistics and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    envs = make_vector_env(dataclasses.replace(args, capture_video=False), args.seed, "", num_envs=1)
    agent = Agent(envs.single_observation_space, envs.single_action_space, tuple(args.hidden_sizes),
                  args.normalize_obs)
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
    """Train TRPO (or NPG) and return the summary that is also written to RUN_DIR/summary.json. A run stopped
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
    if args.env_backend == "envpool" and not is_atari(args.env_id):
        raise ConfigError("--env-backend envpool is for Atari ids here; use gymnasium for " + args.env_id)
    # Counts over the run, for the summary: updates, line searches that kept the old policy, and updates
    # that ended with a mean KL above delta (only the natural gradient can).
    counts = {"updates": 0, "rejected": 0, "kl_above_max_kl": 0, "kl_sum": 0.0}
    global_step, start_iteration, elapsed_before = 0, 1, 0.0
    if checkpoint is not None:
        def load_counters() -> None:
            nonlocal global_step, start_iteration, elapsed_before
            counts.update({key: checkpoint["counts"][key] for key in counts})
            global_step, elapsed_before = int(checkpoint["global_step"]), float(checkpoint["elapsed"])
            start_iteration = int(checkpoint["iteration"]) + 1

        restore(checkpoint_path, load_counters)
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir, hidden_sizes=tuple(args.hidden_sizes))

    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    torch.backends.cudnn.deterministic = args.torch_deterministic
    device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    # A resumed run cannot restore the environments' internal states: it starts fresh episodes, seeded
    # from the step it resumes at, so that resuming is itself reproducible.
    env_seed = args.seed + global_step
    # No video yet: RecordVideo makes its folder at once, and nothing is written before every check passes.
    envs = make_vector_env(dataclasses.replace(args, capture_video=False), env_seed, "")
    try:
        check_spaces(envs.single_observation_space, envs.single_action_space)
    except ConfigError:
        envs.close()
        raise
    image_obs = len(envs.single_observation_space.shape) == 3
    threads_before = torch.get_num_threads()  # restored at the end, for callers in the same process
    torch.set_num_threads(args.threads or (threads_before if image_obs else 1))
    if args.preset == "classic" and "mujoco" in str(gym.spec(args.env_id).entry_point):
        print(f"note: {args.env_id} is a MuJoCo task; --preset mujoco gives the authors' settings for it")

    agent = Agent(envs.single_observation_space, envs.single_action_space, args.hidden_sizes,
                  args.normalize_obs).to(device)
    value_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate)
    if checkpoint is not None:
        def load_state() -> None:
            agent.load_state_dict(checkpoint["model"])
            value_optimizer.load_state_dict(checkpoint["value_optimizer"])
            set_rng_state(checkpoint["rng"])

        try:
            restore(checkpoint_path, load_state)
        except ConfigError:
            envs.close()
            torch.set_num_threads(threads_before)
            raise
    if args.capture_video:
        envs.close()
        envs = make_vector_env(args, env_seed, os.path.join(run_dir, "videos"))

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

    # Batch storage, allocated once. Atari frames stay uint8 until the network sees them.
    obs_dtype = torch.uint8 if envs.single_observation_space.dtype == np.uint8 else torch.float32
    T, N = args.num_steps, args.num_envs
    obs_buf = torch.zeros((T, N, *envs.single_observation_space.shape), dtype=obs_dtype, device=device)
    action_buf = torch.zeros((T, N, *envs.single_action_space.shape), device=device,
                             dtype=torch.long if agent.discrete else torch.float32)
    value_buf, final_value_buf = torch.zeros((T, N), device=device), torch.zeros((T, N), device=device)
    # What the envs return stays in numpy until the batch ends: one conversion instead of one a step.
    reward_buf = np.zeros((T, N), dtype=np.float32)
    terminated_buf, truncated_buf = np.zeros((T, N), dtype=bool), np.zeros((T, N), dtype=bool)

    stop_signal = []
    previous_handlers = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous_handlers[sig] = signal.signal(sig, lambda signum, frame: stop_signal.append(signum))
        except ValueError:  # not the main thread: leave signals alone
            pass

    def save_checkpoint(iteration: int) -> None:
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(args), "model": agent.state_dict(),
            "value_optimizer": value_optimizer.state_dict(), "counts": counts, "global_step": global_step,
            "iteration": iteration, "elapsed": elapsed_before + time.time() - start_time, "rng": rng_state(),
        }, os.path.join(run_dir, "checkpoint.pt"))

    next_obs_np, _ = envs.reset(seed=env_seed)
    next_obs = torch.as_tensor(next_obs_np, device=device)
    recent_returns: deque = deque(maxlen=20)
    start_time, start_step = time.time(), global_step
    progress = Progress(args.num_iterations * args.batch_size, global_step)
    low, high = (envs.single_action_space.low, envs.single_action_space.high) if not agent.discrete else (None, None)
    iteration = start_iteration - 1
    try:
        for iteration in range(start_iteration, args.num_iterations + 1):
            for step in range(T):
                global_step += N
                obs_buf[step] = next_obs
                with torch.inference_mode():
                    action, value = agent.act(next_obs)
                action_buf[step], value_buf[step] = action, value
                action_np = action.cpu().numpy()
                next_obs_np, reward, terminated, truncated, infos = envs.step(
                    action_np if low is None else np.clip(action_np, low, high))
                next_obs = torch.as_tensor(next_obs_np, device=device)
                reward_buf[step], terminated_buf[step], truncated_buf[step] = reward, terminated, truncated
                if truncated.any():  # rare: the value of each cut-off episode's final observation
                    ids = np.flatnonzero(truncated)
                    final_obs = torch.as_tensor(np.stack(infos["final_obs"][ids]), device=device)
                    with torch.inference_mode():
                        final_value_buf[step, ids] = agent.get_value(final_obs)
                for episodic_return, episodic_length in zip(*finished_episodes(infos)):
                    wall_time = elapsed_before + time.time() - start_time
                    episode_log.writerow([global_step, float(episodic_return), int(episodic_length), round(wall_time, 3)])
                    episode_file.flush()
                    writer.add_scalar("charts/episodic_return", episodic_return, global_step)
                    writer.add_scalar("charts/episodic_length", episodic_length, global_step)
                    recent_returns.append(float(episodic_return))

            with torch.inference_mode():
                next_value = agent.get_value(next_obs)
            rewards, terminated, truncated = (torch.from_numpy(x).to(device) for x in (reward_buf, terminated_buf, truncated_buf))
            advantages, returns = compute_gae(rewards, value_buf, next_value, terminated, truncated,
                                              final_value_buf, args.gamma, args.gae_lambda)

            b_obs = obs_buf.reshape((-1, *envs.single_observation_space.shape))
            b_actions = action_buf.reshape((-1, *envs.single_action_space.shape))
            b_advantages, b_returns, b_values = (x.reshape(-1) for x in (advantages, returns, value_buf))
            if args.norm_adv and len(b_advantages) > 1:
                b_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)

            try:
                stats = policy_update(agent, b_obs, b_actions, b_advantages, args, global_step)
                value_loss = fit_value(agent, value_optimizer, b_obs, b_returns, args.value_epochs,
                                       args.value_minibatch_size, global_step)
            except FloatingPointError as error:
                raise FloatingPointError(f"{error}; {safe_to_resume(run_dir)}") from None
            if args.normalize_obs:
                # Once a batch, after both updates: the policy that acted and the one updated on its data
                # saw the same normalisation, so the surrogate's ratio starts at exactly 1.
                agent.obs_rms.update(b_obs)
            # A gradient that overflowed in the value fit turns its weights to nan or inf even though the
            # loss before the step was finite: stop here, before a checkpoint of them, not one batch later.
            if not all_finite(agent.state_dict()):
                raise FloatingPointError(f"the weights became nan or inf at step {global_step:,} (the loss was "
                                         f"finite); {safe_to_resume(run_dir)}")
            counts["updates"] += 1
            counts["rejected"] += int(not stats["accepted"])
            counts["kl_above_max_kl"] += int(stats["kl"] > args.max_kl)
            counts["kl_sum"] += stats["kl"]

            sps = int((global_step - start_step) / (time.time() - start_time))
            for name, value in (
                ("charts/SPS", sps),
                ("losses/surrogate_improvement", stats["surrogate_after"] - stats["surrogate_before"]),
                ("losses/expected_improvement", stats["expected_improvement"]),
                ("losses/kl", stats["kl"]), ("losses/linesearch_backtracks", stats["backtracks"]),
                ("losses/step_accepted", float(stats["accepted"])),
                ("losses/entropy", stats["entropy"]), ("losses/value_loss", value_loss),
                # Of the values that estimated this batch's advantages, before the fit (baselines' ev_tdlam_before).
                ("losses/explained_variance", explained_variance(b_values, b_returns)),
            ):
                writer.add_scalar(name, value, global_step)
            progress.update(global_step, recent_returns, force=iteration == args.num_iterations)

            if stop_signal:
                save_checkpoint(iteration)
                print(f"\nstopped by signal {stop_signal[0]} at step {global_step}; resume with --resume {run_dir}")
                writer.close()
                return {"interrupted": True, "global_step": global_step, "run_dir": run_dir}
            if args.checkpoint_every and global_step // args.checkpoint_every > (global_step - args.batch_size) // args.checkpoint_every:
                save_checkpoint(iteration)
    finally:
        progress.close()
        for sig, handler in previous_handlers.items():
            signal.signal(sig, handler)
        episode_file.close()
        envs.close()
        writer.flush()
        torch.set_num_threads(threads_before)

    if args.checkpoint_every:
        save_checkpoint(iteration)
    elapsed = elapsed_before + time.time() - start_time
    summary = {
        "algo": "trpo" if args.line_search else "npg", "env_id": args.env_id, "seed": args.seed,
        "total_steps": global_step, "sps": int((global_step - start_step) / (time.time() - start_time)),
        "wall_time": round(elapsed, 1),
        "updates": {"count": counts["updates"], "line_search_rejected": counts["rejected"],
                    "kl_above_max_kl": counts["kl_above_max_kl"],
                    "mean_kl": counts["kl_sum"] / max(counts["updates"], 1)},
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
        return tyro.cli(EvalArgs, args=argv[1:], prog="trpo.py evaluate")
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
