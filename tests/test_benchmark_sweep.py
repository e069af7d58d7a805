"""The sweep runner: commands built from data, dry runs of every suite, skipping finished runs, resuming
interrupted ones, reporting failed ones, thread shares and atomic writes. Runs use the fake script of
benchmark_helpers.py (milliseconds each); test_benchmark_suites_run.py runs the real scripts."""

import collections
import ctypes
import dataclasses
import fcntl
import io
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time

import pytest
from benchmark_helpers import calls, install_fake, run_status

from benchmark import __main__ as cli
from benchmark import common, execute, plan, progress, registry, status, suites, sweep

ALL_SCRIPTS = ("reinforce", "a2c_atari", "a3c_hogwild", "async_q", "paac", "trpo", "ppo", "ddpg", "td3", "sac")


# --- commands --------------------------------------------------------------------------------------------


def test_command_from_algo_env_seed_and_overrides():
    run = plan.Run("ppo", "Hopper-v5", 3, 1000, (("learning_rate", "1e-4"), ("anneal", "true"),
                                                  ("norm_adv", "false"), ("hidden_sizes", "64 64")))
    command = plan.build_command(run, "/out/runs/x", threads=2, checkpoint_every=100, python="python")
    assert command == ["python", "algos/ppo.py", "mujoco", "--env-id", "Hopper-v5", "--seed", "3",
                       "--total-timesteps", "1000", "--run-dir", "/out/runs/x", "--threads", "2",
                       "--checkpoint-every", "100", "--learning-rate", "1e-4", "--anneal", "--no-norm-adv",
                       "--hidden-sizes", "64", "64"]
    resumed = plan.build_command(run, "/out/runs/x", threads=2, checkpoint_every=100, resume=True, python="python")
    assert resumed == command + ["--resume", "/out/runs/x"]


def test_presets_by_env_family_and_variants():
    def command(config, env):
        return plan.build_command(plan.Run(config, env, 1), "d", python="python")

    # The preset is the command's first word (a subcommand of the script), never a --preset flag.
    assert command("ppo", "CartPole-v1")[1:4] == ["algos/ppo.py", "classic", "--env-id"]
    assert command("ppo", "BreakoutNoFrameskip-v4")[2] == "atari"
    assert command("a2c_atari", "MinAtar/Breakout-v1")[2] == "minatar"
    assert command("trpo", "Pendulum-v1")[2] == "classic"  # trpo.py's first preset is mujoco
    assert not any(arg.startswith("--preset") for config, env in (("ppo", "Hopper-v5"), ("ddpg", "Hopper-v5"))
                   for arg in command(config, env))
    # reinforce.py's one preset (classic) is its default: the command starts with a flag.
    assert command("reinforce", "CartPole-v1")[2] == "--env-id"
    assert command("reinforce:baseline", "CartPole-v1")[-1] == "--baseline"
    assert command("paac:nature", "PongNoFrameskip-v4")[-2:] == ["--arch", "nature"]
    assert command("a3c_hogwild:lstm", "PongNoFrameskip-v4")[-1] == "--lstm"
    assert command("ppo:adaptive-kl-0.01", "Hopper-v5")[-4:] == ["--surrogate", "adaptive-kl", "--kl-target", "0.01"]
    # A variant's preset replaces the family's; --set preset=... replaces both.
    lillicrap = registry.SCRIPTS["ddpg"].variants["lillicrap"].preset
    assert command("ddpg:lillicrap", "Hopper-v5")[2:4] == [lillicrap, "--env-id"]
    assert command("ddpg:our-ddpg", "Hopper-v5")[2] == "our-ddpg"
    run = plan.Run("ppo", "Hopper-v5", 1, overrides=(("preset", "classic"),))
    assert plan.build_command(run, "d", python="python")[2:4] == ["classic", "--env-id"]
    assert "mujoco" not in plan.build_command(run, "d", python="python")
    # No budget given: the script's own default, so no flag.
    assert "--total-timesteps" not in command("ppo", "CartPole-v1")


def test_env_families():
    assert [registry.env_family(e) for e in ("CartPole-v1", "Pendulum-v1", "Hopper-v5", "ALE/Pong-v5",
                                             "PongNoFrameskip-v4", "MinAtar/Breakout-v1")] == \
        ["classic", "classic", "mujoco", "atari", "atari", "minatar"]


def test_overrides_and_expansion():
    assert plan.parse_overrides(["learning-rate=3e-4", "anneal", "exp_name=a=b"]) == \
        (("learning_rate", "3e-4"), ("anneal", None), ("exp_name", "a=b"))
    with pytest.raises(ValueError):
        plan.parse_overrides(["=3"])
    runs = plan.expand(["ppo", "td3"], ["CartPole-v1", "Hopper-v5"], [1, 2])
    assert [(r.config, r.env_id, r.seed) for r in runs][:3] == [("ppo", "CartPole-v1", 1), ("ppo", "CartPole-v1", 2),
                                                                ("ppo", "Hopper-v5", 1)]
    assert len(runs) == 8 and len({r.name for r in runs}) == 8
    with pytest.raises(ValueError, match="unknown algorithm 'dqn'"):
        plan.expand(["dqn"], ["CartPole-v1"], [1])
    with pytest.raises(ValueError, match="variants of paac: paac:nips, paac:nature"):
        plan.expand(["paac:big"], ["PongNoFrameskip-v4"], [1])


# --- suites ----------------------------------------------------------------------------------------------


def test_suites_are_consistent():
    configs = {e.config for s in suites.SUITES.values() for e in s.entries}
    assert {e.config.split(":")[0] for e in suites.CLASSIC.entries} == set(ALL_SCRIPTS)
    assert set(registry.SCRIPTS) == set(ALL_SCRIPTS)
    for config in configs:
        registry.split_config(config)  # every config exists
    for suite in suites.SUITES.values():
        assert suite.seeds and suite.entries
        for entry in suite.entries:
            assert entry.total_timesteps > 0
            assert (entry.reference is None) == (not entry.source), entry  # a number always has its source
    assert {e.env_id for e in suites.CLASSIC.entries} == {"CartPole-v1", "Acrobot-v1", "Pendulum-v1"}
    assert len(suites.TD3_TABLE1.entries) == 6 * 7 and len(suites.PAAC_TABLE1.entries) == 2 * 12


@pytest.mark.parametrize("name", list(suites.SUITES))
def test_every_suite_dry_runs(name, tmp_path, capsys):
    out = tmp_path / "sweep"
    assert cli.main(["run", "--suite", name, "--dry-run", "--budget-scale", "0.01", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    suite = suites.SUITES[name]
    commands = [shlex.split(line) for line in text.splitlines() if not line.startswith("#")]
    assert len(commands) == len(suite.entries) * len(suite.seeds)
    budgets = sorted({int(c[c.index("--total-timesteps") + 1]) for c in commands})
    assert budgets == sorted({round(e.total_timesteps * 0.01) for e in suite.entries})
    for command in commands:
        assert command[0] == sys.executable and command[1].startswith("algos/")
        assert command[command.index("--run-dir") + 1].startswith(str(out))
    assert not out.exists()  # a dry run writes nothing


def test_suite_selection_and_references(capsys):
    runs = plan.suite_runs(suites.PPO_TABLE6, 0.001, seeds=[7], configs=["ppo"], envs=["PongNoFrameskip-v4"])
    assert [(r.config, r.env_id, r.seed, r.total_timesteps, r.reference) for r in runs] == \
        [("ppo", "PongNoFrameskip-v4", 7, 10_000, 20.7)]
    assert len(plan.suite_runs(suites.PPO_TABLE1, configs=["ppo"])) == len(suites.PPO_TABLE1.entries) * 3
    # A plain run with a suite's config, env and budget carries that suite's number.
    assert cli.main(["run", "--algo", "ppo", "--env", "CartPole-v1", "--seeds", "1", "--total-timesteps",
                     "500000", "--dry-run"]) == 0
    assert "(paper: 490)" in capsys.readouterr().out


def test_suite_entries_set_their_own_flags_and_an_override_wins():
    (run,) = plan.suite_runs(suites.CLASSIC, configs=["sac"], seeds=[1])
    command = plan.build_command(run, "d", python="python")
    assert command[command.index("--learning-starts") + 1] == "1000"  # the entry's 1,000 random steps
    (run,) = plan.suite_runs(suites.CLASSIC, configs=["sac"], seeds=[1], overrides=(("learning_starts", "500"),))
    command = plan.build_command(run, "d", python="python")
    assert command.count("--learning-starts") == 1 and command[command.index("--learning-starts") + 1] == "500"
    hogwild = plan.suite_runs(suites.CLASSIC, configs=["a3c_hogwild:2-workers"], seeds=[1])
    assert [r.processes for r in hogwild] == [2]


def test_td3s_comparisons_give_td3_and_its_ddpg_the_papers_random_steps():
    # Fujimoto et al. 2018 (Section 6.1) and their curves: 10,000 random steps on HalfCheetah and Ant, 1,000
    # (the presets' own) elsewhere. mujoco-short first ran td3 on HalfCheetah with 1,000.
    for suite in (suites.MUJOCO_SHORT, suites.TD3_TABLE1):
        for run in plan.suite_runs(suite, seeds=[1]):
            command = plan.build_command(run, "d", python="python")
            starts = command[command.index("--learning-starts") + 1] if "--learning-starts" in command else None
            long_start = run.config in ("td3", "ddpg:our-ddpg") and run.env_id in ("HalfCheetah-v5", "Ant-v5")
            assert starts == ("10000" if long_start else None), (suite.name, run.config, run.env_id)


def test_cli_refuses_bad_input(capsys):
    for argv in (["run", "--algo", "ppo"], ["run", "--algo", "dqn", "--env", "CartPole-v1"],
                 ["run", "--suite", "classic", "--env", "Nope-v0"]):
        with pytest.raises(SystemExit) as error:
            cli.main(argv)
        assert error.value.code == 2
    assert "unknown algorithm 'dqn'" in capsys.readouterr().err


def test_suites_command_lists_every_suite(capsys):
    assert cli.main(["suites"]) == 0
    text = capsys.readouterr().out
    assert all(name in text for name in suites.SUITES)


def test_slurm_array_script(capsys, tmp_path):
    assert cli.main(["run", "--suite", "classic", "--algo", "ppo", "--workers", "2", "--slurm",
                     "--out", str(tmp_path / "sw")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "#!/bin/bash" and "#SBATCH --array=0-9" in lines  # ppo's 2 envs x 5 seeds
    command = shlex.split(lines[-1].replace('"$SLURM_ARRAY_TASK_ID"', "TASK"))
    assert command[1:] == ["-m", "benchmark", "run", "--suite", "classic", "--algo", "ppo", "--out",
                           str(tmp_path / "sw"), "--workers", "1", "--index", "TASK"]
    assert "#SBATCH --cpus-per-task=1" in lines
    assert not (tmp_path / "sw").exists()
    # A run with worker processes gets as many cores: 2 for the classic suite's Hogwild runs, the paper's 16
    # for A3C on Atari.
    for argv, cores in ((["--suite", "classic", "--algo", "a3c_hogwild:2-workers"], 2), (["--suite", "a3c-atari"], 16)):
        assert cli.main(["run", *argv, "--slurm", "--out", str(tmp_path / "sw")]) == 0
        assert f"#SBATCH --cpus-per-task={cores}" in capsys.readouterr().out.splitlines()


def test_index_runs_one_run_of_the_sweep(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake"], ["CartPole-v1"], [1, 2, 3], 100)
    assert run_sweep(runs, out, only=[1])[0] == 0
    assert [c["run"] for c in calls(out)] == [runs[1].name]
    assert len(json.loads((out / "sweep.json").read_text())["runs"]) == 3  # the report still sees the whole sweep
    with pytest.raises(ValueError):
        run_sweep(runs, out, only=[3])


def test_throughput_subcommand_is_throughput_py(capsys):
    with pytest.raises(SystemExit) as error:
        cli.main(["throughput", "--help"])
    assert error.value.code == 0
    assert "--steps-scale" in capsys.readouterr().out


# --- running -----------------------------------------------------------------------------------------------


def run_sweep(runs, out, **kwargs):
    stream = io.StringIO()
    code = sweep.sweep(runs, str(out), stream=stream, **kwargs)
    return code, stream.getvalue()


def test_sweep_runs_every_run_then_skips_finished_ones(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake"], ["CartPole-v1", "Acrobot-v1"], [1, 2], total_timesteps=100)
    code, text = run_sweep(runs, out, workers=2)
    assert code == 0, text
    assert "4/4 runs finished" in text
    assert "sweep: 4/4 done, 0 running, 0 failed, 0 queued, elapsed" in text and "ETA" in text
    assert len(calls(out)) == 4
    for run in runs:
        run_dir = out / "runs" / run.name
        assert (run_dir / "summary.json").exists() and (run_dir / "episodes.csv").exists()
        assert "fake script starting" in (run_dir / "run.log").read_text()
        assert run_status(out, run.name)["state"] == "finished"
    assert json.loads((out / "sweep.json").read_text())["runs"][0]["name"] == runs[0].name

    code, text = run_sweep(runs, out, workers=2)
    assert code == 0 and "4 finished already" in text
    assert len(calls(out)) == 4  # nothing ran again
    assert "note:" not in text

    # Same runs at another budget: still finished, and the sweep says so.
    code, text = run_sweep(plan.expand(["fake"], ["CartPole-v1"], [1], total_timesteps=200), out)
    assert code == 0 and len(calls(out)) == 4
    assert "note: fake__CartPole-v1__1 finished with --total-timesteps 100, not 200" in text


def test_the_preset_reaches_the_script_as_its_first_word(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)  # its atari preset: "atari"; other families get none
    out = tmp_path / "sweep"
    assert run_sweep(plan.expand(["fake"], ["PongNoFrameskip-v4", "CartPole-v1"], [1], 100), out)[0] == 0
    argv = {c["run"]: c["argv"] for c in calls(out)}
    assert argv["fake__PongNoFrameskip-v4__1"][:2] == ["atari", "--env-id"]
    assert argv["fake__CartPole-v1__1"][0] == "--env-id"
    summary = json.loads((out / "runs" / "fake__PongNoFrameskip-v4__1" / "summary.json").read_text())
    assert summary["args"]["preset"] == "atari"


def test_each_run_gets_its_share_of_threads(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    cores = execute.core_count()
    for workers in (1, 2):
        out = tmp_path / f"sweep{workers}"
        assert run_sweep(plan.expand(["fake"], ["CartPole-v1"], [1], 100), out, workers=workers)[0] == 0
        (call,) = calls(out)
        share = str(max(1, cores // workers))
        assert call["omp"] == share
        assert call["argv"][call["argv"].index("--threads") + 1] == share


def test_a_run_with_worker_processes_has_the_cores_it_asks_for_to_itself(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    sleep = (("mode", "sleep"),)  # half a second each: without the rule, runs started together would overlap
    wide = [dataclasses.replace(r, processes=2) for r in plan.expand(["fake"], ["CartPole-v1"], [1, 2], 100, sleep)]
    narrow = plan.expand(["fake"], ["Acrobot-v1"], [1, 2, 3], 100, sleep)
    code, text = run_sweep(narrow[:1] + wide + narrow[1:], out, workers=2)
    assert code == 0, text
    span = {c["run"]: (c["started"], os.path.getmtime(out / "runs" / c["run"] / "summary.json")) for c in calls(out)}
    assert len(span) == 5
    for run in wide:  # on 2 cores a run of 2 processes never overlaps another run
        start, end = span[run.name]
        assert all(end <= other_start or other_end <= start
                   for name, (other_start, other_end) in span.items() if name != run.name)


def test_interrupted_run_resumes_from_its_checkpoint(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake"], ["CartPole-v1"], [1], 200, overrides=(("mode", "interrupt-once"),))
    code, text = run_sweep(runs, out, checkpoint_fraction=0.1)
    assert code == 1  # not finished yet
    assert "interrupted" in text
    assert run_status(out, runs[0].name)["state"] == "interrupted"

    code, text = run_sweep(runs, out)
    assert code == 0, text
    first, second = calls(out)
    assert "--resume" not in first["argv"] and "--checkpoint-every" in first["argv"]
    assert second["argv"][-2:] == ["--resume", str(out / "runs" / runs[0].name)]
    rows = (out / "runs" / runs[0].name / "episodes.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == list(range(10, 201, 10))  # no gap, no duplicate
    assert run_status(out, runs[0].name)["attempts"] == 2 and run_status(out, runs[0].name)["action"] == "resume"


def test_failed_run_is_reported_and_the_rest_finish(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    monkeypatch.setitem(registry.SCRIPTS, "missing", registry.Script("algos/no_such_script.py"))
    out = tmp_path / "sweep"
    runs = plan.expand(["fake:failing", "fake", "missing"], ["CartPole-v1"], [1], 100)
    code, text = run_sweep(runs, out, workers=2)
    assert code == 1
    assert "2 run(s) did not finish" in text
    table = text[text.index("did not finish"):]
    fail_line = next(line for line in table.splitlines() if line.startswith("fake-failing__CartPole-v1__1"))
    assert fail_line.split()[1:3] == ["3", "failed"]
    assert "boom: a deliberate failure" in table
    assert "no_such_script.py" in table  # a script that does not exist is a failed run, not a crash
    assert run_status(out, "fake__CartPole-v1__1")["state"] == "finished"
    assert run_status(out, "fake-failing__CartPole-v1__1")["returncode"] == 3

    # A rerun retries the failed runs only, from scratch.
    code, text = run_sweep(runs, out, workers=2)
    assert code == 1 and "1 finished already" in text
    assert [c["run"] for c in calls(out)].count("fake__CartPole-v1__1") == 1
    assert run_status(out, "fake-failing__CartPole-v1__1")["attempts"] == 2
    assert (out / "runs" / "fake-failing__CartPole-v1__1" / "run.log").read_text().count("boom") == 2


def test_failed_run_with_checkpoint_restarts_fresh(monkeypatch, tmp_path):
    """A run that crashed after a checkpoint (a NaN stop) is rerun from scratch, not resumed into the crash."""
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake"], ["CartPole-v1"], [1], 100, overrides=(("mode", "nan"),))
    assert run_sweep(runs, out)[0] == 1
    run_dir = out / "runs" / runs[0].name
    assert (run_dir / "checkpoint.pt").exists() and run_status(out, runs[0].name)["state"] == "failed"
    assert status.next_action(str(run_dir)) == "fresh"
    run_sweep(runs, out)
    assert "--resume" not in calls(out)[1]["argv"]


def test_plan_and_classify(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    assert status.next_action(str(run_dir)) == "fresh"
    (run_dir / "checkpoint.pt").write_text("{}")
    assert status.next_action(str(run_dir)) == "resume"  # killed with the sweep: no status of failure
    assert status.classify(str(run_dir), -9) == "interrupted"  # SIGKILL after a checkpoint: resumable
    assert status.classify(str(run_dir), 1) == "failed"
    (run_dir / "summary.json").write_text('{"interrupted": true}')
    assert status.next_action(str(run_dir)) == "resume"
    (run_dir / "summary.json").write_text('{"total_steps": 10}')
    assert status.next_action(str(run_dir)) == "skip" and status.classify(str(run_dir), 0) == "finished"
    (run_dir / "summary.json").write_text('{"total_st')  # half a file is not a finished run
    assert status.next_action(str(run_dir)) == "resume"
    # A status saying running with a live pid is no owner (that pid may be reused): only the lock is.
    running = {"state": "running", "host": os.uname().nodename, "pid": os.getpid()}
    common.write_json(str(run_dir / "status.json"), running)
    assert status.next_action(str(run_dir)) == "resume"
    with hold_lock(run_dir):
        assert status.next_action(str(run_dir)) == "busy"  # another process is running it
    assert status.next_action(str(run_dir)) == "resume"


def hold_lock(run_dir):
    """The run's lock, held as another process running the run would hold it (closing the file releases it)."""
    lock = open(os.path.join(run_dir, "run.lock"), "a")
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return lock


def test_a_run_held_by_another_process_is_left_alone(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake"], ["CartPole-v1"], [1, 2], 100)
    held = out / "runs" / runs[0].name
    held.mkdir(parents=True)
    (held / "episodes.csv").write_text("written by the process running it\n")
    with hold_lock(held):
        code, text = run_sweep(runs, out)
    assert code == 1
    assert f"{runs[0].name}: running elsewhere" in text and "1/2 runs finished, 1 running elsewhere" in text
    assert [c["run"] for c in calls(out)] == [runs[1].name]
    assert (held / "episodes.csv").read_text() == "written by the process running it\n"
    assert not (held / "status.json").exists()


def test_a_run_finished_after_the_plan_is_never_emptied_or_run_again(monkeypatch, tmp_path):
    """A sweep plans every run at its start; another sweep may finish one before this one reaches it. The
    decision is taken again under the run's lock, so the finished run is kept as it is."""
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake"], ["CartPole-v1"], [1], 100)
    assert run_sweep(runs, out)[0] == 0
    run_dir = out / "runs" / runs[0].name
    files = {name: (run_dir / name).read_bytes() for name in os.listdir(run_dir)}
    next_action = status.next_action
    monkeypatch.setattr(status, "next_action", lambda run_dir, holding_lock=False:  # the plan before it finished
                        "fresh" if not holding_lock else next_action(run_dir, holding_lock))
    code, text = run_sweep(runs, out)
    assert code == 0 and "1/1 runs finished" in text and "finished elsewhere" in text
    assert len(calls(out)) == 1
    assert {name: (run_dir / name).read_bytes() for name in os.listdir(run_dir)} == files


def test_sweeps_merge_their_runs_into_sweep_json_one_at_a_time(tmp_path):
    """Two sweeps starting together on one OUT: the second waits for the first to write sweep.json, so
    neither's runs are lost from it (the report lists the runs of sweep.json)."""
    status.record_sweep(str(tmp_path), plan.expand(["ppo"], ["CartPole-v1"], [1]), None)
    with open(tmp_path / "sweep.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the first sweep, between reading and writing sweep.json
        second = threading.Thread(target=status.record_sweep,
                                  args=(str(tmp_path), plan.expand(["ppo"], ["CartPole-v1"], [2]), "classic"))
        second.start()
        second.join(timeout=0.5)
        assert second.is_alive()  # waiting, not writing over the first
    second.join(timeout=10)
    saved = json.loads((tmp_path / "sweep.json").read_text())
    assert [r["seed"] for r in saved["runs"]] == [1, 2] and saved["suites"] == ["classic"]


def test_progress_line_and_eta():
    display = progress.Display(total=5, workers=2, stream=io.StringIO())
    ppo, a2c = plan.Run("ppo", "CartPole-v1", 1, 2000), plan.Run("a2c_atari", "CartPole-v1", 1, 4000)
    assert display.eta([(ppo, "fresh")], {}) == (None, ["ppo"])  # nothing finished yet: unknown
    display.finished += [("ppo", 1000, 10.0), ("a2c_atari", 4000, 4.0)]
    assert display.estimate(ppo) == pytest.approx(20.0)  # ppo's own rate, 10 ms a step
    running = {"a2c": {"run": a2c, "started": time.time() - 1.0}}  # 3 s of its 4 left
    eta, untimed = display.eta([(ppo, "fresh")], running)
    assert eta == pytest.approx((20.0 + 3.0) / 2, abs=0.1) and untimed == []
    line = display.line(2, running, 1, [(ppo, "fresh")])
    assert line.startswith("sweep: 2/5 done, 1 running, 1 failed, 1 queued, elapsed 0:00, ETA 0:1")
    # No td3 run has finished: ppo's or a2c's rate would put it ten times off, so the ETA leaves it out and
    # says so.
    td3 = plan.Run("td3", "Hopper-v5", 1, 5000)
    assert display.estimate(td3) is None
    eta, untimed = display.eta([(ppo, "fresh"), (td3, "fresh")], {})
    assert eta == pytest.approx(20.0 / 2) and untimed == ["td3"]
    assert display.line(2, {}, 0, [(ppo, "fresh"), (td3, "fresh")]).endswith("ETA over 0:10 (td3 not timed yet)")


def test_atomic_write_never_leaves_half_a_file(tmp_path):
    path = tmp_path / "status.json"
    common.write_json(str(path), {"a": 1})

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write('{"a": 2, "b"')
        raise KeyboardInterrupt  # killed while writing

    with pytest.raises(KeyboardInterrupt):
        common.atomic_write(str(path), crash)
    assert json.loads(path.read_text()) == {"a": 1}
    assert os.listdir(tmp_path) == ["status.json"]


def test_sweep_leaves_no_temporary_files(monkeypatch, tmp_path):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    run_sweep(plan.expand(["fake", "fake:failing"], ["CartPole-v1"], [1, 2], 100), out, workers=2)
    files = [os.path.join(p, f) for p, _, names in os.walk(out) for f in names]
    assert not [f for f in files if ".tmp" in os.path.basename(f)]
    for f in files:
        if f.endswith(".json"):
            json.loads(open(f).read())


SWEEP_DRIVER = """
import os, sys, time
sys.path[:0] = [{tests!r}, {root!r}]
import pytest
from benchmark_helpers import install_fake
from benchmark import plan, sweep
install_fake(pytest.MonkeyPatch(), __import__("pathlib").Path({tmp!r}))
runs = plan.expand(["fake"], {envs!r}, {seeds!r}, {steps}, (("mode", {mode!r}),))
open(os.path.join({tmp!r}, f"ready-{{os.getpid()}}"), "w").close()
while sum(name.startswith("ready-") for name in os.listdir({tmp!r})) < {together}:
    time.sleep(0.01)
sys.exit(sweep.sweep(runs, {out!r}, workers={workers}))
"""


def sweep_driver(tmp_path, out, envs=("CartPole-v1", "Acrobot-v1", "Pendulum-v1"), seeds=(1,), steps=100_000,
                 mode="slow", workers=2, together=0) -> list[str]:
    """The command of a sweep in its own process, of the fake script's runs; with together=n, it plans only
    once n such processes have started."""
    tests = os.path.dirname(os.path.abspath(__file__))
    code = SWEEP_DRIVER.format(tests=tests, root=os.path.dirname(tests), tmp=str(tmp_path), out=str(out),
                               envs=list(envs), seeds=list(seeds), steps=steps, mode=mode, workers=workers,
                               together=together)
    return [sys.executable, "-c", code]


def test_ctrl_c_stops_the_sweep_and_a_rerun_resumes(tmp_path):
    """SIGINT to the sweep: the running runs get SIGTERM, save checkpoints and are recorded as interrupted, the
    queued one never starts; the same command then resumes the two and runs the third."""
    out = tmp_path / "sweep"
    driver = sweep_driver(tmp_path, out)
    out.mkdir()
    (out / "slow").touch()
    process = subprocess.Popen(driver, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while len(calls(out)) < 2 and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    text = process.communicate(timeout=60)[0]
    assert process.returncode == 1, text
    assert "stopping the running runs" in text and "1 run(s) not started" in text
    started = [c["run"] for c in calls(out)]
    assert len(started) == 2
    for name in started:
        assert run_status(out, name)["state"] == "interrupted"
        assert (out / "runs" / name / "checkpoint.pt").exists()

    (out / "slow").unlink()
    process = subprocess.run(driver, capture_output=True, text=True, timeout=120)
    assert process.returncode == 0, process.stdout + process.stderr
    assert "(2 resumed)" in process.stdout
    resumed = calls(out)[2:]
    assert sorted(c["run"] for c in resumed if "--resume" in c["argv"]) == sorted(started)


def test_two_sweeps_on_one_out_run_each_run_once(tmp_path):
    """Two sweeps of the same runs started together on one OUT (both plan every run fresh): each run is run
    by one of them, once, and neither empties or reruns a run the other holds or finished."""
    out = tmp_path / "sweep"
    driver = sweep_driver(tmp_path, out, envs=("CartPole-v1", "Acrobot-v1"), seeds=(1, 2), steps=100, workers=1,
                          together=2)
    out.mkdir()
    (out / "slow").touch()  # 10 episodes of 50 ms a run: both sweeps have planned before a run finishes
    processes = [subprocess.Popen(driver, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for _ in range(2)]
    texts = [process.communicate(timeout=120)[0] for process in processes]
    for process, text in zip(processes, texts):
        assert process.returncode in (0, 1) and "did not finish" not in text, text  # 1: some ran in the other
    names = [c["run"] for c in calls(out)]
    assert len(set(names)) == 4 and collections.Counter(names).most_common(1)[0][1] == 1, names
    for name in set(names):
        assert run_status(out, name)["state"] == "finished" and run_status(out, name)["attempts"] == 1
        rows = (out / "runs" / name / "episodes.csv").read_text().splitlines()
        assert len(rows) == 11  # one header, ten episodes: written once, not twice over each other


def test_a_killed_sweep_is_picked_up_by_a_rerun_right_after(tmp_path):
    """A sweep killed with its run (SIGKILL: nothing recorded) leaves status.json saying running, with the pid
    of a dead process. Here that process stays a zombie, as under an init that does not reap orphans at once
    (its pid still answers os.kill(pid, 0)); a reused pid answers too. A rerun right after must run it."""
    out = tmp_path / "sweep"
    driver = sweep_driver(tmp_path, out, envs=("CartPole-v1",), workers=1)
    out.mkdir()
    (out / "slow").touch()
    libc = ctypes.CDLL(None, use_errno=True)
    set_child_subreaper = 36  # prctl option: orphaned descendants become this process's children
    assert libc.prctl(set_child_subreaper, 1, 0, 0, 0) == 0
    run_pid = None
    try:
        process = subprocess.Popen(driver, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        name = "fake__CartPole-v1__1"
        deadline = time.time() + 60
        status_path = str(out / "runs" / name / "status.json")
        while not calls(out) or not (common.read_json(status_path) or {}).get("pid"):  # the run has started
            assert time.time() < deadline and process.poll() is None
            time.sleep(0.05)
        run_pid = run_status(out, name)["pid"]
        process.kill()
        process.wait()
        os.kill(run_pid, signal.SIGKILL)
        os.waitid(os.P_PID, run_pid, os.WEXITED | os.WNOWAIT)  # dead, and left unreaped
        assert run_status(out, name)["state"] == "running"

        (out / "slow").unlink()
        rerun = subprocess.run(driver, capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stdout + rerun.stderr
        # Not taken for a live owner (the message before the lock: "still running in another sweep").
        assert "still running" not in rerun.stdout and "elsewhere" not in rerun.stdout
        assert [c["run"] for c in calls(out)] == [name, name]
        assert run_status(out, name)["state"] == "finished" and run_status(out, name)["attempts"] == 2
    finally:
        if run_pid:
            try:
                os.waitpid(run_pid, 0)
            except ChildProcessError:
                pass
        libc.prctl(set_child_subreaper, 0, 0, 0, 0)
