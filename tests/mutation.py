"""The mutation check: do the tests tell each script's algorithm from a nearby wrong one?

A mutant is one textual change to a script in algos/ that makes a different algorithm while the script still
runs: max for min in a target, the online network for the target network, a flipped sign, a dropped episode
mask. For each mutant this copies algos/ and tests/ into a scratch folder, applies the change there (never
to the real files), and runs that script's fast tests: its math and update tests, not the learning tests. A
failing test kills the mutant; a mutant no test kills survives, and the tests cannot tell that algorithm
from the paper's. The mutants are listed per script in tests/mutants/<script>.py.

    python tests/mutation.py                # every mutant, each with the test that killed it
    python tests/mutation.py ppo td3        # the mutants of these scripts
    python tests/mutation.py --list         # the mutants, without running them

Exit status 1 when a mutant survives, when one no longer applies (its text is not in the script exactly
once), or when a script's tests fail before any change. tests/test_mutation.py runs it in CI.

Each mutant's tests run in a child forked from this process after it has imported torch, gymnasium, pytest
and the rest once: a fresh interpreter per mutant spent about 10 s of CPU on imports alone.
"""

import argparse
import os
import py_compile
import re
import runpy
import shutil
import signal
import sys
import tempfile
import time
from typing import NamedTuple

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ("reinforce", "ppo", "trpo", "a2c_atari", "paac", "a3c_hogwild", "async_q", "ddpg", "td3", "sac")
TEST_PREFIX = {"a2c_atari": "a2c", "a3c_hogwild": "a3c"}  # tests/test_<prefix>_*.py; the others use the script's name
TIMEOUT_S = 300  # per mutant: a mutant that makes a test hang counts as an error, not a kill


class Mutant(NamedTuple):
    name: str  # what the change makes of the algorithm
    old: str  # text found exactly once in algos/<script>.py
    new: str  # its replacement
    killed_by: str = ""  # the test that kills it (relative to tests/); the check runs it first, alone


class Outcome(NamedTuple):
    script: str
    mutant: Mutant
    status: str  # "killed", "survived" or "error"
    detail: str  # the first failing test, or what went wrong
    seconds: float = 0.0


UNCHANGED = Mutant("(unchanged)", "", "")


def mutants_of(script: str, path: str | None = None) -> list[Mutant]:
    path = path or os.path.join(ROOT, "tests", "mutants", f"{script}.py")
    if not os.path.exists(path):
        return []
    here = os.path.dirname(os.path.abspath(__file__))
    if here not in sys.path:
        sys.path.insert(0, here)  # so the list can import Mutant from this file
    return list(runpy.run_path(path)["MUTANTS"])


def fast_tests(script: str) -> list[str]:
    """The script's math and update tests, relative to the repository root."""
    prefix = TEST_PREFIX.get(script, script)
    names = [f"tests/test_{prefix}_math.py", f"tests/test_{prefix}_update.py"]
    return [name for name in names if os.path.exists(os.path.join(ROOT, name))]


def preload() -> None:
    """Import once, here, what every test run needs, so that each forked child starts with it loaded. One
    thread: a child forked from a process whose OpenMP pool has started can hang."""
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", WANDB_MODE="offline", WANDB_SILENT="true")
    import gymnasium  # noqa: F401
    import numpy  # noqa: F401
    import pytest  # noqa: F401
    import torch
    import torch.utils.tensorboard  # noqa: F401
    import tyro  # noqa: F401

    torch.set_num_threads(1)


def scratch_copy(script: str, text: str | None) -> str:
    """A folder holding copies of algos/, tests/ and pyproject.toml (the pytest settings), with
    algos/<script>.py replaced by text when given."""
    folder = tempfile.mkdtemp(prefix="mutation-")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("algos", "tests"):
        shutil.copytree(os.path.join(ROOT, name), os.path.join(folder, name), ignore=ignore)
    shutil.copy(os.path.join(ROOT, "pyproject.toml"), folder)
    if text is not None:
        with open(os.path.join(folder, "algos", f"{script}.py"), "w") as f:
            f.write(text)
    return folder


def start_tests(folder: str, tests: list[str]) -> int:
    """Fork a child that runs pytest on tests in folder (one thread, stopping at the first failure), its output
    in folder/pytest.out; return its pid."""
    pid = os.fork()
    if pid:
        return pid
    code = 3
    try:
        out = os.open(os.path.join(folder, "pytest.out"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(out, 1)
        os.dup2(out, 2)
        os.chdir(folder)
        signal.alarm(TIMEOUT_S)
        import pytest

        code = int(pytest.main(["-x", "-q", "-p", "no:xdist", "-p", "no:cacheprovider", "-p", "no:randomly",
                                "-o", "addopts=-rf", *tests]))
    finally:
        sys.stdout.flush()
        os._exit(code)


def outcome_of(script: str, mutant: Mutant, folder: str, wait_status: int, seconds: float) -> Outcome:
    with open(os.path.join(folder, "pytest.out")) as f:
        output = f.read()
    if os.WIFSIGNALED(wait_status):
        why = "ran past the time limit" if os.WTERMSIG(wait_status) == signal.SIGALRM else f"signal {os.WTERMSIG(wait_status)}"
        return Outcome(script, mutant, "error", f"the tests {why}", seconds)
    code = os.WEXITSTATUS(wait_status)
    if code == 0:
        return Outcome(script, mutant, "survived", "every test passed", seconds)
    if code == 1:  # tests ran and one failed (2-5: interrupted, internal or usage error, none collected)
        found = re.search(r"^FAILED (\S+)", output, re.M)
        return Outcome(script, mutant, "killed", found.group(1).removeprefix("tests/") if found else "?", seconds)
    return Outcome(script, mutant, "error", f"pytest exit {code}: {output[-500:]}", seconds)


def prepare(script: str, mutant: Mutant) -> str | Outcome:
    """The scratch folder of a mutant, or the Outcome that says why it cannot be tried."""
    if not fast_tests(script):
        return Outcome(script, mutant, "error", f"{script} has no fast tests")
    if mutant is UNCHANGED:
        return scratch_copy(script, None)
    with open(os.path.join(ROOT, "algos", f"{script}.py")) as f:
        text = f.read()
    if text.count(mutant.old) != 1:
        return Outcome(script, mutant, "error", f"its text is in algos/{script}.py {text.count(mutant.old)} times, not once")
    folder = scratch_copy(script, text.replace(mutant.old, mutant.new))
    try:  # a mutant that does not even compile proves nothing
        py_compile.compile(os.path.join(folder, "algos", f"{script}.py"), doraise=True)
    except py_compile.PyCompileError as error:
        shutil.rmtree(folder, ignore_errors=True)
        return Outcome(script, mutant, "error", f"does not compile: {error.msg.strip()}")
    return folder


def run_jobs(jobs: list[tuple[str, Mutant]], workers: int, report=print) -> list[Outcome]:
    """Try each (script, mutant), workers at a time, in the order given; report each outcome as it comes.

    A mutant that names the test that kills it runs that test alone first. If it passes, the mutant runs
    against all the fast tests, and the outcome is an error when another test kills it (the list is wrong)
    or a survivor when none does."""
    outcomes, running, pending = [], {}, [(script, mutant, bool(mutant.killed_by)) for script, mutant in jobs]
    while pending or running:
        while pending and len(running) < workers:
            script, mutant, named_first = pending.pop(0)
            folder = prepare(script, mutant)
            if isinstance(folder, Outcome):
                outcomes.append(folder)
                report(format_outcome(folder))
                continue
            tests = [f"tests/{mutant.killed_by}"] if named_first else fast_tests(script)
            running[start_tests(folder, tests)] = (script, mutant, named_first, folder, time.time())
        if running:
            pid, wait_status = os.wait()
            script, mutant, named_first, folder, started = running.pop(pid)
            outcome = outcome_of(script, mutant, folder, wait_status, time.time() - started)
            shutil.rmtree(folder, ignore_errors=True)
            if named_first and outcome.status == "survived":  # the named test missed it: try them all
                pending.insert(0, (script, mutant, False))
                continue
            if mutant.killed_by and not named_first and outcome.status == "killed":
                outcome = outcome._replace(status="error", detail=f"{mutant.killed_by} does not kill it; "
                                                                   f"{outcome.detail} does")
            outcomes.append(outcome)
            report(format_outcome(outcome))
    return outcomes


def format_outcome(outcome: Outcome) -> str:
    return (f"{outcome.status:8}  {outcome.script}: {outcome.mutant.name}  [{outcome.detail}]"
            + (f" {outcome.seconds:.0f} s" if outcome.seconds else ""))


def run(scripts: list[str], workers: int = 1, mutants_file: str | None = None, report=print) -> list[Outcome]:
    """Check that each script's fast tests pass unchanged (else a kill would mean nothing), then try its
    mutants."""
    baseline = run_jobs([(script, UNCHANGED) for script in scripts], workers, lambda line: None)
    broken = [o for o in baseline if o.status != "survived"]
    for outcome in broken:
        report(f"error     {outcome.script}: its fast tests fail before any change  [{outcome.detail}]")
    if broken:
        return broken
    return run_jobs([(script, mutant) for script in scripts for mutant in mutants_of(script, mutants_file)],
                    workers, report)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scripts", nargs="*", metavar="SCRIPT", help=f"scripts to check (default: all): {', '.join(SCRIPTS)}")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--workers", type=int, default=len(os.sched_getaffinity(0)), help="mutants tried at once")
    parser.add_argument("--mutants", metavar="FILE", help="take the mutants from this file instead of tests/mutants/")
    options = parser.parse_args()
    scripts = options.scripts or list(SCRIPTS)
    unknown = sorted(set(scripts) - set(SCRIPTS))
    if unknown:
        parser.error(f"unknown script {', '.join(unknown)}; the scripts are {', '.join(SCRIPTS)}")
    if options.list:
        for script in scripts:
            for mutant in mutants_of(script, options.mutants):
                print(f"{script}: {mutant.name}")
        return 0
    started = time.time()
    preload()
    outcomes = run(scripts, options.workers, options.mutants, lambda line: print(line, flush=True))
    counts = {status: sum(o.status == status for o in outcomes) for status in ("killed", "survived", "error")}
    print(f"{len(outcomes)} mutants of {len(scripts)} script(s): {counts['killed']} killed, {counts['survived']} "
          f"survived, {counts['error']} errors, in {time.time() - started:.0f} s")
    return 0 if counts["survived"] == counts["error"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
