"""Proximal Policy Optimization (Schulman et al. 2017, "Proximal Policy Optimization Algorithms").

Collect a batch of rollouts with the current policy, estimate advantages with GAE, then run several
epochs of minibatch Adam on a surrogate objective that keeps the new policy close to the old one
(clipped ratio by default; the adaptive and fixed KL penalties and the unclipped surrogate of Table 1 too).
Presets: classic (Table 3 without normalisation), mujoco (Table 3 with the authors' normalisation), atari (Table 5).

    python algos/ppo.py --env-id CartPole-v1
    python algos/ppo.py mujoco --env-id HalfCheetah-v5
    python algos/ppo.py atari --env-id BreakoutNoFrameskip-v4
    python algos/ppo.py evaluate runs/<run>/model.pt --episodes 10
"""

import os
from dataclasses import dataclass
from typing import Annotated, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Normal

SCRIPT = "ppo.py"  # names this script in messages, checkpoints and models
ATARI = True  # plays Atari games


@dataclass
class Args:
    # --- common to every script ---
    preset: tyro.conf.Suppress[Literal["classic", "mujoco", "atari"]] = "classic"
    """the preset the run started from (the command's first word); recorded, not a flag"""
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
    threads: Annotated[int | None, tyro.conf.arg(help_behavior_hint="(default: 1 for vector observations, torch's own choice for images)")] = None
    """torch CPU threads. Give runs that share a machine 1 each"""
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
    run_dir: Annotated[str | None, tyro.conf.arg(help_behavior_hint="(default: runs/{env_id}__{exp_name}__{seed}__{timestamp})")] = None
    """where the run writes its files"""
    checkpoint_every: int = 0
    """write RUN_DIR/checkpoint.pt every this many env steps (0: only when interrupted)"""
    resume: str | None = None
    """continue the run in this run directory from its checkpoint (its saved args are used)"""
    eval_episodes: int = 10
    """episodes of the final evaluation written to summary.json (0 skips it)"""
    eval_deterministic: bool = False
    """evaluate with the most likely action (or the Gaussian mean) instead of sampling"""

    # --- PPO ---
    eval_every: int = 0
    """evaluate --eval-episodes episodes every this many env steps (at the end of the first batch past each multiple), kept in summary.json as evaluations [step, mean, std] (0: only the final evaluation). The TD3 paper, whose Table 1 compares PPO, evaluates every 5,000 steps"""
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
    """value loss coefficient c1. Table 5: 1 (with separate MLPs and Adam it barely matters). It weighs 0.5 (V - R)^2, the authors' baselines code's value loss, where the paper writes (V - R)^2: the same c1 weighs the value error half as much as in the paper's formula"""
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
    "mujoco": Args(preset="mujoco", env_id="HalfCheetah-v5", total_timesteps=1_000_000, normalize_obs=True,
                   normalize_reward=True),
    # Table 5: 40M frames = 10M agent steps.
    "atari": Args(preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=10_000_000, num_envs=8, num_steps=128,
                  learning_rate=2.5e-4, anneal=True, update_epochs=3, minibatch_size=256, clip_coef=0.1, ent_coef=0.01,
                  vf_coef=1.0),
}


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_common(args)
    check_batch_args(args)
    if args.update_epochs <= 0:
        raise ConfigError(f"--update-epochs must be positive, got {args.update_epochs}")
    if args.minibatch_size <= 0 or args.batch_size % args.minibatch_size:
        raise ConfigError(f"the batch of --num-envs x --num-steps = {args.batch_size} does not divide into minibatches "
                          f"of --minibatch-size {args.minibatch_size}; pick a divisor of {args.batch_size}")
    if args.clip_coef <= 0 or args.kl_target <= 0 or args.kl_beta < 0:
        raise ConfigError("--clip-coef and --kl-target must be positive and --kl-beta non-negative")
    if args.surrogate == "adaptive-kl" and args.kl_beta == 0:  # halving and doubling 0 leaves it 0: no penalty
        raise ConfigError("--surrogate adaptive-kl needs a positive --kl-beta to start from (the default: 1)")


# --- the math (GAE is in the gae kit below) -------------------------------------------------------------


def policy_loss(new_logprob: torch.Tensor, old_logprob: torch.Tensor, advantages: torch.Tensor, surrogate: str,
                clip_coef: float, kl_beta: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
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


def normalize_rewards(rewards: np.ndarray, dones: np.ndarray, discounted_return: np.ndarray,
                      reward_rms: "RunningMeanStd", gamma: float) -> None:
    """Scale a rollout's [T, N] rewards in place, step by step, by the running std of the discounted return
    (kept across rollouts in discounted_return), clipped to +-10: the authors' MuJoCo code (VecNormalize)."""
    for t in range(len(rewards)):
        discounted_return[:] = discounted_return * gamma + rewards[t]
        reward_rms.update(torch.as_tensor(discounted_return))
        rewards[t] = np.clip(rewards[t] / np.sqrt(reward_rms.var.item() + 1e-8), -10, 10)
        discounted_return[dones[t]] = 0.0


# --- the networks ---------------------------------------------------------------------------------------


class Agent(nn.Module):
    """Image observations: the Nature CNN (Mnih et al. 2015) shared by policy and value heads (Atari).
    Vector observations: separate policy and value MLPs of 64-64 tanh units (Section 6.1). Continuous
    actions: a Gaussian whose mean is the policy output and whose log std is a free parameter."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.Space, args: Args):
        super().__init__()
        self.image, self.discrete = len(observation_space.shape) == 3, isinstance(action_space, gym.spaces.Discrete)
        self.normalize_obs, self.obs_rms = args.normalize_obs, RunningMeanStd(observation_space.shape)  # saved with the weights
        n_out = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        if self.image:
            self.trunk = nature_cnn(observation_space.shape[0])
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
        """What the heads see: images through the CNN; vectors, normalised with --normalize-obs."""
        if self.image:  # the bytes into the trunk's channels-last layout first: one pass over the floats, not three
            return self.trunk(obs.contiguous(memory_format=torch.channels_last) / 255.0)
        return self.obs_rms.normalize(obs.float()) if self.normalize_obs else obs.float()

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def evaluate_actions(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """log pi(a|s), the entropy of pi(.|s) and V(s), with their gradients, for the loss."""
        hidden = self.features(obs)
        out, value = self.actor(hidden), self.critic(hidden).squeeze(-1)
        if self.discrete:
            dist = Categorical(logits=out, validate_args=False)
            return dist.log_prob(actions), dist.entropy(), value
        dist = Normal(out, self.actor_logstd.exp().expand_as(out), validate_args=False)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1), value


# --- the update, and the training loop ----------------------------------------------------------------


def update(agent: Agent, optimizer: torch.optim.Optimizer, batch: "Batch", args: Args, clip_coef: float,
           kl_beta: float) -> dict:
    """K epochs of minibatch Adam on one batch: Table 1's surrogate, minus c2 times the entropy, plus c1 times
    the value loss. Returns "loss" (the mean loss of the steps, each before its step) and, over the whole batch
    after the update, the policy and value losses, the entropy, the KL (the paper's d) and the clip fraction."""
    step_losses = []
    for epoch in range(args.update_epochs):
        for minibatch in torch.randperm(len(batch.obs), device=batch.obs.device).split(args.minibatch_size):
            new_logprob, entropy, new_value = agent.evaluate_actions(batch.obs[minibatch], batch.actions[minibatch])
            advantages = batch.advantages[minibatch]
            if args.norm_adv and len(minibatch) > 1:
                advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
            pg_loss, _, _ = policy_loss(new_logprob, batch.logprobs[minibatch], advantages, args.surrogate,
                                        clip_coef, kl_beta)
            v_loss = 0.5 * ((new_value - batch.returns[minibatch]) ** 2).mean()
            loss = pg_loss - args.ent_coef * entropy.mean() + args.vf_coef * v_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(agent.parameters(), args.max_grad_norm)
            optimizer.step()
            step_losses.append(loss.detach())
    with torch.inference_mode():  # minibatch by minibatch: a whole Atari batch at once allocates (and the OS
        # zeroes) hundreds of MB afresh every update; profiled, scaling its frames took longer than its convolutions
        pieces = [agent.evaluate_actions(obs, actions) for obs, actions in
                  zip(batch.obs.split(args.minibatch_size), batch.actions.split(args.minibatch_size))]
        new_logprob, entropy, new_value = (torch.cat(piece) for piece in zip(*pieces))
        pg_loss, kl, clip_fraction = policy_loss(new_logprob, batch.logprobs, batch.advantages, args.surrogate,
                                                 clip_coef, kl_beta)
    return {"loss": torch.stack(step_losses).mean(), "policy_loss": pg_loss.item(),
            "value_loss": 0.5 * ((new_value - batch.returns) ** 2).mean().item(), "entropy": entropy.mean().item(),
            "approx_kl": kl.item(), "clipfrac": clip_fraction.item()}


def main(args: Args) -> dict:
    """Train PPO and return the summary also written to RUN_DIR/summary.json (on SIGINT/SIGTERM:
    {"interrupted": True, "global_step", "run_dir"})."""
    args, checkpoint = resume_args(args)
    check_env_id(args.env_id)  # the env id first: the other messages assume it exists
    check_args(args)
    with Run(args, checkpoint) as run:  # seeds everything; writes nothing yet
        args, device = run.args, run.device
        envs = open_envs(run)
        agent = Agent(envs.single_observation_space, envs.single_action_space, args).to(device)
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)  # fused: 3x faster step on CPU
        reward_rms = RunningMeanStd()
        run.restore(model=agent, optimizer=optimizer, reward_rms=reward_rms)
        kl_beta, iteration = run.saved("kl_beta", args.kl_beta), run.saved("iteration", 0)
        evaluations, evaluate_policy = run.saved("evaluations", []), policy_evaluation(agent, args)
        run.start(total_steps=args.num_iterations * args.batch_size)  # every check has passed
        rollout = Rollout(envs, run)
        discounted_return = np.zeros(args.num_envs)  # of the rewards, for their normalisation
        global_step = run.start_step
        for iteration in range(iteration + 1, args.num_iterations + 1):
            alpha = 1.0 - (iteration - 1) / args.num_iterations if args.anneal else 1.0
            optimizer.param_groups[0]["lr"] = alpha * args.learning_rate
            clip_coef = alpha * args.clip_coef
            global_step = rollout.collect(agent, run, global_step)
            if args.normalize_reward:
                normalize_rewards(rollout.rewards, rollout.terminated | rollout.truncated, discounted_return,
                                  reward_rms, args.gamma)
            batch = rollout.batch(agent, args.gamma, args.gae_lambda)
            metrics = update(agent, optimizer, batch, args, clip_coef, kl_beta)
            if args.surrogate == "adaptive-kl":
                kl_beta = adapt_kl_beta(kl_beta, metrics["approx_kl"], args.kl_target)
            if args.normalize_obs:
                # Once a batch, after the update: the policy that acted and the one updated on its data
                # saw the same normalisation, so the ratio starts at exactly 1.
                agent.obs_rms.update(batch.obs)
            run.check_finite(global_step, metrics["loss"], agent)
            run.log(global_step, {
                "charts/learning_rate": optimizer.param_groups[0]["lr"], "charts/clip_coef": clip_coef,
                "charts/kl_beta": kl_beta, "losses/policy_loss": metrics["policy_loss"],
                "losses/value_loss": metrics["value_loss"], "losses/entropy": metrics["entropy"],
                "losses/approx_kl": metrics["approx_kl"], "losses/clipfrac": metrics["clipfrac"],
                "losses/explained_variance": explained_variance(batch.values, batch.returns),
            })
            evaluate_if_due(run, evaluate_policy, global_step, evaluations)
            run.save_if_due(global_step, iteration=iteration, kl_beta=kl_beta, evaluations=evaluations)
            if run.stopped:
                return run.interrupted()
        return run.finish(global_step, {"model": agent.state_dict()}, evaluate_policy, evaluations=evaluations)


# ==== kit: gae ====  the same text in ppo and trpo (master copy: tools/kit/gae.py; `python tools/sync_kit.py`
# copies it). What the two on-policy scripts share around their updates: the checks of the batch, the envs,
# the batch itself (collected by the current policy, with its GAE advantages), running normalisation
# statistics, acting, the Nature CNN, evaluating (during training too, --eval-every) and reloading a saved
# agent. From the script above it uses Agent (built from the spaces and the args; act says what it holds).

import dataclasses
import os
from typing import NamedTuple

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn


def check_batch_args(args) -> None:
    """The checks of the settings ppo and trpo share, each with one line that names the fix."""
    if args.num_envs <= 0 or args.num_steps <= 0:
        raise ConfigError("--num-envs and --num-steps must be positive")
    if args.total_timesteps < args.batch_size:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is less than one batch of --num-envs x "
                          f"--num-steps = {args.batch_size}; raise it or shrink the batch")
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("gamma", "gae_lambda"):
        if not 0 < getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    if args.eval_every < 0:
        raise ConfigError(f"--eval-every must be non-negative, got {args.eval_every}")
    if args.env_backend == "envpool" and not is_atari(args.env_id):
        raise ConfigError(f"--env-backend envpool is for Atari ids here; use gymnasium for {args.env_id}")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Vector or image observations, and discrete or box actions."""
    if not isinstance(action_space, (gym.spaces.Discrete, gym.spaces.Box)) or (
        isinstance(action_space, gym.spaces.Box) and len(action_space.shape) != 1
    ):
        raise ConfigError(f"{SCRIPT} supports Discrete and 1-D Box action spaces, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"{SCRIPT} supports 1-D vector or stacked-image observations, not {observation_space}")


def make_vector_env(args, seed: int, video_dir: str, num_envs: int | None = None):
    """args.num_envs envs (or num_envs) stepped together, SAME_STEP autoreset: gymnasium's, or EnvPool's."""
    num_envs = num_envs or args.num_envs
    if args.env_backend == "envpool":
        return EnvPoolVecEnv(args.env_id, num_envs, seed)
    return gym.vector.SyncVectorEnv(
        [make_env(args.env_id, i, args.capture_video, video_dir) for i in range(num_envs)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )


def open_envs(run: "Run"):
    """The run's envs, their spaces checked, and torch's threads for the networks they need: 1 for vector
    observations (small MLPs run fastest on one), torch's own choice for images. No video yet: RecordVideo
    makes its folder at once, and nothing is written before every check passes (Rollout records)."""
    args = run.args
    envs = run.closing(make_vector_env(dataclasses.replace(args, capture_video=False), args.seed + run.start_step, ""))
    check_spaces(envs.single_observation_space, envs.single_action_space)
    if args.preset == "classic" and "mujoco" in str(gym.spec(args.env_id).entry_point):
        print(f"note: {args.env_id} is a MuJoCo task; `{SCRIPT} mujoco` gives the settings for it")
    run.use_threads(None if len(envs.single_observation_space.shape) == 3 else 1)
    return envs


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


class Batch(NamedTuple):
    """One batch, flattened over steps and envs."""

    obs: torch.Tensor
    actions: torch.Tensor
    logprobs: torch.Tensor  # log pi_old(a|s) of the policy that acted
    values: torch.Tensor  # V(s) before the update
    advantages: torch.Tensor  # GAE
    returns: torch.Tensor  # the value targets, advantages + values


class Rollout:
    """The current policy acting for T steps in every env, into storage allocated once. Atari frames stay
    uint8 until the network sees them; what the envs return stays in numpy until the T steps end (one
    conversion instead of one a step). A resumed run cannot restore the envs' states: it starts fresh
    episodes, seeded from the step it resumes at, so that resuming is itself reproducible."""

    def __init__(self, envs, run: "Run"):
        args, seed, device = run.args, run.args.seed + run.start_step, run.device
        if args.capture_video:  # every check has passed: now the envs may record
            envs.close()
            envs = run.closing(make_vector_env(args, seed, os.path.join(run.dir, "videos")))
        T, N = args.num_steps, args.num_envs
        obs_space, action_space = envs.single_observation_space, envs.single_action_space
        self.envs, self.device, self.discrete = envs, device, isinstance(action_space, gym.spaces.Discrete)
        obs_dtype = torch.uint8 if obs_space.dtype == np.uint8 else torch.float32
        self.obs = torch.zeros((T, N, *obs_space.shape), dtype=obs_dtype, device=device)
        self.actions = torch.zeros((T, N, *action_space.shape), dtype=torch.long if self.discrete else torch.float32,
                                   device=device)
        self.logprobs, self.values, self.final_values = (torch.zeros((T, N), device=device) for _ in range(3))
        self.rewards = np.zeros((T, N))  # float64, as the envs give them (ppo's reward normalisation reads them)
        self.terminated, self.truncated = np.zeros((T, N), dtype=bool), np.zeros((T, N), dtype=bool)
        next_obs, _ = envs.reset(seed=seed)
        self.next_obs = torch.as_tensor(next_obs, device=device)

    def collect(self, agent: "Agent", run: "Run", step: int) -> int:
        """Act for T steps in every env, logging the episodes that end; returns the step count after them."""
        space = self.envs.single_action_space
        for t in range(len(self.obs)):
            step += self.envs.num_envs
            self.obs[t] = self.next_obs
            with torch.inference_mode():
                action, logprob, value = act(agent, self.next_obs)
            self.actions[t], self.logprobs[t], self.values[t] = action, logprob, value
            action = action.cpu().numpy()
            next_obs, reward, terminated, truncated, infos = self.envs.step(
                action if self.discrete else np.clip(action, space.low, space.high))
            self.next_obs = torch.as_tensor(next_obs, device=self.device)
            self.rewards[t], self.terminated[t], self.truncated[t] = reward, terminated, truncated
            if truncated.any():  # rare: the value of each cut-off episode's final observation, for GAE
                ids = np.flatnonzero(truncated)
                final_obs = torch.as_tensor(np.stack(infos["final_obs"][ids]), device=self.device)
                with torch.inference_mode():
                    self.final_values[t, ids] = agent.get_value(final_obs)
            run.episodes(step, infos)
        return step

    def batch(self, agent: "Agent", gamma: float, gae_lambda: float) -> Batch:
        """The T steps as one Batch, with their GAE advantages and value targets."""
        with torch.inference_mode():
            next_value = agent.get_value(self.next_obs)
        rewards = torch.as_tensor(self.rewards, dtype=torch.float32, device=self.device)
        terminated, truncated = (torch.as_tensor(x, device=self.device) for x in (self.terminated, self.truncated))
        advantages, returns = compute_gae(rewards, self.values, next_value, terminated, truncated, self.final_values,
                                          gamma, gae_lambda)
        steps = (self.obs, self.actions, self.logprobs, self.values, advantages, returns)
        return Batch(*(x.reshape(-1, *x.shape[2:]) for x in steps))


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

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """x standardised by the running statistics and clipped to +-10 (baselines' VecNormalize), as float32."""
        return ((x - self.mean) / torch.sqrt(self.var + 1e-8)).clamp(-10, 10).float()


def act(agent: "Agent", obs: torch.Tensor, deterministic: bool = False) -> tuple[torch.Tensor, ...]:
    """The agent's actions (sampled, or the most likely / the mean) with their log-probabilities, and the
    values. It reads agent.features, agent.actor (the logits, or the Gaussian's mean), agent.critic and, for
    box actions, agent.actor_logstd. No torch.distributions: at this size they cost more than the network,
    and this runs every step."""
    hidden = agent.features(obs)
    out = agent.actor(hidden)
    if agent.discrete:
        log_probs = out.log_softmax(-1)
        # Gumbel-max: argmax(log p - log E), E ~ Exp(1), is a sample of p; cheaper than torch.multinomial.
        action = out.argmax(-1) if deterministic else (
            log_probs - torch.empty_like(log_probs).exponential_().log()).argmax(-1)
        logprob = log_probs.gather(-1, action[:, None]).squeeze(-1)
    else:
        noise = torch.zeros_like(out) if deterministic else torch.randn_like(out)
        action = out + agent.actor_logstd.exp() * noise
        logprob = (-0.5 * noise**2 - agent.actor_logstd - 0.5 * np.log(2 * np.pi)).sum(-1)
    return action, logprob, agent.critic(hidden).squeeze(-1)


def nature_cnn(in_channels: int) -> nn.Sequential:
    """The Nature DQN network (Mnih et al. 2015) on 84x84 frames, up to its 512 ReLU units."""
    return nn.Sequential(
        layer_init(nn.Conv2d(in_channels, 32, 8, stride=4)), nn.ReLU(),
        layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
        layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU(),
        nn.Flatten(),
        layer_init(nn.Linear(64 * 7 * 7, 512)), nn.ReLU(),
    )


def evaluate(agent: "Agent", args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari), recorded into video_dir
    with args.capture_video ("": not recorded)."""
    envs = make_vector_env(dataclasses.replace(args, capture_video=args.capture_video and bool(video_dir)), seed,
                           video_dir, num_envs=1)
    device = next(agent.parameters()).device
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.inference_mode():
            action = act(agent, torch.as_tensor(obs, device=device), deterministic)[0].cpu().numpy()
        if not agent.discrete:
            action = np.clip(action, envs.single_action_space.low, envs.single_action_space.high)
        obs, _, _, _, infos = envs.step(action)
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def policy_evaluation(agent: "Agent", args):
    """The evaluation a run makes of its policy, every --eval-every steps and at the end: a function that
    returns the returns of --eval-episodes episodes in an env of their own, seeded apart from training, without
    video."""
    return lambda: evaluate(agent, args, args.eval_episodes, args.seed + 100_000, args.eval_deterministic, "")


def evaluate_if_due(run: "Run", evaluate_policy, step: int, evaluations: list) -> None:
    """The evaluation curve, at the end of the first batch at or past each multiple of --eval-every (the
    updates come a batch at a time): evaluate_policy()'s returns logged under eval/ and kept in evaluations as
    [step, mean, std], step being the batch's. Its actions are sampled in a fork of torch's random numbers,
    so training draws the same ones with or without the curve."""
    args, every = run.args, run.args.eval_every
    if not (every and args.eval_episodes and step // every > (step - args.batch_size) // every):
        return
    with torch.random.fork_rng(devices=[run.device] if run.device.type == "cuda" else []):
        returns = evaluate_policy()
    evaluations.append([step, float(np.mean(returns)), float(np.std(returns))])
    run.writer.add_scalar("eval/mean_return", evaluations[-1][1], step)
    run.writer.add_scalar("eval/std_return", evaluations[-1][2], step)


def load_agent(model_path: str) -> tuple["Agent", "Args"]:
    """Rebuild the agent saved by --save-model: weights, observation statistics and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    envs = make_vector_env(dataclasses.replace(args, capture_video=False), args.seed, "", num_envs=1)
    agent = Agent(envs.single_observation_space, envs.single_action_space, args)
    envs.close()
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent, args


# ==== end of kit: gae ====

# ==== kit: atari ====  the same text in ppo, trpo, a2c_atari, a3c_hogwild, async_q and paac (master copy:
# tools/kit/atari.py; `python tools/sync_kit.py` copies it). The papers' Atari preprocessing, EnvPool behind
# the gymnasium interface, and the baselines' initialisation.

import ale_py
import gymnasium as gym
import numpy as np
import torch.nn as nn

gym.register_envs(ale_py)  # the ALE/ and *NoFrameskip-v4 ids; the ROMs ship inside ale-py


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

    def __init__(self, env_id: str, num_envs: int, seed: int, num_threads: int = 0):
        import envpool

        task = env_id.removesuffix("NoFrameskip-v4").removeprefix("ALE/").split("-")[0] + "-v5"
        # EnvPool's defaults differ from the DQN chain: no episodic life, no reward clip, sticky actions.
        self.envs = envpool.make(
            task, env_type="gymnasium", num_envs=num_envs, seed=seed, num_threads=num_threads, episodic_life=True,
            reward_clip=True, repeat_action_probability=0.0, noop_max=30, frame_skip=4, stack_num=4, img_height=84, img_width=84,
        )
        self.num_envs = num_envs
        self.single_observation_space = self.envs.observation_space
        self.single_action_space = self.envs.action_space
        self.episode_returns = np.zeros(num_envs)
        self.episode_lengths = np.zeros(num_envs, dtype=np.int64)
        self.closed = False

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
        if not self.closed:
            self.envs.close()
            self.closed = True


def layer_init(layer: nn.Module, std: float = np.sqrt(2), bias: float = 0.0) -> nn.Module:
    """Orthogonal weights and constant biases, as in the authors' baselines code."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, bias)
    return layer


# ==== end of kit: atari ====

# ==== kit: run ====  The run kit: the same text in every script of algos/ (master copy: tools/kit/run.py;
# after editing it, `python tools/sync_kit.py` copies it into every script; tests/test_kit.py checks them).
# Everything a run does besides learning: one-line errors, checkpoints and resume, the run directory and its
# logs, progress, signals, the final evaluation, the `evaluate` command and the command line. From the
# script above it uses SCRIPT, ATARI, Args, PRESETS, main(args), load_agent(path) and
# evaluate(agent, args, episodes, seed, deterministic, video_dir).

import contextlib
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
from torch.utils.tensorboard import SummaryWriter


class ConfigError(ValueError):
    """A setting that cannot work, found before training starts."""


def check_common(args) -> None:
    """The checks of the settings every script has: floats finite (`nan <= 0` is False, so range checks alone
    let nan through), a positive budget and thread count, counts that are not negative."""
    for field in dataclasses.fields(args):
        value = getattr(args, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"--{field.name.replace('_', '-')} must be a finite number, got {value}")
    if args.total_timesteps <= 0:
        raise ConfigError(f"--total-timesteps must be positive, got {args.total_timesteps}")
    if args.checkpoint_every < 0 or args.eval_episodes < 0:
        raise ConfigError("--checkpoint-every and --eval-episodes must be non-negative")
    if args.threads is not None and args.threads <= 0:
        raise ConfigError(f"--threads must be positive, got {args.threads}")


def check_env_id(env_id: str) -> None:
    """Refuse an unknown environment id (naming the closest registered ones), an Atari game in a script that
    does not play Atari, and an Atari id that skips frames itself or makes actions sticky."""
    if env_id not in gym.envs.registry:
        try:  # Atari ids exist once ale_py has registered them
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass
    if env_id not in gym.envs.registry:
        close = difflib.get_close_matches(env_id, list(gym.envs.registry), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(close)}?" if close else "; see gymnasium.pprint_registry()"
        raise ConfigError(f"unknown environment id {env_id!r}{hint}")
    if not str(gym.spec(env_id).entry_point).startswith("ale_py"):
        return
    if not ATARI:
        raise ConfigError(f"{env_id} is an Atari game, which {SCRIPT} does not play; ppo.py, trpo.py, a2c_atari.py, "
                          "a3c_hogwild.py, async_q.py and paac.py do")
    # The papers' wrappers repeat each action over 4 frames themselves: an id that also skips frames
    # (ALE/*-v5, *-v4 without NoFrameskip) or makes actions sticky would silently play 16 frames a step.
    kwargs = gym.spec(env_id).kwargs
    if kwargs.get("frameskip", 1) != 1 or kwargs.get("repeat_action_probability", 0.0) != 0.0:
        game = "".join(part.capitalize() for part in str(kwargs.get("game", "pong")).split("_"))
        raise ConfigError(f"{env_id} skips frames (frameskip={kwargs.get('frameskip')}) or makes actions sticky "
                          f"(p={kwargs.get('repeat_action_probability')}) on top of the 4-frame skip of the "
                          f"papers' wrappers; use {game}NoFrameskip-v4")


def finished_episodes(infos: dict):
    """(returns, lengths) of the episodes that ended in this step of a SAME_STEP vector env."""
    final = infos.get("final_info")
    if final is None or "episode" not in final:
        return (), ()
    mask = final["_episode"]
    return final["episode"]["r"][mask], final["episode"]["l"][mask]


def explained_variance(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """1 - Var[target - predicted] / Var[target]: 1 is perfect, 0 no better than a constant."""
    variance = target.var()
    return float("nan") if variance == 0 else float(1 - (target - predicted).var() / variance)


# --- files: atomic, finite, and loaded without running code ------------------------------------------


def atomic_write(path: str, write) -> None:
    """Write through a temporary file and rename it over path, so readers never see half a file."""
    tmp = f"{path}.tmp"
    write(tmp)
    os.replace(tmp, path)


def write_json(path: str, obj: dict) -> None:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2)

    atomic_write(path, write)


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


def restore(path: str, load):
    """Return load(), which reads a checkpoint or model into this run; a file that does not fit it (another
    env or network size, a missing entry) is refused in one line instead of a traceback."""
    try:
        return load()
    except ConfigError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"{path} does not fit this run of {SCRIPT} ({type(error).__name__}: {reason})") from None


def resume_args(args: "Args") -> tuple["Args", dict | None]:
    """With --resume DIR: the args saved in DIR/checkpoint.pt (pointed at DIR) and the checkpoint itself.
    Without: (args, None)."""
    if not args.resume:
        return args, None
    path = os.path.join(args.resume, "checkpoint.pt")
    if not os.path.isfile(path):
        raise ConfigError(f"--resume {args.resume}: no checkpoint.pt there (was it run with --checkpoint-every?)")
    checkpoint = load_saved(path)
    saved_args = args_from_saved(checkpoint, path)
    return dataclasses.replace(saved_args, resume=args.resume, run_dir=args.resume), checkpoint


def safe_to_resume(run_dir: str) -> str:
    """The end of a divergence message: which checkpoint, if any, holds the last finite state."""
    path = os.path.join(run_dir, "checkpoint.pt")
    if os.path.exists(path):
        return f"{path} holds the last finite state: resume with --resume {run_dir} (a lower --learning-rate may help)"
    return "no checkpoint was written (--checkpoint-every keeps one)"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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


def package_versions() -> dict:
    versions = {"python": sys.version.split()[0]}
    for package in ("torch", "gymnasium", "numpy", "ale-py", "mujoco", "minatar", "envpool", "tyro"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


# --- the run -----------------------------------------------------------------------------------------

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


def claim_run_dir(base: str) -> str:
    """Make and return a new, empty directory: base, or base-2, base-3, ... when base exists. os.mkdir fails
    on an existing directory, atomically, so two runs claiming at once never get the same one."""
    os.makedirs(os.path.dirname(base) or ".", exist_ok=True)
    suffix = 1
    while True:
        path = base if suffix == 1 else f"{base}-{suffix}"
        try:
            os.mkdir(path)
            return path
        except FileExistsError:
            suffix += 1


def wait_past_event_files(run_dir: str) -> None:
    """TensorBoard reads a run's event files in name order, and a name starts with the second the file was
    made: a resumed run's file must sort after those of the attempt it replaces, or that attempt's events
    past the checkpoint are read last and escape purge_step. A resume within the same second waits for the
    next."""
    names = glob.glob("events.out.tfevents.*", root_dir=run_dir)
    seconds = [int(name.split(".")[3]) for name in names if name.split(".")[3].isdigit()]
    time.sleep(min(1.0, max(0.0, max(seconds, default=0) + 1 - time.time())))


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


class Run:
    """One training run's directory and all it holds besides the learning: checkpoint.pt (with the RNG state)
    and resume, episodes.csv, TensorBoard and wandb, the progress line, SIGINT/SIGTERM, model.pt, the final
    evaluation and summary.json. Used as `with Run(args, checkpoint) as run:`. It seeds random, numpy and
    torch at once, and writes nothing until start(), which comes after every check. On leaving the block it
    closes what it opened (and what was given to closing()) and puts torch's thread count back."""

    def __init__(self, args: "Args", checkpoint: dict | None):
        name = f"{args.env_id.replace('/', '-')}__{args.exp_name}__{args.seed}__{int(time.time())}"
        # A default name is claimed now, so that a run started in the same second with the same name (a second
        # command, or main() called again) gets another directory instead of writing into this one.
        self.claimed = None if args.run_dir else claim_run_dir(os.path.join("runs", name))
        self.args = dataclasses.replace(args, run_dir=args.run_dir or self.claimed)
        self.dir, self.resumed = self.args.run_dir, checkpoint
        self.path = os.path.join(self.dir, "checkpoint.pt")
        # A resumed run continues the step count and the wall time of the checkpoint.
        self.start_step = int(self.saved("global_step", 0))
        self.elapsed_before = float(self.saved("elapsed", 0.0))
        self.last_save_step = self.start_step
        self.parts, self.counters, self.closers = {}, {}, []
        self.stop_signal: list[int] = []
        self.handlers: dict = {}
        self.writer = self.episode_file = self.progress = None
        self.recent_returns: deque = deque(maxlen=20)
        self.threads_before = torch.get_num_threads()
        self.start_time = time.time()
        seed_everything(args.seed)
        torch.backends.cudnn.deterministic = args.torch_deterministic
        self.device = torch.device("cuda" if torch.cuda.is_available() and args.cuda else "cpu")

    def saved(self, name: str, default):
        """A value of the checkpoint resumed from (a counter the script keeps); default on a fresh run."""
        if self.resumed is None:
            return default
        return restore(self.path, lambda: self.resumed[name])

    def restore(self, **parts) -> None:
        """Name what a checkpoint holds besides counters (networks, optimisers, buffers: anything with
        state_dict and load_state_dict); on resume, load them and the RNG state."""
        self.parts = parts

        def load() -> None:
            for name, part in parts.items():
                part.load_state_dict(self.resumed[name])
            set_rng_state(self.resumed["rng"])

        if self.resumed is not None:
            restore(self.path, load)

    def use_threads(self, default: int | None) -> None:
        """torch's CPU threads for this run: --threads, else default (None: torch's own choice)."""
        torch.set_num_threads(self.args.threads or default or self.threads_before)

    def closing(self, thing):
        """Close thing (an env) when the run ends; returns it."""
        self.closers.append(thing)
        return thing

    def start(self, total_steps: int | None = None) -> None:
        """Every check has passed: make the run directory, open its logs, and take SIGINT and SIGTERM, which
        from now on stop the run at the next save_if_due() with a checkpoint."""
        os.makedirs(self.dir, exist_ok=True)
        for path in glob.glob(os.path.join(glob.escape(self.dir), "*.tmp")):
            os.remove(path)  # half-written by a run killed while saving
        print(f"{SCRIPT}: {'resuming' if self.resumed else 'writing'} {self.dir}", flush=True)
        self.episode_file, self.episode_log = open_episode_log(self.dir, self.start_step if self.resumed else None)
        if self.args.track:  # wandb mirrors the TensorBoard logs; set WANDB_MODE=offline to stay off the network
            import wandb

            wandb.init(project=self.args.wandb_project_name, entity=self.args.wandb_entity, config=vars(self.args),
                       name=os.path.basename(self.dir), dir=self.dir, id=os.path.basename(self.dir),
                       resume="allow", sync_tensorboard=True)
        # Everything logged up to the checkpoint's step was logged before it was saved: what a killed attempt
        # logged after it is dropped, as it is logged again.
        if self.resumed is not None:
            wait_past_event_files(self.dir)
        self.writer = SummaryWriter(self.dir, purge_step=self.start_step + 1 if self.resumed is not None else None)
        if self.resumed is None:
            table = "\n".join(f"|{key}|{value}|" for key, value in vars(self.args).items())
            self.writer.add_text("hyperparameters", f"|param|value|\n|-|-|\n{table}")
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self.handlers[sig] = signal.signal(sig, lambda signum, frame: self.stop_signal.append(signum))
            except ValueError:  # not the main thread: leave signals alone
                pass
        self.progress = Progress(total_steps or self.args.total_timesteps, self.start_step)
        self.start_time = time.time()

    def elapsed(self) -> float:
        return self.elapsed_before + time.time() - self.start_time

    def sps(self, step: int) -> int:
        return int((step - self.start_step) / max(time.time() - self.start_time, 1e-9))

    def episode(self, step: int, episodic_return: float, episodic_length: int) -> None:
        """Log one finished episode: episodes.csv, TensorBoard, and the progress line's recent returns."""
        self.episode_log.writerow([step, float(episodic_return), int(episodic_length), round(self.elapsed(), 3)])
        self.episode_file.flush()
        self.writer.add_scalar("charts/episodic_return", episodic_return, step)
        self.writer.add_scalar("charts/episodic_length", episodic_length, step)
        self.recent_returns.append(float(episodic_return))

    def episodes(self, step: int, infos: dict) -> None:
        """Log the episodes that ended in this step of a vector env."""
        for episodic_return, episodic_length in zip(*finished_episodes(infos)):
            self.episode(step, episodic_return, episodic_length)

    def log(self, step: int, metrics: dict) -> None:
        """Scalars to TensorBoard at this step (tensors are read here), with charts/SPS, and the progress line."""
        for name, value in metrics.items():
            self.writer.add_scalar(name, float(value), step)
        self.writer.add_scalar("charts/SPS", self.sps(step), step)
        self.progress.update(step, self.recent_returns)

    def check_finite(self, step: int, loss=None, weights: nn.Module | None = None) -> None:
        """Stop on a loss, or weights, that became nan or inf, before a checkpoint holds them. (A gradient that
        overflowed can turn the weights to nan although the loss before the step was finite.)"""
        if loss is not None and not torch.isfinite(torch.as_tensor(loss)).all():
            raise FloatingPointError(f"the loss became {float(loss)} at step {step:,}; {safe_to_resume(self.dir)}")
        if weights is not None and not all_finite(weights.state_dict()):
            raise FloatingPointError(f"the weights became nan or inf at step {step:,} (the loss was finite); "
                                     f"{safe_to_resume(self.dir)}")

    @property
    def stopped(self) -> bool:
        """Whether SIGINT or SIGTERM asked the run to stop."""
        return bool(self.stop_signal)

    def checkpoint_due(self, step: int) -> bool:
        """A signal came, or the step count passed a multiple of --checkpoint-every since the last save."""
        every = self.args.checkpoint_every
        return self.stopped or bool(every) and step // every > self.last_save_step // every

    def save(self, step: int, **counters) -> None:
        """Write checkpoint.pt: the parts named in restore(), the script's counters, the step, the elapsed
        time and the RNG state."""
        self.counters, self.last_save_step = counters, step
        save_torch({
            "script": SCRIPT, "args": dataclasses.asdict(self.args),
            **{name: part.state_dict() for name, part in self.parts.items()}, **counters,
            "global_step": step, "elapsed": self.elapsed(), "rng": rng_state(),
        }, self.path)

    def save_if_due(self, step: int, **counters) -> None:
        """save() when checkpoint_due(); the counters are also what the final checkpoint holds."""
        self.counters = counters
        if self.checkpoint_due(step):
            self.save(step, **counters)

    def interrupted(self) -> dict:
        """What main() returns when a signal stopped the run (after save_if_due() saved it)."""
        print(f"\nstopped by signal {self.stop_signal[0]} at step {self.last_save_step}; resume with "
              f"--resume {self.dir}", flush=True)
        return {"interrupted": True, "global_step": self.last_save_step, "run_dir": self.dir}

    def finish(self, step: int, model: dict, evaluate, **summary) -> dict:
        """The end of a run: a last checkpoint (with --checkpoint-every), model.pt holding `model` and the args
        (with --save-model), the final evaluation (evaluate() returns the episodes' returns) and summary.json
        with `summary` added. Returns the summary."""
        self.progress.update(step, self.recent_returns, force=True)
        if self.args.checkpoint_every:
            self.save(step, **self.counters)
        summary = {"algo": SCRIPT.removesuffix(".py"), "env_id": self.args.env_id, "seed": self.args.seed,
                   "total_steps": step, "sps": self.sps(step), "wall_time": round(self.elapsed(), 1), **summary,
                   "args": dataclasses.asdict(self.args), "versions": package_versions()}
        if self.args.save_model:
            save_torch({"script": SCRIPT, "args": dataclasses.asdict(self.args), **model},
                       os.path.join(self.dir, "model.pt"))
        result = ""
        if self.args.eval_episodes:
            returns = evaluate()
            summary["eval"] = {"episodes": len(returns), "deterministic": self.args.eval_deterministic,
                               "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
            self.writer.add_scalar("eval/mean_return", summary["eval"]["mean_return"], step)
            self.writer.add_scalar("eval/std_return", summary["eval"]["std_return"], step)
            result = (f"; evaluation: {summary['eval']['mean_return']:.2f} +- {summary['eval']['std_return']:.2f} "
                      f"over {len(returns)} episodes")
        write_json(os.path.join(self.dir, "summary.json"), summary)
        if self.args.track:
            import wandb

            wandb.finish()
        self.progress.close()
        self.progress = None
        print(f"done: {step:,} steps at {summary['sps']:,} steps/s in {self.dir}{result}", flush=True)
        return summary

    def __enter__(self) -> "Run":
        return self

    def __exit__(self, *error) -> None:
        if self.progress is not None:
            self.progress.close()
        for sig, handler in self.handlers.items():
            signal.signal(sig, handler)
        for thing in reversed(self.closers):
            thing.close()
        if self.episode_file is not None:
            self.episode_file.close()
        if self.writer is not None:
            self.writer.close()
        if self.claimed and self.episode_file is None:  # never started: give back the directory, if still empty
            with contextlib.suppress(OSError):
                os.rmdir(self.claimed)
        torch.set_num_threads(self.threads_before)


# --- evaluating a saved model, and the command line ------------------------------------------------------


@dataclass
class EvalArgs:
    """Evaluate a model saved with --save-model."""

    model_path: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="MODEL_PT")]
    """the model.pt file of a run"""
    episodes: int = 10
    """episodes to average over"""
    seed: int = 12345
    """seed of the evaluation environments"""
    deterministic: bool = next(iter(PRESETS.values())).eval_deterministic
    """act without exploration (the most likely action, the mean action or the greedy one)"""
    capture_video: bool = False
    """record the episodes next to the model, in videos/"""


def main_evaluate(eval_args: EvalArgs) -> dict:
    agent, args = load_agent(eval_args.model_path)
    args = dataclasses.replace(args, capture_video=eval_args.capture_video)
    video_dir = os.path.join(os.path.dirname(os.path.abspath(eval_args.model_path)), "videos")
    returns = evaluate(agent, args, eval_args.episodes, eval_args.seed, eval_args.deterministic, video_dir)
    result = {"episodes": len(returns), "mean_return": float(np.mean(returns)), "std_return": float(np.std(returns))}
    print(json.dumps(result))
    return result


def parse_args(argv: list[str]) -> "Args | EvalArgs":
    """`evaluate MODEL ...` gives EvalArgs. Training takes a preset as its first word (a tyro subcommand; the
    first of PRESETS when the command starts with a flag, --help included) and applies the flags over it."""
    if any(arg == "--preset" or arg.startswith("--preset=") for arg in argv):
        raise ConfigError(f"a preset is the first word of the command, not a flag: {SCRIPT} "
                          f"{{{','.join(PRESETS)}}} [FLAGS]")
    if not argv or argv[0].startswith("-"):
        argv = [next(iter(PRESETS)), *argv]
    names = ", ".join(PRESETS)
    presets = [Annotated[Args, tyro.conf.subcommand(name, default=args, description=(
        f"{__doc__}\nPresets (the first word of the command): {names}; the defaults below are the {name} preset's."
    ))] for name, args in PRESETS.items()]
    evaluate_model = Annotated[EvalArgs, tyro.conf.subcommand("evaluate", description=EvalArgs.__doc__)]
    command = typing.Union[(*presets, evaluate_model)]
    return tyro.cli(command, args=argv, prog=SCRIPT, description=__doc__, config=(tyro.conf.OmitSubcommandPrefixes,))


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
# ==== end of kit: run ====
