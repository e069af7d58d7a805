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
