"""The planner: which runs a sweep holds and the command line of each, from suites.py and registry.py. Pure
functions: nothing here reads or writes a file or starts a process.

A run is one (config, env, seed) with its budget, extra flags and the paper's number it is compared with.
Its command is the script, the preset for the env's family as the first word (the scripts take their
preset as a subcommand; a command that starts with a flag gets the script's first preset), the common
flags, the variant's flags and the overrides.
"""

import os
import sys
from dataclasses import dataclass, replace

from benchmark import registry, suites

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
"""the repository root: script paths are relative to it and runs start in it"""


@dataclass(frozen=True)
class Run:
    config: str
    """a script name, or script:variant (benchmark/registry.py)"""
    env_id: str
    seed: int
    total_timesteps: int | None = None
    """None: the script's (or its preset's) default"""
    overrides: tuple = ()
    """(key, value) pairs of script flags, key with underscores or dashes; value "true"/"false" for switches"""
    reference: float | None = None
    source: str = ""
    reference_steps: int | None = None
    """the budget at which `reference` was measured (the suite's, before --budget-scale)"""
    measure: str = "final"
    """which of our numbers `reference` is compared with (suites.Entry.measure)"""
    processes: int = 1
    """the cores the run keeps busy (suites.Entry.processes)"""

    @property
    def name(self) -> str:
        return f"{self.config.replace(':', '-')}__{self.env_id.replace('/', '-')}__{self.seed}"


# --------------------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------------------


def parse_overrides(items: list[str]) -> tuple:
    """`--set key=value ...` -> ((key, value), ...); `key` alone is a switch turned on."""
    pairs = []
    for item in items or ():
        key, eq, value = item.partition("=")
        if not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        pairs.append((key.replace("-", "_"), value if eq else None))
    return tuple(pairs)


def expand(configs, envs, seeds, total_timesteps=None, overrides=()) -> list[Run]:
    """Every (config, env, seed) combination, configs outermost. Unknown configs raise ValueError."""
    for config in configs:
        registry.split_config(config)
    return [Run(config, env, seed, total_timesteps, overrides) for config in configs for env in envs for seed in seeds]


def suite_runs(suite, budget_scale: float = 1.0, seeds=None, configs=None, envs=None, total_timesteps=None,
               overrides=()) -> list[Run]:
    """The runs of a suite, budgets multiplied by budget_scale; configs (or their script names), envs and seeds
    select a part of it. An entry's flags come before the overrides, so an override of the same key wins."""
    runs = []
    for entry in suite.entries:
        algo, _ = registry.split_config(entry.config)
        if configs and entry.config not in configs and algo not in configs:
            continue
        if envs and entry.env_id not in envs:
            continue
        budget = total_timesteps or max(1, round(entry.total_timesteps * budget_scale))
        for seed in seeds or suite.seeds:
            runs.append(Run(entry.config, entry.env_id, seed, budget, (*entry.flags, *overrides), entry.reference,
                            entry.source, entry.total_timesteps if entry.reference is not None else None,
                            entry.measure, entry.processes))
    return runs


def attach_reference(run: Run) -> Run:
    """A run outside any suite still gets a suite's published number when config, env and budget match."""
    entry = suites.find_reference(run.config, run.env_id, run.total_timesteps)
    if entry is None:
        return run
    return replace(run, reference=entry.reference, source=entry.source, reference_steps=entry.total_timesteps,
                   measure=entry.measure)


# --------------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------------


def override_args(key: str, value: str | None) -> list[str]:
    """`learning_rate`, `1e-4` -> [--learning-rate, 1e-4]; `anneal`, `true` -> [--anneal]; `anneal`, `false`
    -> [--no-anneal]; a value with spaces is several values (`hidden_sizes`, `64 64`)."""
    flag = "--" + key.strip().lstrip("-").replace("_", "-")
    if value is None or value.lower() == "true":
        return [flag]
    if value.lower() == "false":
        return ["--no-" + flag[2:]]
    return [flag, *value.split()]


def checkpoint_every(run: Run, fraction: float) -> int | None:
    """The steps between a run's checkpoints: `fraction` of its budget; None (only on SIGINT/SIGTERM) for a
    fraction of 0, an unknown budget, or less than a step."""
    return (int(run.total_timesteps * fraction) or None) if run.total_timesteps else None


def build_command(run: Run, run_dir: str, threads: int | None = None, checkpoint_every: int | None = None,
                  resume: bool = False, python: str = sys.executable) -> list[str]:
    """The command line of one run, from its config, env, seed and overrides: the script, the preset for the
    env's family (or the variant's, or `--set preset=...`) as its first word, the common flags, the variant's
    flags, then the overrides (which win). With resume, the same command plus --resume RUN_DIR. Paths of
    scripts are relative to ROOT."""
    algo, variant_name = registry.split_config(run.config)
    script = registry.SCRIPTS[algo]
    variant = script.variants[variant_name] if variant_name else registry.Variant()
    overrides = dict(run.overrides)
    preset = overrides.pop("preset", None) or variant.preset or script.presets.get(registry.env_family(run.env_id))
    command = [python, script.path]
    if preset:
        command.append(preset)
    command += ["--env-id", run.env_id, "--seed", str(run.seed)]
    if run.total_timesteps is not None:
        command += ["--total-timesteps", str(run.total_timesteps)]
    command += ["--run-dir", run_dir]
    if threads is not None:
        command += ["--threads", str(threads)]
    if checkpoint_every:
        command += ["--checkpoint-every", str(checkpoint_every)]
    command += list(variant.flags)
    for key, value in overrides.items():
        command += override_args(key, value)
    if resume:
        command += ["--resume", run_dir]
    return command
