"""What the sweep runner knows about each script in algos/: its path, the preset it takes on each family
of environments (the first word of its command: the scripts take their preset as a subcommand), and its
named variants. Every per-script flag the benchmark passes lives here and only here, so a script that
renames a preset or a flag needs one change in this file.

A *config* names what one run trains: a script name (`ppo`), or a script name and one of its variants
(`paac:nature`, `a3c_hogwild:lstm`, `ppo:clip-0.1`). Suites and `run --algo` both take config names.

A family a script has no preset for gets none: the command starts with a flag, and the script takes its
first (default) preset; reinforce.py has one preset, `classic`, so it is never named.
"""

from dataclasses import dataclass, field

MUJOCO_TASKS = ("Ant", "HalfCheetah", "Hopper", "Humanoid", "HumanoidStandup", "InvertedDoublePendulum",
                "InvertedPendulum", "Pusher", "Reacher", "Swimmer", "Walker2d")


def env_family(env_id: str) -> str:
    """atari, minatar, mujoco or classic, from the id alone (no env is made, so dry runs stay instant)."""
    if env_id.startswith("ALE/") or "NoFrameskip" in env_id:
        return "atari"
    if env_id.startswith("MinAtar/"):
        return "minatar"
    if env_id.split("-v")[0] in MUJOCO_TASKS:
        return "mujoco"
    return "classic"


@dataclass(frozen=True)
class Script:
    path: str
    """the script, relative to the repository root"""
    presets: dict = field(default_factory=dict)
    """env family -> the preset to pass (the command's first word); a family not listed gets none (the
    script's first preset)"""
    variants: dict = field(default_factory=dict)
    """variant name -> Variant"""


@dataclass(frozen=True)
class Variant:
    flags: tuple = ()
    """flags added after the common ones"""
    preset: str | None = None
    """a preset that replaces the family's one"""
    label: str = ""
    """what the variant is, for reports"""


_ppo_table1 = {
    "no-clip": Variant(("--surrogate", "none"), label="no clipping or penalty"),
    **{f"clip-{c}": Variant(("--surrogate", "clip", "--clip-coef", c), label=f"clipping, epsilon = {c}")
       for c in ("0.1", "0.2", "0.3")},
    **{f"adaptive-kl-{d}": Variant(("--surrogate", "adaptive-kl", "--kl-target", d), label=f"adaptive KL, d_targ = {d}")
       for d in ("0.003", "0.01", "0.03")},
    **{f"fixed-kl-{b}": Variant(("--surrogate", "fixed-kl", "--kl-beta", b), label=f"fixed KL, beta = {b}")
       for b in ("0.3", "1", "3", "10")},
}

SCRIPTS = {
    "reinforce": Script("algos/reinforce.py", variants={
        "baseline": Variant(("--baseline",), label="with a learned state-value baseline (Alg. 13.4)")}),
    "a2c_atari": Script("algos/a2c_atari.py", {"classic": "classic", "atari": "atari", "minatar": "minatar"},
                        variants={"one-step": Variant(preset="one-step", label="one-step actor-critic (Sutton & "
                                                                               "Barto, Alg. 13.5)")}),
    "a3c_hogwild": Script("algos/a3c_hogwild.py", {"classic": "classic", "atari": "atari"}, variants={
        "lstm": Variant(("--lstm",), label="256-unit LSTM after the dense layer"),
        "2-workers": Variant(("--num-workers", "2"), label="2 worker processes, for small machines")}),
    "async_q": Script("algos/async_q.py", {"classic": "classic", "atari": "atari"}, variants={
        "2-workers": Variant(("--num-workers", "2"), label="2 worker processes, for small machines")}),
    "paac": Script("algos/paac.py", {"classic": "classic", "atari": "atari", "minatar": "minatar"}, variants={
        "nips": Variant(("--arch", "nips"), label="arch_nips (the A3C network)"),
        "nature": Variant(("--arch", "nature"), label="arch_nature (the 2015 DQN network)")}),
    "trpo": Script("algos/trpo.py", {"classic": "classic", "mujoco": "mujoco", "atari": "atari"}),
    "ppo": Script("algos/ppo.py", {"classic": "classic", "mujoco": "mujoco", "atari": "atari"}, variants=_ppo_table1),
    "ddpg": Script("algos/ddpg.py", {"mujoco": "paper"}, variants={
        "our-ddpg": Variant(preset="our-ddpg", label="the TD3 paper's re-tuned DDPG (\"our DDPG\")"),
        "lillicrap": Variant(preset="paper", label="Lillicrap et al.'s settings")}),
    "td3": Script("algos/td3.py", {"mujoco": "paper"}),
    "sac": Script("algos/sac.py", {"mujoco": "mujoco"}),
}


def split_config(config: str) -> tuple[str, str | None]:
    """`paac:nature` -> ("paac", "nature"); `ppo` -> ("ppo", None). Unknown names raise ValueError."""
    algo, _, variant = config.partition(":")
    if algo not in SCRIPTS:
        raise ValueError(f"unknown algorithm {algo!r}; choose from {', '.join(SCRIPTS)}")
    if variant and variant not in SCRIPTS[algo].variants:
        known = ", ".join(f"{algo}:{v}" for v in SCRIPTS[algo].variants) or "none"
        raise ValueError(f"unknown variant {config!r}; variants of {algo}: {known}")
    return algo, variant or None
