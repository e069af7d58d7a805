"""Deep Deterministic Policy Gradient, DDPG (Lillicrap et al. 2015, "Continuous control with deep
reinforcement learning").

A deterministic actor mu(s) and a critic Q(s, a) learned off-policy from a replay buffer: the critic by
regression on r + gamma Q'(s', mu'(s')) with slowly tracking target networks, the actor by following the
critic's gradient with respect to the action. One gradient step per env step, from a replay buffer that
checkpoints keep; Ornstein-Uhlenbeck exploration noise. Without the paper's batch normalisation (its
low-dimensional runs normalised the state input and the layers before the action; the TD3 paper's DDPG and
most reimplementations drop it). For continuous actions (a 1-D box) and vector observations: MuJoCo,
Pendulum-v1, ...

Presets: paper (the default: Section 7, Experiment details, 400-300 units with the action entering the critic
at its second layer, Adam 1e-4 actor and 1e-3 critic with L2 weight decay 1e-2, tau 0.001, batch 64,
Ornstein-Uhlenbeck noise, final layers U(+-3e-3)) and our-ddpg (the tuned DDPG of Fujimoto et al. 2018, "Our
DDPG" of Tables 1 and 3: the action at the critic's first layer, Adam 1e-3 for both, no weight decay, tau
0.005, batch 100, Gaussian noise 0.1, PyTorch's default initialisation, 1,000 random start steps).

    python algos/ddpg.py --env-id Hopper-v5                 # the paper's settings (Section 7)
    python algos/ddpg.py our-ddpg --env-id Hopper-v5        # the TD3 paper's tuned DDPG ("Our DDPG")
    python algos/ddpg.py --env-id Pendulum-v1 --learning-starts 1000 --total-timesteps 20000
    python algos/ddpg.py evaluate runs/<run>/model.pt --episodes 10
"""

import os
import random
from dataclasses import dataclass
from typing import Annotated, Literal

import torch
import torch.nn as nn
import tyro

SCRIPT = "ddpg.py"  # names this script in messages, checkpoints and models
ATARI = False  # continuous actions only


@dataclass
class Args:
    # --- common to every script ---
    preset: tyro.conf.Suppress[Literal["paper", "our-ddpg"]] = "paper"
    """the preset the run started from (the command's first word); recorded, not a flag"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy, torch and the environments"""
    env_id: str = "Hopper-v5"
    """the gymnasium environment id"""
    total_timesteps: int = 1_000_000
    """environment steps to train for (the paper: 1M)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = True
    """use a CUDA GPU when one is present"""
    threads: Annotated[int | None, tyro.conf.arg(help_behavior_hint="(default: one per core: batch-256 updates ran 1.16x faster on 2 than on 1)")] = None
    """torch CPU threads. Give runs that share a machine 1 each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "ddpg"
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
    eval_deterministic: bool = True
    """evaluate the policy without exploration noise (False adds Gaussian noise of std --exploration-noise)"""

    # --- DDPG ---
    eval_every: int = 5_000
    """evaluate every this many env steps over --eval-episodes episodes, logged under eval/ (0: only at the end). The TD3 paper's protocol: 5,000 steps, 10 episodes"""
    learning_starts: int = 64
    """env steps of uniformly random actions before the first update. Paper: updates from the start (here once the buffer holds a batch, 64); the TD3 paper's DDPG: 1,000 (10,000 on HalfCheetah and Ant, Section 6.1)"""
    buffer_size: int = 1_000_000
    """replay buffer capacity in transitions, allocated once, at most --total-timesteps. Paper: 1e6"""
    hidden_sizes: tuple[int, ...] = (400, 300)
    """units of the hidden ReLU layers of actor and critic. Paper: 400 300"""
    critic_action_layer: int = 2
    """the critic layer whose input the action joins (1: with the state at the input). Paper: 2; the TD3 paper's DDPG: 1"""
    learning_rate: float = 1e-3
    """Adam step size of the critic. Paper: 1e-3"""
    actor_learning_rate: float | None = 1e-4
    """Adam step size of the actor (None: --learning-rate). Paper: 1e-4; the TD3 paper's DDPG: 1e-3"""
    critic_weight_decay: float = 1e-2
    """L2 weight decay of the critic, as Adam's weight_decay (added to the gradient). Paper: 1e-2; the TD3 paper's DDPG: 0"""
    batch_size: int = 64
    """transitions per gradient step, sampled uniformly from the buffer. Paper: 64; the TD3 paper's DDPG: 100"""
    gamma: float = 0.99
    """discount factor. Paper: 0.99"""
    tau: float = 0.001
    """target networks move this fraction towards the online ones after each update. Paper: 0.001; the TD3 paper's DDPG: 0.005"""
    exploration: Literal["ou", "gaussian"] = "ou"
    """exploration noise: Ornstein-Uhlenbeck (paper) or independent Gaussian (the TD3 paper's DDPG)"""
    exploration_noise: float = 0.2
    """sigma of the noise, in units of half the action range. Paper: 0.2 (OU); the TD3 paper's DDPG: 0.1 (Gaussian)"""
    ou_theta: float = 0.15
    """the OU process's pull towards 0 per step (mu = 0, dt = 1). Paper: 0.15"""
    final_layer_init: float | None = 3e-3
    """initialise the last layer of actor and critic U(+-this), weights and biases (None: PyTorch's default, U(+-1/sqrt(fan_in)), which the paper uses for the other layers). Paper: 3e-3; the TD3 paper's DDPG: None"""
    bf16: bool = False
    """opt-in, not the paper's (float32): the update's matrix products in bfloat16 (torch.autocast); weights, optimiser state, targets and losses stay float32. On a CPU with AVX512-BF16, one thread, Hopper: no faster at the paper's batch of 64 (0.9x), faster at larger batches (256-256 networks, batch 256: about 1.3x); an update's change of the weights differs from float32's by a few percent. Pendulum is learned as in float32 (tests); on Hopper-v5 (256-256, batch 256, 6,000 steps) seeds 1-3 evaluated 171, 202 and 355 (float32: 324, 228 and -2.5)"""


PRESETS = {
    "paper": Args(),
    "our-ddpg": Args(preset="our-ddpg", learning_starts=1_000, critic_action_layer=1, actor_learning_rate=1e-3,
                     critic_weight_decay=0.0, batch_size=100, tau=0.005, exploration="gaussian",
                     exploration_noise=0.1, final_layer_init=None),
}


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_common(args)
    check_replay_args(args)
    if not 0 < args.tau <= 1:
        raise ConfigError(f"--tau must be in (0, 1], got {args.tau}")
    if args.exploration_noise < 0 or args.critic_weight_decay < 0:
        raise ConfigError("--exploration-noise and --critic-weight-decay must be non-negative")
    if not 0 <= args.ou_theta <= 1:
        raise ConfigError(f"--ou-theta must be in [0, 1], got {args.ou_theta}")
    if args.final_layer_init is not None and args.final_layer_init <= 0:
        raise ConfigError(f"--final-layer-init must be positive (or None), got {args.final_layer_init}")
    if not args.hidden_sizes or min(args.hidden_sizes) <= 0:
        raise ConfigError(f"--hidden-sizes needs one or more positive sizes, got {args.hidden_sizes}")
    if not 1 <= args.critic_action_layer <= len(args.hidden_sizes):
        raise ConfigError(f"--critic-action-layer must be a hidden layer, 1 to {len(args.hidden_sizes)}, "
                          f"got {args.critic_action_layer}")


# --- the math --------------------------------------------------------------------------------------------


def ou_step(x: torch.Tensor, eps: torch.Tensor, theta: float, sigma: float) -> torch.Tensor:
    """One step of the Ornstein-Uhlenbeck process dx = theta (mu - x) dt + sigma dW with mu = 0 and dt = 1:
    x' = (1 - theta) x + sigma eps, eps ~ N(0, 1). Its stationary variance is sigma^2 / (1 - (1 - theta)^2) and
    its lag-k autocorrelation (1 - theta)^k: temporally correlated noise, for inertial systems (Section 3)."""
    return (1.0 - theta) * x + sigma * eps


def td_target(rewards: torch.Tensor, terminated: torch.Tensor, next_q: torch.Tensor, gamma: float) -> torch.Tensor:
    """y = r + gamma (1 - terminated) Q'(s', mu'(s')). Only a true termination stops the bootstrap: after a
    time-limit truncation s' is the episode's final observation and its value counts."""
    return rewards + gamma * (1.0 - terminated) * next_q


def critic_loss(q: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The mean squared TD error over the batch."""
    return ((q - target) ** 2).mean()


def actor_loss(q: torch.Tensor) -> torch.Tensor:
    """The deterministic policy gradient's objective, -Q(s, mu(s)) averaged over the batch."""
    return -q.mean()


# --- the networks ----------------------------------------------------------------------------------------


class Critic(nn.Module):
    """Q(s, a): ReLU hidden layers and a linear output; the action joins the input of layer
    `action_layer` (2 in the paper: "actions were not included until the 2nd hidden layer of Q")."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...], action_layer: int,
                 final_layer_init: float | None):
        super().__init__()
        self.action_layer = action_layer
        self.layers = nn.ModuleList()
        n_in = obs_dim
        for k, n_out in enumerate([*hidden_sizes, 1], start=1):
            n_in += act_dim if k == action_layer else 0
            self.layers.append(nn.Linear(n_in, n_out))
            n_in = n_out
        init_final_layer(self.layers[-1], final_layer_init)

    def forward(self, obs: torch.Tensor, action: torch.Tensor, detach_params: bool = False) -> torch.Tensor:
        """[batch]: Q of each (s, a). detach_params holds the parameters fixed (for the actor's loss): the
        gradient flows to the action only, and no critic gradients are computed that would be thrown away."""
        x = obs
        last = len(self.layers) - 1
        for k, layer in enumerate(self.layers):
            if k + 1 == self.action_layer:
                x = torch.cat([x, action], -1)
            weight, bias = (layer.weight.detach(), layer.bias.detach()) if detach_params else (layer.weight, layer.bias)
            x = nn.functional.linear(x, weight, bias)
            if k < last:
                x = torch.relu(x)
        return x.squeeze(-1)


class Agent(nn.Module):
    """The actor (the paper's initialisation: PyTorch's default, U(+-1/sqrt(fan_in)), but for the final layer),
    the critic, and their target copies. Actions are in [-1, 1]; the env sees them mapped linearly onto its
    bounds."""

    def __init__(self, obs_dim: int, act_dim: int, args: Args):
        super().__init__()
        sizes, noise, init = args.hidden_sizes, args.exploration_noise, args.final_layer_init
        self.actor = DeterministicActor(obs_dim, act_dim, sizes, noise, init)
        self.critic = Critic(obs_dim, act_dim, sizes, args.critic_action_layer, init)
        self.actor_target = target_copy(DeterministicActor(obs_dim, act_dim, sizes, noise, init), self.actor)
        self.critic_target = target_copy(Critic(obs_dim, act_dim, sizes, args.critic_action_layer, init), self.critic)


# --- training --------------------------------------------------------------------------------------------


def update(agent: Agent, actor_optimizer: torch.optim.Optimizer, critic_optimizer: torch.optim.Optimizer,
           batch: "Batch", args: Args) -> dict[str, torch.Tensor]:
    """One update of Algorithm 1 on a batch: a step of the critic towards r + gamma Q'(s', mu'(s')), a step of
    the actor along the critic's gradient in the action, then the Polyak update of both target networks.
    Returns qf_loss, qf_values (the critic's mean value), actor_loss, and loss (their sum, the one watched):
    tensors left on the device, so that no step waits for it."""
    obs, actions, rewards, next_obs, terminated = batch
    with torch.no_grad():
        next_q = agent.critic_target(next_obs, agent.actor_target(next_obs))
        target = td_target(rewards, terminated, next_q, args.gamma)
    q = agent.critic(obs, actions)
    qf_loss = critic_loss(q, target)
    gradient_step(critic_optimizer, qf_loss)
    metrics = {"loss": qf_loss.detach(), "qf_loss": qf_loss.detach(), "qf_values": q.detach().mean()}
    pg_loss = actor_loss(agent.critic(obs, agent.actor(obs), detach_params=True))
    gradient_step(actor_optimizer, pg_loss)
    polyak_update(list(agent.actor_target.parameters()), list(agent.actor.parameters()), args.tau)
    polyak_update(list(agent.critic_target.parameters()), list(agent.critic.parameters()), args.tau)
    metrics.update(loss=qf_loss.detach() + pg_loss.detach(), actor_loss=pg_loss.detach())
    return metrics


def main(args: Args) -> dict:
    """Train DDPG and return the summary also written to RUN_DIR/summary.json (on SIGINT/SIGTERM:
    {"interrupted": True, "global_step", "run_dir"})."""
    args, checkpoint = resume_args(args)
    check_env_id(args.env_id)  # the env id first: the other messages assume it exists
    check_args(args)
    obs_dim, act_dim = (space.shape[0] for space in env_spaces(args.env_id))
    with Run(args, checkpoint) as run:  # seeds everything; writes nothing yet
        args, device = run.args, run.device
        agent = Agent(obs_dim, act_dim, args).to(device)
        # fused: one kernel for all the parameters, several times faster than the loop on CPU
        actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=args.actor_learning_rate or args.learning_rate,
                                           fused=True)
        critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate,
                                            weight_decay=args.critic_weight_decay, fused=True)
        buffer = ReplayBuffer(min(args.buffer_size, args.total_timesteps), obs_dim, act_dim, device)
        envs, obs = start_training(run, buffer, model=agent, actor_optimizer=actor_optimizer,
                                   critic_optimizer=critic_optimizer)
        updates, evaluations, global_step = run.saved("updates", 0), run.saved("evaluations", []), run.start_step
        losses = LossWatch(device, "the critic's loss plus the actor's")
        evaluate_policy = policy_evaluation(agent.actor, args)
        ou_state = torch.zeros((1, act_dim), device=device)  # a fresh episode's noise starts at mu = 0
        while global_step < args.total_timesteps:
            global_step += 1
            if global_step <= args.learning_starts:
                action = torch.rand((1, act_dim), device=device) * 2 - 1
            else:
                with torch.no_grad():
                    obs_tensor = torch.as_tensor(obs, dtype=torch.float32, device=device)
                    if args.exploration == "gaussian":
                        action = agent.actor.act(obs_tensor)
                    else:
                        ou_state = ou_step(ou_state, torch.randn_like(ou_state), args.ou_theta, args.exploration_noise)
                        action = (agent.actor(obs_tensor) + ou_state).clamp(-1.0, 1.0)
            obs, done = env_step(run, envs, buffer, global_step, obs, action.cpu().numpy())
            if done[0]:
                ou_state.zero_()
            if global_step > args.learning_starts:
                updates += 1
                with torch.autocast(device.type, torch.bfloat16, enabled=args.bf16):  # --bf16: products in bfloat16
                    metrics = update(agent, actor_optimizer, critic_optimizer, buffer.sample(args.batch_size), args)
                losses.watch(global_step, metrics)
            end_of_step(run, losses, global_step, evaluate_policy, evaluations, updates=updates)
            if run.stopped:
                return run.interrupted()
        return run.finish(global_step, {"model": agent.state_dict()}, evaluate_policy, buffer_size=buffer.size,
                          learning_sps=losses.learning_sps(global_step), evaluations=evaluations)


# ==== kit: replay ====  the same text in ddpg, td3 and sac (master copy: tools/kit/replay.py; `python
# tools/sync_kit.py` copies it). What the off-policy scripts share besides the kit `run`: one env with its
# actions in [-1, 1], the replay buffer, DDPG's and TD3's actor, the Polyak update, losses watched on the
# device, the start of training, an env step, the bookkeeping at the end of every step, and the kit's
# evaluate and load_agent. From the script above it uses check_args(args), Agent(obs_dim, act_dim, args)
# (with .actor, whose act(obs, deterministic) gives actions in [-1, 1]), and the Args fields the off-policy
# scripts share.

import copy
import dataclasses
import os
import time
import typing

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn

LOG_EVERY = 1_000  # env steps between logs of the losses: reading them back from the device is a wait


def check_replay_args(args: "Args") -> None:
    """The checks of the settings the off-policy scripts share."""
    for name in ("learning_rate", "actor_learning_rate", "batch_size", "buffer_size"):
        value = getattr(args, name, None)  # actor_learning_rate: ddpg and td3 only, None meaning --learning-rate
        if value is not None and value <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {value}")
    for name in ("learning_starts", "eval_every"):
        if getattr(args, name) < 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be non-negative, got {getattr(args, name)}")
    if not 0 < args.gamma <= 1:
        raise ConfigError(f"--gamma must be in (0, 1], got {args.gamma}")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """Continuous actions in a 1-D box with finite bounds (the policy's tanh is mapped onto them), and vector
    observations."""
    if not isinstance(action_space, gym.spaces.Box) or len(action_space.shape) != 1:
        raise ConfigError(f"{SCRIPT} needs a 1-D Box (continuous) action space, not {action_space}; for discrete "
                          "actions use ppo.py, a2c_atari.py or reinforce.py")
    if not (np.isfinite(action_space.low).all() and np.isfinite(action_space.high).all()):
        raise ConfigError(f"{SCRIPT} needs finite action bounds (its actions are a tanh mapped onto them), "
                          f"not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) != 1:
        raise ConfigError(f"{SCRIPT} supports 1-D vector observations, not {observation_space}; for images use ppo.py")


def env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of env_id, checked by check_spaces. The env is made and closed at
    once: the run's own comes after every check, as its video recorder makes the run directory."""
    env = gym.make(env_id)
    env.close()
    check_spaces(env.observation_space, env.action_space)
    return env.observation_space, env.action_space


def make_vector_env(args: "Args", seed: int, video_dir: str) -> gym.vector.SyncVectorEnv:
    """One env behind the vector interface, resetting in the step that ends an episode (SAME_STEP): that
    step's observation is already the next episode's first, and the true last one is in infos["final_obs"].
    MuJoCo and classic control need no wrappers besides the episode statistics."""

    def thunk():
        env = gym.make(args.env_id, render_mode="rgb_array" if args.capture_video else None)
        if args.capture_video:
            env = gym.wrappers.RecordVideo(env, video_dir)
        return gym.wrappers.RecordEpisodeStatistics(env)

    envs = gym.vector.SyncVectorEnv([thunk], autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    envs.single_action_space.seed(seed)
    return envs


def env_action(space: gym.spaces.Box, action: np.ndarray) -> np.ndarray:
    """Actions in [-1, 1] mapped linearly onto the env's bounds: noise is in units of half the range."""
    return (space.high + space.low) / 2 + (space.high - space.low) / 2 * action


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


def gaussian_noise(action: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exploration: independent N(0, sigma^2) noise on each action, clipped back into [-1, 1]."""
    return (action + sigma * torch.randn_like(action)).clamp(-1.0, 1.0)


def mlp(n_in: int, hidden_sizes: tuple[int, ...], n_out: int) -> list[nn.Module]:
    """The layers of a ReLU MLP, in PyTorch's default initialisation (U(+-1/sqrt(fan_in)))."""
    layers: list[nn.Module] = []
    for n_hidden in hidden_sizes:
        layers += [nn.Linear(n_in, n_hidden), nn.ReLU()]
        n_in = n_hidden
    return [*layers, nn.Linear(n_in, n_out)]


def target_copy(target: nn.Module, online: nn.Module) -> nn.Module:
    """target, a network made like online, turned into a copy of it that autograd leaves alone."""
    target.load_state_dict(online.state_dict())
    return target.requires_grad_(False)


def init_final_layer(layer: nn.Linear, bound: float | None) -> nn.Linear:
    """U(+-bound) weights and biases (DDPG's Section 7: the outputs start near zero); None keeps PyTorch's
    default, U(+-1/sqrt(fan_in))."""
    if bound is not None:
        nn.init.uniform_(layer.weight, -bound, bound)
        nn.init.uniform_(layer.bias, -bound, bound)
    return layer


class DeterministicActor(nn.Module):
    """mu(s) of DDPG and TD3: ReLU hidden layers and a tanh output in [-1, 1], PyTorch's default
    initialisation but for the last layer's U(+-final_layer_init) when given."""

    def __init__(self, obs_dim: int, act_dim: int, hidden_sizes: tuple[int, ...], exploration_noise: float,
                 final_layer_init: float | None = None):
        super().__init__()
        *hidden, last = mlp(obs_dim, hidden_sizes, act_dim)
        self.net = nn.Sequential(*hidden, init_final_layer(last, final_layer_init))
        self.exploration_noise = exploration_noise

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # tanh in float32 even under --bf16's autocast: bfloat16 rounds tanh(x) to exactly 1 from |x| of about
        # 3.5 on, where its gradient becomes 0 and a saturated action can never come back (DDPG on Hopper got
        # stuck so on every seed); float32 does so only from about 9
        return torch.tanh(self.net(obs).float())

    def act(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """mu(s), plus Gaussian noise of std exploration_noise unless deterministic."""
        return self(obs) if deterministic else gaussian_noise(self(obs), self.exploration_noise)


def gradient_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    """One step of optimizer down the gradient of loss."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def polyak_update(targets: list[torch.Tensor], sources: list[torch.Tensor], tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta' for each pair, in place, in one fused kernel for all the
    tensors. Outside autograd: recorded, the in-place update would make the targets require grad and chain
    every update's graph onto the last one's, a leak that grows with each update."""
    with torch.no_grad():
        torch._foreach_lerp_(targets, sources, tau)


class Batch(typing.NamedTuple):
    """Transitions, one row each: tensors [batch, ...] on the buffer's device."""

    obs: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_obs: torch.Tensor
    terminated: torch.Tensor


class ReplayBuffer:
    """A ring of transitions (s, a, r, terminated, s'), a float32 row each in one tensor allocated once on the
    device: storing a step is one copy, sampling a minibatch one gather. It keeps `terminated`, not `done`: a
    transition cut by a time limit still bootstraps from s', the true last observation of its episode. Rows
    [0, size) are filled; pos is where the next one goes, over the oldest once the ring is full."""

    def __init__(self, capacity: int, obs_dim: int, act_dim: int, device: torch.device):
        self.capacity, self.obs_dim, self.act_dim = capacity, obs_dim, act_dim
        self.data = torch.zeros((capacity, self.row_size(obs_dim, act_dim)), device=device)
        self.pos, self.size = 0, 0

    @staticmethod
    def row_size(obs_dim: int, act_dim: int) -> int:
        """The numbers of a row: obs, action, reward, terminated, next obs."""
        return 2 * obs_dim + act_dim + 2

    @staticmethod
    def bytes_per_transition(obs_dim: int, act_dim: int) -> int:
        return 4 * ReplayBuffer.row_size(obs_dim, act_dim)

    def describe(self, env_id: str, resumed_step: int | None) -> str:
        """The line a run prints at its start: what a transition and the whole buffer take."""
        size = self.bytes_per_transition(self.obs_dim, self.act_dim)
        resumed = "" if resumed_step is None else f"; resumed with {self.size:,} stored, at step {resumed_step:,}"
        return (f"replay buffer: {size} bytes a transition of {env_id} ({self.obs_dim}-dim observation twice, "
                f"{self.act_dim}-dim action, reward, terminated; float32); 1M transitions take "
                f"{size * 1e6 / 2**20:,.0f} MiB; this run's {self.capacity:,} take {size * self.capacity / 2**20:,.1f} "
                f"MiB on {self.data.device}{resumed}")

    def add(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
            terminated: np.ndarray) -> None:
        """Store one step of a vector env: a transition per env, each argument with a leading env dimension."""
        rows = np.concatenate([obs, actions, rewards[:, None], terminated[:, None], next_obs], 1, dtype=np.float32)
        for row in torch.from_numpy(rows):
            self.data[self.pos] = row
            self.pos = (self.pos + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def rows(self, rows: torch.Tensor) -> Batch:
        """A block of rows as a Batch of views."""
        o, a = self.obs_dim, self.act_dim
        return Batch(rows[:, :o], rows[:, o:o + a], rows[:, o + a], rows[:, o + a + 2:], rows[:, o + a + 1])

    def sample(self, batch_size: int) -> Batch:
        """batch_size transitions drawn uniformly, with replacement, from the filled rows. The indices come
        from torch's generator on the device, so drawing them waits for nothing."""
        return self.rows(self.data[torch.randint(self.size, (batch_size,), device=self.data.device)])

    def state_dict(self) -> dict:
        """A copy of the filled rows only, so that a checkpoint early in a run stays small: torch.save writes
        a view's whole storage, so saving the view data[:size] would write every allocated row."""
        return {"data": self.data[: self.size].to("cpu", copy=True), "pos": self.pos, "size": self.size}

    def load_state_dict(self, state: dict) -> None:
        n = state["size"]
        if n > self.capacity:
            raise ConfigError(f"the checkpoint's replay buffer holds {n} transitions, more than --buffer-size "
                              f"{self.capacity}")
        # ddpg.py and td3.py checkpoints written before this kit hold a tensor per part of the row
        parts = ("obs", "actions", "rewards", "terminated", "next_obs")
        data = state["data"] if "data" in state else torch.cat([state[part].reshape(n, -1) for part in parts], 1)
        self.data[:n] = data.to(self.data.device)
        self.pos, self.size = state["pos"], n


class LossWatch:
    """The metrics of the updates, left on the device and read only where the run stops to log, evaluate or
    save: a read waits for the device, and once a step it would hold every update up. The first watched loss
    that is nan or inf, and its step, are kept there too, for check() to stop the run before a checkpoint holds
    what that update did to the weights. Also the clock of the updates, for learning_sps."""

    def __init__(self, device: torch.device, loss_name: str):
        self.loss_name = loss_name  # what metrics["loss"] is, for the message
        # the latest loss while all are finite, then the first that is not
        self.first_bad = torch.zeros((), device=device)
        self.first_bad_step = torch.zeros((), dtype=torch.long, device=device)
        self.last: dict[str, torch.Tensor] = {}  # the latest value of each metric, logged as losses/NAME
        self.learning_since: tuple[float, int] | None = None  # the time and step of the first update

    def watch(self, step: int, metrics: dict[str, torch.Tensor]) -> None:
        """Keep the metrics of the update at this step; metrics["loss"] is the loss watched."""
        if self.learning_since is None:
            self.learning_since = (time.time(), step)
        self.last.update(metrics)
        finite_so_far = torch.isfinite(self.first_bad)
        self.first_bad = torch.where(finite_so_far, metrics["loss"], self.first_bad)
        self.first_bad_step = torch.where(finite_so_far, step, self.first_bad_step)

    def check(self, run_dir: str) -> None:
        if not torch.isfinite(self.first_bad):
            raise FloatingPointError(f"the loss became {self.first_bad.item()} at step "
                                     f"{self.first_bad_step.item():,} ({self.loss_name}); {safe_to_resume(run_dir)}")

    def learning_sps(self, step: int) -> int | None:
        """Env steps per second since the first update, one update a step: the figure that compares
        off-policy implementations (None when no update ran)."""
        if self.learning_since is None:
            return None
        since, first_step = self.learning_since
        return int((step - first_step) / max(time.time() - since, 1e-9))


def start_training(run: "Run", buffer: ReplayBuffer, **parts) -> tuple[gym.vector.SyncVectorEnv, np.ndarray]:
    """The start every off-policy run shares, once its networks and optimisers exist: on resume the parts
    (anything with a state dict) and the buffer restored; the buffer's memory said; the env made, --threads
    taken and the run started (its directory written); the env reset. A resumed run cannot restore the env's
    state: it starts a fresh episode, seeded from its step. Returns the env and its first observation."""
    run.restore(**parts, buffer=buffer)
    args, step = run.args, run.start_step
    print(buffer.describe(args.env_id, step if run.resumed is not None else None), flush=True)
    envs = run.closing(make_vector_env(args, args.seed + step, os.path.join(run.dir, "videos")))
    run.use_threads(None)
    run.start()
    obs, _ = envs.reset(seed=args.seed + step)
    return envs, obs


def env_step(run: "Run", envs: gym.vector.SyncVectorEnv, buffer: ReplayBuffer, step: int, obs: np.ndarray,
             action: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One step of the env with actions in [-1, 1] (a row per env): its transitions stored, the episodes it
    ended logged. Returns the next observation and whether each env's episode ended."""
    next_obs, reward, terminated, truncated, infos = envs.step(env_action(envs.single_action_space, action))
    buffer.add(obs, action, reward, transition_next_obs(next_obs, infos), terminated)
    run.episodes(step, infos)
    return next_obs, terminated | truncated


def policy_evaluation(actor: nn.Module, args: "Args"):
    """The evaluation a run makes of its policy, every --eval-every steps and at the end: a function that
    returns the returns of --eval-episodes episodes, seeded apart from training, without video."""
    no_video = dataclasses.replace(args, capture_video=False)
    return lambda: evaluate(actor, no_video, args.eval_episodes, args.seed + 100_000, args.eval_deterministic, "")


def end_of_step(run: "Run", losses: LossWatch, step: int, evaluate_policy, evaluations: list, **counters) -> None:
    """What every env step ends with, after its update: the latest losses logged every LOG_EVERY steps and at
    the last; every --eval-every steps an evaluation, logged under eval/ and kept in evaluations as [step,
    mean, std]; a checkpoint when one is due, holding evaluations and counters. Each first checks that no
    loss so far was nan or inf."""
    args = run.args
    if step % LOG_EVERY == 0 or step == args.total_timesteps:
        losses.check(run.dir)
        run.log(step, {f"losses/{name}": value for name, value in losses.last.items() if name != "loss"})
    if args.eval_every and args.eval_episodes and step % args.eval_every == 0:
        losses.check(run.dir)
        returns = evaluate_policy()
        evaluations.append([step, float(np.mean(returns)), float(np.std(returns))])
        run.writer.add_scalar("eval/mean_return", evaluations[-1][1], step)
        run.writer.add_scalar("eval/std_return", evaluations[-1][2], step)
    if run.checkpoint_due(step):
        losses.check(run.dir)
    run.save_if_due(step, evaluations=evaluations, **counters)


def evaluate(actor: nn.Module, args: "Args", episodes: int, seed: int, deterministic: bool,
             video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes in a fresh env seeded with seed, acting with
    actor.act(obs, deterministic), without learning."""
    device = next(actor.parameters()).device
    envs = make_vector_env(args, seed, video_dir)
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.no_grad():
            action = actor.act(torch.as_tensor(obs, dtype=torch.float32, device=device), deterministic)
        obs, _, _, _, infos = envs.step(env_action(envs.single_action_space, action.cpu().numpy()))
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_agent(model_path: str) -> tuple[nn.Module, "Args"]:
    """The policy saved by --save-model (the actor of its Agent), and its args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    check_args(args)
    observation_space, action_space = env_spaces(args.env_id)
    agent = Agent(observation_space.shape[0], action_space.shape[0], args)
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent.actor, args
# ==== end of kit: replay ====

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
