"""benchmark/paac_throughput.py: the Table 1 commands its dry run prints are valid paac.py runs at the
paper's settings, and one tiny measurement with the profiler runs end to end (no speed is asserted)."""

import shlex

import pytest

import paac
from benchmark import paac_throughput


def test_dry_run_prints_the_table_1_commands_at_the_papers_budget(capsys):
    result = paac_throughput.main(["--dry-run", "--seeds", "1", "2"])
    printed = capsys.readouterr().out.strip().splitlines()
    assert [shlex.split(line) for line in printed] == result["commands"]
    runs = set()
    for command in result["commands"]:
        assert command[:2] == ["python", "algos/paac.py"]
        args = paac.parse_args(command[2:])
        paac.check_args(args)
        paac.check_env_id(args.env_id)
        assert (args.num_envs, args.num_workers, args.num_steps, args.learning_rate, args.rms_eps) == (32, 8, 5, 0.0224, 0.1)
        assert args.total_timesteps == 80_000_000 and args.anneal and args.max_grad_norm == 3.0
        runs.add((args.env_id, args.arch, args.seed))
    assert runs == {(env, arch, seed) for env in ("PongNoFrameskip-v4", "BreakoutNoFrameskip-v4")
                    for arch in ("nips", "nature") for seed in (1, 2)}


def test_a_tiny_measurement_with_the_profile(capsys):
    pytest.importorskip("envpool")
    result = paac_throughput.main(["--train-steps", "160", "--raw-steps", "320", "--num-workers", "2", "--threads", "1",
                                   "--repeats", "1", "--profile"])
    assert result["backend"] == "envpool" and result["train_steps"] == 160
    assert result["raw_sps"] > 0 and result["train_sps"] > 0
    assert result["ratio"] == pytest.approx(result["train_sps"] / result["raw_sps"])
    phases = result["profile"]["wall"]
    assert {"env step", "forward (acting, graph kept)", "backward", "n-step returns"} <= set(phases)
    assert "ratio" in capsys.readouterr().out
