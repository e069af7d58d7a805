"""Proximal Policy Optimization (Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

Collect a batch of rollouts with the current policy, estimate advantages with GAE, then run several
epochs of minibatch Adam on a surrogate objective that keeps the new policy close to the old one
(clipped ratio by default; the adaptive and fixed KL penalties and the unclipped surrogate of Table 1 too).

    python algos/ppo.py --env-id CartPole-v1
    python algos/ppo.py --preset mujoco --env-id HalfCheetah-v5
    python algos/ppo.py --preset atari --env-id BreakoutNoFrameskip-v4
    python algos/ppo.py evaluate runs/<run>/model.pt --episodes 10
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

import ale_py
import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Normal
from torch.utils.tensorboard import SummaryWriter

SCRIPT = "ppo.py"  # names this script in messages, checkpoints and models

gym.register_envs(ale_py)  # the ALE/ and *NoFrameskip-v4 ids; the ROMs ship inside ale-py

@dataclass
class Args:
    # --- common to every script ---
    preset: Literal["classic", "mujoco", "atari"] = "classic"
    """the paper's settings for a family of environments: classic (classic control: Table 3 without normalisation), mujoco (Table 3), atari (Table 5). Other flags override its values; `--preset atari --help` shows its defaults"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environments (env i gets seed + i)"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 500_000
    """environment steps to train for, summed over the parallel envs and rounded down to whole batches (on Atari a step is 4 frames)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = True
    """use a CUDA GPU when one is present"""
    threads: int | None = None
    """torch CPU threads; default: 1 for vector observations (small MLPs run fastest on one), torch's own choice for images (all cores, or OMP_NUM_THREADS). Give runs that share a machine 1 each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "ppo"
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

    # --- PPO ---
    env_backend: Literal["gymnasium", "envpool"] = "gymnasium"
    """gymnasium vector envs, or EnvPool (Atari only, the `envpool` extra; several times faster)"""
    num_envs: int = 1
    """parallel environments (actors). Table 3: 1; Table 5: 8"""
    num_steps: int = 2048
    """steps per env per rollout, the horizon T. Table 3: 2048; Table 5: 128"""
    learning_rate: float = 3e-4
    """Adam step size. Table 3: 3e-4; Table 5: 2.5e-4 x alpha"""
    anneal: bool = False
    """anneal the learning rate and clip range linearly to 0 (Table 5's alpha)"""
    update_epochs: int = 10
    """passes over each batch. Table 3: 10; Table 5: 3"""
    minibatch_size: int = 64
    """samples per gradient step. Table 3: 64; Table 5: 32 x 8 = 256"""
    gamma: float = 0.99
    """discount factor. Tables 3 and 5: 0.99"""
    gae_lambda: float = 0.95
    """GAE lambda. Tables 3 and 5: 0.95"""
    surrogate: Literal["clip", "adaptive-kl", "fixed-kl", "none"] = "clip"
    """policy objective, the rows of Table 1: clipped ratio, adaptive or fixed KL penalty, or no clipping"""
    clip_coef: float = 0.2
    """clip range epsilon. Table 3: 0.2; Table 5: 0.1 x alpha. Table 1 tries 0.1, 0.2, 0.3"""
    kl_target: float = 0.01
    """d_targ of the adaptive KL penalty. Table 1 tries 0.003, 0.01, 0.03"""
    kl_beta: float = 1.0
    """the KL penalty weight beta (the fixed one, or the adaptive one's start). Table 1 tries 0.3, 1, 3, 10"""
    ent_coef: float = 0.0
    """entropy bonus c2. Table 3: 0 (MuJoCo); Table 5: 0.01"""
    vf_coef: float = 1.0
    """value loss coefficient c1. Table 5: 1 (with separate MLPs and Adam it barely matters)"""
    max_grad_norm: float = 0.5
    """clip the global gradient norm to this (the authors' baselines ppo2 uses 0.5; the paper is silent)"""
    norm_adv: bool = True
    """standardise advantages per minibatch (the authors' baselines code)"""
    normalize_obs: bool = False
    """normalise observations by running mean and std, clipped to +-10 (baselines' VecNormalize, MuJoCo)"""
    normalize_reward: bool = False
    """scale rewards by the running std of the discounted return, clipped to +-10 (baselines, MuJoCo)"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


PRESETS = {
    # The paper has no classic-control table: its MuJoCo settings (Table 3), without normalisation.
    "classic": Args(),
    # Table 3, and the observation and reward normalisation of the authors' MuJoCo code.
    "mujoco": Args(
        preset="mujoco", env_id="HalfCheetah-v5", total_timesteps=1_000_000,
        normalize_obs=True, normalize_reward=True,
    ),
    # Table 5: 40M frames = 10M agent steps.
    "atari": Args(
        preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=10_000_000, num_envs=8,
        num_steps=128, learning_rate=2.5e-4, anneal=True, update_epochs=3, minibatch_size=256,
        clip_coef=0.1, ent_coef=0.01, vf_coef=1.0,
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
    if args.update_epochs <= 0:
        raise ConfigError(f"--update-epochs must be positive, got {args.update_epochs}")
    if args.minibatch_size <= 0 or args.batch_size % args.minibatch_size:
        raise ConfigError(
            f"the batch of --num-envs x --num-steps = {args.batch_size} does not divide into minibatches "
            f"of --minibatch-size {args.minibatch_size}; pick a divisor of {args.batch_size}"
        )
    for name in ("gamma", "gae_lambda"):
        value = getattr(args, name)
        if not 0 < value <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {value}")
    if args.clip_coef <= 0 or args.kl_target <= 0 or args.kl_beta < 0:
        raise ConfigError("--clip-coef and --kl-target must be positive and --kl-beta non-negative")
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
    """PPO here handles vector or image observations, and discrete or box actions."""
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or (
        isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1
    ):
        raise ConfigError(f"ppo.py supports Discrete and 1-D Box action spaces, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"ppo.py supports 1-D vector or stacked-image observations, not {observation_space}")


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


def policy_loss(
    new_logprob: torch.Tensor,
    old_logprob: torch.Tensor,
    advantages: torch.Tensor,
    surrogate: str,
    clip_coef: float,
    kl_beta: float,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The policy part of the loss for one of Table 1's surrogates, with the KL and the clip fraction.

    The KL(pi_old || pi) of the penalties is estimated per sample by (r - 1) - log r, r = pi/pi_old:
    its expectation under pi_old is the KL, and so is the expectation of its gradient.
    """
    log_ratio = new_logprob - old_logprob
    ratio = log_ratio.exp()
    kl = ((ratio - 1) - log_ratio).mean()
    clip_fraction = ((ratio - 1).abs() > clip_coef).float().mean()
    if surrogate == "clip":
        clipped = torch.clamp(ratio, 1 - clip_coef, 1 + clip_coef)
        loss = -torch.min(ratio * advantages, clipped * advantages).mean()
    elif surrogate == "none":
        loss = -(ratio * advantages).mean()
    else:  # adaptive-kl and fixed-kl
        loss = -(ratio * advantages).mean() + kl_beta * kl
    return loss, kl, clip_fraction


def adapt_kl_beta(kl_beta: float, kl: float, kl_target: float) -> float:
    """The adaptive-penalty rule of Section 4: halve beta when d < d_targ / 1.5, double it when d > 1.5 d_targ."""
    if kl < kl_target / 1.5:
        return kl_beta / 2
    if kl > kl_target * 1.5:
        return kl_beta * 2
    return kl_beta


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
# Networks
# --------------------------------------------------------------------------------------------------


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases, as in the authors' baselines code."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


class Agent(nn.Module):
    """Image observations: the Nature CNN (Mnih et al. 2015) shared by policy and value heads (Atari).
    Vector observations: separate policy and value MLPs of 64-64 tanh units (Section 6.1). Continuous
    actions: a Gaussian whose mean is the policy output and whose log std is a free parameter."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.Space, normalize_obs: bool):
        super().__init__()
        self.image = len(observation_space.shape) == 3
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        self.normalize_obs = normalize_obs
        self.obs_rms = RunningMeanStd(observation_space.shape)
        n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        if self.image:
            self.trunk = nn.Sequential(
                layer_init(nn.Conv2d(observation_space.shape[0], 32, 8, stride=4)), nn.ReLU(),
                layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
                layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
                nn.Flatten(),
                layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
            )
            self.actor = layer_init(nn.Linear(512, n_out), std=0.01)
            self.critic = layer_init(nn.Linear(512, 1), std=1.0)
            self.trunk.to(memory_format=torch.channels_last)  # oneDNN's faster layout: 20% off the update on CPU
        else:
            n_in = int(np.prod(observation_space.shape))
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
        if not self.discrete:
            self.actor_logstd = nn.Parameter(torch.zeros(n_out))

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if self.image:
            return self.trunk(obs.float() / 255.0)
        obs = obs.float()
        if self.normalize_obs:
            obs = ((obs - self.obs_rms.mean) / torch.sqrt(self.obs_rms.var + 1e-8)).clamp(-10, 10).float()
        return obs

    def distribution(self, hidden: torch.Tensor):
        if self.discrete:
            return Categorical(logits=self.actor(hidden), validate_args=False)
        mean = self.actor(hidden)
        return Normal(mean, self.actor_logstd.exp().expand_as(mean), validate_args=False)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions with their log-probabilities and the values: what get_action_and_value gives,
        minus the distribution object and the entropy, which cost more than the network at this size
        and this runs at every env step."""
        hidden = self.features(obs)
        out = self.actor(hidden)
        if self.discrete:
            log_probs = out.log_softmax(-1)
            # Gumbel-max: argmax(log p - log E), E ~ Exp(1), is a sample of p; cheaper than torch.multinomial.
            action = (log_probs - torch.empty_like(log_probs).exponential_().log()).argmax(-1)
            logprob = log_probs.gather(-1, action[:, None]).squeeze(-1)
        else:
            noise = torch.randn_like(out)
            action = out + self.actor_logstd.exp() * noise
            logprob = (-0.5 * noise**2 - self.actor_logstd - 0.5 * np.log(2 * np.pi)).sum(-1)
        return action, logprob, self.critic(hidden).squeeze(-1)

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None, deterministic: bool = False):
        hidden = self.features(obs)
        dist = self.distribution(hidden)
        if action is None:
            if deterministic:
                action = dist.probs.argmax(-1) if self.discrete else dist.mean
            else:
                action = dist.sample()
        logprob, entropy = dist.log_prob(action), dist.entropy()
        if not self.discrete:
            logprob, entropy = logprob.sum(-1), entropy.sum(-1)
        return action, logprob, entropy, self.critic(hidden).squeeze(-1)


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
            action = agent.get_action_and_value(torch.as_tensor(obs, device=device), deterministic=deterministic)[0]
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
    agent = Agent(envs.single_observation_space, envs.single_action_space, args.normalize_obs)
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
    """Train PPO and return the summary that is also written to RUN_DIR/summary.json. A run stopped by
    SIGINT or SIGTERM returns {"interrupted": True, "global_step", "run_dir"} and writes no summary."""
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
    kl_beta, global_step, start_iteration, elapsed_before = args.kl_beta, 0, 1, 0.0
    if checkpoint is not None:
        def load_counters() -> None:
            nonlocal kl_beta, global_step, start_iteration, elapsed_before
            kl_beta, global_step = float(checkpoint["kl_beta"]), int(checkpoint["global_step"])
            start_iteration, elapsed_before = int(checkpoint["iteration"]) + 1, float(checkpoint["elapsed"])

        restore(checkpoint_path, load_counters)
    run_dir = args.run_dir or f"runs/{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
    args = dataclasses.replace(args, run_dir=run_dir)

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
        print(f"note: {args.env_id} is a MuJoCo task; --preset mujoco gives the paper's settings for it")

    agent = Agent(envs.single_observation_space, envs.single_action_space, args.normalize_obs).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: 3x faster step on CPU
    reward_rms = RunningMeanStd()
    if checkpoint is not None:
        def load_state() -> None:
            agent.load_state_dict(checkpoint["model"])
            optimizer.load_state_dict(checkpoint["optimizer"])
            reward_rms.load_state_dict(checkpoint["reward_rms"])
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

    # Rollout storage, allocated once. Atari frames stay uint8 until the network sees them.
    obs_dtype = torch.uint8 if envs.single_observation_space.dtype == np.uint8 else torch.float32
    T, N = args.num_steps, args.num_envs
    obs_buf = torch.zeros((T, N, *envs.single_observation_space.shape), dtype=obs_dtype, device=device)
    action_buf = torch.zeros((T, N, *envs.single_action_space.shape), device=device,
                             dtype=torch.long if agent.discrete else torch.float32)
    logprob_buf, value_buf, final_value_buf = (torch.zeros((T, N), device=device) for _ in range(3))
    # What the envs return stays in numpy until the rollout ends: one conversion instead of one a step.
    reward_buf = np.zeros((T, N), dtype=np.float32)
    terminated_buf, truncated_buf = np.zeros((T, N), dtype=bool), np.zeros((T, N), dtype=bool)
    discounted_return = np.zeros(N)  # for reward normalisation

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
            "optimizer": optimizer.state_dict(),
            "reward_rms": reward_rms.state_dict(), "kl_beta": kl_beta, "global_step": global_step,
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
            alpha = 1.0 - (iteration - 1) / args.num_iterations if args.anneal else 1.0
            optimizer.param_groups[0]["lr"] = alpha * args.learning_rate
            clip_coef = alpha * args.clip_coef

            for step in range(T):
                global_step += N
                obs_buf[step] = next_obs
                with torch.inference_mode():
                    action, logprob, value = agent.act(next_obs)
                action_buf[step], logprob_buf[step], value_buf[step] = action, logprob, value
                action_np = action.cpu().numpy()
                next_obs_np, reward, terminated, truncated, infos = envs.step(
                    action_np if low is None else np.clip(action_np, low, high))
                next_obs = torch.as_tensor(next_obs_np, device=device)
                if args.normalize_reward:
                    discounted_return = discounted_return * args.gamma + reward
                    reward_rms.update(torch.as_tensor(discounted_return))
                    reward = np.clip(reward / np.sqrt(reward_rms.var.item() + 1e-8), -10, 10)
                    discounted_return[terminated | truncated] = 0.0
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
            b_logprobs, b_advantages, b_returns, b_values = (
                x.reshape(-1) for x in (logprob_buf, advantages, returns, value_buf))

            for epoch in range(args.update_epochs):
                for minibatch in torch.randperm(args.batch_size, device=device).split(args.minibatch_size):
                    _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs[minibatch], b_actions[minibatch])
                    mb_advantages = b_advantages[minibatch]
                    if args.norm_adv and len(minibatch) > 1:
                        mb_advantages = (mb_advantages - mb_advantages.mean()) / (mb_advantages.std() + 1e-8)
                    pg_loss, _, _ = policy_loss(new_logprob, b_logprobs[minibatch], mb_advantages,
                                                args.surrogate, clip_coef, kl_beta)
                    v_loss = 0.5 * ((new_value - b_returns[minibatch]) ** 2).mean()
                    entropy_loss = entropy.mean()
                    loss = pg_loss - args.ent_coef * entropy_loss + args.vf_coef * v_loss
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"the loss became {loss.item()} at step {global_step:,}; "
                                                 f"{safe_to_resume(run_dir)}")
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
                    optimizer.step()

            # Measured over the whole batch after the update; the KL is the paper's d.
            with torch.inference_mode():
                _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs, b_actions)
                pg_loss, kl, clip_fraction = policy_loss(new_logprob, b_logprobs, b_advantages, args.surrogate,
                                                         clip_coef, kl_beta)
                kl = kl.item()
            if args.surrogate == "adaptive-kl":
                kl_beta = adapt_kl_beta(kl_beta, kl, args.kl_target)
            if args.normalize_obs:
                # Once a batch, after the update: the policy that acted and the one updated on its data
                # saw the same normalisation, so the ratio starts at exactly 1.
                agent.obs_rms.update(b_obs)
            # A gradient that overflowed turns the weights to nan or inf even though the loss before the
            # step was finite: stop here, before a checkpoint of them, not one batch later.
            if not all_finite(agent.state_dict()):
                raise FloatingPointError(f"the weights became nan or inf at step {global_step:,} (the loss was "
                                         f"finite); {safe_to_resume(run_dir)}")

            sps = int((global_step - start_step) / (time.time() - start_time))
            for name, value in (
                ("charts/learning_rate", optimizer.param_groups[0]["lr"]), ("charts/clip_coef", clip_coef),
                ("charts/kl_beta", kl_beta), ("charts/SPS", sps),
                ("losses/policy_loss", pg_loss.item()), ("losses/value_loss", 0.5 * ((new_value - b_returns) ** 2).mean().item()),
                ("losses/entropy", entropy.mean().item()), ("losses/approx_kl", kl),
                ("losses/clipfrac", clip_fraction.item()),
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
        "algo": "ppo", "env_id": args.env_id, "seed": args.seed, "total_steps": global_step,
        "sps": int((global_step - start_step) / (time.time() - start_time)), "wall_time": round(elapsed, 1),
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
    --preset (default classic), with the other flags applied over it."""
    if argv[:1] == ["evaluate"]:
        return tyro.cli(EvalArgs, args=argv[1:], prog="ppo.py evaluate")
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
