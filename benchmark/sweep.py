"""Run a sweep of (config, env, seed) runs of the scripts in algos/, locally or on a Ray cluster.

Layout of a sweep directory:

    OUT/sweep.json               the runs of the sweep (config, env, seed, budget, published number)
    OUT/runs/<run>/              one run directory per run, written by the script (run contract)
    OUT/runs/<run>/run.log       the script's stdout and stderr, every attempt appended
    OUT/runs/<run>/status.json   the runner's record: state, exit code, command, attempts
    OUT/runs/<run>/run.lock      locked (flock) while a process executes the run

A rerun of the same command skips finished runs (summary.json written), resumes interrupted ones from
their checkpoint (`--resume`) and starts failed or unstarted ones afresh. Every file the runner writes goes
through a temporary file and a rename.

One run directory has one owner at a time: the process that executes the run holds an exclusive flock on
its run.lock for as long as the run's command lives, and only that process empties the directory or writes
its status.json. Several sweeps (or Slurm array tasks) may therefore share an OUT: the plan made at the
start is only a forecast, and the owner decides again under the lock, just before the command starts, so a
run another sweep finished in the meantime is skipped, never emptied or run again, and a run another
process holds is left to it ("running elsewhere"). A lock, not a PID in status.json: the kernel drops it
when the last process holding it exits, however it died, while a PID can be a zombie or reused. Who holds
it:
- local backend (and each Slurm array task, which is a local sweep of one run): the sweep process takes it
  and the run's command inherits the descriptor, so the lock lives as long as either of them does (a
  killed sweep's orphaned run still holds it);
- Ray backend: the task, on the node that runs the command, which inherits it the same way.
On a shared file system the lock must reach every node: NFS does (flock is emulated with NFS locks), Lustre
needs the `flock` mount option.
"""

import dataclasses
import fcntl
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmark import registry
from benchmark.common import write_json

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""the repository root: script paths are relative to it and runs start in it"""

FINISHED, INTERRUPTED, FAILED, RUNNING = "finished", "interrupted", "failed", "running"


@dataclass(frozen=True)
class Run:
    config: str
    """a script name, or script:variant (benchmark/registry.py)"""
    env_id: str
    seed: int
    total_timesteps: int | None = None
    """None: the script's (or its preset's) default"""
    overrides: tuple = ()
    """(key, value) pairs of script flags, key with underscores or dashes; value "true"/"false" for switches"""
    reference: float | None = None
    source: str = ""
    reference_steps: int | None = None
    """the budget at which `reference` was measured (the suite's, before --budget-scale)"""

    @property
    def name(self) -> str:
        return f"{self.config.replace(':', '-')}__{self.env_id.replace('/', '-')}__{self.seed}"


# --------------------------------------------------------------------------------------------------
# Commands (pure functions)
# --------------------------------------------------------------------------------------------------


def override_args(key: str, value: str | None) -> list[str]:
    """`learning_rate`, `1e-4` -> [--learning-rate, 1e-4]; `anneal`, `true` -> [--anneal]; `anneal`, `false`
    -> [--no-anneal]; a value with spaces is several values (`hidden_sizes`, `64 64`)."""
    flag = "--" + key.strip().lstrip("-").replace("_", "-")
    if value is None or value.lower() == "true":
        return [flag]
    if value.lower() == "false":
        return ["--no-" + flag[2:]]
    return [flag, *value.split()]


def build_command(run: Run, run_dir: str, threads: int | None = None, checkpoint_every: int | None = None,
                  resume: bool = False, python: str = sys.executable) -> list[str]:
    """The command line of one run, from its config, env, seed and overrides: the script, --preset for the
    env's family (or the variant's), the common flags, the variant's flags, then the overrides (which win).
    With resume, the same command plus --resume RUN_DIR. Paths of scripts are relative to ROOT."""
    algo, variant_name = registry.split_config(run.config)
    script = registry.SCRIPTS[algo]
    variant = script.variants[variant_name] if variant_name else registry.Variant()
    overrides = dict(run.overrides)
    preset = overrides.pop("preset", None) or variant.preset or script.presets.get(registry.env_family(run.env_id))
    command = [python, script.path]
    if preset:
        command += ["--preset", preset]
    command += ["--env-id", run.env_id, "--seed", str(run.seed)]
    if run.total_timesteps is not None:
        command += ["--total-timesteps", str(run.total_timesteps)]
    command += ["--run-dir", run_dir]
    if threads is not None:
        command += ["--threads", str(threads)]
    if checkpoint_every:
        command += ["--checkpoint-every", str(checkpoint_every)]
    command += list(variant.flags)
    for key, value in overrides.items():
        command += override_args(key, value)
    if resume:
        command += ["--resume", run_dir]
    return command


def parse_overrides(items: list[str]) -> tuple:
    """`--set key=value ...` -> ((key, value), ...); `key` alone is a switch turned on."""
    pairs = []
    for item in items or ():
        key, eq, value = item.partition("=")
        if not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        pairs.append((key.replace("-", "_"), value if eq else None))
    return tuple(pairs)


def expand(configs, envs, seeds, total_timesteps=None, overrides=()) -> list[Run]:
    """Every (config, env, seed) combination, configs outermost. Unknown configs raise ValueError."""
    for config in configs:
        registry.split_config(config)
    return [Run(config, env, seed, total_timesteps, overrides) for config in configs for env in envs for seed in seeds]


def suite_runs(suite, budget_scale: float = 1.0, seeds=None, configs=None, envs=None, total_timesteps=None,
               overrides=()) -> list[Run]:
    """The runs of a suite, budgets multiplied by budget_scale; configs (or their script names), envs and seeds
    select a part of it."""
    runs = []
    for entry in suite.entries:
        algo, _ = registry.split_config(entry.config)
        if configs and entry.config not in configs and algo not in configs:
            continue
        if envs and entry.env_id not in envs:
            continue
        budget = total_timesteps or max(1, round(entry.total_timesteps * budget_scale))
        for seed in seeds or suite.seeds:
            runs.append(Run(entry.config, entry.env_id, seed, budget, overrides, entry.reference, entry.source,
                            entry.total_timesteps if entry.reference is not None else None))
    return runs


# --------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------


def read_json(path: str) -> dict | None:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def run_dir_of(out: str, run: Run) -> str:
    return os.path.join(out, "runs", run.name)


def is_finished(run_dir: str) -> bool:
    summary = read_json(os.path.join(run_dir, "summary.json"))
    return isinstance(summary, dict) and not summary.get("interrupted")


def lock_run(run_dir: str) -> int | None:
    """Take the run's lock: an open descriptor of run_dir/run.lock holding an exclusive flock, or None when
    another process holds it. Closing the descriptor (in every process sharing it) releases it."""
    lock = os.open(os.path.join(run_dir, "run.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock)
        return None
    return lock


def lock_held(run_dir: str) -> bool:
    """Whether a process holds the run's lock. Probed with a shared lock taken for an instant, so that
    sweeps planning at the same time do not see each other's probes as owners. (A claim meeting a probe
    sees the run as held and leaves it; the probing sweep, finding it free, queues and runs it.)"""
    try:
        probe = os.open(os.path.join(run_dir, "run.lock"), os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(probe, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(probe)


def plan(run_dir: str, holding_lock: bool = False) -> str:
    """What a (re)run of this run does: "skip" (finished), "busy" (another process holds its lock), "resume"
    (interrupted with a checkpoint) or "fresh" (never started, failed, or nothing to resume from)."""
    if is_finished(run_dir):
        return "skip"
    if not holding_lock and lock_held(run_dir):
        return "busy"
    status = read_json(os.path.join(run_dir, "status.json")) or {}
    if os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and status.get("state") != FAILED:
        return "resume"
    return "fresh"


def clear_run_dir(run_dir: str) -> None:
    """Empty a run directory for a fresh start, keeping run.log (earlier attempts stay readable there),
    status.json (the attempt count) and run.lock (deleting a locked file would let a second owner lock a new
    one)."""
    for name in os.listdir(run_dir):
        if name in ("run.log", "status.json", "run.lock"):
            continue
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


def classify(run_dir: str, returncode: int) -> str:
    """The state of a run whose process exited with returncode. A run stopped by a signal (the scripts save a
    checkpoint and exit 0 on SIGINT/SIGTERM; SIGKILL gives a negative code) is interrupted when it left a
    checkpoint to resume from; anything else that wrote no summary failed."""
    if returncode == 0 and is_finished(run_dir):
        return FINISHED
    if (returncode == 0 or returncode < 0) and os.path.exists(os.path.join(run_dir, "checkpoint.pt")):
        return INTERRUPTED
    return FAILED


def write_status(run_dir: str, status: dict) -> None:
    write_json(os.path.join(run_dir, "status.json"), status)


def claim(run_dir: str, status: dict) -> tuple[int | None, str]:
    """Take the run's lock and decide, under it, what to do now: (lock, "resume" or "fresh"), the directory
    emptied for a fresh start and status.json written as running from `status` (the run's description); or
    (None, "busy") when another process holds the lock, (None, "skip") when the run finished since it was
    planned (then nothing is touched)."""
    lock = lock_run(run_dir)
    if lock is None:
        return None, "busy"
    action = plan(run_dir, holding_lock=True)
    if action == "skip":
        os.close(lock)
        return None, action
    if action == "fresh":
        clear_run_dir(run_dir)
    previous = read_json(os.path.join(run_dir, "status.json")) or {}
    status.update(state=RUNNING, returncode=None, action=action, attempts=previous.get("attempts", 0) + 1,
                  started=time.time(), host=os.uname().nodename, pid=None)
    write_status(run_dir, status)
    return lock, action


def end_run(run_dir: str, status: dict, returncode: int) -> dict:
    """Record how the run's command ended (its owner calls this before releasing the lock); the status."""
    status.update(state=classify(run_dir, returncode), returncode=returncode,
                  seconds=round(time.time() - status["started"], 1))
    write_status(run_dir, status)
    return status


def log_tail(path: str, lines: int = 5) -> list[str]:
    """The last lines of the last attempt in a run.log (after its "=== " header line)."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 16_384))
            text = f.read().decode(errors="replace")
    except OSError:
        return []
    # Progress lines redraw with carriage returns; keep what a terminal would show.
    shown = [line.rsplit("\r", 1)[-1] for line in text.splitlines()]
    headers = [i for i, line in enumerate(shown) if line.startswith("=== ")]
    shown = shown[headers[-1] + 1:] if headers else shown
    return [line for line in shown if line.strip()][-lines:]


# --------------------------------------------------------------------------------------------------
# Backends: start a command with a log file, report which have exited
# --------------------------------------------------------------------------------------------------


def core_count() -> int:
    """The cores this process may run on (a Slurm or container allocation), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_env(threads: int) -> dict:
    """The variables a run gets on top of its machine's environment: OpenMP, MKL and OpenBLAS limited to its
    share of the cores."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}


def open_log(log_path: str, command: list[str]):
    """run.log opened for appending, with a header line for this attempt."""
    log = open(log_path, "a")
    log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} {shlex.join(command)}\n")
    log.flush()
    return log


def start_command(run_dir: str, command: list[str], status: dict, lock: int, env: dict, cwd: str, **options):
    """Start the command of a run claimed with `lock` (plus --resume for a resumed one), with the variables
    `env` added to this process's environment and stdout and stderr appended to run.log; (process, log).
    The command inherits the lock, so it stays held if the claiming process dies first. When the command
    cannot start, (None, None), its end recorded as exit code 127 (the reason in the log)."""
    if status["action"] == "resume":
        command = command + ["--resume", run_dir]
    log = open_log(os.path.join(run_dir, "run.log"), command)
    try:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                   cwd=cwd, stdin=subprocess.DEVNULL, pass_fds=(lock,), **options)
    except OSError as error:
        log.write(f"cannot start: {error}\n")
        log.close()
        end_run(run_dir, status, 127)
        return None, None
    status.update(command=shlex.join(command), pid=process.pid)
    write_status(run_dir, status)
    return process, log


def execute_run(run_dir: str, command: list[str], status: dict, env: dict, cwd: str) -> dict:
    """A Ray task: claim the run (see claim), run its command to its end (start_command), record the end and
    release the lock; the status, or {"action": "busy" or "skip"} when it did not run. SIGTERM or
    KeyboardInterrupt while waiting (a cancelled task) is passed on to the command as SIGTERM, on which the
    scripts save a checkpoint."""
    lock, action = claim(run_dir, status)
    if lock is None:
        return {"action": action}
    try:
        process, log = start_command(run_dir, command, status, lock, env, cwd)
        if process is None:
            return status
        with log:
            try:
                returncode = process.wait()
            except BaseException:
                process.terminate()
                returncode = process.wait()
        return end_run(run_dir, status, returncode)
    finally:
        os.close(lock)


def settle(run_dir: str, returncode: int) -> dict:
    """The outcome of a run whose Ray task ended without one (cancelled, or its worker died): when its lock
    is free and its status.json still says running, the end is recorded here; otherwise status.json is
    reported as it is, or "busy" while its command (or another sweep) still holds the lock."""
    lock = lock_run(run_dir)
    if lock is None:
        return {"action": "busy"}
    try:
        status = read_json(os.path.join(run_dir, "status.json")) or {}
        if status.get("state") == RUNNING and "started" in status:
            return end_run(run_dir, status, returncode)
        return {"action": "fresh", "state": FAILED, "returncode": returncode, **status}
    finally:
        os.close(lock)


class LocalBackend:
    """Runs as child processes of this one, up to `workers` at a time. This process claims each run and its
    child inherits the lock (see the module's docstring)."""

    def __init__(self, workers: int):
        self.workers = workers
        self.processes = {}  # key -> (Popen, log file, run_dir, status, lock)
        self.outcomes = []  # (key, outcome) of runs that ended without a process running

    def start(self, key, run_dir, command, status, env, cwd) -> None:
        lock, action = claim(run_dir, status)
        if lock is None:
            self.outcomes.append((key, {"action": action}))
            return
        # Own session: a Ctrl-C in the terminal reaches the sweep only, which passes SIGTERM on once.
        process, log = start_command(run_dir, command, status, lock, env, cwd, start_new_session=True)
        if process is None:
            self.outcomes.append((key, status))
            os.close(lock)
            return
        self.processes[key] = (process, log, run_dir, status, lock)

    def poll(self, timeout: float) -> list:
        """(key, outcome) of the runs that ended: the status end_run wrote, or {"action": "busy" or "skip"}."""
        deadline = time.monotonic() + timeout
        while True:
            exited = [(key, p.returncode) for key, (p, *_) in self.processes.items() if p.poll() is not None]
            if exited or self.outcomes or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        done, self.outcomes = self.outcomes, []
        for key, returncode in exited:
            _, log, run_dir, status, lock = self.processes.pop(key)
            log.close()
            done.append((key, end_run(run_dir, status, returncode)))
            os.close(lock)
        return done

    def terminate(self):
        for process, *_ in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def kill(self):
        for process, *_ in self.processes.values():
            if process.poll() is None:
                process.kill()

    def close(self):
        pass


class RayBackend:
    """Runs as Ray tasks of one CPU each (and gpus_per_run GPUs), on the cluster at `address` or on the Ray
    instance this process already started. The run directories must be on a path every node sees."""

    def __init__(self, address: str | None, gpus_per_run: float = 0.0):
        try:
            import ray
        except ImportError:
            raise SystemExit("--backend ray needs Ray: pip install ray") from None

        self.ray = ray
        # The task's code travels with it, so the workers need Python and the scripts, not this package.
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
        ray.cloudpickle.register_pickle_by_value(sys.modules[write_json.__module__])
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        self.task = ray.remote(num_cpus=1, num_gpus=gpus_per_run, max_retries=0)(execute_run)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.refs = {}  # ObjectRef -> (key, run_dir)

    def start(self, key, run_dir, command, status, env, cwd) -> None:
        ref = self.task.remote(run_dir, command, status, env, cwd)
        self.refs[ref] = (key, run_dir)

    def poll(self, timeout: float) -> list:
        """(key, outcome) of the runs that ended, as LocalBackend.poll."""
        if not self.refs:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        done = []
        for ref in ready:
            key, run_dir = self.refs.pop(ref)
            try:
                done.append((key, self.ray.get(ref)))
            except Exception as error:  # the task was cancelled, or its worker died or could not start
                with open(os.path.join(run_dir, "run.log"), "a") as log:
                    log.write(f"ray task ended without an exit code: {type(error).__name__}: {error}\n")
                done.append((key, settle(run_dir, -signal.SIGTERM)))
        return done

    def terminate(self):
        for ref in self.refs:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task: execute_run passes SIGTERM to the script

    def kill(self):
        for ref in self.refs:
            self.ray.cancel(ref, force=True)

    def close(self):
        pass


# --------------------------------------------------------------------------------------------------
# The sweep
# --------------------------------------------------------------------------------------------------


def format_duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


class Display:
    """One status line: runs done, running, failed, queued, elapsed, ETA. On a terminal it redraws in place;
    otherwise a line every `every` seconds. Events (a run done or failed) are printed as they happen."""

    def __init__(self, total: int, workers: int, stream=sys.stdout, every: float = 30.0):
        self.total, self.workers, self.stream, self.every = total, workers, stream, every
        self.tty = stream.isatty()
        self.start = time.monotonic()
        self.last = 0.0
        self.finished = []  # (config, budget or None, seconds) of the runs finished in this sweep

    def estimate(self, run: Run) -> float:
        """Seconds a run should take: its budget at the seconds per step of finished runs of its config (or
        of all finished runs), or their mean duration when budgets are unknown."""
        for pool in ([f for f in self.finished if f[0] == run.config], self.finished):
            timed = [(b, t) for _, b, t in pool if b]
            if run.total_timesteps and timed:
                return run.total_timesteps * sum(t for _, t in timed) / sum(b for b, _ in timed)
            if pool:
                return sum(t for _, _, t in pool) / len(pool)
        return 0.0

    def eta(self, queued: list, running: dict) -> float | None:
        if not self.finished:
            return None
        now = time.time()
        left = sum(self.estimate(run) for run, _ in queued)
        left += sum(max(0.0, self.estimate(i["run"]) - (now - i["started"])) for i in running.values())
        return left / max(1, min(self.workers, len(queued) + len(running)))

    def line(self, done, running, failed, queued) -> str:
        return (f"sweep: {done}/{self.total} done, {len(running)} running, {failed} failed, {len(queued)} queued, "
                f"elapsed {format_duration(time.monotonic() - self.start)}, "
                f"ETA {format_duration(self.eta(queued, running)) if queued or running else '0:00'}")

    def event(self, text: str):
        if self.tty:
            self.stream.write("\r\033[K")
        print(text, file=self.stream, flush=True)
        self.last = 0.0

    def update(self, done, running, failed, queued, force=False):
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\033[K" + self.line(done, running, failed, queued))
            self.stream.flush()
        elif force or now - self.last >= self.every:
            print(self.line(done, running, failed, queued), file=self.stream, flush=True)
            self.last = now

    def close(self):
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


def record_sweep(out: str, runs: list[Run], suite: str | None) -> None:
    """sweep.json: the runs of this sweep, merged with those of earlier invocations on the same OUT."""
    path = os.path.join(out, "sweep.json")
    # Sweeps starting together on one OUT merge their runs in one at a time, or one's would be lost.
    with open(os.path.join(out, "sweep.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        previous = read_json(path) or {}
        entries = {r["name"]: r for r in previous.get("runs", [])}
        for run in runs:
            entries[run.name] = {"name": run.name, **dataclasses.asdict(run),
                                 "overrides": [list(p) for p in run.overrides]}
        suites = sorted(set(previous.get("suites", [])) | ({suite} if suite else set()))
        write_json(path, {"suites": suites, "runs": list(entries.values())})


def failure_table(failures: list[dict]) -> str:
    """The failed and interrupted runs: name, exit code, the last lines of their logs."""
    lines = [f"{len(failures)} run(s) did not finish:", ""]
    width = max(len(f["name"]) for f in failures)
    lines.append(f"{'run'.ljust(width)}  exit  state        log (last lines)")
    for f in failures:
        tail = f["tail"] or ["(empty log)"]
        code = "-" if f["returncode"] is None else str(f["returncode"])
        lines.append(f"{f['name'].ljust(width)}  {code.rjust(4)}  {f['state'].ljust(11)}  {tail[0]}")
        lines += [f"{''.ljust(width)}              {''.ljust(11)}  {t}" for t in tail[1:]]
    lines.append("")
    lines.append("Logs: <out>/runs/<run>/run.log. Rerun the same command to retry failed runs and resume "
                 "interrupted ones; finished runs are skipped.")
    return "\n".join(lines)


def sweep(runs: list[Run], out: str, workers: int | None = None, backend: str = "local",
          ray_address: str | None = None, ray_gpus: float = 0.0, checkpoint_fraction: float = 0.1,
          suite: str | None = None, stream=sys.stdout, status_every: float = 30.0,
          only: list[int] | None = None) -> int:
    """Run every run not finished yet (or those at the positions `only`, a Slurm array task's share); 0 when
    all finished, 1 when any failed or was interrupted."""
    out = os.path.abspath(out)
    os.makedirs(os.path.join(out, "runs"), exist_ok=True)
    names = [run.name for run in runs]
    if len(set(names)) != len(names):
        raise ValueError("the sweep lists the same run twice")
    record_sweep(out, runs, suite)
    if only is not None:
        if any(not 0 <= i < len(runs) for i in only):
            raise ValueError(f"--index must be in 0..{len(runs) - 1}")
        runs = [runs[i] for i in only]

    if backend == "ray":
        executor = RayBackend(ray_address, ray_gpus)
        workers, threads = min(workers or executor.workers, executor.workers), 1
    else:
        cores = core_count()
        workers = workers or cores
        threads = max(1, cores // workers)
        executor = LocalBackend(workers)

    queue, skipped, busy = [], 0, 0
    for run in runs:
        action = plan(run_dir_of(out, run))
        if action == "skip":
            skipped += 1
            before = (read_json(os.path.join(run_dir_of(out, run), "status.json")) or {}).get("total_timesteps")
            if before != run.total_timesteps:
                print(f"note: {run.name} finished with --total-timesteps {before}, not {run.total_timesteps}; "
                      "kept (use another --out to sweep a new budget)", file=stream)
        elif action == "busy":
            busy += 1
            print(f"{run.name}: running elsewhere (another process holds its run.lock); left alone", file=stream)
        else:
            queue.append((run, action))
    print(f"sweep {out}: {len(runs)} runs, {skipped} finished already, {len(queue)} to run "
          f"({sum(a == 'resume' for _, a in queue)} resumed), {workers} at a time on the {backend} backend, "
          f"{threads} thread(s) each", file=stream, flush=True)

    display = Display(len(runs), workers, stream, status_every)
    done, failures, running = skipped, [], {}  # running: name -> the info of start_run
    stop = []

    def on_signal(signum, frame):
        if not stop:
            display.event(f"signal {signum}: stopping the running runs (they save checkpoints); "
                          "a second one kills them")
            executor.terminate()
        else:
            executor.kill()
        stop.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while queue or running:
            while queue and len(running) < workers and not stop:
                run, _ = queue.pop(0)
                running[run.name] = start_run(executor, run, out, threads, checkpoint_fraction)
            if stop:
                queue.clear()
            display.update(done, running, len(failures), queue)
            for name, outcome in executor.poll(timeout=0.5):
                run = running.pop(name)["run"]
                # The plan was made at the start; the run's owner decided again when it started.
                if outcome["action"] == "busy":
                    busy += 1
                    display.event(f"busy    {name}: running elsewhere (another process holds its run.lock); "
                                  "left alone")
                elif outcome["action"] == "skip":
                    done += 1
                    display.event(f"skip    {name}: finished elsewhere since this sweep started")
                elif outcome["state"] == FINISHED:
                    done += 1
                    if outcome["action"] == "fresh":  # a resumed run's time covers only part of its budget
                        display.finished.append((run.config, run.total_timesteps, outcome["seconds"]))
                    display.event(f"done    {name} in {format_duration(outcome['seconds'])}")
                else:
                    tail = log_tail(os.path.join(run_dir_of(out, run), "run.log"))
                    failures.append({"name": name, "state": outcome["state"], "returncode": outcome["returncode"],
                                     "tail": tail})
                    display.event(f"{outcome['state'].upper():7} {name}: exit code {outcome['returncode']}"
                                  + (f": {tail[-1]}" if tail else ""))
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        display.update(done, running, len(failures), queue, force=True)
        display.close()
        executor.close()

    not_run = len(runs) - done - len(failures) - busy
    if failures:
        print(failure_table(failures), file=stream)
    if stop:
        print(f"stopped by signal: {not_run} run(s) not started; rerun the same command to continue", file=stream)
    busy_note = f", {busy} running elsewhere" if busy else ""
    print(f"{done}/{len(runs)} runs finished{busy_note}; results in {out}", file=stream, flush=True)
    return 0 if done == len(runs) else 1


def start_run(executor, run: Run, out: str, threads: int, checkpoint_fraction: float) -> dict:
    """Hand the run to the executor, which claims it (see claim) and starts its command; its entry in the
    sweep's running runs."""
    run_dir = run_dir_of(out, run)
    os.makedirs(run_dir, exist_ok=True)
    every = int(run.total_timesteps * checkpoint_fraction) if run.total_timesteps and checkpoint_fraction else None
    command = build_command(run, run_dir, threads, every or None)
    status = {"name": run.name, "config": run.config, "algo": registry.split_config(run.config)[0],
              "env_id": run.env_id, "seed": run.seed, "total_timesteps": run.total_timesteps,
              "command": shlex.join(command)}
    executor.start(run.name, run_dir, command, status, thread_env(threads), ROOT)
    return {"run": run, "started": time.time()}


def slurm_script(argv: list[str], out: str, count: int, python: str = sys.executable) -> str:
    """An sbatch array script of `count` tasks, task i running run i of this same sweep through the runner
    (`--index i --workers 1`): skipping, resuming, status files and logs as in a local sweep. Resubmit it
    to retry what failed; `python -m benchmark report OUT` afterwards."""
    command = shlex.join([python, "-m", "benchmark", *argv, "--out", out, "--workers", "1"])
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name=benchmark-{os.path.basename(out)}",
        f"#SBATCH --array=0-{count - 1}",
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --output=benchmark-%A_%a.out",  # Slurm's own messages; each run logs to its run.log
        f"cd {shlex.quote(ROOT)}",
        f'{command} --index "$SLURM_ARRAY_TASK_ID"',
        "",
    ])
