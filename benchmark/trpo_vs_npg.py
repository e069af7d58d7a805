"""TRPO against the natural policy gradient (NPG) on the same seeds: algos/trpo.py with and without its
line search, everything else equal.

NPG takes the step sqrt(2 delta / s^T H s) s, which puts the *quadratic model* of the KL on the bound
delta; the true mean KL of the new policy can land above it. TRPO backtracks along the same step until
the surrogate improves with the true KL <= delta. For each run this prints the final return (the mean of
the last 20 training episodes, and the final evaluation), the fraction of updates whose mean KL broke the
bound, the mean KL reached, and (TRPO) the fraction of updates whose line search found no acceptable step.

    python -m benchmark.trpo_vs_npg                                   # Hopper-v5, 3 seeds, 300k steps each
    python -m benchmark.trpo_vs_npg --preset classic --env-id CartPole-v1 --total-timesteps 100000
    python -m benchmark.trpo_vs_npg --preset classic --env-id CartPole-v1 --cg-damping 0.001
    python -m benchmark.trpo_vs_npg --dry-run                         # print the runs' command lines
"""

import argparse
import contextlib
import csv
import dataclasses
import io
import os
import shlex
import sys
import tempfile
import traceback

import numpy as np

from benchmark.common import write_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "algos"))
import trpo  # noqa: E402

VARIANTS = {"trpo": True, "npg": False}  # variant name -> line_search


def run_args(variant: str, preset: str, env_id: str, seed: int, total_timesteps: int, eval_episodes: int,
             **overrides) -> trpo.Args:
    """The settings of one run: the preset's, with the variant's line search, this seed and budget, and any
    other overrides (max_kl, cg_damping)."""
    return dataclasses.replace(trpo.PRESETS[preset], env_id=env_id, seed=seed, total_timesteps=total_timesteps,
                               line_search=VARIANTS[variant], eval_episodes=eval_episodes,
                               exp_name=f"trpo_vs_npg_{variant}", **overrides)


def command_line(args: trpo.Args) -> str:
    """The shell command that repeats a run of run_args."""
    flags = [args.preset, "--env-id", args.env_id, "--seed", str(args.seed),
             "--total-timesteps", str(args.total_timesteps), "--eval-episodes", str(args.eval_episodes),
             "--exp-name", args.exp_name, "--max-kl", str(args.max_kl), "--cg-damping", str(args.cg_damping)]
    flags += [] if args.line_search else ["--no-line-search"]
    return shlex.join(["python", "algos/trpo.py", *flags])


def last_episodes_mean(run_dir: str, n: int = 20) -> float:
    with open(os.path.join(run_dir, "episodes.csv"), newline="") as f:
        returns = [float(row["episodic_return"]) for row in csv.DictReader(f)]
    return float(np.mean(returns[-n:])) if returns else float("nan")


def run_one(args: trpo.Args) -> dict:
    """Train one run in a temporary directory; a failure is returned as an error, never dropped."""
    result = {"variant": "trpo" if args.line_search else "npg", "seed": args.seed, "env_id": args.env_id}
    try:
        with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()):
            summary = trpo.main(dataclasses.replace(args, run_dir=run_dir))
            if summary.get("interrupted"):
                raise KeyboardInterrupt
            last20 = last_episodes_mean(run_dir)
    except KeyboardInterrupt:
        raise
    except Exception as error:  # reported in the table and the JSON
        return {**result, "error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()}
    updates = summary["updates"]
    count = max(updates["count"], 1)
    return {**result, "total_steps": summary["total_steps"], "last20_return": last20,
            "eval_return": summary.get("eval", {}).get("mean_return", float("nan")),
            "updates": updates["count"], "kl_broken_fraction": updates["kl_above_max_kl"] / count,
            "rejected_fraction": updates["line_search_rejected"] / count, "mean_kl": updates["mean_kl"],
            "max_kl": args.max_kl}


def format_table(results: list[dict]) -> str:
    header = ("variant", "seed", "last-20 return", "eval return", "updates", "KL > delta", "no step taken", "mean KL")
    lines = [header]
    for r in results:
        if "error" in r:
            lines.append((r["variant"], str(r["seed"]), "failed", "-", "-", "-", "-", "-"))
            continue
        lines.append((r["variant"], str(r["seed"]), f"{r['last20_return']:.1f}", f"{r['eval_return']:.1f}",
                      str(r["updates"]), f"{r['kl_broken_fraction']:.1%}", f"{r['rejected_fraction']:.1%}",
                      f"{r['mean_kl']:.4f}"))
    for variant in VARIANTS:
        done = [r for r in results if r["variant"] == variant and "error" not in r]
        if done:
            lines.append((variant, "mean", f"{np.mean([r['last20_return'] for r in done]):.1f}",
                          f"{np.mean([r['eval_return'] for r in done]):.1f}", "",
                          f"{np.mean([r['kl_broken_fraction'] for r in done]):.1%}",
                          f"{np.mean([r['rejected_fraction'] for r in done]):.1%}",
                          f"{np.mean([r['mean_kl'] for r in done]):.4f}"))
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    text = ["  ".join(cell.rjust(w) if c > 1 else cell.ljust(w) for c, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    text += [f"note: {r['variant']} seed {r['seed']} failed: {r['error']}" for r in results if "error" in r]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=list(trpo.PRESETS), default="mujoco", help="trpo.py preset (default mujoco)")
    parser.add_argument("--env-id", default="Hopper-v5", help="environment (default Hopper-v5)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="seeds, each run by both variants")
    parser.add_argument("--total-timesteps", type=int, default=300_000, help="env steps per run (default 300000)")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes of each run's final evaluation")
    parser.add_argument("--max-kl", type=float, help="delta (default: the preset's)")
    parser.add_argument("--cg-damping", type=float,
                        help="Fisher damping (default: the preset's); with less, NPG's full step overshoots delta more often")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--dry-run", action="store_true", help="print the runs' command lines and stop")
    options = parser.parse_args(argv)
    if options.total_timesteps <= 0 or options.eval_episodes < 0:
        parser.error("--total-timesteps must be positive and --eval-episodes non-negative")

    overrides = {name: value for name, value in (("max_kl", options.max_kl), ("cg_damping", options.cg_damping))
                 if value is not None}
    runs = [run_args(variant, options.preset, options.env_id, seed, options.total_timesteps, options.eval_episodes,
                     **overrides) for seed in options.seeds for variant in VARIANTS]
    if options.dry_run:
        print("\n".join(command_line(args) for args in runs))
        return []
    for args in runs:  # bad settings fail here, before any training
        trpo.check_args(args)
        trpo.check_env_id(args.env_id)
    results = []
    for i, args in enumerate(runs):
        print(f"[{i + 1}/{len(runs)}] {command_line(args)}", file=sys.stderr, flush=True)
        results.append(run_one(args))
    print(f"{options.env_id}, preset {options.preset}, {options.total_timesteps:,} steps per run, "
          f"delta {runs[0].max_kl}, damping {runs[0].cg_damping}")
    print(format_table(results))
    if options.out:
        report = {"versions": trpo.package_versions(), "preset": options.preset, "env_id": options.env_id,
                  "total_timesteps": options.total_timesteps, "runs": results}
        write_json(options.out, report)
    return results


if __name__ == "__main__":
    main()
