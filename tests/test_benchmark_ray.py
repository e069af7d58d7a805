"""The Ray backend on a local Ray instance (ray.init(num_cpus=2)): a two-run sweep, one run failing, then
a rerun that skips the finished one, exactly as the local backend does. Skipped when ray is not installed."""

import io

import pytest
from benchmark_helpers import calls, install_fake, run_status

from benchmark import plan, sweep

ray = pytest.importorskip("ray")


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_two_run_sweep_on_local_ray(monkeypatch, tmp_path, local_ray):
    install_fake(monkeypatch, tmp_path)
    out = tmp_path / "sweep"
    runs = plan.expand(["fake", "fake:failing"], ["CartPole-v1"], [1], total_timesteps=100)
    stream = io.StringIO()
    assert sweep.sweep(runs, str(out), backend="ray", stream=stream) == 1
    text = stream.getvalue()
    assert "2 at a time on the ray backend, 1 thread(s) each" in text
    assert "1 run(s) did not finish" in text and "boom: a deliberate failure" in text
    assert run_status(out, "fake__CartPole-v1__1")["state"] == "finished"
    assert run_status(out, "fake-failing__CartPole-v1__1")["returncode"] == 3
    assert (out / "runs" / "fake__CartPole-v1__1" / "summary.json").exists()
    assert all(call["omp"] == "1" for call in calls(out))

    stream = io.StringIO()
    assert sweep.sweep(runs, str(out), backend="ray", stream=stream) == 1
    assert "1 finished already" in stream.getvalue()
    assert [c["run"] for c in calls(out)].count("fake__CartPole-v1__1") == 1
