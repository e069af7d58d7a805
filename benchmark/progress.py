"""What a sweep shows while and after it runs: a status line with an ETA, events as runs end, and the table
of the runs that did not finish."""

import sys
import time

from benchmark.plan import Run


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
