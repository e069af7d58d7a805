"""The scripts that start worker processes start no more than they were asked for: a bound on
--num-workers, never a process beyond it, and no worker left behind when one cannot be started."""

import importlib
import multiprocessing
import os
import threading
import time

import pytest

from helpers import children_of, read_episodes

HOGWILD = ["a3c_hogwild", "async_q"]


def tiny_args(module, *flags: str):
    return module.parse_args(["--env-id", "CartPole-v1", "--num-workers", "2", "--run-dir", "run",
                              "--eval-episodes", "0", *flags])


@pytest.mark.parametrize("name", ["a3c_hogwild", "async_q", "paac"])
def test_the_bound_is_4_workers_per_core_unless_oversubscribe(name, monkeypatch):
    module = importlib.import_module(name)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)  # two cores: at most 8
    module.check_worker_count(8, oversubscribe=False)
    with pytest.raises(module.ConfigError, match=r"--num-workers 9 is more than 4 per core \(8 here\)"):
        module.check_worker_count(9, oversubscribe=False)
    module.check_worker_count(9, oversubscribe=True)
    assert module.parse_args(["--num-workers", "9", "--oversubscribe"]).oversubscribe


@pytest.mark.parametrize("name", HOGWILD)
def test_a_run_never_has_more_live_children_than_workers(name):
    module = importlib.import_module(name)
    before = set(children_of(os.getpid()))
    counts, running = [], True

    def watch():
        while running:
            counts.append(len(set(children_of(os.getpid())) - before))
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        module.main(tiny_args(module, "--total-timesteps", "2000", "--checkpoint-every", "500"))
    finally:
        running = False
        watcher.join()
    assert max(counts) == 2  # the two workers, seen, and never a third process


@pytest.mark.parametrize("name", HOGWILD)
def test_a_worker_that_cannot_be_started_stops_those_already_started(name, monkeypatch):
    module = importlib.import_module(name)
    real_start, starts = multiprocessing.process.BaseProcess.start, []

    def start(process):  # the second fork fails, as it does when the machine runs out of processes
        starts.append(process)
        if len(starts) == 2:
            raise OSError(11, "Resource temporarily unavailable")
        real_start(process)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start)
    before = set(multiprocessing.active_children())
    with pytest.raises(OSError, match="Resource temporarily unavailable"):
        module.main(tiny_args(module, "--total-timesteps", "10000000"))
    assert len(starts) == 2  # no retry, no third
    left = set(multiprocessing.active_children()) - before
    for process in left:  # killed here, so that a failure does not also hang the test session
        process.kill()
        process.join()
    assert not left


@pytest.mark.parametrize("name", HOGWILD)
def test_a_process_that_has_used_cuda_spawns_its_workers_and_the_run_completes(name, monkeypatch):
    """Workers forked from a process that has used CUDA fail at their first backward (autograd's CUDA threads
    do not survive a fork; seen on an H200 when a pytest process had run a GPU script before this one), so
    such a process spawns them. Checked here on any machine by making CUDA look used."""
    module = importlib.import_module(name)
    monkeypatch.setattr(module.torch.cuda, "is_initialized", lambda: False)
    assert module.start_method() == "fork"
    monkeypatch.setattr(module.torch.cuda, "is_initialized", lambda: True)
    assert module.start_method() == "spawn"
    methods, real_get_context = [], module.mp.get_context
    monkeypatch.setattr(module.mp, "get_context", lambda method: methods.append(method) or real_get_context(method))
    module.main(tiny_args(module, "--total-timesteps", "600"))
    assert methods == ["spawn"]
    steps = [int(episode["global_step"]) for episode in read_episodes("run")]
    assert steps and steps == sorted(steps) and steps[-1] <= 600
