"""REINFORCE: Monte-Carlo policy gradient (Williams 1992; Sutton & Barto 2nd ed., Algorithms 13.3 and 13.4).

Play whole episodes with the current policy, then step along -G_t log pi(A_t|S_t), G_t the discounted
return: from step t on (reward to go, Sutton & Barto's form) or of the whole episode (Williams's original
estimator). With --baseline a learned state value v(S_t) is subtracted from G_t (Algorithm 13.4). Returns are
pure Monte Carlo: an episode cut by a time limit ends there, with no bootstrap.

    python algos/reinforce.py --env-id CartPole-v1 --baseline
    python algos/reinforce.py --env-id Pendulum-v1 --no-reward-to-go
    python algos/reinforce.py evaluate runs/<run>/model.pt --episodes 10
"""

import os
import random
from dataclasses import dataclass
from typing import Annotated

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical, Normal

SCRIPT = "reinforce.py"  # names this script in messages, checkpoints and models
ATARI = False  # classic control only: Atari ids are refused


@dataclass
class Args:
    # --- common to every script ---
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environment"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 200_000
    """environment steps to train for; training stops after the first batch of whole episodes that reaches it (our choice for CartPole: with --baseline, seeds 1-3 pass a 20-episode mean of 400 well before)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = False
    """use a CUDA GPU when one is present (off by default: acting one step at a time, these small MLPs are faster on the CPU)"""
    threads: Annotated[int | None, tyro.conf.arg(help_behavior_hint="(default: 1, the fastest for these small MLPs)")] = None
    """torch CPU threads. Give runs that share a machine 1 each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "reinforce"
    """the wandb project"""
    wandb_entity: str | None = None
    """the wandb entity (team or user)"""
    capture_video: bool = False
    """record videos of env 0 into RUN_DIR/videos"""
    save_model: bool = False
    """write RUN_DIR/model.pt at the end: weights and args"""
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
    """weight log pi(A_t|S_t) by the return from step t on, G_t (causality, G(PO)MDP; Sutton & Barto's G_t, without their gamma^t factor); off: by the whole episode's return G_0 (Williams 1992's original estimator). At --gamma 1 both estimate the same gradient, G_t with less variance. With --baseline off reward-to-go, v(S_t) (fitted to G_t) is subtracted from G_0: still unbiased, as v does not depend on A_t, but it removes less variance"""
    hidden_size: int = 64
    """units in each of the two tanh hidden layers of the policy and of the baseline (our choice, as in ppo.py)"""


PRESETS = {"classic": Args()}  # one preset: the defaults above


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_common(args)
    for name in ("episodes_per_update", "learning_rate", "value_learning_rate", "value_epochs", "hidden_size"):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {args.gamma}")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """REINFORCE here is for classic control: vector observations, discrete or 1-D box actions."""
    box = isinstance(action_space, gym.spaces.Box)
    if not isinstance(action_space, gym.spaces.Discrete) and not (box and len(action_space.shape) == 1):
        raise ConfigError(f"{SCRIPT} supports Discrete and 1-D Box action spaces, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"{SCRIPT} supports 1-D vector observations (classic control), not {observation_space}; "
                          "for images use ppo.py")


def make_vector_env(env_id: str, video_dir: str = "") -> gym.vector.SyncVectorEnv:
    """One env behind the vector interface (batched observations), resetting in the step that ends an
    episode (SAME_STEP), so the observation after the last step is already the next episode's first.
    Classic control needs no wrappers; given a video_dir, the episodes are recorded there."""
    def make() -> gym.Env:
        env = gym.make(env_id, render_mode="rgb_array" if video_dir else None)
        return gym.wrappers.RecordVideo(env, video_dir) if video_dir else env
    return gym.vector.SyncVectorEnv([make], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def batch_seed(seed: int, step: int) -> int:
    """The env seed of the batch that starts at `step`: independent streams for every (seed, step)
    pair, where seed + step would give run 1 at step 1 the episodes of run 2 at step 0."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0])


def discounted_returns(rewards: np.ndarray, gamma: float) -> np.ndarray:
    """G_t = R_{t+1} + gamma R_{t+2} + ... to the end of one whole episode, for every t (Sutton & Barto
    eq. 3.8; rewards[t] is R_{t+1}, the reward for the action at step t). Float64."""
    returns, running = np.zeros(len(rewards)), 0.0
    for t in reversed(range(len(rewards))):
        returns[t] = running = rewards[t] + gamma * running
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

    def log_prob(self, obs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) and the entropy, per sample."""
        out = self.actor(obs.float())
        if self.discrete:
            dist = Categorical(logits=out, validate_args=False)
            return dist.log_prob(actions), dist.entropy()
        dist = Normal(out, self.actor_logstd.exp().expand_as(out), validate_args=False)
        return dist.log_prob(actions).sum(-1), dist.entropy().sum(-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """Sample actions (or take the most likely one, or the mean). This runs at every env step, so it
        skips the distribution objects, which cost more than the network at this size."""
        out = self.actor(obs.float())
        if self.discrete:  # Gumbel-max: argmax(logits - log E), E ~ Exp(1), is a sample of softmax(logits)
            return (out if deterministic else out - torch.empty_like(out).exponential_().log()).argmax(-1)
        return out if deterministic else out + self.actor_logstd.exp() * torch.randn_like(out)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(obs.float()).squeeze(-1)


@dataclass
class Episode:
    observations: np.ndarray  # [T, *obs_shape]
    actions: np.ndarray  # [T] or [T, action_dim], as sampled (before clipping to the bounds)
    rewards: np.ndarray  # [T], rewards[t] = R_{t+1}


def play_episode(envs: gym.vector.VectorEnv, agent: Agent, obs: np.ndarray, deterministic: bool = False):
    """Play one whole episode in a one-env SAME_STEP vector env, starting from its current observation
    obs. Returns the Episode and the first observation of the next one. Box actions are clipped to the
    bounds for the env; the unclipped sample is what the policy's log-probability is of."""
    device, space = next(agent.parameters()).device, envs.single_action_space
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


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (recorded into video_dir with --capture-video)."""
    envs = make_vector_env(args.env_id, video_dir if args.capture_video else "")
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
    with gym.make(args.env_id) as env:
        agent = Agent(env.observation_space, env.action_space, args.hidden_size, args.baseline)
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent, args


def update(agent: Agent, optimizer: torch.optim.Optimizer, episodes: list[Episode], args: Args) -> dict:
    """One update of Algorithm 13.4 on a batch of whole episodes (13.3 without --baseline, where v = 0): an Adam
    step on the policy's loss, log pi(A_t|S_t) weighed by G_t - v(S_t), together with the baseline's first step;
    then its --value-epochs - 1 further steps. Returns the metrics, and loss: what the first step minimised."""
    device = next(agent.parameters()).device
    obs = torch.as_tensor(np.concatenate([e.observations for e in episodes]), device=device)
    actions = torch.as_tensor(np.concatenate([e.actions for e in episodes]), device=device)
    returns = torch.as_tensor(np.concatenate([discounted_returns(e.rewards, args.gamma) for e in episodes]),
                              dtype=torch.float32, device=device)
    weights = torch.as_tensor(np.concatenate([return_weights(e.rewards, args.gamma, args.reward_to_go)
                                              for e in episodes]), dtype=torch.float32, device=device)
    with torch.no_grad():  # v as it was before this batch
        values = agent.get_value(obs) if args.baseline else torch.zeros_like(weights)
    logprob, entropy = agent.log_prob(obs, actions)
    pg_loss = policy_gradient_loss(logprob, weights - values, len(episodes))
    v_loss = value_loss(agent.get_value(obs), returns) if args.baseline else 0.0
    loss = pg_loss + v_loss
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    for _ in range(args.value_epochs - 1 if args.baseline else 0):  # the baseline's further steps
        v_loss = value_loss(agent.get_value(obs), returns)
        optimizer.zero_grad(set_to_none=True)  # the policy's gradients too: Adam skips it from here on
        v_loss.backward()
        optimizer.step()
    metrics = {"loss": loss.detach(), "policy_loss": pg_loss.detach(), "entropy": entropy.detach().mean()}
    if args.baseline:
        metrics.update(value_loss=v_loss.detach(), explained_variance=explained_variance(values, returns))
    return metrics


def main(args: Args) -> dict:
    """Train REINFORCE and return the summary also written to RUN_DIR/summary.json (on SIGINT/SIGTERM:
    {"interrupted": True, "global_step", "run_dir"})."""
    args, checkpoint = resume_args(args)
    check_env_id(args.env_id)  # the env id first: the other messages assume it exists
    check_args(args)
    with Run(args, checkpoint) as run:  # seeds everything; writes nothing yet
        args, device, global_step = run.args, run.device, run.start_step  # run.args has run_dir filled in
        envs = run.closing(make_vector_env(args.env_id))  # no video: RecordVideo would make its folder now
        check_spaces(envs.single_observation_space, envs.single_action_space)
        run.use_threads(1)  # small MLPs run fastest on one thread
        agent = Agent(envs.single_observation_space, envs.single_action_space, args.hidden_size, args.baseline).to(device)
        optimizer = torch.optim.Adam([{"params": agent.policy_parameters(), "lr": args.learning_rate}] + (
            [{"params": list(agent.critic.parameters()), "lr": args.value_learning_rate}] if args.baseline else []))
        run.restore(model=agent, optimizer=optimizer)
        updates = run.saved("update", 0)
        run.start()
        if args.capture_video:  # now that the run directory may be written (the first env closes with the run)
            envs = run.closing(make_vector_env(args.env_id, os.path.join(args.run_dir, "videos")))
        while global_step < args.total_timesteps:
            updates += 1
            # Each batch starts fresh episodes, seeded by the seed and the step count, so that a resumed
            # run plays exactly the episodes the uninterrupted one would have.
            obs, _ = envs.reset(seed=batch_seed(args.seed, global_step))
            episodes = []
            for _ in range(args.episodes_per_update):
                episode, obs = play_episode(envs, agent, obs)
                episodes.append(episode)
                global_step += len(episode.rewards)
                run.episode(global_step, episode.rewards.sum(), len(episode.rewards))
            metrics = update(agent, optimizer, episodes, args)
            run.check_finite(global_step, metrics.pop("loss"), agent)  # the loss is checked, the rest logged
            run.log(global_step, {f"losses/{name}": value for name, value in metrics.items()})
            run.save_if_due(global_step, update=updates)
            if run.stopped:
                return run.interrupted()
        return run.finish(global_step, {"model": agent.state_dict()}, lambda: evaluate(
            agent, args, args.eval_episodes, args.seed + 100_000, args.eval_deterministic, ""), updates=updates)


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
