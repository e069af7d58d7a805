"""Test set-up: one torch thread per test process, and the algos/ scripts importable by name."""

import os
import sys

# Before torch is imported anywhere: with pytest-xdist two processes share the two cores, and torch's
# default of one thread per core each made runs about 10x slower here.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from gymnasium.envs.classic_control.pendulum import PendulumEnv  # noqa: E402

from helpers import ALGOS  # noqa: E402

sys.path.insert(0, ALGOS)


@pytest.fixture(autouse=True)
def _work_in_tmp(tmp_path, monkeypatch):
    """Run each test in its own directory: MuJoCo writes MUJOCO_LOG.TXT and wandb its files there."""
    monkeypatch.chdir(tmp_path)


@pytest.fixture
def pendulum_steps(monkeypatch):
    """(action, reward) of every step any Pendulum env takes in the test, as the env itself got and gave them."""
    steps = []
    real_step = PendulumEnv.step

    def step(self, u):
        result = real_step(self, u)
        steps.append((float(np.asarray(u).reshape(-1)[0]), float(result[1])))
        return result

    monkeypatch.setattr(PendulumEnv, "step", step)
    return steps
