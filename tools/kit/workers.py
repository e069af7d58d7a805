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
