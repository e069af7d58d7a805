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
