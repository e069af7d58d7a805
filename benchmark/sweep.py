"""Run a sweep of (config, env, seed) runs of the scripts in algos/, or print what it would run.

The runs and their commands come from plan.py; the sweep directory's files (run directories, status.json,
run.lock, sweep.json) from status.py; the processes or Ray tasks from execute.py; the status line and the
failure table from progress.py. A rerun of the same command skips finished runs (summary.json written),
resumes interrupted ones from their checkpoint (`--resume`) and starts failed or unstarted ones afresh.
Each run is planned at the start, and decided again under its lock just before it starts (status.claim),
so several sweeps may share an OUT.
"""

import os
import shlex
import signal
import sys
import time

from benchmark import execute, plan, progress, registry, status
from benchmark.common import read_json


def sweep(runs: list[plan.Run], out: str, workers: int | None = None, backend: str = "local",
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
    status.record_sweep(out, runs, suite)
    if only is not None:
        if any(not 0 <= i < len(runs) for i in only):
            raise ValueError(f"--index must be in 0..{len(runs) - 1}")
        runs = [runs[i] for i in only]

    if backend == "ray":
        executor = execute.RayBackend(ray_address, ray_gpus)
        workers, threads = min(workers or executor.workers, executor.workers), 1
    else:
        workers, threads = execute.local_shares(workers)
        executor = execute.LocalBackend(workers)

    queue, skipped, busy = [], 0, 0
    for run in runs:
        action = status.next_action(status.run_dir_of(out, run))
        if action == "skip":
            skipped += 1
            before = (read_json(os.path.join(status.run_dir_of(out, run), "status.json")) or {}).get("total_timesteps")
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

    display = progress.Display(len(runs), workers, stream, status_every)
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
            # A run with worker processes takes as many cores; the first run of the queue always starts on
            # an idle machine, even one with fewer cores than it asks for.
            while queue and not stop and (not running or busy_cores(running) + queue[0][0].processes <= workers):
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
                elif outcome["state"] == status.FINISHED:
                    done += 1
                    if outcome["action"] == "fresh":  # a resumed run's time covers only part of its budget
                        display.finished.append((run.config, run.total_timesteps, outcome["seconds"]))
                    display.event(f"done    {name} in {progress.format_duration(outcome['seconds'])}")
                else:
                    tail = status.log_tail(os.path.join(status.run_dir_of(out, run), "run.log"))
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
        print(progress.failure_table(failures), file=stream)
    if stop:
        print(f"stopped by signal: {not_run} run(s) not started; rerun the same command to continue", file=stream)
    busy_note = f", {busy} running elsewhere" if busy else ""
    print(f"{done}/{len(runs)} runs finished{busy_note}; results in {out}", file=stream, flush=True)
    return 0 if done == len(runs) else 1


def busy_cores(running: dict) -> int:
    return sum(info["run"].processes for info in running.values())


def start_run(executor, run: plan.Run, out: str, threads: int, checkpoint_fraction: float) -> dict:
    """Hand the run to the executor, which claims it (see status.claim) and starts its command; its entry in
    the sweep's running runs."""
    run_dir = status.run_dir_of(out, run)
    os.makedirs(run_dir, exist_ok=True)
    command = plan.build_command(run, run_dir, threads, plan.checkpoint_every(run, checkpoint_fraction))
    description = {"name": run.name, "config": run.config, "algo": registry.split_config(run.config)[0],
                   "env_id": run.env_id, "seed": run.seed, "total_timesteps": run.total_timesteps,
                   "command": shlex.join(command)}
    executor.start(run.name, run_dir, command, description, execute.thread_env(threads), plan.ROOT)
    return {"run": run, "started": time.time()}


def dry_run(runs: list[plan.Run], out: str, workers: int | None = None, backend: str = "local",
            checkpoint_fraction: float = 0.1, stream=None) -> int:
    """Print the command of every run, each after what a rerun of the sweep would do with it (fresh, resume,
    skip or busy) and the paper's number; nothing is written."""
    stream = stream or sys.stdout
    out = os.path.abspath(out)
    threads = 1 if backend == "ray" else execute.local_shares(workers)[1]
    for run in runs:
        run_dir = status.run_dir_of(out, run)
        action = status.next_action(run_dir) if os.path.isdir(run_dir) else "fresh"
        command = plan.build_command(run, run_dir, threads, plan.checkpoint_every(run, checkpoint_fraction),
                                     resume=action == "resume")
        print(f"# {run.name}: {action}" + (f" (paper: {run.reference:g})" if run.reference is not None else ""),
              file=stream)
        print(shlex.join(command), file=stream)
    print(f"# {len(runs)} runs into {out}", file=stream)
    return 0
