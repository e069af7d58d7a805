"""The executors: start a run's command with its log file and report which runs have ended. LocalBackend
runs child processes of the sweep, RayBackend Ray tasks of one CPU each; slurm_script prints an sbatch array
whose tasks are local sweeps of one run each.

Every executor claims a run (status.claim) before its command starts, and the process that claimed it holds
its run.lock for as long as the command lives:
- local backend (and each Slurm array task, which is a local sweep of one run): the sweep process takes it
  and the run's command inherits the descriptor, so the lock lives as long as either of them does (a
  killed sweep's orphaned run still holds it);
- Ray backend: the task, on the node that runs the command, which inherits it the same way.
"""

import os
import shlex
import signal
import subprocess
import sys
import time

from benchmark.common import write_json
from benchmark.plan import ROOT
from benchmark.status import claim, end_run, settle, write_status


def core_count() -> int:
    """The cores this process may run on (a Slurm or container allocation), else the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def local_shares(workers: int | None) -> tuple[int, int]:
    """(runs at a time, torch and OpenMP threads each) for local runs: `workers` (default: one per core)
    sharing this process's cores."""
    cores = core_count()
    workers = workers or cores
    return workers, max(1, cores // workers)


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
    """A Ray task: claim the run (see status.claim), run its command to its end (start_command), record the
    end and release the lock; the status, or {"action": "busy" or "skip"} when it did not run. SIGTERM or
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
        # The task's code travels with it (this module's, status.py's and common.py's), so the workers need
        # Python and the scripts, not this package.
        for function in (execute_run, claim, write_json):
            ray.cloudpickle.register_pickle_by_value(sys.modules[function.__module__])
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


def slurm_script(argv: list[str], out: str, count: int, cpus: int = 1, python: str = sys.executable) -> str:
    """An sbatch array script of `count` tasks, task i running run i of this same sweep through the runner
    (`--index i --workers 1`): skipping, resuming, status files and logs as in a local sweep. Every task asks
    for `cpus` cores, the most any run keeps busy (its worker processes). Resubmit it to retry what failed;
    `python -m benchmark report OUT` afterwards."""
    command = shlex.join([python, "-m", "benchmark", *argv, "--out", out, "--workers", "1"])
    return "\n".join([
        "#!/bin/bash",
        f"#SBATCH --job-name=benchmark-{os.path.basename(out)}",
        f"#SBATCH --array=0-{count - 1}",
        f"#SBATCH --cpus-per-task={cpus}",
        "#SBATCH --output=benchmark-%A_%a.out",  # Slurm's own messages; each run logs to its run.log
        f"cd {shlex.quote(ROOT)}",
        f'{command} --index "$SLURM_ARRAY_TASK_ID"',
        "",
    ])
