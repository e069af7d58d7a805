"""The bad-input table: every case below, given to every script's real command line (`cli`, run in-process),
ends in one line on stderr that names the problem and a non-zero exit, before anything is written.

Cases that need a run directory or a model use real ones, made once per script by a tiny run and then
edited the way a user might (a changed env, an unknown setting, a missing counter)."""

import hashlib
import os

import pytest
import torch

from test_run_contract import SCRIPTS, script, train  # noqa: F401 (script: the fixture over every script)

ATARI_SCRIPTS = {"ppo", "trpo", "a2c_atari", "a3c_hogwild", "async_q", "paac"}
MULTI_PROCESS_SCRIPTS = {"a3c_hogwild", "async_q", "paac"}
# Another env whose observations have another size, so the saved networks cannot fit it.
OTHER_ENV = {"CartPole-v1": "Acrobot-v1", "Pendulum-v1": "MountainCarContinuous-v0"}
# A setting that changes the networks' shapes, where the script has one (the others have fixed networks).
NETWORK_CHANGE = {
    "reinforce": ("hidden_size", 65),
    "sac": ("hidden_size", 33),
    "ddpg": ("hidden_sizes", (33, 32)),
    "td3": ("hidden_sizes", (33, 32)),
    "trpo": ("hidden_sizes", (33, 32)),
    "a3c_hogwild": ("lstm", True),
}

# (case, flags, words the line must hold). FILES stands for the files each case needs, made by `saved_runs`.
FLAG_CASES = [
    ("nan learning rate", ["--learning-rate", "nan"], ["--learning-rate must be a finite number, got nan"]),
    ("inf learning rate", ["--learning-rate", "inf"], ["--learning-rate must be a finite number, got inf"]),
    ("negative learning rate", ["--learning-rate", "-1"], ["--learning-rate must be positive, got -1.0"]),
    ("gamma above 1", ["--gamma", "1.5"], ["--gamma must be in (0, 1]"]),
    ("nan gamma", ["--gamma", "nan"], ["--gamma must be a finite number, got nan"]),
    ("misspelled env id", ["--env-id", "CartPol-v1"], ["unknown environment id 'CartPol-v1'; did you mean CartPole-v1"]),
    ("misspelled env id, tiny budget", ["--env-id", "CartPol-v1", "--total-timesteps", "10"],
     ["unknown environment id 'CartPol-v1'"]),
    ("ALE v5 id", ["--env-id", "ALE/Pong-v5"], ["ALE/Pong-v5"]),
    ("Atari id with its own frame skip", ["--env-id", "Pong-v4"], ["Pong-v4"]),
    ("Atari id without frame skip", ["--env-id", "PongNoFrameskip-v4"], ["PongNoFrameskip-v4"]),
    ("resume of an empty directory", ["--resume", "empty"], ["no checkpoint.pt there"]),
    ("resume of a file that is not a checkpoint", ["--resume", "garbage"], ["is not a checkpoint or model of"]),
    ("resume of a pickle that runs code", ["--resume", "unsafe"], ["is not a checkpoint or model of"]),
    ("evaluate of a missing model", ["evaluate", "missing/model.pt"], ["is not a checkpoint or model of"]),
    ("evaluate of a pickle that runs code", ["evaluate", "unsafe/checkpoint.pt"], ["is not a checkpoint or model of"]),
    ("too many workers", ["--num-workers", "100000"], ["--num-workers 100000 is more than 4 per core", "--oversubscribe"]),
]
# Cases on a saved run of the script itself, edited: (case, edit of the checkpoint, words).
EDIT_CASES = [
    ("resume with an unknown setting", lambda ckpt, name: ckpt["args"].update(bogus=1), ["unknown: ['bogus']"]),
    ("resume with a text where a number belongs", lambda ckpt, name: ckpt["args"].update(learning_rate="fast"),
     ["learning_rate = 'fast'"]),
    ("resume with a setting missing", lambda ckpt, name: ckpt["args"].pop("gamma"), ["missing: ['gamma']"]),
    ("resume with a counter missing", lambda ckpt, name: ckpt.pop("global_step"), ["does not fit this run"]),
    ("resume with another env", lambda ckpt, name: ckpt["args"].update(env_id=OTHER_ENV[ckpt["args"]["env_id"]]),
     ["does not fit this run"]),
    ("resume with another network size", lambda ckpt, name: ckpt["args"].update([NETWORK_CHANGE[name]]),
     ["does not fit this run"]),
    ("resume with nan weights", lambda ckpt, name: [v.fill_(float("nan")) for v in ckpt["model"].values()
                                                    if v.is_floating_point()], ["holds nan or inf"]),
]


class RunsCode:
    """Unpickling this calls print: a file that runs code when loaded, which weights_only refuses."""

    def __reduce__(self):
        return print, ("this ran while loading",)


@pytest.fixture(scope="session")
def saved_runs(tmp_path_factory):
    """A tiny run of each script with a checkpoint and a model, made on first use: {name: run_dir}."""
    runs = {}

    def run_of(name: str) -> str:
        if name not in runs:
            import importlib

            module = importlib.import_module(name)
            flags = SCRIPTS[name]
            run_dir = str(tmp_path_factory.mktemp(f"saved_{name}"))
            cwd = os.getcwd()
            os.chdir(run_dir)  # MuJoCo and wandb write beside the run
            try:
                first = [flags["preset"]] if "preset" in flags else []
                train(module, *first, "--env-id", flags.get("env", "CartPole-v1"), *flags["tiny"], "--run-dir",
                      run_dir, "--eval-episodes", "0", "--checkpoint-every", "1", "--save-model")
            finally:
                os.chdir(cwd)
            runs[name] = run_dir
        return runs[name]

    return run_of


def other_script(name: str) -> str:
    return "ppo" if name == "reinforce" else "reinforce"


def snapshot(top: str = ".") -> dict:
    """Every file under top with a hash of its contents, to see that nothing was written."""
    files = {}
    for root, _, names in os.walk(top):
        for file_name in names:
            path = os.path.join(root, file_name)
            with open(path, "rb") as f:
                files[path] = hashlib.sha256(f.read()).hexdigest()
    return files


def run_cli_in_process(module, argv: list[str], capsys) -> tuple[str, str]:
    """(the exit message, what went to stderr besides it): cli must exit with one line."""
    with pytest.raises(SystemExit) as exit_info:
        module.cli(argv)
    message = exit_info.value.code
    assert isinstance(message, str), f"exit code {message!r} instead of a message"
    captured = capsys.readouterr()
    assert "this ran while loading" not in captured.out  # no code in a refused file ran
    return message, captured.err


def check_one_line(name: str, message: str, stderr: str, words: list[str]) -> None:
    assert message.startswith(f"{name}.py: error: ") and "\n" not in message.strip(), message
    assert "Traceback" not in stderr, stderr
    for word in words:
        assert word in message, (word, message)
    assert "weights_only" not in message  # torch's advice to load untrusted files unsafely is never passed on


def make_files(module) -> None:
    os.makedirs("empty")
    os.makedirs("garbage")
    with open("garbage/checkpoint.pt", "wb") as f:
        f.write(b"not a checkpoint")
    os.makedirs("unsafe")
    torch.save({"args": {}, "payload": RunsCode()}, "unsafe/checkpoint.pt")


@pytest.mark.parametrize("case, flags, words", FLAG_CASES, ids=[c[0] for c in FLAG_CASES])
def test_a_bad_flag_gets_one_line_and_writes_nothing(script, case, flags, words, capsys):
    name, module, script_flags = script
    if case == "too many workers" and name not in MULTI_PROCESS_SCRIPTS:
        pytest.skip("no worker processes")
    if case == "Atari id without frame skip" and name in ATARI_SCRIPTS:
        pytest.skip("a valid id for this script")
    if case.startswith("ALE v5") or case.startswith("Atari id"):
        words = words + (["PongNoFrameskip-v4"] if name in ATARI_SCRIPTS else ["Atari"])
    make_files(module)
    before = snapshot()
    argv = flags if flags[0] == "evaluate" or "--env-id" in flags else ["--env-id", script_flags["env"], *flags]
    if flags[0] != "evaluate" and "--resume" not in flags:
        argv = [*script_flags["first"], *argv, "--run-dir", "run"]
    message, stderr = run_cli_in_process(module, argv, capsys)
    check_one_line(name, message, stderr, words)
    assert snapshot() == before and not os.path.exists("run")


def test_resume_of_another_scripts_run_names_it(script, saved_runs, capsys):
    name, module, _ = script
    other = other_script(name)
    run_dir = saved_runs(other)
    before = snapshot(run_dir)
    message, stderr = run_cli_in_process(module, ["--resume", run_dir], capsys)
    check_one_line(name, message, stderr, [f"written by {other}.py, not {name}.py"])
    assert snapshot(run_dir) == before


def test_evaluate_of_another_scripts_model_names_it(script, saved_runs, capsys):
    name, module, _ = script
    other = other_script(name)
    message, stderr = run_cli_in_process(module, ["evaluate", os.path.join(saved_runs(other), "model.pt")], capsys)
    check_one_line(name, message, stderr, [f"written by {other}.py, not {name}.py"])


@pytest.mark.parametrize("case, edit, words", EDIT_CASES, ids=[c[0] for c in EDIT_CASES])
def test_resume_of_an_edited_checkpoint_gets_one_line_and_writes_nothing(script, saved_runs, case, edit, words,
                                                                         capsys):
    name, module, _ = script
    if case == "resume with another network size" and name not in NETWORK_CHANGE:
        pytest.skip("the network's size is fixed in this script")
    checkpoint = torch.load(os.path.join(saved_runs(name), "checkpoint.pt"), weights_only=True)
    edit(checkpoint, name)
    os.makedirs("edited")
    torch.save(checkpoint, "edited/checkpoint.pt")
    before = snapshot()
    message, stderr = run_cli_in_process(module, ["--resume", "edited"], capsys)
    check_one_line(name, message, stderr, words)
    assert snapshot() == before
