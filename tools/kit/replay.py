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
