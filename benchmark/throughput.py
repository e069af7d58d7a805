"""Training throughput of the scripts in algos/ next to the raw throughput of their envs.

For each row, two numbers are measured one after the other in this process:

- raw SPS: the vector env built exactly as the script builds it (its `make_vector_env`, same wrappers, same
  backend, same number of envs), reset, then stepped with random actions drawn beforehand with numpy, so
  that only `envs.step` is timed. SPS = num_envs x steps / seconds.
- train SPS: the script's `main` itself on the same settings (no evaluation, run files in a temporary directory),
  the "sps" of its summary: env steps over the wall time of the training loop (acting, env stepping,
  GAE, the updates and the logging; setup excluded, as in the raw measurement). For the off-policy scripts
  (ddpg.py, td3.py, sac.py), which act randomly for --learning-starts steps and then update once per env step, it
  is their "learning_sps": env steps/s from the first update on, the figure that compares them with other
  implementations; the row's training budget counts those steps only.

ratio = train SPS / raw SPS is the share of the env's own speed that training keeps; 1 - ratio is what
the agent costs. Absolute steps/s on a small shared machine drift by tens of percent between runs, so
the numbers we quote are the ratios, measured side by side in one run.

For the off-policy rows and the Atari rows, the distance of the update from the machine's limit
(measure_update, with benchmark/flops.py), on the row's thread count:

- update GFLOP/s: the matmul and convolution FLOPs of one update over its time. One update is what the script's
  own update() does, called directly on random inputs of the row's shapes, with the script's networks and
  optimisers made from the row's Args as its main() makes them: an on-policy row's whole update of one rollout
  (every epoch and minibatch, and the pass over the batch after them; TRPO's policy gradient, conjugate
  gradient, line search and value fit), an off-policy row's gradient step (critic, actor and targets; TD3's
  actor and targets move on every second call, so its figures are the mean over that cycle of two calls).
  The FLOPs are counted by torch.utils.flop_counter.FlopCounterMode: 2 m n k for each mm, addmm, bmm and
  baddbmm, 2 x output elements x input channels x kernel size for each convolution, forward and backward (only
  the gradients autograd computes: none for the input of a first layer) and the double backward of TRPO's
  Fisher-vector products alike. Not counted: elementwise ops, reductions, softmax, the optimiser's step, the
  Polyak averaging, copies; their time is in the update's time, though. Env stepping and acting are not part
  of it. Timed: the median of several calls after a warm-up, each from the same copied state, batch and seed.
- peak GFLOP/s: the same matmul and convolution calls (the same aten ops on the same shapes and strides,
  recorded while counting) made again back to back, on random tensors: the speed this machine reaches on the
  update's own mix of shapes, measured here, not a vendor's peak.
- share = update / peak: how close the update comes to that limit; the rest of its time goes to what is not
  counted (elementwise ops, the optimiser, Python and autograd's own work).

The JSON keeps per row the FLOPs per update() call (update_flops; update_calls the calls they are the mean
over), the FLOPs of each op (update_flops_by_op) and how many times each op ran on each shape (update_ops).

Rows: PPO on CartPole-v1 with the defaults of CleanRL's ppo.py (4 envs x 128 steps, minibatch 128,
4 epochs) and with ppo.py's classic preset; A2C on CartPole-v1 (classic preset); PPO and A2C on Breakout
with their atari presets on the gymnasium and EnvPool backends (EnvPool rows are skipped, with a note,
when envpool is not installed); TRPO on CartPole-v1 (classic preset), Hopper-v5 (mujoco preset) and
Breakout (atari preset); DDPG and TD3 on Hopper-v5 with each preset, 1,000 random steps first; SAC on
Hopper-v5 with the paper's settings, learning from the first step (--learning-starts 0). The off-policy rows
with the settings of the implementation the team timed here run twice, on torch's default thread count and
on one thread, so the effect of the thread count is measured side by side.

    python -m benchmark.throughput                     # every row, about 25 minutes on 2 cores (estimated)
    python -m benchmark.throughput --only cartpole --steps-scale 0.2 --out throughput.json
"""

import argparse
import contextlib
import copy
import dataclasses
import gc
import io
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np
import torch

from benchmark import flops
from benchmark.common import write_json

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "algos"))
import a2c_atari  # noqa: E402
import ddpg  # noqa: E402
import ppo  # noqa: E402
import sac  # noqa: E402
import td3  # noqa: E402
import trpo  # noqa: E402

SCRIPTS = {"ppo": ppo, "a2c": a2c_atari, "trpo": trpo, "ddpg": ddpg, "td3": td3, "sac": sac}

# ppo.main sets torch's thread count (1 for vector observations, the current count for images) and leaves
# it set; restoring the count of a fresh process before each measurement keeps one row from slowing another.
DEFAULT_THREADS = torch.get_num_threads()


def threads_label(threads: int | None) -> str:
    return "torch's default threads" if threads is None else f"{threads} torch thread" + "s" * (threads > 1)


@dataclass(frozen=True)
class Row:
    algo: str  # a key of SCRIPTS
    group: str  # what --only selects
    env_id: str
    preset: str
    label: str
    train_steps: int  # env steps of training at --steps-scale 1 (rounded to whole batches; off-policy: after learning starts)
    raw_steps: int  # env steps of the raw measurement at --steps-scale 1 (summed over the envs)
    overrides: dict = field(default_factory=dict)


ROWS = [
    Row("ppo", "cartpole", "CartPole-v1", "classic", "CleanRL ppo.py defaults, mb 128, 4 epochs", 100_000, 150_000,
        dict(num_envs=4, num_steps=128, minibatch_size=128, update_epochs=4)),
    Row("ppo", "cartpole", "CartPole-v1", "classic", "classic preset, mb 64, 10 epochs", 100_000, 150_000),
    Row("a2c", "cartpole", "CartPole-v1", "classic", "classic preset", 100_000, 150_000),
    Row("ppo", "atari", "BreakoutNoFrameskip-v4", "atari", "atari preset, mb 256, 3 epochs", 30_720, 8_000),
    Row("ppo", "atari", "BreakoutNoFrameskip-v4", "atari", "atari preset, mb 256, 3 epochs", 30_720, 8_000,
        dict(env_backend="envpool")),
    Row("a2c", "atari", "BreakoutNoFrameskip-v4", "atari", "atari preset", 30_720, 8_000),
    Row("a2c", "atari", "BreakoutNoFrameskip-v4", "atari", "atari preset", 30_720, 8_000, dict(env_backend="envpool")),
    Row("trpo", "cartpole", "CartPole-v1", "classic", "classic preset, 32-32", 100_000, 150_000),
    Row("trpo", "mujoco", "Hopper-v5", "mujoco", "mujoco preset, 32-32, obs normalised", 30_720, 30_000),
    Row("trpo", "atari", "BreakoutNoFrameskip-v4", "atari", "atari preset, delta 0.001", 30_720, 8_000),
    # Off-policy rows: 1,000 random steps first (sac: none), then one update per env step. Each runs on torch's
    # default thread count and again on one thread; the rows marked "sizes of the team's reference figures" use the
    # networks and batch of the single-file implementation the team timed here (SAC 74, TD3 118, DDPG 161
    # steps/s; its DDPG updates the actor every second step, ours at every step).
    *(Row("sac", "mujoco", "Hopper-v5", "mujoco", f"paper settings (256-256, batch 256), sizes of the team's "
          f"reference figures, learning from step 1, {threads_label(threads)}", 3_000, 20_000,
          dict(learning_starts=0, eval_every=0, threads=threads)) for threads in (None, 1)),
    Row("ddpg", "mujoco", "Hopper-v5", "paper", "paper preset, 400-300, batch 64", 5_000, 20_000,
        dict(learning_starts=1_000)),
    Row("ddpg", "mujoco", "Hopper-v5", "our-ddpg", "our-ddpg preset, 400-300, batch 100", 5_000, 20_000,
        dict(learning_starts=1_000)),
    *(Row("ddpg", "mujoco", "Hopper-v5", "our-ddpg", f"our-ddpg with 256-256, batch 256, lr 3e-4, sizes of the team's "
          f"reference figures, {threads_label(threads)}", 5_000, 20_000,
          dict(learning_starts=1_000, hidden_sizes=(256, 256), batch_size=256, learning_rate=3e-4,
               actor_learning_rate=3e-4, threads=threads)) for threads in (None, 1)),
    Row("td3", "mujoco", "Hopper-v5", "paper", "paper preset, 400-300, batch 100", 5_000, 20_000,
        dict(learning_starts=1_000)),
    *(Row("td3", "mujoco", "Hopper-v5", "authors", f"authors preset (256-256, batch 256), sizes of the team's "
          f"reference figures, {threads_label(threads)}", 5_000, 20_000, dict(learning_starts=1_000, threads=threads))
      for threads in (None, 1)),
    # --bf16, the opt-in reduced precision, beside the float32 rows above on one thread
    Row("ddpg", "mujoco", "Hopper-v5", "our-ddpg", "our-ddpg with 256-256, batch 256, lr 3e-4, --bf16, 1 thread",
        5_000, 20_000, dict(learning_starts=1_000, hidden_sizes=(256, 256), batch_size=256, learning_rate=3e-4,
                            actor_learning_rate=3e-4, threads=1, bf16=True)),
    Row("td3", "mujoco", "Hopper-v5", "authors", "authors preset (256-256, batch 256), --bf16, 1 thread", 5_000, 20_000,
        dict(learning_starts=1_000, threads=1, bf16=True)),
]


def off_policy(args) -> bool:
    """Whether the script learns from a replay buffer after --learning-starts random steps (ddpg, td3, sac)."""
    return hasattr(args, "learning_starts")


def row_args(row: Row, steps_scale: float):
    """The script's settings of a row, with its training budget scaled and rounded to whole rollouts."""
    script = SCRIPTS[row.algo]
    args = dataclasses.replace(script.PRESETS[row.preset], env_id=row.env_id, eval_episodes=0, **row.overrides)
    if off_policy(args):
        steps = max(1, round(row.train_steps * steps_scale))
        return dataclasses.replace(args, eval_every=0, total_timesteps=args.learning_starts + steps)
    batches = max(1, round(row.train_steps * steps_scale / args.batch_size))
    return dataclasses.replace(args, total_timesteps=batches * args.batch_size)


def start_clean() -> None:
    torch.set_num_threads(DEFAULT_THREADS)
    gc.collect()


def measure_raw(script, args, steps: int) -> float:
    """Env steps/s of the script's vector env over `steps` random-action vector steps; only envs.step is timed."""
    start_clean()
    envs = script.make_vector_env(args, args.seed, video_dir="")
    try:
        n, space = envs.num_envs, envs.single_action_space
        rng = np.random.default_rng(args.seed)
        if isinstance(space, gym.spaces.Discrete):
            actions = space.start + rng.integers(0, space.n, size=(steps, n))
        else:
            actions = rng.uniform(space.low, space.high, size=(steps, n, *space.shape)).astype(space.dtype)
        envs.reset(seed=args.seed)
        start = time.perf_counter()
        for action in actions:
            envs.step(action)
        return n * steps / (time.perf_counter() - start)
    finally:
        envs.close()


def measure_train(script, args) -> float:
    """The steps/s that the script's main reports for a run of these settings (its progress line is silenced);
    for off-policy scripts, those after learning starts."""
    start_clean()
    with tempfile.TemporaryDirectory() as run_dir, contextlib.redirect_stdout(io.StringIO()):
        summary = script.main(dataclasses.replace(args, run_dir=run_dir))
    if summary.get("interrupted"):  # main turns Ctrl-C into a checkpoint and a normal return
        raise KeyboardInterrupt
    # ddpg and td3 report the steps/s from their first update on; sac's row learns from the first step
    return float(summary.get("learning_sps") or summary["sps"])


def measure_pair(script, args, vector_steps: int, repeats: int) -> tuple[float, float, float]:
    """Raw and training steps/s measured `repeats` times, alternately, and the medians of the raw rates,
    the training rates and the ratios of each pair. On a shared machine the speed of both drifts by tens
    of percent over minutes; pairs measured back to back share the drift, and medians drop outliers."""
    raws, trains = [], []
    for _ in range(repeats):
        raws.append(measure_raw(script, args, vector_steps))
        trains.append(measure_train(script, args))
    ratios = [train / raw for raw, train in zip(raws, trains)]
    return statistics.median(raws), statistics.median(trains), statistics.median(ratios)


# --- the update's FLOPs against the machine's limit (off-policy and Atari rows) ------------------------------


def measures_flops(row: Row, args) -> bool:
    return off_policy(args) or row.group == "atari"


def random_obs(space: gym.spaces.Box, n: int) -> torch.Tensor:
    if space.dtype == np.uint8:
        return torch.randint(0, 256, (n, *space.shape), dtype=torch.uint8)
    return torch.randn(n, *space.shape)


def random_actions(space: gym.Space, n: int) -> torch.Tensor:
    if isinstance(space, gym.spaces.Discrete):
        return torch.randint(0, int(space.n), (n,))
    return torch.rand(n, *space.shape) * 2 - 1


def off_policy_update(script, args):
    """(run, parts, calls): run(*parts) makes one update of the script, as its main() would, on a random batch of
    the row's size: td3's is a cycle of --policy-delay calls (the last one with the actor and the targets),
    whose FLOPs and time are divided by `calls`; with --bf16 (ddpg, td3) inside bfloat16 autocast, as main()
    calls it. The optimisers are made as main() makes them."""
    run, parts, calls = off_policy_update_float32(script, args)
    if not getattr(args, "bf16", False):
        return run, parts, calls

    def bfloat16_run(*parts):
        with torch.autocast("cpu", torch.bfloat16):
            run(*parts)

    return bfloat16_run, parts, calls


def off_policy_update_float32(script, args):
    obs_space, action_space = script.env_spaces(args.env_id)
    obs_dim, act_dim, n = obs_space.shape[0], action_space.shape[0], args.batch_size
    agent = script.Agent(obs_dim, act_dim, args)
    batch = script.Batch(torch.randn(n, obs_dim), random_actions(action_space, n), torch.randn(n),
                         torch.randn(n, obs_dim), (torch.rand(n) < 0.01).float())
    if script is sac:
        temperature = [agent.log_alpha] if args.alpha is None else []
        optimizer = torch.optim.Adam([*agent.actor.parameters(), *agent.critic.parameters(), *temperature],
                                     lr=args.learning_rate, fused=True)
        return sac.update, (agent, optimizer, batch, args), 1
    actor_optimizer = torch.optim.Adam(agent.actor.parameters(), lr=args.actor_learning_rate or args.learning_rate,
                                       fused=True)
    critic_optimizer = torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate,
                                        weight_decay=getattr(args, "critic_weight_decay", 0.0), fused=True)
    parts = (agent, actor_optimizer, critic_optimizer, batch, args)
    if script is ddpg:
        return ddpg.update, parts, 1

    def cycle(*parts):  # main(): update_actor on every --policy-delay-th update, the first one without
        for i in range(args.policy_delay):
            td3.update(*parts, update_actor=i == args.policy_delay - 1)

    return cycle, parts, args.policy_delay


def on_policy_update(script, args):
    """(run, parts, 1): run(*parts) is the script's update of one rollout of --num-envs x --num-steps random
    observations and outcomes, with the network and optimiser that main() makes."""
    envs = script.make_vector_env(args, args.seed, "", num_envs=1)  # for its spaces
    obs_space, action_space = envs.single_observation_space, envs.single_action_space
    envs.close()
    n = args.batch_size
    if script is a2c_atari:
        agent = a2c_atari.make_agent(args, envs)
        optimizer = a2c_atari.RMSpropTF(agent.parameters(), lr=args.learning_rate, decay=args.rms_decay,
                                        eps=args.rms_eps)
        rollout = a2c_atari.Rollout(args.num_steps, args.num_envs, torch.device("cpu"), obs_space)
        rollout.obs.copy_(random_obs(obs_space, n).view(rollout.obs.shape))
        rollout.actions.copy_(random_actions(action_space, n).view(rollout.actions.shape))
        rollout.values.normal_()
        rollout.rewards[:] = np.random.default_rng(args.seed).random(rollout.rewards.shape) < 0.1
        return a2c_atari.update, (agent, optimizer, rollout, random_obs(obs_space, args.num_envs), args), 1
    agent = script.Agent(obs_space, action_space, args)
    batch = script.Batch(random_obs(obs_space, n), random_actions(action_space, n), torch.randn(n) - 1,
                         torch.randn(n), torch.randn(n), torch.randn(n))
    if script is ppo:
        optimizer = torch.optim.Adam(agent.parameters(), lr=args.learning_rate, eps=1e-5, fused=True)
        return (lambda *parts: ppo.update(*parts, args.clip_coef, args.kl_beta)), (agent, optimizer, batch, args), 1
    return trpo.update, (agent, torch.optim.Adam(agent.critic.parameters(), lr=args.learning_rate), batch, args), 1


def measure_update(script, args, min_seconds: float) -> dict:
    """The FLOPs of one update of the script on the row's settings, counted; its speed in GFLOP/s, timed; and
    the GFLOP/s of the same matmul and convolution calls made back to back (the peak for its shapes), on the
    row's thread count. Every counted and timed update starts from the same state: a copy of the networks and
    optimisers after one warm-up update, the same batch and the same seed, so that each does the same work
    (TRPO's conjugate gradient and line search depend on it)."""
    start_clean()
    threads = args.threads or DEFAULT_THREADS
    torch.set_num_threads(threads)
    torch.manual_seed(args.seed)
    run, parts, calls = (off_policy_update if off_policy(args) else on_policy_update)(script, args)
    run(*parts)  # the warm-up; it makes the optimisers' state, as the first update of a run does

    def fresh():
        torch.manual_seed(args.seed)
        return copy.deepcopy(parts)

    copied = fresh()
    total, by_op, recorded = flops.count(lambda: run(*copied))
    update_seconds = flops.seconds_per_call(run, fresh, min_seconds, warm_up=False)
    peak_seconds = flops.seconds_per_call(flops.replay(recorded), min_seconds=min_seconds)
    achieved, peak = total / update_seconds / 1e9, total / peak_seconds / 1e9
    return {"update_flops": total / calls, "update_calls": calls, "update_gflops": achieved, "peak_gflops": peak,
            "share": achieved / peak, "flop_threads": threads, "update_flops_by_op": by_op,
            "update_ops": flops.shape_counts(recorded)}


def envpool_problem() -> str | None:
    """Why the EnvPool row cannot run, or None when it can."""
    try:
        import envpool  # noqa: F401
    except Exception as error:  # ImportError, or a broken binary
        return f"envpool is not importable ({type(error).__name__}: {error}); pip install -e '.[envpool]'"
    return None


def config_name(row: Row, args) -> str:
    if off_policy(args):
        return f"{row.algo} 1 env, {row.label}"
    return f"{row.algo} {args.num_envs}x{args.num_steps}, {row.label}"


def backend(args) -> str:
    return getattr(args, "env_backend", "gymnasium")


def run(steps_scale: float = 1.0, only: str | None = None, repeats: int = 1) -> list[dict]:
    """Measure the selected rows; each result has raw_sps, train_sps and ratio (medians over `repeats`
    alternating measurements), or a `skipped` note; off-policy and Atari rows also the FLOPs of their update,
    its GFLOP/s and the peak GFLOP/s of its shapes (measure_update)."""
    results, updates = [], {}  # updates: the measurements of each update, which the EnvPool rows share
    for i, row in enumerate(r for r in ROWS if only in (None, r.group)):
        args = row_args(row, steps_scale)
        result = {"env_id": row.env_id, "backend": backend(args), "config": config_name(row, args)}
        if backend(args) == "envpool" and (problem := envpool_problem()):
            results.append({**result, "skipped": problem})
            continue
        num_envs = getattr(args, "num_envs", 1)
        vector_steps = max(10, int(row.raw_steps * steps_scale) // num_envs)
        raw_steps = vector_steps * num_envs
        print(f"[{i + 1}] {row.env_id} {backend(args)} {result['config']}: raw {raw_steps:,} steps, "
              f"training {args.total_timesteps:,} steps", file=sys.stderr, flush=True)
        raw, train, ratio = measure_pair(SCRIPTS[row.algo], args, vector_steps, repeats)
        result.update(raw_steps=raw_steps, train_steps=args.total_timesteps, raw_sps=raw, train_sps=train,
                      ratio=ratio, repeats=repeats)
        if measures_flops(row, args):
            key = (row.algo, row.env_id, row.preset, repr({k: v for k, v in row.overrides.items() if k != "env_backend"}))
            if key not in updates:
                print(f"[{i + 1}] FLOPs of one update, and the peak of its shapes", file=sys.stderr, flush=True)
                updates[key] = measure_update(SCRIPTS[row.algo], args, min_seconds=3 * steps_scale)
            result.update(updates[key])
        results.append(result)
    return results


def format_table(results: list[dict]) -> str:
    header = ("env", "backend", "config", "raw SPS", "train SPS", "ratio", "update GFLOP/s", "peak GFLOP/s", "share")
    lines = [header]
    for r in results:
        if "skipped" in r:
            lines.append((r["env_id"], r["backend"], r["config"], "-", "-", "skipped", "-", "-", "-"))
            continue
        gflops = ("-", "-", "-")
        if "share" in r:
            gflops = (f"{r['update_gflops']:,.1f}", f"{r['peak_gflops']:,.1f}", f"{r['share']:.2f}")
        lines.append((r["env_id"], r["backend"], r["config"], f"{r['raw_sps']:,.0f}", f"{r['train_sps']:,.0f}",
                      f"{r['ratio']:.3f}", *gflops))
    widths = [max(len(line[c]) for line in lines) for c in range(len(header))]
    text = ["  ".join(cell.ljust(w) if c < 3 else cell.rjust(w) for c, (cell, w) in enumerate(zip(line, widths)))
            for line in lines]
    text += [f"note: {r['env_id']} {r['backend']} skipped: {r['skipped']}" for r in results if "skipped" in r]
    return "\n".join(text)


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-scale", type=float, default=1.0, help="scale every step budget (default 1)")
    parser.add_argument("--only", choices=sorted({row.group for row in ROWS}), help="measure only these rows")
    parser.add_argument("--out", help="also write the results to this JSON file")
    parser.add_argument("--repeats", type=int, default=1,
                        help="measure each row's raw and training speeds this many times, alternately, and report "
                             "the medians (default 1; 3 or more on a shared machine)")
    options = parser.parse_args(argv)
    if options.steps_scale <= 0 or options.repeats <= 0:
        parser.error("--steps-scale and --repeats must be positive")

    versions = ppo.package_versions()
    print(f"torch {versions['torch']}, gymnasium {versions['gymnasium']}, "
          f"envpool {versions.get('envpool', 'not installed')}, {os.cpu_count()} CPUs, "
          f"torch threads {DEFAULT_THREADS}, steps scale {options.steps_scale}, repeats {options.repeats}", flush=True)
    load_before = os.getloadavg()[0]
    results = run(options.steps_scale, options.only, options.repeats)
    load_after = os.getloadavg()[0]
    print(format_table(results))
    # Other processes on the machine slow torch's multi-threaded updates far more than the env loop.
    print(f"load average (1 min) before / after: {load_before:.2f} / {load_after:.2f} on {os.cpu_count()} CPUs",
          flush=True)
    if options.out:
        report = {"versions": versions, "cpu_count": os.cpu_count(), "steps_scale": options.steps_scale,
                  "loadavg_before": load_before, "loadavg_after": load_after, "rows": results}
        write_json(options.out, report)
    return results


if __name__ == "__main__":
    main()
