"""Asynchronous advantage actor-critic, A3C (Mnih et al. 2016, "Asynchronous Methods for Deep Reinforcement
Learning", Algorithm S3), with lock-free Hogwild! updates (Recht et al. 2011) of one shared network.

Each worker process has its own environment and a local copy of the network. It copies the global weights,
takes t_max steps, computes n-step returns bootstrapped from its value estimate, and applies the gradient
of the policy, value and entropy terms to the global weights through one RMSProp whose statistics all the
workers share. No locks guard the weights; only the global step counter has one.

    python algos/a3c_hogwild.py --env-id CartPole-v1 --num-workers 2
    python algos/a3c_hogwild.py atari --env-id BreakoutNoFrameskip-v4 --num-workers 16
    python algos/a3c_hogwild.py atari --env-id PongNoFrameskip-v4 --lstm
    python algos/a3c_hogwild.py evaluate runs/<run>/model.pt --episodes 10

Give it at most one worker per core: a worker (a process with one torch thread) that waits for a core slows
every update it shares weights with. All runs on CPU, as in the paper (--cuda changes nothing). One worker
repeats exactly; more interleave their lock-free updates differently every time. An episode's global_step is
the count of steps all workers had claimed when it ended; episodes.csv is in that order (see the hogwild kit).
"""

import dataclasses
import os
from dataclasses import dataclass
from typing import Annotated, Literal

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import tyro
from torch.distributions import Categorical

SCRIPT = "a3c_hogwild.py"  # names this script in messages, checkpoints and models
ATARI = True  # plays Atari ids (with the DQN preprocessing the paper used)
try:  # the MinAtar/*-v1 ids (Young & Tian 2019), when the minatar package is installed
    import minatar.gym

    if "MinAtar/Breakout-v1" not in gym.envs.registry:
        minatar.gym.register_envs()
except ImportError:
    pass


@dataclass
class Args:
    # --- common to every script ---
    preset: tyro.conf.Suppress[Literal["classic", "atari"]] = "classic"
    """the preset the run started from (the command's first word); recorded, not a flag"""
    exp_name: str = os.path.basename(__file__).removesuffix(".py")
    """the name of this experiment, part of the run directory's name"""
    seed: int = 1
    """seed of random, numpy and torch; worker k seeds its own, and its environment, with seed + k"""
    env_id: str = "CartPole-v1"
    """the gymnasium environment id"""
    total_timesteps: int = 500_000
    """environment steps to train for, summed over the workers (on Atari a step is 4 frames)"""
    torch_deterministic: bool = True
    """make cuDNN deterministic so a seed repeats on GPU too (on CPU, runs repeat exactly anyway)"""
    cuda: bool = True
    """use a CUDA GPU when one is present"""
    threads: Annotated[int | None, tyro.conf.arg(help_behavior_hint="(default: 1; each worker uses 1)")] = None
    """torch CPU threads. Give runs that share a machine 1 each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "a3c"
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
    """evaluate with the most likely action instead of sampling"""

    # --- A3C ---
    num_workers: int = 16
    """actor-learner processes. Paper: 16 threads. Use at most one per core; more than 4 per core needs --oversubscribe"""
    oversubscribe: bool = False
    """allow more than 4 worker processes per core; without it a larger --num-workers is refused"""
    num_steps: int = 5
    """steps per worker between updates, t_max. Paper: 5 (t_max = I_AsyncUpdate)"""
    learning_rate: float = 7e-4
    """step size of the shared optimiser. 7e-4: the A3C authors' value (the paper samples LogUniform(1e-4, 1e-2)); classic: 1e-3"""
    anneal: bool = True
    """anneal the learning rate linearly to 0 by the global step count (paper's experimental setup)"""
    gamma: float = 0.99
    """discount factor. Paper: 0.99"""
    ent_coef: float = 0.01
    """entropy bonus beta. Paper: 0.01"""
    vf_coef: float = 0.5
    """weight of the value loss (R - V)^2: the paper scales the value gradient by 0.5"""
    optimizer: Literal["rmsprop", "adam"] = "rmsprop"
    """shared RMSProp (the paper's: one set of statistics for all workers) or shared Adam (same learning rate)"""
    rms_decay: float = 0.99
    """RMSProp decay alpha of the mean square. Paper: 0.99"""
    rms_eps: float = 0.1
    """RMSProp epsilon, added inside the square root (TensorFlow's placement). Paper: 0.1"""
    adam_eps: float = 1e-8
    """Adam epsilon (Kingma & Ba 2015's default); Adam's betas are theirs too, 0.9 and 0.999"""
    max_grad_norm: float = 40.0
    """clip each worker's gradient to this global norm. The paper is silent; OpenAI's universe-starter-agent A3C: 40"""
    lstm: bool = False
    """a recurrent agent: an LSTM after the dense layer (paper's A3C LSTM), its state carried across updates and reset at episode ends"""
    lstm_size: int = 256
    """units of the LSTM. Paper: 256"""


PRESETS = {
    # The paper has no classic-control settings. a2c_atari.py's classic values, which worked at once on
    # CartPole-v1 with 2 workers (tests/test_a3c_learning.py: seeds 1-3 reached a 20-episode mean of 450
    # after 34k-69k steps): RMSProp epsilon 1e-5 (a CartPole gradient is far smaller than sqrt(0.1)), lr
    # 1e-3, no entropy bonus. The recurrent agent on CartPole wanted beta 0.01 and the value loss weighted
    # 0.25, as its LSTM feeds both heads (tests/test_a3c_learning.py says what was measured).
    "classic": Args(learning_rate=1e-3, rms_eps=1e-5, ent_coef=0.0),
    # The paper's Atari settings (its experimental setup) with its 16 workers. 10M steps = 40M frames is a
    # budget chosen here; the paper's "1 day" is about 320M frames over its 16 threads.
    "atari": Args(preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=10_000_000),
}


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_common(args)
    check_hogwild(args, positive=("num_steps", "max_grad_norm", "lstm_size"))
    if args.total_timesteps < args.num_workers * args.num_steps:
        raise ConfigError(
            f"--total-timesteps {args.total_timesteps} is less than one update per worker, --num-workers x "
            f"--num-steps = {args.num_workers * args.num_steps}; raise it or use fewer workers")
    if args.ent_coef < 0 or args.vf_coef < 0:
        raise ConfigError("--ent-coef and --vf-coef must be non-negative")


def check_spaces(observation_space: gym.Space, action_space: gym.Space) -> None:
    """A3C here handles vector or image observations, and discrete actions (a softmax policy)."""
    if not isinstance(action_space, gym.spaces.Discrete):
        continuous = "; for continuous actions use ppo.py, trpo.py, ddpg.py, td3.py or sac.py"
        raise ConfigError(f"{SCRIPT} supports Discrete action spaces only, not {action_space}"
                          f"{continuous if isinstance(action_space, gym.spaces.Box) else ''}")
    if not isinstance(observation_space, gym.spaces.Box) or len(observation_space.shape) not in (1, 3):
        raise ConfigError(f"{SCRIPT} supports 1-D vector or image observations, not {observation_space}")


def nstep_returns(rewards: torch.Tensor, next_value: torch.Tensor, terminated: torch.Tensor, truncated: torch.Tensor,
                  final_values: torch.Tensor, gamma: float) -> torch.Tensor:
    """The n-step bootstrapped returns of a rollout of T steps (Algorithm S3 of the paper's supplement):
    R = V(s_T) after the last step, then R_t = r_t + gamma * R_{t+1} backwards, so step t looks ahead
    T - t steps. Shapes [T] or [T, N]; next_value has the shape of one step.

    An episode that ends at step t restarts the return: terminated means no future (R_{t+1} = 0),
    truncated means it was cut off, so bootstrap from final_values[t], the value of its final
    observation. Terminated and truncated together count as terminated.
    """
    returns = torch.zeros_like(rewards)
    future = next_value
    for t in reversed(range(rewards.shape[0])):
        future = torch.where(truncated[t], final_values[t], future)
        future = torch.where(terminated[t], torch.zeros_like(future), future)
        future = rewards[t] + gamma * future
        returns[t] = future
    return returns


def actor_critic_loss(logprob: torch.Tensor, entropy: torch.Tensor, value: torch.Tensor, returns: torch.Tensor,
                      ent_coef: float, vf_coef: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The A3C loss of one rollout: policy gradient with advantage R - V (V not differentiated there),
    minus beta times the entropy, plus vf_coef times the squared error of V. Averaged over the rollout's
    steps (the paper sums them; with a fixed t_max that only rescales the learning rate). Returns (loss,
    policy loss, value loss, entropy)."""
    advantages = returns - value.detach()
    pg_loss = -(logprob * advantages).mean()
    v_loss = ((returns - value) ** 2).mean()
    entropy_mean = entropy.mean()
    return pg_loss - ent_coef * entropy_mean + vf_coef * v_loss, pg_loss, v_loss, entropy_mean


def is_channel_last(shape: tuple[int, ...]) -> bool:
    """Images come as C x H x W from the Atari chain (4 x 84 x 84) but as H x W x C from MinAtar (10 x 10 x C):
    channel-last when the last axis is no longer than either of the first two (transposed for the convolutions)."""
    return len(shape) == 3 and shape[2] <= min(shape[0], shape[1])


class Agent(nn.Module):
    """Policy and value heads on one trunk, as in the paper:
    - Atari-sized images: the 2013 DQN network (Mnih et al. 2013): 16 8x8 stride 4, 32 4x4 stride 2,
      256 dense, ReLU; images smaller than 20x20: MinAtar's 16 3x3 stride 1, 128 dense;
    - vector observations: 64-64 tanh units, one MLP for the policy and one for the value (separate, so
      the value error's scale cannot disturb the policy's features);
    - `lstm`: an LSTM of lstm_size units after the dense layer (the paper's A3C LSTM) feeding both heads;
      on vector observations one 64-unit tanh layer comes before it, shared by the heads.
    The recurrent state is (h, c), each [batch, lstm_size]; the feed-forward agent takes and gives None."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Discrete,
                 lstm: bool = False, lstm_size: int = 256):
        super().__init__()
        shape, n_out = observation_space.shape, int(action_space.n)
        self.image, self.channel_last = len(shape) == 3, is_channel_last(shape)
        self.recurrent, self.lstm_size = lstm, lstm_size
        if self.image:
            channels, height, width = (shape[2], shape[0], shape[1]) if self.channel_last else shape
            if min(height, width) >= 20:  # the DQN network
                convs, hidden = [layer_init(nn.Conv2d(channels, 16, 8, stride=4)), nn.ReLU(),
                                 layer_init(nn.Conv2d(16, 32, 4, stride=2)), nn.ReLU()], 256
            else:  # MinAtar's
                convs, hidden = [layer_init(nn.Conv2d(channels, 16, 3, stride=1)), nn.ReLU()], 128
            body = nn.Sequential(*convs, nn.Flatten())
            with torch.no_grad():
                n_flat = body(torch.zeros(1, channels, height, width)).shape[1]
            self.trunk = nn.Sequential(body, layer_init(nn.Linear(n_flat, hidden)), nn.ReLU())
        elif lstm:
            hidden = 64
            self.trunk = nn.Sequential(layer_init(nn.Linear(int(np.prod(shape)), hidden)), nn.Tanh())
        if self.image or lstm:
            if lstm:
                self.lstm = nn.LSTMCell(hidden, lstm_size)
                nn.init.constant_(self.lstm.bias_ih, 0.0)
                nn.init.constant_(self.lstm.bias_hh, 0.0)
                hidden = lstm_size
            self.actor = layer_init(nn.Linear(hidden, n_out), std=0.01)
            self.critic = layer_init(nn.Linear(hidden, 1), std=1.0)
        else:
            n_in, self.trunk = int(np.prod(shape)), nn.Identity()
            self.actor = nn.Sequential(layer_init(nn.Linear(n_in, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                       nn.Tanh(), layer_init(nn.Linear(64, n_out), std=0.01))
            self.critic = nn.Sequential(layer_init(nn.Linear(n_in, 64)), nn.Tanh(), layer_init(nn.Linear(64, 64)),
                                        nn.Tanh(), layer_init(nn.Linear(64, 1), std=1.0))

    def initial_state(self, batch: int = 1):
        return (torch.zeros(batch, self.lstm_size), torch.zeros(batch, self.lstm_size)) if self.recurrent else None

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0 if self.image and obs.dtype == torch.uint8 else obs.float()
        return self.trunk(x.permute(0, 3, 1, 2) if self.channel_last else x)

    def core(self, obs: torch.Tensor, state):
        """The features both heads read, and the next recurrent state, for one step of a batch."""
        hidden = self.features(obs)
        if self.recurrent:
            state = self.lstm(hidden, state)
            hidden = state[0]
        return hidden, state

    def act(self, obs: torch.Tensor, state):
        """Sample actions (Gumbel-max: argmax(log p - log E), E ~ Exp(1), no distribution object) for one
        step; returns (action, next state)."""
        hidden, state = self.core(obs, state)
        log_probs = self.actor(hidden).log_softmax(-1)
        return (log_probs - torch.empty_like(log_probs).exponential_().log()).argmax(-1), state

    def get_value(self, obs: torch.Tensor, state) -> torch.Tensor:
        return self.critic(self.core(obs, state)[0]).squeeze(-1)

    def evaluate_rollout(self, obs: torch.Tensor, actions: torch.Tensor, state, starts: torch.Tensor):
        """Log-probabilities, entropies and values of a rollout of T steps of one env, with gradients.
        The recurrent agent replays the rollout from its first state, zeroing the state before each step
        that begins an episode (starts[t]); the feed-forward one takes the whole rollout as one batch."""
        if self.recurrent:
            keep = (~starts).float().unsqueeze(-1)
            features, outputs = self.features(obs), []
            for t in range(obs.shape[0]):
                state = (state[0] * keep[t], state[1] * keep[t])
                state = self.lstm(features[t : t + 1], state)
                outputs.append(state[0])
            hidden = torch.cat(outputs)
        else:
            hidden = self.features(obs)
        log_probs = self.actor(hidden).log_softmax(-1)
        entropy = -(log_probs.exp() * log_probs).sum(-1)
        return log_probs.gather(-1, actions.unsqueeze(-1)).squeeze(-1), entropy, self.critic(hidden).squeeze(-1)

    def policy(self, obs: torch.Tensor, state, deterministic: bool = False):
        """Actions for evaluation: sampled, or the most likely; returns (action, next state)."""
        hidden, state = self.core(obs, state)
        dist = Categorical(logits=self.actor(hidden), validate_args=False)
        return (dist.probs.argmax(-1) if deterministic else dist.sample()), state


def build_agent(args: Args) -> Agent:
    """The agent for args' environment and settings."""
    return Agent(*worker_env_spaces(args.env_id), args.lstm, args.lstm_size)


def build_shared(args: Args) -> tuple[Agent, torch.optim.Optimizer]:
    """The global agent and the shared optimiser, in shared memory (the optimiser's statistics and step count too)."""
    model = build_agent(args)
    model.share_memory()
    return model, make_optimizer(args, model.parameters())


@dataclass
class Rollout:
    """What update() learns from: n <= t_max steps of one worker's env, each step's observation, action, reward and
    episode end, the value of the final observation where an episode was cut off (0 elsewhere), which steps begin
    an episode (the LSTM's state is zeroed there), the recurrent state before them (None without --lstm), V(s_n)."""

    obs: torch.Tensor  # [n, *observation shape]
    actions: torch.Tensor  # [n], long
    rewards: torch.Tensor  # [n]
    terminated: torch.Tensor  # [n], bool
    truncated: torch.Tensor  # [n], bool
    final_values: torch.Tensor  # [n]
    starts: torch.Tensor  # [n], bool
    first_state: tuple | None
    next_value: torch.Tensor  # []


def collect_rollout(local: Agent, envs, n: int, next_obs: torch.Tensor, state, episode_start: bool):
    """The acting half of Algorithm S3: n steps of the worker's env with its local agent. Returns (their
    Rollout, the next observation, the recurrent state and whether the next step begins an episode, all three
    to carry into the next rollout, and the episodes that ended as (index of their last step, return, length))."""
    first_state, steps, episodes = state, [], []
    for t in range(n):
        with torch.no_grad():
            action, state = local.act(next_obs, state)
        obs_np, reward, terminated, truncated, infos = envs.step(action.numpy())
        final_value = 0.0
        if truncated[0]:  # the value of the cut-off episode's final observation
            with torch.no_grad():
                final_value = float(local.get_value(torch.as_tensor(infos["final_obs"][0][None]), state)[0])
        steps.append((next_obs[0], action[0], float(reward[0]), bool(terminated[0]), bool(truncated[0]), final_value,
                      episode_start))
        next_obs, episode_start = torch.as_tensor(obs_np), bool(terminated[0] or truncated[0])
        if episode_start:
            state = local.initial_state(1)
            episodes.extend((t, float(r), int(length)) for r, length in zip(*finished_episodes(infos)))
    with torch.no_grad():
        next_value = local.get_value(next_obs, state)[0]
    obs, actions, *flags = zip(*steps)  # rewards, terminated, truncated, final_values, starts
    rollout = Rollout(torch.stack(obs), torch.stack(actions), *map(torch.tensor, flags), first_state, next_value)
    return rollout, next_obs, state, episode_start, episodes


def update(local: Agent, model: Agent, optimizer: torch.optim.Optimizer, args: Args, rollout: Rollout, start: int,
           rank: int = 0) -> dict:
    """The learning half of Algorithm S3, for a rollout whose steps were claimed from global step `start`: n-step
    returns, the loss and its gradient in the local agent, clipped to --max-grad-norm, then applied to the global
    weights by the shared optimiser at the learning rate annealed to `start`. A loss that is not finite raises
    FloatingPointError before anything global changes. Returns the lr, the loss terms, values and returns."""
    returns = nstep_returns(rollout.rewards, rollout.next_value, rollout.terminated, rollout.truncated,
                            rollout.final_values, args.gamma)
    logprob, entropy, value = local.evaluate_rollout(rollout.obs, rollout.actions, rollout.first_state, rollout.starts)
    loss, pg_loss, v_loss, entropy_mean = actor_critic_loss(logprob, entropy, value, returns,
                                                            args.ent_coef, args.vf_coef)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"the loss became {loss.item()} at step {start + len(returns):,} in worker {rank}; "
                                 f"{safe_to_resume(args.run_dir)}")
    local.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(local.parameters(), args.max_grad_norm)
    lr = annealed_lr(args.learning_rate, start, args.total_timesteps) if args.anneal else args.learning_rate
    apply_gradients(local, model, optimizer, lr)
    return {"lr": lr, "pg_loss": pg_loss, "v_loss": v_loss, "entropy": entropy_mean, "value": value.detach(),
            "returns": returns}


def worker(link: "WorkerLink", args: Args, model: Agent, optimizer: torch.optim.Optimizer, seed: int) -> None:
    """One actor-learner, in its own process: Algorithm S3 of the paper, until the global counter reaches the
    total. Worker 0's losses stand for all in TensorBoard."""
    seed_everything(seed)
    envs = make_worker_env(args.env_id, link.rank, args.capture_video, os.path.join(args.run_dir, "videos"))
    local = Agent(envs.single_observation_space, envs.single_action_space, args.lstm, args.lstm_size)
    next_obs = torch.as_tensor(envs.reset(seed=seed)[0])
    state, episode_start = local.initial_state(1), True
    while link.safe_point():
        start, n = link.claim(args.num_steps, args.total_timesteps)
        if n == 0:
            break
        pull_weights(local, model)
        rollout, next_obs, state, episode_start, episodes = collect_rollout(
            local, envs, n, next_obs, state, episode_start)
        for t, episodic_return, episodic_length in episodes:
            link.episode(start + t + 1, episodic_return, episodic_length)
        learned = update(local, model, optimizer, args, rollout, start, link.rank)
        if link.report_due():
            link.report({"charts/learning_rate": learned["lr"], "losses/policy_loss": learned["pg_loss"].item(),
                         "losses/value_loss": learned["v_loss"].item(), "losses/entropy": learned["entropy"].item(),
                         "losses/explained_variance": explained_variance(learned["value"], learned["returns"]),
                         } if link.rank == 0 else None)
    envs.close()


def main(args: Args) -> dict:
    """Train A3C and return the summary also written to RUN_DIR/summary.json (on SIGINT/SIGTERM:
    {"interrupted": True, "global_step", "run_dir"})."""
    args, checkpoint = resume_args(args)
    check_env_id(args.env_id)  # the env id first: the other messages assume it exists
    check_args(args)
    with Run(args, checkpoint) as run:  # seeds everything; writes nothing yet
        args = run.args
        run.use_threads(1)  # the main process only coordinates, and evaluates at the end
        model, optimizer = build_shared(args)
        run.restore(model=model, optimizer=optimizer)  # into the shared tensors
        # A resumed run cannot restore the environments' states: it starts fresh episodes, seeded from the step
        # it resumes at. The workers are forked before any other thread (TensorBoard's, wandb's) exists here.
        workers = run.closing(Workers(run, worker, [(args, model, optimizer, args.seed + run.start_step + rank)
                                                    for rank in range(args.num_workers)]))
        run.start()
        if not train_workers(run, workers):
            return run.interrupted()
        return run.finish(workers.global_step, {"model": model.state_dict()},
                          lambda: evaluate(model, dataclasses.replace(args, capture_video=False), args.eval_episodes,
                                           args.seed + 100_000, args.eval_deterministic, ""),
                          num_workers=args.num_workers)


def evaluate(agent: Agent, args: Args, episodes: int, seed: int, deterministic: bool, video_dir: str) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari), in one env."""
    state = None

    def act(obs: torch.Tensor, episode_start: bool) -> np.ndarray:
        nonlocal state  # the LSTM's, carried from step to step and reset where an episode begins
        action, state = agent.policy(obs, agent.initial_state(1) if episode_start else state, deterministic)
        return action.numpy()

    return play(make_worker_env(args.env_id, 0, args.capture_video, video_dir), episodes, seed, act)


def load_agent(model_path: str) -> tuple[Agent, Args]:
    """Rebuild the agent saved by --save-model: weights and args."""
    return load_model(model_path, build_agent)


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

# ==== kit: workers ====  the same text in a3c_hogwild, async_q and paac (master copy: tools/kit/workers.py;
# `python tools/sync_kit.py` copies it). Worker processes: how many, and none outliving the run.

import os
import signal
import sys


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def check_worker_count(num_workers: int, oversubscribe: bool) -> None:
    """Refuse more than 4 worker processes per core unless asked for: a typo such as --num-workers 100000
    would otherwise fork until the machine stalls."""
    cores = available_cores()
    if num_workers > 4 * cores and not oversubscribe:
        raise ConfigError(f"--num-workers {num_workers} is more than 4 per core ({4 * cores} here); "
                          "use at most that, or add --oversubscribe if you mean it")


def die_with_parent(parent_pid: int) -> None:
    """Have the kernel kill this worker if the main process dies, even by SIGKILL and even in the middle of
    a step (Linux); elsewhere a worker checks os.getppid() itself."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass
    if os.getppid() != parent_pid:  # it died before prctl took effect
        os._exit(1)


# ==== end of kit: workers ====

# ==== kit: hogwild ====  the same text in a3c_hogwild and async_q (master copy: tools/kit/hogwild.py;
# `python tools/sync_kit.py` copies it). The paper's asynchronous actor-learners as Hogwild! (Recht et al. 2011)
# runs them: one optimiser whose statistics every worker shares, workers that claim their steps from one
# global counter and update the global weights without locks, and the main process that coordinates them.
# From the script above it uses SCRIPT, Args and check_spaces, and the kits atari, workers and run. A worker is
# a function work(link, *args) that runs in a process of its own; main() starts them with Workers and hands the
# run to train_workers, which writes their episodes in global-step order and pauses them for each checkpoint.

import heapq
import math
import os
import queue as queue_module
import signal
import sys
import time
import traceback
from dataclasses import dataclass

import gymnasium as gym
import torch
import torch.multiprocessing as mp
import torch.nn as nn


class SharedOptimizer(torch.optim.Optimizer):
    """An optimiser whose state is made when it is built and kept in shared memory, so that every worker
    forked or spawned afterwards steps its own handle on the same tensors (torch's optimisers make their state
    lazily, per process, which would give each worker private statistics)."""

    def share_memory(self) -> "SharedOptimizer":
        for state in self.state.values():
            for tensor in state.values():
                tensor.share_memory_()
        return self

    def load_state_dict(self, state_dict: dict) -> None:
        super().load_state_dict(state_dict)
        self.share_memory()  # loading put the state in new, private tensors


class SharedRMSprop(SharedOptimizer):
    """RMSProp with one set of statistics shared by every worker (the paper's "shared RMSProp", section S2), in
    TensorFlow's form, which the paper's code used: epsilon inside the root.

        v <- decay * v + (1 - decay) * g^2
        p <- p - lr * g / sqrt(v + eps)

    Its state is the mean square and the step count of each parameter (torch.optim.RMSprop places eps outside
    the root). v starts at 0, as in torch's RMSprop. The step count is not used by the update; it is kept for
    inspection and checkpoints, and increments without a lock (two workers stepping at once can count once)."""

    def __init__(self, params, lr: float = 7e-4, decay: float = 0.99, eps: float = 0.1):
        super().__init__(params, dict(lr=lr, decay=decay, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = torch.zeros((), dtype=torch.int64)
                self.state[p]["square_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.share_memory()

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads, states = [p.grad for p in params], [self.state[p] for p in params]
            square_avgs = [state["square_avg"] for state in states]
            # torch's _foreach ops: one call for every parameter instead of one per parameter.
            torch._foreach_add_([state["step"] for state in states], 1)
            torch._foreach_mul_(square_avgs, group["decay"])
            torch._foreach_addcmul_(square_avgs, grads, grads, value=1 - group["decay"])
            denominators = torch._foreach_add(square_avgs, group["eps"])
            torch._foreach_sqrt_(denominators)
            torch._foreach_addcdiv_(params, grads, denominators, value=-group["lr"])


class SharedAdam(SharedOptimizer):
    """Adam (Kingma & Ba 2015) with its moments and step count in shared memory, one set for all workers. The
    step count drives the bias correction, so a per-process count would make each worker correct as if it were
    the only one; here it is shared (incremented without a lock, as the moments)."""

    def __init__(self, params, lr: float = 7e-4, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps))
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["step"] = torch.zeros((), dtype=torch.int64)
                self.state[p]["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                self.state[p]["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        self.share_memory()

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                state["step"] += 1
                step = int(state["step"])
                state["exp_avg"].mul_(beta1).add_(p.grad, alpha=1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                denominator = (state["exp_avg_sq"] / (1 - beta2**step)).sqrt_().add_(group["eps"])
                p.addcdiv_(state["exp_avg"], denominator, value=-group["lr"] / (1 - beta1**step))


def make_optimizer(args, params) -> torch.optim.Optimizer:
    """The shared optimiser of --optimizer, its state already in shared memory."""
    if args.optimizer == "adam":
        return SharedAdam(params, lr=args.learning_rate, eps=args.adam_eps)
    return SharedRMSprop(params, lr=args.learning_rate, decay=args.rms_decay, eps=args.rms_eps)


def check_hogwild(args, positive: tuple[str, ...]) -> None:
    """The checks of the settings both scripts have: the worker count, the learning rate and the optimisers'
    epsilons positive (and the script's settings named in positive), gamma and the RMSProp decay in (0, 1]."""
    for name in ("num_workers", "learning_rate", "rms_eps", "adam_eps", *positive):
        if getattr(args, name) <= 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("gamma", "rms_decay"):
        if not 0 < getattr(args, name) <= 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be in (0, 1], got {getattr(args, name)}")
    check_worker_count(args.num_workers, args.oversubscribe)


def annealed_lr(learning_rate: float, global_step: int, total_timesteps: int) -> float:
    """The paper's schedule: the learning rate falls linearly from its initial value to 0 at the last global
    step, whichever worker takes it."""
    return learning_rate * max(0.0, 1.0 - global_step / total_timesteps)


def pull_weights(local: nn.Module, shared: nn.Module) -> None:
    """theta' <- theta: copy the global weights, as they are now (other workers keep writing), into local."""
    with torch.no_grad():
        for local_param, shared_param in zip(local.parameters(), shared.parameters()):
            local_param.copy_(shared_param)


def give_gradients(local: nn.Module, shared: nn.Module) -> None:
    """Point the global parameters' gradients at the worker's own (the parameters' .grad is a per-process
    attribute, so this neither copies nor touches what other workers see)."""
    for shared_param, local_param in zip(shared.parameters(), local.parameters()):
        shared_param.grad = local_param.grad


def apply_gradients(local: nn.Module, shared: nn.Module, optimizer: torch.optim.Optimizer, lr: float) -> None:
    """The Hogwild step: the worker's gradients, in local, applied to the global weights by the shared
    optimiser at learning rate lr, without a lock."""
    give_gradients(local, shared)
    optimizer.param_groups[0]["lr"] = lr
    optimizer.step()


def make_worker_env(env_id: str, rank: int, capture_video: bool, video_dir: str):
    """Worker `rank`'s env (videos from worker 0's only), as a SAME_STEP vector env of one: the final observation
    of an episode comes in infos["final_obs"] and its statistics in infos["final_info"], as in the other scripts,
    and obs is already the next episode's."""
    return gym.vector.SyncVectorEnv([make_env(env_id, rank, capture_video, video_dir)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def worker_env_spaces(env_id: str) -> tuple[gym.Space, gym.Space]:
    """The observation and action spaces of env_id, from a throwaway env, refused in one line by the script's
    check_spaces if it cannot play them."""
    envs = make_worker_env(env_id, 0, False, "")
    envs.close()
    check_spaces(envs.single_observation_space, envs.single_action_space)
    return envs.single_observation_space, envs.single_action_space


def play(envs, episodes: int, seed: int, act) -> list[float]:
    """The undiscounted returns of `episodes` whole episodes (whole games on Atari) of a vector env of one, which
    is closed after; act(obs, episode_start) chooses each step's action, under inference_mode."""
    obs, _ = envs.reset(seed=seed)
    returns, episode_start = [], True
    while len(returns) < episodes:
        with torch.inference_mode():
            action = act(torch.as_tensor(obs), episode_start)
        obs, _, terminated, truncated, infos = envs.step(action)
        episode_start = bool(terminated[0] or truncated[0])
        returns.extend(float(r) for r in finished_episodes(infos)[0])
    envs.close()
    return returns[:episodes]


def load_model(model_path: str, build) -> tuple[nn.Module, "Args"]:
    """The network saved by --save-model, built by build(args) for the args it was trained with, and those args."""
    saved = load_saved(model_path)
    args = args_from_saved(saved, model_path)
    check_env_id(args.env_id)
    network = build(args)
    restore(model_path, lambda: network.load_state_dict(saved["model"]))
    return network, args


def claim_steps(counter, num_steps: int, total: int) -> tuple[int, int]:
    """Claim the next steps from the global counter, under its lock: (first global step, number of steps),
    cut to what is left of the total, so that the steps of all workers add up to it exactly."""
    with counter.get_lock():
        start = counter.value
        n = min(num_steps, total - start)
        counter.value = start + n
    return start, n


@dataclass
class Shared:
    """What the main process and the workers share besides the weights: the global step counter (with its
    lock), the queue of the workers' messages (workers never write files), the stop event, and the numbers of
    the last checkpoint asked for and of the last one written (the workers wait between the two)."""

    counter: object  # mp.Value("q")
    messages: object  # mp.Queue
    stop: object  # mp.Event
    pause_requested: object  # mp.Value("i")
    pause_released: object  # mp.Value("i")
    parent_pid: int


class WorkerFailed(RuntimeError):
    """A worker process raised or died."""


class WorkerLink:
    """A worker's side of the coordination. Its messages, each behind the worker's earlier ones in the queue:
    ("episode", rank, step, return, length), ("progress", rank, step, metrics or None) (none of its episodes
    will end at or below step), ("paused", rank, checkpoint number, step, state), and, from worker_process,
    ("done", rank, step, state) or ("error", rank, type name, message, traceback)."""

    def __init__(self, rank: int, shared: Shared):
        self.rank, self.shared = rank, shared
        self.step = 0  # the end of this worker's last claim
        self.pauses_seen = shared.pause_released.value
        self.last_report = time.monotonic()

    def alive(self) -> bool:
        return not self.shared.stop.is_set() and os.getppid() == self.shared.parent_pid

    def safe_point(self, state=lambda: None) -> bool:
        """Call between updates: whether to go on (False once the run stops or the main process is gone).
        While the main process writes a checkpoint, wait here, having sent state(): what the checkpoint keeps
        of this worker."""
        if not self.alive():
            return False
        requested = self.shared.pause_requested.value
        if requested > self.pauses_seen:
            self.pauses_seen = requested
            self.shared.messages.put(("paused", self.rank, requested, self.step, state()))
            while self.shared.pause_released.value < requested and self.alive():
                time.sleep(0.005)
        return self.alive()

    def claim(self, num_steps: int, total: int) -> tuple[int, int]:
        start, n = claim_steps(self.shared.counter, num_steps, total)
        self.step = start + n
        return start, n

    def episode(self, step: int, episodic_return: float, episodic_length: int) -> None:
        self.shared.messages.put(("episode", self.rank, step, float(episodic_return), int(episodic_length)))

    def report_due(self) -> bool:
        """Whether 0.2 s have passed since the last report: reports let the main process write the other
        workers' episodes in step order."""
        return time.monotonic() - self.last_report > 0.2

    def report(self, metrics: dict | None = None) -> None:
        """Tell the main process how far this worker is (after sending the episodes of its last claim), with
        metrics for TensorBoard at that step."""
        self.shared.messages.put(("progress", self.rank, self.step, metrics))
        self.last_report = time.monotonic()


def worker_process(work, rank: int, shared: Shared, *args) -> None:
    """A worker process: work(link, *args) with one torch thread. SIGINT and SIGTERM (which Ctrl-C, `timeout` or
    a scheduler send to the whole process group) are left to the main process, which checkpoints first. What
    work returns goes to the main process with "done"; an exception as "error"."""
    try:
        die_with_parent(shared.parent_pid)
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        torch.set_num_threads(1)
        link = WorkerLink(rank, shared)
        state = work(link, *args)
        shared.messages.put(("done", rank, link.step, state))
    except BaseException as error:  # reported to the main process, which stops the others and raises
        shared.messages.put(("error", rank, type(error).__name__, str(error), traceback.format_exc()))
        sys.exit(1)


def start_method() -> str:
    """fork: workers start in a fraction of a second and share the tensors without copying. spawn where fork is
    missing (macOS, Windows) or unsafe: in a process that has used CUDA, where a forked worker's first backward
    fails (autograd's CUDA threads do not survive a fork), as when one Python session trains another script on
    a GPU and then this one."""
    return "fork" if sys.platform.startswith("linux") and not torch.cuda.is_initialized() else "spawn"


class Workers:
    """The main process's side of the workers: it starts them (worker k runs work(link, *worker_args[k])), reads
    their messages, hands their episodes to the run in global-step order (each is held until every running
    worker has reported progress past its step) and their metrics to run.log, pauses them for checkpoints, and
    stops them, killing any that do not exit. states[k] is what the checkpoint keeps of worker k (None where
    nothing): its last "paused" or "done" message updates it."""

    def __init__(self, run, work, worker_args: list[tuple], states: list | None = None):
        if len(worker_args) > available_cores():
            print(f"{SCRIPT}: warning: {len(worker_args)} workers on {available_cores()} cores; workers that wait for "
                  f"a core slow the others down (use --num-workers {available_cores()} or fewer)",
                  file=sys.stderr, flush=True)
        context = mp.get_context(start_method())
        self.shared = Shared(counter=context.Value("q", run.start_step), messages=context.Queue(),
                             stop=context.Event(), pause_requested=context.Value("i", 0, lock=False),
                             pause_released=context.Value("i", 0, lock=False), parent_pid=os.getpid())
        self.run, self.states = run, states if states is not None else [None] * len(worker_args)
        self.progress = [run.start_step] * len(worker_args)
        self.finished: set[int] = set()
        self.paused: set[int] = set()
        self.pending: list = []  # heap of (step, arrival, return, length)
        self.arrivals = self.pauses = 0
        self.closed = False
        self.processes = [
            context.Process(target=worker_process, name=f"{SCRIPT.removesuffix('.py')}-worker-{rank}", daemon=True,
                            args=(work, rank, self.shared, *extra))
            for rank, extra in enumerate(worker_args)
        ]
        try:
            for process in self.processes:
                process.start()
        except BaseException:  # a fork that failed (out of memory or processes): stop those already started
            self.close()
            raise

    @property
    def global_step(self) -> int:
        return self.shared.counter.value

    def running(self) -> bool:
        return len(self.finished) < len(self.processes)

    def handle(self, message) -> None:
        kind, rank = message[0], message[1]
        if kind == "episode":
            heapq.heappush(self.pending, (message[2], self.arrivals, message[3], message[4]))
            self.arrivals += 1
        elif kind == "progress":
            self.progress[rank] = message[2]
            if message[3]:
                self.run.log(message[2], message[3])
        elif kind == "paused":
            _, _, number, self.progress[rank], self.states[rank] = message
            if number == self.pauses:
                self.paused.add(rank)
        elif kind == "done":
            _, _, self.progress[rank], self.states[rank] = message
            self.finished.add(rank)
        elif kind == "error":
            _, _, name, text, trace = message
            if name == "FloatingPointError":  # a diverged loss, not a bug: its one-line message says it all
                raise FloatingPointError(text)
            print(f"{SCRIPT} worker {rank} failed:\n{trace}", file=sys.stderr, flush=True)
            raise WorkerFailed(f"worker {rank} raised {name}: {text}")

    def release(self, everything: bool = False) -> None:
        """Hand the held episodes that no worker can precede any more to the run, in step order."""
        frontier = math.inf if everything else min(
            (step for rank, step in enumerate(self.progress) if rank not in self.finished), default=math.inf)
        while self.pending and self.pending[0][0] <= frontier:
            step, _, episodic_return, episodic_length = heapq.heappop(self.pending)
            self.run.episode(step, episodic_return, episodic_length)

    def poll(self, timeout: float = 0.05) -> None:
        """Handle the messages waiting (at most `timeout` seconds for the first) and check that the workers live."""
        try:
            self.handle(self.shared.messages.get(timeout=timeout))
            for _ in range(1000):  # what else has arrived, without waiting
                self.handle(self.shared.messages.get_nowait())
        except queue_module.Empty:
            pass
        self.release()
        for rank, process in enumerate(self.processes):
            if rank not in self.finished and process.exitcode is not None:
                self.drain_after_exit(rank, process)

    def drain_after_exit(self, rank: int, process) -> None:
        """A worker exited without saying done: read what it sent last (its error, if any), else fail."""
        deadline = time.monotonic() + 2.0
        while rank not in self.finished and time.monotonic() < deadline:
            try:
                self.handle(self.shared.messages.get(timeout=0.1))
            except queue_module.Empty:
                pass
        if rank not in self.finished:
            raise WorkerFailed(f"worker {rank} died with exit code {process.exitcode} without reporting an error")

    def pause(self) -> None:
        """Return once every worker waits at a safe point between updates (or is done): the weights, the
        optimiser's statistics, the counter and states are then consistent, and every episode up to the
        counter has been handed to the run."""
        self.pauses += 1
        self.paused.clear()
        self.shared.pause_requested.value = self.pauses
        while len(self.paused | self.finished) < len(self.processes):
            self.poll()
        self.release(everything=True)  # no worker takes a step until released: none can report an earlier episode

    def go(self) -> None:
        self.shared.pause_released.value = self.pauses

    def close(self, grace: float = 5.0) -> None:
        """Stop every worker: ask, wait up to `grace` seconds (reading their messages meanwhile, so that none
        blocks on a full pipe), then kill the rest. Nothing is left running."""
        if self.closed:
            return
        self.closed = True
        self.shared.stop.set()
        deadline = time.monotonic() + grace
        while any(p.is_alive() for p in self.processes) and time.monotonic() < deadline:
            try:
                self.shared.messages.get(timeout=0.05)
            except (queue_module.Empty, OSError, EOFError):
                pass
        for process in self.processes:
            if process.is_alive():
                process.kill()
            if process.pid is not None:  # started
                process.join(timeout=5)
        self.shared.messages.close()
        self.shared.messages.cancel_join_thread()


def train_workers(run, workers: Workers) -> bool:
    """The main process's loop: hand the workers' episodes and metrics to the run until every worker is done,
    pausing them for each checkpoint (--checkpoint-every, or a signal). Returns False when a signal stopped the
    run, after its checkpoint: the workers took no step past it. The workers are stopped either way."""
    while workers.running():
        workers.poll()
        run.progress.update(workers.global_step, run.recent_returns)
        if run.checkpoint_due(workers.global_step):
            workers.pause()
            run.save(workers.global_step)
            if run.stopped:
                workers.close()
                return False
            workers.go()
    workers.release(everything=True)
    workers.close()
    return True


# ==== end of kit: hogwild ====

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
