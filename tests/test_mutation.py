"""The mutation check (tests/mutation.py) in CI: each script's fast tests kill every one of its mutants. It runs
in a fresh interpreter (it forks a child per mutant, which a pytest worker holding the scripts' modules must
not do)."""

import os
import subprocess
import sys

import pytest

import mutation

MIN_MUTANTS = 5  # per script
MUTATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mutation.py")


def check(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, MUTATION, "--workers", "1", *args], capture_output=True, text=True,
                          timeout=1800)


@pytest.mark.parametrize("script", mutation.SCRIPTS)
def test_every_mutant_is_killed(script):
    mutants = mutation.mutants_of(script)
    assert len(mutants) >= MIN_MUTANTS, f"tests/mutants/{script}.py has {len(mutants)} mutants, fewer than {MIN_MUTANTS}"
    result = check(script)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(mutants)} mutants of 1 script(s): {len(mutants)} killed, 0 survived, 0 errors" in result.stdout


def test_the_check_reports_a_survivor_and_a_mutant_that_no_longer_applies(tmp_path):
    # A change that leaves the algorithm as it is (a comment) must survive, or a "kill" would mean nothing.
    mutants = tmp_path / "mutants.py"
    mutants.write_text(
        "from mutation import Mutant\n"
        "MUTANTS = [Mutant('a comment reworded', '# names this script in messages', '# names the script in messages'),\n"
        "           Mutant('text that is in no script', 'this text is in no script', '')]\n")
    result = check("reinforce", "--mutants", str(mutants))
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert any(line.startswith("survived  reinforce: a comment reworded") for line in lines), result.stdout
    assert any(line.startswith("error     reinforce: text that is in no script") and "0 times" in line
               for line in lines), result.stdout
