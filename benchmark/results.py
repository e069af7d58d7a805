"""Loading what a report is made of: the runs of a sweep directory (episodes.csv, summary.json,
status.json, sweep.json) and the reference data of benchmark/data/ (Atari random and human scores, the TD3
paper's learning curves)."""

import csv
import math
import os
from dataclasses import dataclass, field

import numpy as np

from benchmark import suites
from benchmark.common import read_json

DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data")


@dataclass
class RunResult:
    name: str
    config: str
    env_id: str
    seed: int
    run_dir: str
    state: str
    total_timesteps: int | None = None
    reference: float | None = None
    source: str = ""
    reference_steps: int | None = None
    measure: str = "final"
    """which of our numbers `reference` is compared with (suites.Entry.measure)"""
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0))
    returns: np.ndarray = field(default_factory=lambda: np.zeros(0))
    summary: dict | None = None

    def final(self, last: int) -> float:
        """The final return: the mean of the last `last` training episodes (nan without episodes)."""
        return float(np.mean(self.returns[-last:])) if len(self.returns) else math.nan

    @property
    def eval(self) -> float:
        """The final evaluation's mean return that summary.json records (nan without one)."""
        return float(((self.summary or {}).get("eval") or {}).get("mean_return", math.nan))


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


def read_episodes(path: str) -> tuple[np.ndarray, np.ndarray]:
    """global_step and episodic_return of episodes.csv, sorted by step; empty when missing."""
    try:
        with open(path, newline="") as f:
            rows = [(int(r["global_step"]), float(r["episodic_return"])) for r in csv.DictReader(f)
                    if r.get("global_step") and r.get("episodic_return")]
    except OSError:
        rows = []
    rows.sort(key=lambda r: r[0])
    return np.array([r[0] for r in rows], dtype=np.int64), np.array([r[1] for r in rows], dtype=float)


def find_run_dirs(root: str) -> list[str]:
    """Folders under root holding a run (status.json, summary.json or episodes.csv), the report's own excluded."""
    found = []
    for path, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("report", "videos", "wandb"))
        if {"status.json", "summary.json", "episodes.csv"} & set(files):
            found.append(path)
            dirs[:] = []
    return found


def sweep_suites(root: str) -> list[str]:
    """The suites that sweep.json says the sweep ran (none for a folder of runs without one)."""
    return (read_json(os.path.join(root, "sweep.json")) or {}).get("suites", [])


def reference_measure(entry: dict) -> str:
    """The measure of a sweep.json run written before runs carried one: its suite entry's, found by config,
    env and the budget its reference was measured at; "final" where none matches."""
    ref = suites.find_reference(entry.get("config"), entry.get("env_id"), entry.get("reference_steps"))
    return ref.measure if ref and ref.reference == entry.get("reference") else "final"


def load_runs(root: str) -> list[RunResult]:
    """The runs of a sweep directory: those sweep.json lists (with their published numbers), else every run
    directory found under root, described by its status.json or summary.json."""
    sweep_file = read_json(os.path.join(root, "sweep.json"))
    listed = {r["name"]: r for r in (sweep_file or {}).get("runs", [])}
    results = []
    for run_dir in find_run_dirs(root):
        status = read_json(os.path.join(run_dir, "status.json")) or {}
        summary = read_json(os.path.join(run_dir, "summary.json"))
        if isinstance(summary, dict) and summary.get("interrupted"):
            summary = None
        args = (summary or {}).get("args", {})
        name = status.get("name") or os.path.basename(run_dir)
        entry = listed.get(name, {})
        config = entry.get("config") or status.get("config") or (summary or {}).get("algo") or args.get("exp_name")
        env_id = entry.get("env_id") or status.get("env_id") or (summary or {}).get("env_id") or args.get("env_id")
        seed = entry.get("seed", status.get("seed", (summary or {}).get("seed", args.get("seed"))))
        if config is None or env_id is None:
            continue
        state = "finished" if summary else status.get("state", "unknown")
        budget = entry.get("total_timesteps", status.get("total_timesteps", args.get("total_timesteps")))
        reference, source = entry.get("reference"), entry.get("source", "")
        reference_steps, measure = entry.get("reference_steps"), entry.get("measure") or reference_measure(entry)
        if reference is None and not listed:
            ref = suites.find_reference(config, env_id, budget)
            if ref:
                reference, source, reference_steps = ref.reference, ref.source, ref.total_timesteps
                measure = ref.measure
        steps, returns = read_episodes(os.path.join(run_dir, "episodes.csv"))
        results.append(RunResult(name, config, env_id, int(seed) if seed is not None else 0, run_dir, state, budget,
                                 reference, source, reference_steps, measure, steps, returns, summary))
    found = {r.name for r in results}
    for name, entry in listed.items():  # listed by the sweep but never started (a sweep stopped early)
        if name not in found:
            results.append(RunResult(name, entry["config"], entry["env_id"], entry["seed"],
                                     os.path.join(root, "runs", name), "not started", entry.get("total_timesteps"),
                                     entry.get("reference"), entry.get("source", ""), entry.get("reference_steps"),
                                     entry.get("measure") or reference_measure(entry)))
    return sorted(results, key=lambda r: (r.config, r.env_id, r.seed))


# --------------------------------------------------------------------------------------------------
# Reference data
# --------------------------------------------------------------------------------------------------


def read_reference_csv(name: str) -> list[dict]:
    with open(os.path.join(DATA, name)) as f:
        return list(csv.DictReader(line for line in f if not line.startswith("#")))


def atari_scores() -> dict:
    """game (snake_case) -> (random, human): the table in data/atari_random_human.csv, with its source."""
    rows = read_reference_csv("atari_random_human.csv")
    return {row["game"]: (float(row["random"]), float(row["human"])) for row in rows}


def td3_paper_curve(env_id: str):
    """(steps, mean, std) of the TD3 paper's evaluation curve on this env (data/td3_paper_curves.csv), or
    None where it has none."""
    rows = [r for r in read_reference_csv("td3_paper_curves.csv") if r["env"] == env_id.split("-v")[0]]
    if not rows:
        return None
    return (np.array([float(r["step"]) for r in rows]), np.array([float(r["mean"]) for r in rows]),
            np.array([float(r["std"]) for r in rows]))
