"""Sweeps of the scripts in algos/ over seeds and environments, the papers' tables as suites, and reports.

    python -m benchmark run --algo ppo a2c_atari --env CartPole-v1 Acrobot-v1 --seeds 1 2 3 --out sweeps/mine
    python -m benchmark run --suite classic                      # the suite run on every change (< 1 h, 2 cores)
    python -m benchmark run --suite ppo-table6 --budget-scale 0.01 --dry-run
    python -m benchmark run --suite td3-table1 --backend ray --ray-address auto --out /shared/td3
    python -m benchmark run --suite td3-table1 --out /shared/td3 --slurm > td3.sbatch   # a Slurm job array
    python -m benchmark suites                                   # list the suites
    python -m benchmark report sweeps/classic                    # tables, curves and a CSV of every run
    python -m benchmark throughput --only cartpole               # training vs raw env steps/s (throughput.py)
    python -m benchmark peers --only ppo-cartpole                # ours against Stable-Baselines3 (peers.py)
"""

import argparse
import os
import sys

from benchmark import execute, plan, registry, suites, sweep


def run_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("run", help="run a sweep (or print its commands with --dry-run)",
                       description="Run every (algo, env, seed) combination, or a suite. A rerun of the same "
                                   "command skips finished runs, resumes interrupted ones and retries failed ones.")
    p.add_argument("--suite", choices=list(suites.SUITES),
                   help="run a suite; --algo, --env and --seeds then select part of it")
    variants = ", ".join(f"{algo}:{'|'.join(script.variants)}" for algo, script in registry.SCRIPTS.items()
                         if script.variants)
    p.add_argument("--algo", nargs="+", metavar="CONFIG",
                   help=f"scripts ({', '.join(registry.SCRIPTS)}) or script:variant ({variants})")
    p.add_argument("--env", nargs="+", metavar="ENV_ID", help="gymnasium env ids")
    p.add_argument("--seeds", nargs="+", type=int, help="seeds (default 1 2 3, or the suite's)")
    p.add_argument("--total-timesteps", type=int,
                   help="env steps per run (default: the suite's budget, or the script's)")
    p.add_argument("--budget-scale", type=float, default=1.0, help="multiply the suite's budgets by this (default 1)")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE",
                   help="extra script flags for every run, e.g. learning_rate=1e-4 anneal=false eval_episodes=0")
    p.add_argument("--workers", type=int, help="runs at a time (default: the number of cores); each gets "
                                              "cores / workers torch and OpenMP threads")
    p.add_argument("--checkpoint-fraction", type=float, default=0.1,
                   help="runs checkpoint every this fraction of their budget, so a killed sweep resumes them "
                        "(default 0.1; 0: only on SIGINT/SIGTERM)")
    p.add_argument("--out", help="the sweep directory (default sweeps/SUITE, or sweeps/custom)")
    p.add_argument("--dry-run", action="store_true", help="print the commands (and what a rerun would do) only")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local processes, or Ray tasks of one CPU each (pip install ray)")
    p.add_argument("--ray-address", help="the Ray cluster (e.g. auto, or ray://HOST:10001); default: a local instance")
    p.add_argument("--ray-gpus", type=float, default=0.0, help="GPUs (a fraction is fine) per Ray task (default 0)")
    p.add_argument("--slurm", action="store_true",
                   help="print an sbatch array script (one task per run, each through this runner) instead of running")
    p.add_argument("--index", type=int, nargs="+", help="run only the runs at these positions (0-based) of the sweep")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run_parser(sub)
    sub.add_parser("suites", help="list the suites")
    rp = sub.add_parser("report", help="aggregate a sweep: Markdown table, learning curves, CSV of every run")
    rp.add_argument("dir", help="a sweep directory (or any folder of run directories)")
    rp.add_argument("--out", help="where to write the report (default DIR/report)")
    rp.add_argument("--last", type=int, help="final return = mean of the last N training episodes (default: the "
                                             "suite's, 100 for ppo-table6, else 20)")
    rp.add_argument("--no-plots", action="store_true", help="tables and CSV only")
    sub.add_parser("throughput", help="training vs raw env steps/s of the scripts (benchmark/throughput.py)",
                   add_help=False)
    sub.add_parser("peers", help="our scripts against Stable-Baselines3, side by side (benchmark/peers.py)",
                   add_help=False)

    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["throughput"]:
        from benchmark import throughput  # imports torch and the scripts: only when asked for

        throughput.main(argv[1:])
        return 0
    if argv[:1] == ["peers"]:
        from benchmark import peers  # imports torch, the scripts and Stable-Baselines3: only when asked for

        return peers.main(argv[1:])
    options = parser.parse_args(argv)

    if options.command == "suites":
        for suite in suites.SUITES.values():
            runs = plan.suite_runs(suite)
            print(f"{suite.name:12} {len(runs):4} runs, {sum(r.total_timesteps for r in runs) / 1e6:,.1f}M steps: "
                  f"{suite.description}")
        return 0
    if options.command == "report":
        from benchmark import report  # matplotlib and scipy: only when asked for

        print(report.main(options.dir, options.out, options.last, plots=not options.no_plots))
        return 0
    return run_command(parser, options, argv)


def run_command(parser, options, argv: list[str]) -> int:
    try:
        overrides = plan.parse_overrides(options.set)
        if options.suite:
            runs = plan.suite_runs(suites.SUITES[options.suite], options.budget_scale, options.seeds, options.algo,
                                   options.env, options.total_timesteps, overrides)
            if not runs:
                parser.error(f"--algo/--env select no run of suite {options.suite}")
        else:
            if not options.algo or not options.env:
                parser.error("name --algo and --env, or a --suite")
            runs = plan.expand(options.algo, options.env, options.seeds or [1, 2, 3], options.total_timesteps,
                               overrides)
            runs = [plan.attach_reference(run) for run in runs]
        for run in runs:
            registry.split_config(run.config)
    except ValueError as error:
        parser.error(str(error))
    if options.budget_scale <= 0 or (options.workers is not None and options.workers < 1):
        parser.error("--budget-scale and --workers must be positive")
    out = options.out or os.path.join("sweeps", options.suite or "custom")

    if options.slurm:
        if options.backend != "local" or options.index:
            parser.error("--slurm writes a script for the local backend, without --index")
        kept, skip = [], False
        for arg in argv:  # the same sweep, minus what the script sets itself
            if skip:
                skip = False
            elif arg in ("--out", "--workers"):
                skip = True
            elif arg != "--slurm" and not arg.startswith(("--out=", "--workers=")):
                kept.append(arg)
        print(execute.slurm_script(kept, os.path.abspath(out), len(runs), max(run.processes for run in runs)), end="")
        return 0
    if options.dry_run:
        return sweep.dry_run(runs, out, options.workers, options.backend, options.checkpoint_fraction)
    try:
        return sweep.sweep(runs, out, options.workers, options.backend, options.ray_address, options.ray_gpus,
                           options.checkpoint_fraction, options.suite, only=options.index)
    except ValueError as error:
        parser.error(str(error))


if __name__ == "__main__":
    sys.exit(main())
