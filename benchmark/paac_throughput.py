"""Throughput of algos/paac.py on Breakout next to the raw throughput of its environment engine, where
the time of training goes, and the commands that reproduce the paper's Table 1 rows for Pong and Breakout.

The two speeds are measured one after the other in this process, with benchmark.throughput's functions:

- raw SPS: paac.py's own vector env (its `make_vector_env`: the engine, the preprocessing and the n_e
  envs it trains on) stepped with random actions drawn beforehand; only `envs.step` is timed.
- train SPS: paac.py's `main` on the same settings, the "sps" of its summary.

ratio = train SPS / raw SPS; 1 - ratio is what the learner costs (target: ratio >= 0.6). The two are
measured --repeats times, alternately, and the medians reported (the ratio: the median of each pair's).

--profile runs the training measurement again with timers around its phases: env stepping, the batched
forward pass that picks the n_e actions (its graph is kept: the update differentiates it, so there is no
second forward pass), the bootstrap values, backward, the optimiser step with gradient clipping, the
n-step returns, and the rest of the loop (tensor copies, the loss, episode bookkeeping, logging). Each phase gets its wall time and
the CPU time of the whole process while in it (EnvPool's threads included), the better guide on a shared
machine.

    python -m benchmark.paac_throughput                         # the default engine (EnvPool if installed)
    python -m benchmark.paac_throughput --backend gymnasium --num-workers 2 --profile
    python -m benchmark.paac_throughput --dry-run               # the Table 1 commands, not run
"""

import argparse
import contextlib
import dataclasses
import io
import os
import shlex
import sys
import tempfile
import time

import torch

from benchmark.throughput import DEFAULT_THREADS, format_table, measure_pair, start_clean

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "algos"))
import paac  # noqa: E402

ENV_ID = "BreakoutNoFrameskip-v4"

# Table 1 of Clemente et al. 2017 (arch_nips / arch_nature): the scores to compare with.
TABLE_1 = {"PongNoFrameskip-v4": {"nips": 20.6, "nature": 20.9},
           "BreakoutNoFrameskip-v4": {"nips": 470.1, "nature": 565.3}}


def table1_commands(seeds: tuple[int, ...] = (1,), out_dir: str = "runs/paac_table1") -> list[list[str]]:
    """The paac.py command lines of the paper's Table 1 rows for Pong and Breakout, both networks, at the
    paper's budget: its Atari settings (the atari preset: n_e 32, n_w 8, t_max 5, lr 0.0224 annealed to
    0) over 80M steps (320M frames), as the authors' --max_global_steps."""
    commands = []
    for env_id in TABLE_1:
        for arch in ("nips", "nature"):
            for seed in seeds:
                run_dir = f"{out_dir}/{env_id}__{arch}__{seed}"
                commands.append(["python", "algos/paac.py", "atari", "--env-id", env_id, "--arch", arch,
                                 "--seed", str(seed), "--total-timesteps", "80000000", "--save-model",
                                 "--checkpoint-every", "1000000", "--run-dir", run_dir])
    return commands


def bench_args(backend: str, num_workers: int | None, train_steps: int, threads: int | None = None) -> paac.Args:
    """The atari preset on Breakout with the chosen engine, its budget rounded to whole batches."""
    args = dataclasses.replace(paac.PRESETS["atari"], env_id=ENV_ID, env_backend=backend, eval_episodes=0,
                               threads=threads)
    if num_workers is not None:
        args = dataclasses.replace(args, num_workers=num_workers)
    batches = max(1, round(train_steps / args.batch_size))
    args = dataclasses.replace(args, total_timesteps=batches * args.batch_size)
    return dataclasses.replace(args, env_backend=paac.resolve_backend(args))


class PhaseTimer:
    """Wall and process-CPU seconds spent inside each wrapped callable, by phase name."""

    def __init__(self):
        self.wall, self.cpu, self.calls = {}, {}, {}
        self.restore = []

    def wrap(self, owner, attribute: str, phase: str) -> None:
        original = getattr(owner, attribute)

        def timed(*args, **kwargs):
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                return original(*args, **kwargs)
            finally:
                self.wall[phase] = self.wall.get(phase, 0.0) + time.perf_counter() - wall
                self.cpu[phase] = self.cpu.get(phase, 0.0) + time.process_time() - cpu
                self.calls[phase] = self.calls.get(phase, 0) + 1

        setattr(owner, attribute, timed)
        self.restore.append((owner, attribute, original))

    def undo(self) -> None:
        for owner, attribute, original in reversed(self.restore):
            setattr(owner, attribute, original)
        self.restore = []


def profile_training(args: paac.Args) -> dict:
    """Train once with timers around each phase; the phases' wall and CPU seconds and the loop's totals."""
    start_clean()
    timer = PhaseTimer()
    make_vector_env = paac.make_vector_env

    def timed_envs(*a, **k):
        envs = make_vector_env(*a, **k)
        timer.wrap(envs, "step", "env step")
        return envs

    try:
        paac.make_vector_env = timed_envs
        timer.wrap(paac.Agent, "forward", "forward (acting, graph kept)")
        timer.wrap(paac.Agent, "get_value", "inference (bootstrap values)")
        timer.wrap(torch.autograd, "backward", "backward")
        timer.wrap(torch.nn.utils, "clip_grad_norm_", "optimiser (clip + RMSProp)")
        timer.wrap(paac.RMSpropTF, "step", "optimiser (clip + RMSProp)")
        timer.wrap(paac, "nstep_returns", "n-step returns")
        with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()):
            cpu = time.process_time()
            summary = paac.main(dataclasses.replace(args, run_dir=run_dir))
            cpu = time.process_time() - cpu
    finally:
        paac.make_vector_env = make_vector_env
        timer.undo()
    loop_wall = summary["total_steps"] / summary["sps"]
    wall, cpus = dict(timer.wall), dict(timer.cpu)
    wall["other (copies, storage, logging)"] = max(0.0, loop_wall - sum(timer.wall.values()))
    cpus["other (copies, storage, logging)"] = max(0.0, cpu - sum(timer.cpu.values()))  # setup included
    return {"steps": summary["total_steps"], "sps": summary["sps"], "loop_wall": loop_wall, "cpu": cpu,
            "wall": wall, "cpu_by_phase": cpus}


def format_profile(profile: dict) -> str:
    lines = [f"profile: {profile['steps']:,} steps at {profile['sps']:,} steps/s; loop {profile['loop_wall']:.1f} s "
             f"wall, process {profile['cpu']:.1f} s CPU",
             f"{'phase':34} {'wall s':>8} {'wall %':>7} {'CPU s':>8} {'CPU %':>7} {'CPU us/step':>12}"]
    for phase, wall in sorted(profile["wall"].items(), key=lambda kv: -kv[1]):
        cpu = profile["cpu_by_phase"][phase]
        lines.append(f"{phase:34} {wall:8.2f} {100 * wall / profile['loop_wall']:6.1f}% {cpu:8.2f} "
                     f"{100 * cpu / profile['cpu']:6.1f}% {1e6 * cpu / profile['steps']:12.1f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["auto", "gymnasium", "envpool"], default="auto",
                        help="the environment engine (default auto: EnvPool when installed)")
    parser.add_argument("--num-workers", type=int, help="n_w (default: the atari preset's 8)")
    parser.add_argument("--threads", type=int, help="torch threads of the learner (default: paac.py's, all cores)")
    parser.add_argument("--train-steps", type=int, default=20_480, help="env steps of training (default 20,480)")
    parser.add_argument("--raw-steps", type=int, default=16_000, help="env steps of the raw measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measure raw and training speeds this many times, alternately; report the medians (default 3)")
    parser.add_argument("--profile", action="store_true", help="also train once more with timers on each phase")
    parser.add_argument("--dry-run", action="store_true", help="print the Table 1 commands and exit")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1], help="seeds of the Table 1 commands")
    options = parser.parse_args(argv)
    if options.dry_run:
        for command in table1_commands(tuple(options.seeds)):
            print(shlex.join(command))
        return {"commands": table1_commands(tuple(options.seeds))}
    if min(options.train_steps, options.raw_steps, options.repeats) <= 0:
        parser.error("--train-steps, --raw-steps and --repeats must be positive")

    args = bench_args(options.backend, options.num_workers, options.train_steps, options.threads)
    versions = paac.package_versions()
    print(f"torch {versions['torch']}, envpool {versions.get('envpool', 'not installed')}, {os.cpu_count()} CPUs, "
          f"torch threads {DEFAULT_THREADS}, load average {os.getloadavg()[0]:.2f}", flush=True)
    vector_steps = max(10, options.raw_steps // args.num_envs)
    raw, train, ratio = measure_pair(paac, args, vector_steps, options.repeats)
    config = f"paac {args.num_envs}x{args.num_steps}, n_w {args.num_workers}, {args.arch}, threads {args.threads or DEFAULT_THREADS}"
    result = {"env_id": ENV_ID, "backend": args.env_backend, "config": config, "raw_steps": vector_steps * args.num_envs,
              "train_steps": args.total_timesteps, "raw_sps": raw, "train_sps": train, "ratio": ratio,
              "repeats": options.repeats}
    print(format_table([result]))
    print(f"learner cost 1 - ratio = {1 - result['ratio']:.2f} (target <= 0.40); "
          f"load average after: {os.getloadavg()[0]:.2f}", flush=True)
    if options.profile:
        result["profile"] = profile_training(args)
        print(format_profile(result["profile"]), flush=True)
    return result


if __name__ == "__main__":
    main()
