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

    def estimate(self, run: Run) -> float | None:
        """Seconds a run should take: its budget at the seconds per step of the finished runs of its config, or
        their mean duration when budgets are unknown; None until a run of its config has finished (another
        config's rate can be ten times off: an off-policy env step, with its gradient step, costs about ten
        on-policy ones)."""
        pool = [f for f in self.finished if f[0] == run.config]
        timed = [(b, t) for _, b, t in pool if b]
        if run.total_timesteps and timed:
            return run.total_timesteps * sum(t for _, t in timed) / sum(b for b, _ in timed)
        if pool:
            return sum(t for _, _, t in pool) / len(pool)
        return None

    def eta(self, queued: list, running: dict) -> tuple[float | None, list[str]]:
        """The seconds left for the runs whose config has been timed, spread over the workers (None when no
        run is timed), and the configs not timed yet, whose runs that leaves out."""
        now = time.time()
        left, timed, untimed = 0.0, False, []
        for run, started in [(run, None) for run, _ in queued] + [(i["run"], i["started"]) for i in running.values()]:
            seconds = self.estimate(run)
            if seconds is None:
                if run.config not in untimed:
                    untimed.append(run.config)
                continue
            timed = True
            left += seconds if started is None else max(0.0, seconds - (now - started))
        return (left / max(1, min(self.workers, len(queued) + len(running))) if timed else None), untimed

    def line(self, done, running, failed, queued) -> str:
        eta, untimed = self.eta(queued, running) if queued or running else (0.0, [])
        if eta is not None and untimed:  # a lower bound: say what it leaves out
            eta_text = f"ETA over {format_duration(eta)} ({', '.join(untimed)} not timed yet)"
        else:
            eta_text = f"ETA {format_duration(eta)}"
        return (f"sweep: {done}/{self.total} done, {len(running)} running, {failed} failed, {len(queued)} queued, "
                f"elapsed {format_duration(time.monotonic() - self.start)}, {eta_text}")

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
