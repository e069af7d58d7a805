"""The files of a sweep directory: run directories, their status files and locks, and sweep.json.

    OUT/sweep.json               the runs of the sweep (config, env, seed, budget, published number)
    OUT/sweep.lock               locked (flock) while a sweep merges its runs into sweep.json
    OUT/runs/<run>/              one run directory per run, written by the script (run contract)
    OUT/runs/<run>/run.log       the script's stdout and stderr, every attempt appended
    OUT/runs/<run>/status.json   the runner's record: state, exit code, command, attempts
    OUT/runs/<run>/run.lock      locked (flock) while a process executes the run

A run is finished once its summary.json is written (and does not say interrupted); an interrupted one
resumes from its checkpoint; a failed or unstarted one starts afresh. Every file written here goes through
a temporary file and a rename.

One run directory has one owner at a time: the process that executes the run holds an exclusive flock on
its run.lock for as long as the run's command lives, and only that process empties the directory or writes
its status.json. Several sweeps (or Slurm array tasks) may therefore share an OUT: the plan made at the
start is only a forecast, and the owner decides again under the lock (claim), just before the command
starts, so a run another sweep finished in the meantime is skipped, never emptied or run again, and a run
another process holds is left to it ("running elsewhere"). A lock, not a PID in status.json: the kernel
drops it when the last process holding it exits, however it died, while a PID can be a zombie or reused.
Which process holds it on each backend: see execute.py. On a shared file system the lock must reach every
node: NFS does (flock is emulated with NFS locks), Lustre needs the `flock` mount option.
"""

import dataclasses
import fcntl
import os
import shutil
import time

from benchmark.common import read_json, write_json

FINISHED, INTERRUPTED, FAILED, RUNNING = "finished", "interrupted", "failed", "running"


def run_dir_of(out: str, run) -> str:
    return os.path.join(out, "runs", run.name)


def record_sweep(out: str, runs: list, suite: str | None) -> None:
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


# --------------------------------------------------------------------------------------------------
# A run's state
# --------------------------------------------------------------------------------------------------


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


def next_action(run_dir: str, holding_lock: bool = False) -> str:
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
# The owner's writes: claim, status.json, end
# --------------------------------------------------------------------------------------------------


def clear_run_dir(run_dir: str) -> None:
    """Empty a run directory for a fresh start, keeping run.log (earlier attempts stay readable there),
    status.json (the attempt count) and run.lock (deleting a locked file would let a second owner lock a new
    one)."""
    for name in os.listdir(run_dir):
        if name in ("run.log", "status.json", "run.lock"):
            continue
        path = os.path.join(run_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)


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
    action = next_action(run_dir, holding_lock=True)
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


def settle(run_dir: str, returncode: int) -> dict:
    """The outcome of a run whose executor lost track of it (a Ray task cancelled, or whose worker died): when
    its lock is free and its status.json still says running, the end is recorded here; otherwise status.json
    is reported as it is, or "busy" while its command (or another sweep) still holds the lock."""
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
