"""A stand-in for an algos/ script that keeps the run contract in a few milliseconds, for the sweep tests.

It takes its preset as the first word of the command, as the scripts do ("default" when the command starts
with a flag; a --preset flag is refused), then the common flags. It writes episodes.csv (one episode per 10
steps, return = step / 10), checkpoint.pt (JSON here) and summary.json (with an "eval" entry) atomically,
and appends each invocation (its arguments and OMP_NUM_THREADS) to OUT/calls.jsonl, OUT being the sweep
directory two levels above the run directory. `--mode` chooses a behaviour: ok; fail (exit 3 with a
message); interrupt-once (save a checkpoint half way and exit 0, as the scripts do on SIGTERM, unless
resuming); nan (exit 1 after a checkpoint, as a NaN stop does); sleep (half a second before the summary); slow (while OUT/slow exists, an episode
every 50 ms until SIGTERM, then a checkpoint and exit 0).
"""

import json
import os

from benchmark import registry

FAKE_SCRIPT = r'''
import argparse, csv, json, os, signal, sys, time

stop = []
signal.signal(signal.SIGTERM, lambda signum, frame: stop.append(signum))

parser = argparse.ArgumentParser()
for flag in ("--env-id", "--run-dir", "--resume", "--mode"):
    parser.add_argument(flag)
for flag in ("--seed", "--total-timesteps", "--threads", "--checkpoint-every", "--eval-episodes"):
    parser.add_argument(flag, type=int)
argv = sys.argv[1:]
preset = argv.pop(0) if argv and not argv[0].startswith("-") else "default"
args = parser.parse_args(argv)
args.preset = preset
run_dir = args.run_dir
sweep_dir = os.path.dirname(os.path.dirname(run_dir))
with open(os.path.join(sweep_dir, "calls.jsonl"), "a") as f:
    f.write(json.dumps({"argv": sys.argv[1:], "omp": os.environ.get("OMP_NUM_THREADS"), "started": time.time(),
                        "run": os.path.basename(run_dir)}) + "\n")
print("fake script starting", args.env_id, args.seed, flush=True)

def atomic(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)

start = 0
if args.resume:
    start = json.load(open(os.path.join(args.resume, "checkpoint.pt")))["step"]
    with open(os.path.join(run_dir, "episodes.csv")) as f:
        rows = [r for r in csv.reader(f)]
    atomic(os.path.join(run_dir, "episodes.csv"),
           "\n".join(",".join(r) for r in rows if r[0] == "global_step" or int(r[0]) <= start) + "\n")
if args.mode == "fail":
    print("boom: a deliberate failure", file=sys.stderr)
    sys.exit(3)
total = args.total_timesteps or 100
new = not os.path.exists(os.path.join(run_dir, "episodes.csv"))
with open(os.path.join(run_dir, "episodes.csv"), "a") as f:
    if new:
        f.write("global_step,episodic_return,episodic_length,wall_time\n")
    for step in range(start + 10, total + 1, 10):
        f.write(f"{step},{step / 10},10,0.0\n")
        if args.mode == "slow" and os.path.exists(os.path.join(sweep_dir, "slow")):
            f.flush()
            time.sleep(0.05)
            if stop:
                atomic(os.path.join(run_dir, "checkpoint.pt"), json.dumps({"step": step}))
                print(f"stopped by signal {stop[0]} at step {step}")
                sys.exit(0)
        if step == total // 2 and not args.resume and args.mode in ("interrupt-once", "nan"):
            f.flush()
            atomic(os.path.join(run_dir, "checkpoint.pt"), json.dumps({"step": step}))
            if args.mode == "nan":
                print("non-finite loss", file=sys.stderr)
                sys.exit(1)
            print(f"stopped by signal 15 at step {step}; resume with --resume {run_dir}")
            sys.exit(0)
if args.mode == "sleep":  # a run that takes a while, so that runs going at once overlap
    time.sleep(0.5)
summary = {"algo": "fake", "env_id": args.env_id, "seed": args.seed, "total_steps": total, "sps": 1000,
           "wall_time": 0.1, "args": vars(args), "eval": {"episodes": 2, "mean_return": total / 10 + 1}}
atomic(os.path.join(run_dir, "summary.json"), json.dumps(summary))
print("done", flush=True)
'''


def install_fake(monkeypatch, tmp_path, name: str = "fake", path: str | None = None) -> str:
    """Write the fake script and register it as config `name` (variant `name:failing` runs --mode fail)."""
    script = str(tmp_path / f"{name}.py")
    with open(script, "w") as f:
        f.write(FAKE_SCRIPT)
    monkeypatch.setitem(registry.SCRIPTS, name, registry.Script(
        path or script, {"atari": "atari"}, {"failing": registry.Variant(("--mode", "fail"))}))
    return script


def calls(out) -> list[dict]:
    path = os.path.join(out, "calls.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def run_status(out, run_name: str) -> dict:
    with open(os.path.join(out, "runs", run_name, "status.json")) as f:
        return json.load(f)

