"""Run a sweep of (config, env, seed) runs of the scripts in algos/, locally or on a Ray cluster.

Layout of a sweep directory:

    OUT/sweep.json               the runs of the sweep (config, env, seed, budget, published number)
    OUT/runs/<run>/              one run directory per run, written by the script (run contract)
    OUT/runs/<run>/run.log       the script's stdout and stderr, every attempt appended
    OUT/runs/<run>/status.json   the runner's record: state, exit code, command, attempts

A rerun of the same command skips finished runs (summary.json written), resumes interrupted ones from
their checkpoint (`--resume`) and starts failed or unstarted ones afresh. Every file the runner writes goes
through a temporary file and a rename.
"""

import dataclasses
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


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
        return True
    except (OSError, TypeError, ValueError):
        return False


def plan(run_dir: str) -> str:
    """What a (re)run of this run does: "skip" (finished), "busy" (another sweep's process still runs it),
    "resume" (interrupted with a checkpoint) or "fresh" (never started, failed, or nothing to resume from)."""
    if is_finished(run_dir):
        return "skip"
    status = read_json(os.path.join(run_dir, "status.json")) or {}
    if status.get("state") == RUNNING and status.get("host") == os.uname().nodename and pid_alive(status.get("pid")):
        return "busy"
    if os.path.exists(os.path.join(run_dir, "checkpoint.pt")) and status.get("state") != FAILED:
        return "resume"
    return "fresh"


def clear_run_dir(run_dir: str) -> None:
    """Empty a run directory for a fresh start, keeping run.log (earlier attempts stay readable there) and
    status.json (the attempt count)."""
    for name in os.listdir(run_dir):
        if name in ("run.log", "status.json"):
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


def execute(command: list[str], log_path: str, env: dict, cwd: str) -> int:
    """Run a command to its end, with the variables `env` added to this process's environment and stdout and
    stderr appended to log_path; its exit code (127: it could
    not start, the reason in the log). SIGTERM or KeyboardInterrupt while waiting (a cancelled Ray task) is
    passed on to the command as SIGTERM, on which the scripts save a checkpoint. Used by the Ray backend."""
    with open_log(log_path, command) as log:
        try:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                       cwd=cwd, stdin=subprocess.DEVNULL)
        except OSError as error:
            log.write(f"cannot start: {error}\n")
            return 127
        try:
            return process.wait()
        except BaseException:
            process.terminate()
            return process.wait()


class LocalBackend:
    """Runs as child processes of this one, up to `workers` at a time."""

    def __init__(self, workers: int):
        self.workers = workers
        self.processes = {}  # key -> (Popen, log file)

    def start(self, key, command, log_path, env, cwd) -> tuple[bool, int | None]:
        """(started, pid)."""
        log = open_log(log_path, command)
        try:
            # Own session: a Ctrl-C in the terminal reaches the sweep only, which passes SIGTERM on once.
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env},
                                       cwd=cwd, stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as error:
            log.write(f"cannot start: {error}\n")
            log.close()
            return False, None
        self.processes[key] = (process, log)
        return True, process.pid

    def poll(self, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while True:
            done = [(key, p.returncode) for key, (p, _) in self.processes.items() if p.poll() is not None]
            if done or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
        for key, _ in done:
            self.processes.pop(key)[1].close()
        return done

    def terminate(self):
        for process, _ in self.processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    def kill(self):
        for process, _ in self.processes.values():
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
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        self.task = ray.remote(num_cpus=1, num_gpus=gpus_per_run, max_retries=0)(execute)
        self.workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.refs = {}  # ObjectRef -> (key, log path)

    def start(self, key, command, log_path, env, cwd) -> tuple[bool, int | None]:
        ref = self.task.remote(command, log_path, env, cwd)
        self.refs[ref] = (key, log_path)
        return True, None

    def poll(self, timeout: float) -> list:
        if not self.refs:
            time.sleep(timeout)
            return []
        ready, _ = self.ray.wait(list(self.refs), num_returns=len(self.refs), timeout=timeout)
        done = []
        for ref in ready:
            key, log_path = self.refs.pop(ref)
            try:
                done.append((key, self.ray.get(ref)))
            except Exception as error:  # the task was cancelled, or its worker died or could not start
                with open(log_path, "a") as log:
                    log.write(f"ray task ended without an exit code: {type(error).__name__}: {error}\n")
                done.append((key, -signal.SIGTERM))
        return done

    def terminate(self):
        for ref in self.refs:
            self.ray.cancel(ref)  # KeyboardInterrupt in the task: execute passes SIGTERM to the script

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
    previous = read_json(path) or {}
    entries = {r["name"]: r for r in previous.get("runs", [])}
    for run in runs:
        entries[run.name] = {"name": run.name, **dataclasses.asdict(run), "overrides": [list(p) for p in run.overrides]}
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
            print(f"{run.name}: still running in another sweep (pid in its status.json); left alone", file=stream)
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
                run, action = queue.pop(0)
                info = start_run(executor, run, out, action, threads, checkpoint_fraction)
                if info["started_ok"]:
                    running[run.name] = info
                else:
                    failures.append(finish_run(info, 127))
            if stop:
                queue.clear()
            display.update(done, running, len(failures), queue)
            for name, returncode in executor.poll(timeout=0.5):
                info = running.pop(name)
                record = finish_run(info, returncode)
                if record["state"] == FINISHED:
                    done += 1
                    if info["action"] == "fresh":  # a resumed run's time covers only part of its budget
                        display.finished.append((info["run"].config, info["run"].total_timesteps, record["seconds"]))
                    display.event(f"done    {name} in {format_duration(record['seconds'])}")
                else:
                    failures.append(record)
                    display.event(f"{record['state'].upper():7} {name}: exit code {returncode}"
                                  + (f": {record['tail'][-1]}" if record["tail"] else ""))
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
    print(f"{done}/{len(runs)} runs finished; results in {out}", file=stream, flush=True)
    return 0 if done == len(runs) else 1


def start_run(executor, run: Run, out: str, action: str, threads: int, checkpoint_fraction: float) -> dict:
    """Prepare the run directory (emptied for a fresh start), write status.json, start the command."""
    run_dir = run_dir_of(out, run)
    os.makedirs(run_dir, exist_ok=True)
    status = read_json(os.path.join(run_dir, "status.json")) or {}
    if action == "fresh":
        clear_run_dir(run_dir)
    every = int(run.total_timesteps * checkpoint_fraction) if run.total_timesteps and checkpoint_fraction else None
    command = build_command(run, run_dir, threads, every or None, resume=action == "resume")
    log_path = os.path.join(run_dir, "run.log")
    info = {"run": run, "out": out, "command": command, "action": action, "started": time.time(),
            "attempts": status.get("attempts", 0) + 1}
    write_status(info, RUNNING, None)
    info["started_ok"], pid = executor.start(run.name, command, log_path, thread_env(threads), ROOT)
    if pid is not None:
        write_status(info, RUNNING, None, pid=pid)
    return info


def write_status(info: dict, state: str, returncode: int | None, pid=None) -> None:
    run = info["run"]
    status = {"name": run.name, "config": run.config, "algo": registry.split_config(run.config)[0],
              "env_id": run.env_id, "seed": run.seed, "total_timesteps": run.total_timesteps,
              "state": state, "returncode": returncode, "action": info["action"], "attempts": info["attempts"],
              "command": shlex.join(info["command"]), "started": info["started"],
              "host": os.uname().nodename, "pid": pid}
    if state != RUNNING:
        status["seconds"] = round(time.time() - info["started"], 1)
    write_json(os.path.join(run_dir_of(info["out"], run), "status.json"), status)


def finish_run(info: dict, returncode: int) -> dict:
    run_dir = run_dir_of(info["out"], info["run"])
    state = classify(run_dir, returncode)
    write_status(info, state, returncode)
    return {"name": info["run"].name, "state": state, "returncode": returncode,
            "seconds": time.time() - info["started"], "tail": log_tail(os.path.join(run_dir, "run.log"))}


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
