"""benchmark/trpo_vs_npg.py runs end to end at a tiny budget; no returns are asserted."""

import json

import pytest

from benchmark import trpo_vs_npg


def test_both_variants_on_the_same_seeds_at_a_tiny_budget(tmp_path, capsys):
    out = tmp_path / "trpo_vs_npg.json"
    rows = trpo_vs_npg.main(["--preset", "classic", "--env-id", "CartPole-v1", "--seeds", "1", "2",
                             "--total-timesteps", "2048", "--eval-episodes", "1", "--out", str(out)])
    assert [(r["variant"], r["seed"]) for r in rows] == [("trpo", 1), ("npg", 1), ("trpo", 2), ("npg", 2)]
    for row in rows:
        assert "error" not in row, row.get("traceback")
        assert row["total_steps"] == 2048 and row["updates"] == 2
        assert 0 <= row["kl_broken_fraction"] <= 1 and 0 <= row["rejected_fraction"] <= 1
        assert row["last20_return"] > 0 and row["eval_return"] > 0
    # The line search never accepts a step past the bound; NPG never rejects one.
    assert all(r["kl_broken_fraction"] == 0 for r in rows if r["variant"] == "trpo")
    assert all(r["rejected_fraction"] == 0 for r in rows if r["variant"] == "npg")
    printed = capsys.readouterr().out
    assert "KL > delta" in printed and "npg" in printed
    assert json.loads(out.read_text())["runs"] == rows


def test_dry_run_prints_one_command_per_variant_and_seed(capsys):
    assert trpo_vs_npg.main(["--dry-run", "--seeds", "4", "5", "--cg-damping", "0.001"]) == []
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 4 and sum("--no-line-search" in line for line in lines) == 2
    assert all(line.split()[1:3] == ["algos/trpo.py", "mujoco"] for line in lines)  # the preset: the first word
    assert all("--seed 4" in line for line in lines[:2]) and all("--env-id Hopper-v5" in line for line in lines)
    assert all("--cg-damping 0.001" in line and "--max-kl 0.01" in line for line in lines)


def test_a_failed_run_is_reported_not_dropped(monkeypatch, capsys):
    def broken(args):
        raise FloatingPointError("the loss became nan")

    monkeypatch.setattr(trpo_vs_npg.trpo, "main", broken)
    rows = trpo_vs_npg.main(["--preset", "classic", "--env-id", "CartPole-v1", "--seeds", "1",
                             "--total-timesteps", "2048"])
    assert [r["error"] for r in rows] == ["FloatingPointError: the loss became nan"] * 2
    assert "failed" in capsys.readouterr().out


def test_bad_settings_stop_before_training():
    with pytest.raises(trpo_vs_npg.trpo.ConfigError, match="unknown environment id"):
        trpo_vs_npg.main(["--env-id", "Hoper-v5", "--total-timesteps", "2048"])
