"""The kits at the bottom of the scripts are the same text everywhere: the run kit in every script of algos/,
each family kit in every script of its family, each equal to its master copy in tools/kit/."""

import glob
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import sync_kit  # noqa: E402

SCRIPTS = sorted(glob.glob(os.path.join(ROOT, "algos", "*.py")))
# Which scripts hold which family kit: a script that drops one, or gains one it should not, is a change to
# make on purpose, here.
FAMILIES = {
    "run": {os.path.basename(path).removesuffix(".py") for path in SCRIPTS},
    "atari": {"ppo", "trpo", "a2c_atari", "a3c_hogwild", "async_q", "paac"},
    "workers": {"a3c_hogwild", "async_q", "paac"},
    "gae": {"ppo", "trpo"},
    "replay": {"td3", "ddpg", "sac"},
    "hogwild": {"a3c_hogwild", "async_q"},
    "a2c": {"a2c_atari", "paac"},
}


def test_every_copy_equals_its_master():
    assert sync_kit.sync(check=True) == []


@pytest.mark.parametrize("kit", sorted(FAMILIES))
def test_each_kit_is_in_the_scripts_of_its_family(kit):
    holders = set()
    for path in SCRIPTS:
        with open(path) as f:
            if kit in sync_kit.blocks_in(f.read()):
                holders.add(os.path.basename(path).removesuffix(".py"))
    assert holders == FAMILIES[kit]


def test_the_check_finds_an_edited_copy(tmp_path, monkeypatch):
    """The check is not vacuous: one changed character in a copy is reported, and sync puts it back."""
    algos = tmp_path / "algos"
    algos.mkdir()
    (tmp_path / "tools").symlink_to(os.path.join(ROOT, "tools"))
    with open(SCRIPTS[0]) as f:
        text = f.read()
    edited = text.replace("never a traceback", "never a traceback!", 1)
    assert edited != text
    (algos / "script.py").write_text(edited)
    monkeypatch.setattr(sync_kit, "ROOT", str(tmp_path))
    assert sync_kit.sync(check=True) == ["algos/script.py: run"]
    assert sync_kit.sync(check=False) == ["algos/script.py: run"]
    assert (algos / "script.py").read_text() == text
