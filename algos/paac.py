"""Parallel advantage actor-critic, PAAC (Clemente, Castejon & Chandra 2017, "Efficient Parallel Methods
for Deep Reinforcement Learning", Algorithm 1).

One learner and n_e environments stepped by n_w workers: at every step the n_e observations go through
the network in one batch to pick n_e actions; after t_max steps the n_e x t_max n-step returns give one
synchronous RMSProp step on the mean actor-critic loss. The point is throughput: the single network stays
busy while the environments step in parallel.

Presets: classic (the default: classic control, tuned here, as the paper has no such table), atari (the
paper's Atari settings), minatar (atari's, for MinAtar's 10x10 games).

    python algos/paac.py --env-id CartPole-v1
    python algos/paac.py atari --env-id BreakoutNoFrameskip-v4 --arch nature
    python algos/paac.py minatar --env-id MinAtar/Breakout-v1
    python algos/paac.py evaluate runs/<run>/model.pt --episodes 10
"""

import dataclasses
import multiprocessing as mp
import multiprocessing.util
import os
import signal
from dataclasses import dataclass
from typing import Annotated, Literal

import gymnasium as gym
import numpy as np
import torch
import tyro

SCRIPT = "paac.py"  # names this script in messages, checkpoints and models
ATARI = True  # plays Atari games (and MinAtar's)
try:  # the MinAtar/*-v1 ids (Young & Tian 2019), when the minatar package is installed
    import minatar.gym

    if "MinAtar/Breakout-v1" not in gym.envs.registry:
        minatar.gym.register_envs()
except ImportError:
    pass


@dataclass
class Args:
    # --- common to every script ---
    preset: tyro.conf.Suppress[Literal["classic", "atari", "minatar"]] = "classic"
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
    threads: Annotated[int | None, tyro.conf.arg(help_behavior_hint="(default: 1 for vector observations, where small MLPs run fastest on one; torch's own choice for images: all cores, or OMP_NUM_THREADS)")] = None
    """torch CPU threads. Give runs that share a machine 1 each"""
    track: bool = False
    """log to Weights & Biases (works offline with WANDB_MODE=offline)"""
    wandb_project_name: str = "paac"
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

    # --- PAAC ---
    env_backend: Literal["auto", "gymnasium", "envpool"] = "auto"
    """the environment engine. auto: EnvPool for Atari ids when envpool is installed, gymnasium otherwise. EnvPool steps Atari several times faster; both apply the same DQN preprocessing"""
    num_envs: int = 32
    """n_e, the environments stepped in parallel. Paper: 32 (Algorithm 1 and Section 5)"""
    num_workers: int = 8
    """n_w, the workers stepping them: processes each holding num_envs / num_workers gymnasium envs, or EnvPool's threads. Paper: 8. 0: the gymnasium envs step in this process, one after another (gymnasium's SyncVectorEnv)"""
    oversubscribe: bool = False
    """allow more than 4 worker processes per core; without it a larger --num-workers is refused"""
    num_steps: int = 5
    """t_max, the steps each env takes between updates. Paper: 5"""
    arch: Literal["nips", "nature"] = "nips"
    """the network on Atari frames. nips: the A3C (DQN 2013) network, 16 8x8/4, 32 4x4/2, 256; nature: the DQN 2015 one, 32 8x8/4, 64 4x4/2, 64 3x3/1, 512. Paper Table 1 reports both. Vector observations get an MLP and MinAtar's 10x10 frames MinAtar's network, whatever this says"""
    learning_rate: float = 0.0224
    """RMSProp step size. Paper: 0.0007 * n_e = 0.0224; classic: 1e-3"""
    anneal: bool = True
    """anneal the learning rate linearly to 0 over the run. Paper: annealed to 0 over its 80M steps (authors' code: --lr_annealing_steps)"""
    gamma: float = 0.99
    """discount factor. Paper: 0.99"""
    ent_coef: float = 0.01
    """entropy bonus beta. Paper: 0.01 (authors' code: 0.02); classic: 0"""
    vf_coef: float = 0.25
    """weight of the value loss mean((R - V)^2). Authors' code: 0.25 (the paper writes the value step as a separate gradient of the same mean)"""
    loss_scale: float = 5.0
    """the whole loss is multiplied by this. Authors' code: 5.0 (= t_max, so that the mean over n_e * t_max of Algorithm 1, lines 16-17, steps like the per-env sum over t_max their learning rate was tuned on)"""
    rms_decay: float = 0.99
    """RMSProp decay of the mean square. Paper: 0.99"""
    rms_eps: float = 0.1
    """RMSProp epsilon, added inside the square root (TensorFlow's placement, which the authors used). Paper: 0.1; classic and minatar: 1e-5"""
    max_grad_norm: float = 3.0
    """clip the global gradient norm to this (0: no clipping). Authors' code: 3.0 (--clip_norm, global); classic: 0.5"""

    @property
    def batch_size(self) -> int:
        return self.num_envs * self.num_steps

    @property
    def num_iterations(self) -> int:
        return self.total_timesteps // self.batch_size


PRESETS = {
    # The paper has no classic-control settings. Tuned here on CartPole-v1 (tests/test_paac_learning.py),
    # as for a2c_atari.py: epsilon 1e-5 (with 0.1 a CartPole-sized gradient is far below sqrt(0.1) and the
    # step becomes plain SGD), lr 1e-3, no entropy bonus, and baselines a2c's clip at 0.5: with the
    # authors' 3.0, seeds 1-3 passed a 20-episode mean of 450 and fell back (500k steps ended at 500,
    # 203 and, at lr 7e-4, 66, 181, 235); with 0.5 they ended at 480, 449 and 489. The envs step in this
    # process (a CartPole step costs microseconds, far less than a message to a worker process).
    "classic": Args(learning_rate=1e-3, rms_eps=1e-5, ent_coef=0.0, max_grad_norm=0.5, num_workers=0),
    # The paper's Atari settings: 80M steps (320M frames), the authors' --max_global_steps, over which the
    # learning rate anneals to 0.
    "atari": Args(preset="atari", env_id="BreakoutNoFrameskip-v4", total_timesteps=80_000_000),
    # MinAtar (Young & Tian 2019): the Atari settings on its 10x10 games with its small network, except
    # epsilon 1e-5 and lr 2e-3, tuned here on MinAtar/Breakout-v1 (tests/test_paac_learning.py); its
    # envs are cheap enough to step in this process.
    "minatar": Args(preset="minatar", env_id="MinAtar/Breakout-v1", total_timesteps=5_000_000,
                    learning_rate=2e-3, rms_eps=1e-5, num_workers=0),
}


def check_args(args: Args) -> None:
    """Refuse settings that cannot work, each with one line that names the fix."""
    check_common(args)
    check_actor_critic(args)
    check_worker_count(args.num_workers, args.oversubscribe)
    if not 0 <= args.num_workers <= args.num_envs:
        raise ConfigError(f"--num-workers must be between 0 and --num-envs ({args.num_envs}), got {args.num_workers}")
    if args.loss_scale <= 0:
        raise ConfigError(f"--loss-scale must be positive, got {args.loss_scale}")


# --- the environments: n_e envs on n_w workers --------------------------------------------------------------


def envpool_installed() -> bool:
    try:
        import envpool  # noqa: F401
    except Exception:  # ImportError, or a broken binary
        return False
    return True


def resolve_backend(args: Args) -> str:
    """The engine a run uses: --env-backend, with auto meaning EnvPool for Atari when it is installed."""
    if args.env_backend == "auto":
        return "envpool" if is_atari(args.env_id) and envpool_installed() else "gymnasium"
    if args.env_backend == "envpool" and not is_atari(args.env_id):
        raise ConfigError("--env-backend envpool is for Atari ids here; use gymnasium for " + args.env_id)
    return args.env_backend


def make_vector_env(args: Args, seed: int, video_dir: str, num_envs: int | None = None):
    """The n_e envs on the run's engine: EnvPool's threads, or gymnasium envs on n_w worker processes (0: one
    after another in this process, gymnasium's SyncVectorEnv). Evaluation asks for one env, which steps in
    this process."""
    num_envs = num_envs or args.num_envs
    if resolve_backend(args) == "envpool":
        return EnvPoolVecEnv(args.env_id, num_envs, seed, num_threads=min(args.num_workers, num_envs))
    env_fns = [make_env(args.env_id, i, args.capture_video, video_dir) for i in range(num_envs)]
    if args.num_workers == 0 or num_envs == 1:
        return gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    return WorkerVecEnv(env_fns, min(args.num_workers, num_envs))


class WorkerVecEnv:
    """n_e gymnasium envs stepped by n_w worker processes, each holding n_e / n_w of them, as in the
    paper's Figure 1 (gymnasium's AsyncVectorEnv gives each env its own process instead). Observations
    come back through shared memory; actions, rewards and episode ends through pipes. The interface,
    seeding (env i gets seed + i) and SAME_STEP semantics are those of gymnasium's SyncVectorEnv, so the
    same seed gives the same episodes with any number of workers."""

    def __init__(self, env_fns: list, num_workers: int):
        # fork: the workers inherit the env thunks (closures cannot be pickled) and use no torch.
        context = mp.get_context("fork")
        self.num_envs = len(env_fns)
        probe = env_fns[-1]()  # the spaces, from a throwaway env (the last: never the one that records video)
        self.single_observation_space, self.single_action_space = probe.observation_space, probe.action_space
        probe.close()
        shape, dtype = self.single_observation_space.shape, np.dtype(self.single_observation_space.dtype)
        self.obs_buffer = context.RawArray("b", self.num_envs * int(np.prod(shape)) * dtype.itemsize)
        self.obs = np.frombuffer(self.obs_buffer, dtype=dtype).reshape(self.num_envs, *shape)
        self.slices = [(int(s[0]), int(s[-1]) + 1) for s in np.array_split(np.arange(self.num_envs), num_workers)]
        self.conns, self.processes = [], []
        # The workers ignore SIGTERM, so multiprocessing's own clean-up at exit (SIGTERM to each, then a wait
        # without a time limit) would hang on workers never closed (an exception before close()): stop them
        # before it, or when this object is garbage collected.
        self.stop_workers = multiprocessing.util.Finalize(self, stop_workers, args=(self.conns, self.processes),
                                                          exitpriority=10)
        for first, end in self.slices:
            parent, child = context.Pipe()
            process = context.Process(target=run_worker, daemon=True,
                                      args=(child, [*self.conns, parent], os.getpid(), env_fns[first:end], first,
                                            self.obs_buffer, shape, dtype))
            process.start()
            child.close()
            self.conns.append(parent)
            self.processes.append(process)
        self.receive()  # each worker sends its spaces once its envs are built

    def receive(self) -> list:
        replies = [conn.recv() for conn in self.conns]
        for reply in replies:
            if isinstance(reply, Exception):
                self.close()
                raise reply
        return replies

    def reset(self, seed: int | None = None):
        for conn, (first, _) in zip(self.conns, self.slices):
            conn.send(("reset", None if seed is None else seed + first))
        self.receive()
        return self.obs.copy(), {}

    def step(self, actions: np.ndarray):
        for conn, (first, end) in zip(self.conns, self.slices):
            conn.send(("step", actions[first:end]))
        replies = self.receive()
        rewards, terminated, truncated, game_over = (np.concatenate([reply[k] for reply in replies]) for k in (0, 1, 2, 4))
        done = terminated | truncated
        infos = {}
        if done.any():
            final_obs = [obs for r in replies if r[3] is not None for obs in r[3]]
            returns, lengths = np.zeros(self.num_envs), np.zeros(self.num_envs, dtype=np.int64)
            for (first, end), reply in zip(self.slices, replies):
                if reply[5] is not None:
                    returns[first:end], lengths[first:end] = reply[5]
            infos = episode_infos(self.num_envs, done, final_obs, game_over, returns, lengths)
        return self.obs.copy(), rewards, terminated, truncated, infos

    def close(self):
        self.stop_workers()  # runs once: later calls do nothing


def episode_infos(num_envs: int, done: np.ndarray, final_obs: list, game_over: np.ndarray, returns: np.ndarray,
                  lengths: np.ndarray) -> dict:
    """The infos of a SAME_STEP gymnasium vector env for a step in which episodes ended: the final
    observations of the envs whose episode ended (final_obs holds them in the order of their ids) and the
    statistics of the whole episodes (games) that ended."""
    infos = {"final_obs": np.empty(num_envs, dtype=object), "_final_obs": done}
    for i, obs in zip(np.flatnonzero(done), final_obs):
        infos["final_obs"][i] = obs
    if game_over.any():
        infos["final_info"] = {"_episode": game_over, "episode": {"r": returns, "l": lengths}}
    return infos


def run_worker(conn, parent_ends: list, parent_pid: int, env_fns: list, first: int, obs_buffer, obs_shape: tuple,
               obs_dtype) -> None:
    """A worker process: steps its slice of the envs (ids first, first + 1, ...) as a SAME_STEP
    SyncVectorEnv, writes their observations into the shared buffer and sends back the rest. It ends when
    told to, or when the main process is gone."""
    # SIGINT and SIGTERM sent to the whole process group (Ctrl-C, timeout, Slurm) reach the main process,
    # which saves a checkpoint and then stops the workers: a worker that died first would lose the step.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    # The fork copied the main process's ends of this worker's pipe and of those started before it. Held
    # here, they would keep every pipe open after the main process dies, so no worker would see the end.
    for end in parent_ends:
        end.close()
    die_with_parent(parent_pid)
    try:
        envs = gym.vector.SyncVectorEnv(env_fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
        obs_view = np.frombuffer(obs_buffer, dtype=obs_dtype).reshape(-1, *obs_shape)[first: first + len(env_fns)]
        conn.send((envs.single_observation_space, envs.single_action_space))
        while True:
            command, data = conn.recv()
            if command == "step":
                obs, rewards, terminated, truncated, infos = envs.step(data)
                obs_view[:] = obs
                done = terminated | truncated
                final_obs = np.stack(infos["final_obs"][done]) if done.any() else None
                final = infos.get("final_info", {})
                game_over = final.get("_episode", np.zeros(len(env_fns), dtype=bool))
                stats = (final["episode"]["r"], final["episode"]["l"]) if game_over.any() else None
                conn.send((rewards, terminated, truncated, final_obs, game_over, stats))
            elif command == "reset":
                obs_view[:] = envs.reset(seed=data)[0]
                conn.send(None)
            else:
                envs.close()
                conn.send(None)
                return
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the main process is gone: nobody to tell
        return
    except Exception as error:  # reported to the learner, which raises it
        try:
            conn.send(RuntimeError(f"env worker for envs {first}..{first + len(env_fns) - 1}: {type(error).__name__}: {error}"))
        except OSError:
            pass


def stop_workers(conns: list, processes: list) -> None:
    """Tell each worker to close its envs, and wait for it; kill one that has not ended 5 s later."""
    for conn, process in zip(conns, processes):
        try:
            conn.send(("close", None))
            conn.recv()
        except (BrokenPipeError, EOFError, OSError):
            pass
        process.join(timeout=5)
        if process.is_alive():
            process.kill()  # it ignores SIGTERM
            process.join()
    conns.clear()
    processes.clear()


# --- the network and the update -----------------------------------------------------------------------------
# The network (Agent), the n-step returns, the loss and TensorFlow's RMSProp are in the a2c kit below, the same
# text as in a2c_atari.py.


def make_agent(args: Args, envs) -> "Agent":
    """The a2c kit's network, with the trunk of --arch on Atari frames, its convolutions in oneDNN's faster
    memory layout on CPU (a quarter off the learner's time on Breakout)."""
    agent = Agent(envs.single_observation_space, envs.single_action_space, args.arch)
    agent.trunk.to(memory_format=torch.channels_last)
    return agent


def update(agent: "Agent", optimizer: "RMSpropTF", rollout: "Rollout", logits: torch.Tensor, values: torch.Tensor,
           next_obs: torch.Tensor, args: Args) -> dict:
    """One PAAC update (Algorithm 1, lines 10-18): the n_e x t_max n-step returns of the rollout, bootstrapped
    from the value of next_obs (the observation after it); the loss on the logits and values the network gave
    when it acted (their graphs kept); one RMSProp step on the gradient, clipped to --max-grad-norm. Returns
    the metrics, measured on the batch before the step (PAAC makes one step a batch)."""
    rewards, terminated, truncated = rollout.outcomes()
    with torch.inference_mode():
        next_value = agent.get_value(next_obs)
    returns = nstep_returns(rewards, next_value, terminated, truncated, rollout.final_values, args.gamma).reshape(-1)
    log_probs = logits.log_softmax(-1)
    logprob = log_probs.gather(1, rollout.actions.reshape(-1, 1)).squeeze(1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    loss, pg_loss, v_loss, entropy_mean = actor_critic_loss(logprob, entropy, values, returns,
                                                            args.ent_coef, args.vf_coef, args.loss_scale)
    clipped_step(optimizer, loss, agent.parameters(), args.max_grad_norm)
    variance = explained_variance(rollout.values.reshape(-1), returns) if returns.numel() > 1 else float("nan")
    return {"loss": loss.detach(), "policy_loss": pg_loss.detach(), "value_loss": v_loss.detach(),
            "entropy": entropy_mean.detach(), "explained_variance": variance}


# --- training -----------------------------------------------------------------------------------------------


def main(args: Args) -> dict:
    """Train PAAC and return the summary also written to RUN_DIR/summary.json (on SIGINT/SIGTERM:
    {"interrupted": True, "global_step", "run_dir"})."""
    args, checkpoint = resume_args(args)
    check_env_id(args.env_id)  # the env id first: the other messages assume it exists
    check_args(args)
    # The engine auto chose is written into the run's args, so evaluating and resuming use the same one.
    args = dataclasses.replace(args, env_backend=resolve_backend(args))
    with Run(args, checkpoint) as run:  # seeds everything; writes nothing yet
        args, device = run.args, run.device
        global_step = run.start_step
        # A resumed run cannot restore the environments' internal states: it starts fresh episodes, seeded
        # from the step it resumes at, so that resuming is itself reproducible.
        env_seed = args.seed + global_step
        envs = run.closing(make_vector_env(args, env_seed, os.path.join(args.run_dir, "videos")))
        check_spaces(envs.single_observation_space, envs.single_action_space)
        run.use_threads(None if len(envs.single_observation_space.shape) == 3 else 1)
        agent = make_agent(args, envs).to(device)
        optimizer = RMSpropTF(agent.parameters(), lr=args.learning_rate, decay=args.rms_decay, eps=args.rms_eps)
        run.restore(model=agent, optimizer=optimizer)
        iteration = run.saved("iteration", 0)
        run.start(total_steps=args.num_iterations * args.batch_size)

        rollout = Rollout(args.num_steps, args.num_envs, device)  # no observations: the update reuses acting's graph
        next_obs = torch.as_tensor(envs.reset(seed=env_seed)[0], device=device)
        log_every = max(1, 1000 // args.batch_size)  # losses to TensorBoard about every 1000 steps, not every update
        for iteration in range(iteration + 1, args.num_iterations + 1):
            alpha = 1.0 - (iteration - 1) / args.num_iterations if args.anneal else 1.0
            optimizer.param_groups[0]["lr"] = alpha * args.learning_rate

            # The acting forward passes keep their graphs, and the update differentiates those same outputs:
            # the parameters do not change within a rollout, so running the n_e x t_max observations through
            # the network again (as the authors' code did) would give the same numbers at a third more cost.
            step_logits, step_values = [], []
            for step in range(args.num_steps):
                global_step += args.num_envs
                action, logits, value = agent.act(next_obs)
                step_logits.append(logits)
                step_values.append(value)
                next_obs_np, reward, terminated, truncated, infos = envs.step(action.cpu().numpy())
                rollout.record(step, agent, action, value, reward, terminated, truncated, infos)
                next_obs = torch.as_tensor(next_obs_np, device=device)
                run.episodes(global_step, infos)

            metrics = update(agent, optimizer, rollout, torch.cat(step_logits), torch.cat(step_values), next_obs, args)
            run.check_finite(global_step, metrics.pop("loss"), agent)
            if iteration % log_every == 0 or iteration == args.num_iterations:
                run.log(global_step, {"charts/learning_rate": optimizer.param_groups[0]["lr"],
                                      **{f"losses/{name}": metric for name, metric in metrics.items()}})
            run.save_if_due(global_step, iteration=iteration)
            if run.stopped:
                return run.interrupted()
        return run.finish(global_step, {"model": agent.state_dict()}, lambda: evaluate(
            agent, dataclasses.replace(args, capture_video=False), args.eval_episodes, args.seed + 100_000,
            args.eval_deterministic, ""))


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
