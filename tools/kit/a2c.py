# ==== kit: a2c ====  the same text in a2c_atari and paac (master copy: tools/kit/a2c.py; `python
# tools/sync_kit.py` copies it). What the two synchronous advantage actor-critics share: the checks of their
# common settings and of the spaces, the n-step returns, the A3C loss, TensorFlow's RMSProp and the clipped
# step, the rollout storage, the actor-critic network, and evaluating it. From the script above it uses
# make_vector_env(args, seed, video_dir, num_envs) and make_agent(args, envs).

import dataclasses

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
from torch.distributions import Categorical


def check_actor_critic(args) -> None:
    """The checks of the settings both scripts have (besides check_common's)."""
    if args.num_envs <= 0 or args.num_steps <= 0:
        raise ConfigError("--num-envs and --num-steps must be positive")
    if args.total_timesteps < args.batch_size:
        raise ConfigError(f"--total-timesteps {args.total_timesteps} is less than one batch of --num-envs x "
                          f"--num-steps = {args.batch_size}; raise it or shrink the batch")
    if args.learning_rate <= 0:
        raise ConfigError(f"--learning-rate must be positive, got {args.learning_rate}")
    for name in ("gamma", "rms_decay"):
        if not 0 < getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    if args.rms_eps <= 0:
        raise ConfigError(f"--rms-eps must be positive, got {args.rms_eps}")
    if args.max_grad_norm < 0:
        raise ConfigError(f"--max-grad-norm must be non-negative (0: no clipping), got {args.max_grad_norm}")
    if args.ent_coef < 0 or args.vf_coef < 0:
        raise ConfigError("--ent-coef and --vf-coef must be non-negative")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """A2C and PAAC here handle vector or image observations, and discrete actions (a softmax policy)."""
    if isinstance(action_space, gym.spaces.Box):
        raise ConfigError(f"{SCRIPT} supports Discrete action spaces only, not {action_space}; "
                          "for continuous actions use ppo.py, trpo.py, ddpg.py, td3.py or sac.py")
    if not isinstance(action_space, gym.spaces.Discrete):
        raise ConfigError(f"{SCRIPT} supports Discrete action spaces only, not {action_space}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"{SCRIPT} supports 1-D vector or image observations, not {observation_space}")


def nstep_returns(
    rewards: torch.Tensor,
    next_value: torch.Tensor,
    terminated: torch.Tensor,
    truncated: torch.Tensor,
    final_values: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    """The n-step bootstrapped returns of a rollout laid out [t_max, n_e] (A3C: Algorithm S3 of the paper's
    supplement; PAAC: Algorithm 1, lines 10-14): R = V(s_{t_max}) after the last step, then
    R_t = r_t + gamma * R_{t+1} backwards, so step t looks ahead t_max - t steps (the first step of a rollout
    t_max, the last one 1). All envs at once.

    When an env's episode ends at step t its return restarts: terminated means no future (R_{t+1} = 0),
    truncated means the episode was cut off, so bootstrap from final_values[t], the value of its final
    observation. Terminated and truncated together count as terminated. This is GAE at lambda = 1.
    """
    returns = torch.zeros_like(rewards)
    future = next_value
    for t in reversed(range(rewards.shape[0])):
        future = torch.where(truncated[t], final_values[t], future)
        future = torch.where(terminated[t], torch.zeros_like(future), future)
        future = rewards[t] + gamma * future
        returns[t] = future
    return returns


def actor_critic_loss(
    logprob: torch.Tensor, entropy: torch.Tensor, value: torch.Tensor, returns: torch.Tensor,
    ent_coef: float, vf_coef: float, loss_scale: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The A3C loss, means over the batch (PAAC: Algorithm 1, lines 16-17): policy gradient with advantage
    R - V (V not differentiated there), minus beta times the entropy, plus vf_coef times the squared error
    of V; all times loss_scale (PAAC's authors' code). Returns (loss, policy loss, value loss, entropy), the
    last three unscaled."""
    advantages = returns - value.detach()
    pg_loss = -(logprob * advantages).mean()
    v_loss = ((returns - value) ** 2).mean()
    entropy_mean = entropy.mean()
    return loss_scale * (pg_loss - ent_coef * entropy_mean + vf_coef * v_loss), pg_loss, v_loss, entropy_mean


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp as in TensorFlow, which the papers' and baselines' code used: epsilon inside the root.

        v <- decay * v + (1 - decay) * g^2
        p <- p - lr * g / sqrt(v + eps)

    torch.optim.RMSprop computes g / (sqrt(v) + eps) instead. With the paper's eps = 0.1 the two differ
    a lot: the TF form caps the step at lr * g / sqrt(0.1) for small gradients, the torch form at lr * g
    / 0.1. v starts at 0 as in torch and current TF (TF1's RMSPropOptimizer started it at 1).
    """

    def __init__(self, params, lr: float = 7e-4, decay: float = 0.99, eps: float = 0.1):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["square_avg"] = torch.zeros_like(p)
                square_avg = state["square_avg"]
                square_avg.mul_(group["decay"]).addcmul_(p.grad, p.grad, value=1 - group["decay"])
                p.addcdiv_(p.grad, (square_avg + group["eps"]).sqrt_(), value=-group["lr"])


def clipped_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, parameters, max_grad_norm: float) -> None:
    """One step of optimizer down the gradient of loss, its global norm clipped to max_grad_norm (0: not
    clipped)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if max_grad_norm:
        nn.utils.clip_grad_norm_(parameters, max_grad_norm)
    optimizer.step()


class Rollout:
    """One rollout of t_max steps of n_e envs, laid out [t_max, n_e], in storage allocated once: the actions,
    the values the network gave when it acted, what the envs gave back, and (given their space) the
    observations. Rewards and episode ends stay in numpy until the update: one conversion, not one a step."""

    def __init__(self, num_steps: int, num_envs: int, device: torch.device, observation_space=None):
        self.device = device
        if observation_space is not None:  # Atari frames stay uint8 (MinAtar's bool) until the network sees them
            dtype = {np.dtype(np.uint8): torch.uint8, np.dtype(bool): torch.bool}.get(
                np.dtype(observation_space.dtype), torch.float32)
            self.obs = torch.zeros((num_steps, num_envs, *observation_space.shape), dtype=dtype, device=device)
        self.actions = torch.zeros((num_steps, num_envs), dtype=torch.long, device=device)
        self.values = torch.zeros((num_steps, num_envs), device=device)
        self.final_values = torch.zeros((num_steps, num_envs), device=device)
        self.rewards = np.zeros((num_steps, num_envs), dtype=np.float32)
        self.terminated = np.zeros((num_steps, num_envs), dtype=bool)
        self.truncated = np.zeros((num_steps, num_envs), dtype=bool)

    def record(self, step: int, agent: nn.Module, action, value, reward, terminated, truncated, infos: dict) -> None:
        """Keep step's actions, values and outcome, and the value of the final observation of each episode a
        time limit cut off (rare), which its n-step return bootstraps from."""
        self.actions[step], self.values[step] = action, value.detach()
        self.rewards[step], self.terminated[step], self.truncated[step] = reward, terminated, truncated
        if truncated.any():
            ids = np.flatnonzero(truncated)
            final_obs = torch.as_tensor(np.stack(infos["final_obs"][ids]), device=self.device)
            with torch.inference_mode():
                self.final_values[step, ids] = agent.get_value(final_obs)

    def outcomes(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The rewards, terminated and truncated flags of the rollout, as tensors on its device."""
        return tuple(torch.from_numpy(x).to(self.device) for x in (self.rewards, self.terminated, self.truncated))


def is_channel_last(shape: tuple[int, ...]) -> bool:
    """Image observations come as C x H x W from the Atari chain and EnvPool (4 x 84 x 84) but as
    H x W x C from MinAtar (10 x 10 x C, C = 4 to 10). Read as channel-last when the last axis is no
    longer than either of the first two; such observations are transposed before the convolutions."""
    return len(shape) == 3 and shape[2] <= min(shape[0], shape[1])


class Agent(nn.Module):
    """Policy and value heads on one shared trunk, as in the papers:
    - Atari-sized images, arch nips (a2c_atari.py's): the A3C network (the DQN 2013 one), 16 8x8 stride 4,
      32 4x4 stride 2, 256 dense; arch nature: the DQN 2015 network, 32 8x8 stride 4, 64 4x4 stride 2,
      64 3x3 stride 1, 512 dense; ReLU (PAAC's Section 5; its authors' code, networks.py);
    - images smaller than 20x20, which those networks cannot take: MinAtar's network (Young & Tian 2019),
      16 3x3 stride 1, 128 dense, ReLU;
    - vector observations: an MLP of 64-64 tanh units, one for the policy and one for the value (as in
      ppo.py; separate, so the value error's scale cannot disturb the policy's features).
    Pixels scale to [0, 1] (uint8 / 255; MinAtar's bool channels as 0 or 1)."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Discrete, arch: str = "nips"):
        super().__init__()
        shape = observation_space.shape
        self.image = len(shape) == 3
        self.channel_last = is_channel_last(shape)
        n_out = int(action_space.n)
        if self.image:
            channels, height, width = (shape[2], shape[0], shape[1]) if self.channel_last else shape
            if min(height, width) < 20:
                convs, hidden = [layer_init(nn.Conv2d(channels, 16, 3, stride=1)), nn.ReLU()], 128
            elif arch == "nips":
                convs = [layer_init(nn.Conv2d(channels, 16, 8, stride=4)), nn.ReLU(),
                         layer_init(nn.Conv2d(16, 32, 4, stride=2)), nn.ReLU()]
                hidden = 256
            else:
                convs = [layer_init(nn.Conv2d(channels, 32, 8, stride=4)), nn.ReLU(),
                         layer_init(nn.Conv2d(32, 64, 4, stride=2)), nn.ReLU(),
                         layer_init(nn.Conv2d(64, 64, 3, stride=1)), nn.ReLU()]
                hidden = 512
            body = nn.Sequential(*convs, nn.Flatten())
            with torch.no_grad():
                n_flat = body(torch.zeros(1, channels, height, width)).shape[1]
            self.trunk = nn.Sequential(body, layer_init(nn.Linear(n_flat, hidden)), nn.ReLU())
            self.actor = layer_init(nn.Linear(hidden, n_out), std=0.01)
            self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)
        else:
            n_in = int(np.prod(shape))
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

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        if not self.image:
            return obs.float()
        x = obs.float() / 255.0 if obs.dtype == torch.uint8 else obs.float()
        if self.channel_last:
            x = x.permute(0, 3, 1, 2)
        return self.trunk(x)

    def get_value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.critic(self.features(obs)).squeeze(-1)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The policy's logits and the values of a batch of observations."""
        hidden = self.features(obs)
        return self.actor(hidden), self.critic(hidden).squeeze(-1)

    def act(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Sample actions at an env step; give them with the logits and values (whose graph, when grad is
        on, paac.py's update reuses). No distribution object: cheaper."""
        logits, value = self(obs)
        with torch.no_grad():
            # Gumbel-max: argmax(log p - log E), E ~ Exp(1), is a sample of p; cheaper than torch.multinomial.
            action = (logits.log_softmax(-1) - torch.empty_like(logits).exponential_().log()).argmax(-1)
        return action, logits, value

    def get_action_and_value(self, obs: torch.Tensor, action: torch.Tensor | None = None, deterministic: bool = False):
        hidden = self.features(obs)
        dist = Categorical(logits=self.actor(hidden), validate_args=False)
        if action is None:
            action = dist.probs.argmax(-1) if deterministic else dist.sample()
        return action, dist.log_prob(action), dist.entropy(), self.critic(hidden).squeeze(-1)


def evaluate(agent: Agent, args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari), played in one env."""
    envs = make_vector_env(args, seed, video_dir, num_envs=1)
    device = next(agent.parameters()).device
    obs, _ = envs.reset(seed=seed)
    returns: list[float] = []
    while len(returns) < episodes:
        with torch.inference_mode():
            action = agent.get_action_and_value(torch.as_tensor(obs, device=device), deterministic=deterministic)[0]
        obs, _, _, _, infos = envs.step(action.cpu().numpy())
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_agent(model_path: str) -> tuple[Agent, "Args"]:
    """Rebuild the agent saved by --save-model: weights and args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    envs = make_vector_env(dataclasses.replace(args, capture_video=False), args.seed, "", num_envs=1)
    agent = make_agent(args, envs)
    envs.close()
    restore(model_path, lambda: agent.load_state_dict(saved["model"]))
    return agent, args


# ==== end of kit: a2c ====
