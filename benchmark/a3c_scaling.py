"""How the asynchronous methods scale with their number of workers: our version of Table 2 of Mnih et al.
2016 ("Asynchronous Methods for Deep RL"), which gives the speedup over one thread at 1, 2, 4, 8 and 16
threads.

For each method and each worker count w = 1, 2, 4, ... up to --workers-max, the script's own `main` trains
for w x --steps-per-worker env steps (so every run lasts about as long) with its run files in a temporary
directory and no evaluation; the env steps/s is the "sps" of its summary (every worker's steps over the wall
time from starting the workers to the last step). speedup(w) = sps(w) / sps(1), printed beside the paper's.

The paper counts training progress per wall-clock time, so its speedup also includes any gain in data
efficiency from more workers; ours is raw throughput. Speedups past the number of cores are not expected:
workers beyond the cores wait for one. Absolute steps/s on a shared machine drift a lot; the ratios of
runs measured one after the other are what to compare.

    python -m benchmark.a3c_scaling --workers-max 2
    python -m benchmark.a3c_scaling --workers-max 16 --algo a3c_hogwild --env-id PongNoFrameskip-v4 --preset atari
"""

import argparse
import contextlib
import dataclasses
import importlib
import io
import os
import sys
import tempfile

from benchmark.common import write_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "algos"))

# Table 2 of Mnih et al. 2016: speedup over 1 thread at 1, 2, 4, 8 and 16 threads.
PAPER_THREADS = (1, 2, 4, 8, 16)
PAPER_SPEEDUP = {
    "A3C": (1.0, 2.1, 3.7, 6.9, 12.5),
    "1-step Q": (1.0, 3.0, 6.3, 13.3, 24.1),
    "1-step SARSA": (1.0, 2.8, 5.9, 13.1, 22.1),
    "n-step Q": (1.0, 2.7, 5.9, 10.7, 17.2),
}

# What --algo can select: the script in algos/ (it must have Args, PRESETS and main, and take num_workers),
# settings applied over its preset, and the paper's row to print beside it.
METHODS = {
    "a3c_hogwild": dict(script="a3c_hogwild", overrides={}, paper="A3C"),
    "async_q/one-step-q": dict(script="async_q", overrides=dict(method="one-step-q"), paper="1-step Q"),
    "async_q/one-step-sarsa": dict(script="async_q", overrides=dict(method="one-step-sarsa"), paper="1-step SARSA"),
    "async_q/n-step-q": dict(script="async_q", overrides=dict(method="n-step-q"), paper="n-step Q"),
}


def worker_counts(workers_max: int) -> list[int]:
    """1, 2, 4, ... up to workers_max, and workers_max itself when it is not a power of two."""
    counts, w = [], 1
    while w <= workers_max:
        counts.append(w)
        w *= 2
    if counts[-1] != workers_max:
        counts.append(workers_max)
    return counts


def run_args(method: str, workers: int, steps_per_worker: int, env_id: str | None, preset: str | None):
    spec = METHODS[method]
    script = importlib.import_module(spec["script"])
    base = script.PRESETS[preset] if preset else next(iter(script.PRESETS.values()))
    args = dataclasses.replace(base, num_workers=workers, total_timesteps=workers * steps_per_worker,
                               eval_episodes=0, **spec["overrides"])
    if env_id:
        args = dataclasses.replace(args, env_id=env_id)
    return script, args


def measure(method: str, workers: int, steps_per_worker: int, env_id: str | None, preset: str | None) -> dict:
    script, args = run_args(method, workers, steps_per_worker, env_id, preset)
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()):
        summary = script.main(dataclasses.replace(args, run_dir=run_dir))
    if summary.get("interrupted"):  # main turns Ctrl-C into a checkpoint and a normal return
        raise KeyboardInterrupt
    return {"method": method, "env_id": args.env_id, "workers": workers, "steps": summary["total_steps"],
            "sps": float(summary["sps"])}


def paper_speedup(method: str, workers: int) -> float | None:
    row = PAPER_SPEEDUP[METHODS[method]["paper"]]
    return row[PAPER_THREADS.index(workers)] if workers in PAPER_THREADS else None


def run(methods: list[str], workers_max: int, steps_per_worker: int, env_id: str | None = None,
        preset: str | None = None) -> list[dict]:
    results = []
    for method in methods:
        base = None
        for workers in worker_counts(workers_max):
            print(f"{method}: {workers} worker(s), {workers * steps_per_worker:,} steps", file=sys.stderr, flush=True)
            result = measure(method, workers, steps_per_worker, env_id, preset)
            base = base or result["sps"]
            result["speedup"] = result["sps"] / base
            result["paper_speedup"] = paper_speedup(method, workers)
            results.append(result)
    return results


def format_table(results: list[dict]) -> str:
    lines = [("method", "env", "workers", "steps/s", "speedup", "paper (Table 2)")]
    for r in results:
        paper = "-" if r["paper_speedup"] is None else f"{r['paper_speedup']:.1f}"
        lines.append((r["method"], r["env_id"], str(r["workers"]), f"{r['sps']:,.0f}", f"{r['speedup']:.2f}", paper))
    widths = [max(len(line[c]) for line in lines) for c in range(len(lines[0]))]
    return "\n".join("  ".join(cell.ljust(w) if c < 2 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths)))
                     for line in lines)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers-max", type=int, default=os.cpu_count(),
                        help="largest worker count measured (default: the CPU count)")
    parser.add_argument("--algo", nargs="+", choices=list(METHODS), default=list(METHODS),
                        help="methods to measure (default: all)")
    parser.add_argument("--steps-per-worker", type=int, default=20_000,
                        help="env steps of each run per worker (default 20,000)")
    parser.add_argument("--env-id", help="environment (default: the preset's; CartPole-v1 for the classic one)")
    parser.add_argument("--preset", help="the script's preset (default: its first, classic)")
    parser.add_argument("--out", help="also write the results to this JSON file")
    options = parser.parse_args(argv)
    if options.workers_max <= 0 or options.steps_per_worker <= 0:
        parser.error("--workers-max and --steps-per-worker must be positive")

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load_before = os.getloadavg()[0]
    print(f"{cores} cores; load average (1 min) {load_before:.2f}", flush=True)
    if options.workers_max > cores:
        print(f"note: above {cores} workers the workers share cores; no speedup is expected there", flush=True)
    results = run(options.algo, options.workers_max, options.steps_per_worker, options.env_id, options.preset)
    load_after = os.getloadavg()[0]
    print(format_table(results))
    print(f"load average (1 min) before / after: {load_before:.2f} / {load_after:.2f} on {cores} cores", flush=True)
    if options.out:
        report = {"cores": cores, "steps_per_worker": options.steps_per_worker, "loadavg_before": load_before,
                  "loadavg_after": load_after, "rows": results}
        write_json(options.out, report)
    return results


if __name__ == "__main__":
    main()
