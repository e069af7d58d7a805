"""The off-policy scripts keep their replay buffer in checkpoints: what is saved is the rows stored so far,
never the buffer's whole allocation."""

import importlib
import itertools
import os
import signal

import pytest
import torch

SMALL_NETS = {"ddpg": ["--hidden-sizes", "32", "32"], "td3": ["--hidden-sizes", "32", "32"], "sac": ["--hidden-size", "32"]}


@pytest.mark.parametrize("name", ["ddpg", "td3", "sac"])
def test_a_checkpoint_holds_the_stored_transitions_not_the_buffer_capacity(name, monkeypatch):
    # torch.save writes the whole storage of a view: a checkpoint that saved the buffer's first rows as views
    # held every allocated slot (108 MB for 10 Hopper transitions in the default 1M buffer). Two runs
    # interrupted at the same step, one with 300 slots and one with 100,000, write checkpoints of one size.
    module = importlib.import_module(name)
    sizes = []
    for buffer_size in (300, 100_000):
        def finished_episodes(infos, real=module.finished_episodes, steps=itertools.count(1)):
            if next(steps) == 300:  # main calls this once a step: interrupt the run at step 300
                signal.raise_signal(signal.SIGINT)
            return real(infos)

        run_dir = f"run{buffer_size}"
        with monkeypatch.context() as patch:
            patch.setattr(module, "finished_episodes", finished_episodes)
            result = module.main(module.parse_args([
                "--env-id", "Pendulum-v1", "--total-timesteps", "100000", "--learning-starts", "1000",
                "--buffer-size", str(buffer_size), "--batch-size", "32", "--eval-every", "0", "--eval-episodes", "0",
                "--run-dir", run_dir, *SMALL_NETS[name]]))
        assert result == {"interrupted": True, "global_step": 300, "run_dir": run_dir}
        buffer = torch.load(f"{run_dir}/checkpoint.pt", weights_only=True)["buffer"]
        assert all(value.untyped_storage().nbytes() == value.numel() * 4
                   for value in buffer.values() if isinstance(value, torch.Tensor))
        sizes.append(os.path.getsize(f"{run_dir}/checkpoint.pt"))
    assert abs(sizes[1] - sizes[0]) < 1_000, sizes
