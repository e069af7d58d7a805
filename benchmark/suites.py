"""The papers' tables as data: which configs run on which envs, for how many steps and seeds, and the
published number each run is compared with, with its source.

Published numbers are those of ../shared/REFERENCE.md (kept in the team's shared folder); each Entry
names the paper and table. A number the reference does not give is left as None: the report then shows
ours alone. Papers report different statistics (TD3's Table 1 is the maximum of a 10-seed mean
evaluation curve, A3C's Table S3 uses human starts), so each suite states what its paper measured;
ratios are a guide, not a test.

Budgets are env steps as the scripts count them (on Atari one step is 4 frames: 10M steps = 40M frames).
Config names (`ppo`, `paac:nature`) are explained in benchmark/registry.py.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Entry:
    config: str
    env_id: str
    total_timesteps: int
    reference: float | None = None
    """the published score to compare with"""
    source: str = ""
    """where `reference` comes from"""


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    seeds: tuple
    entries: tuple
    paper_metric: str = ""
    """what the published numbers measure, printed above the report's table"""
    last_episodes: int = 20
    """the report's final return: the mean of this many last training episodes (the paper's, where it says)"""


# --- classic: every script on its classic-control task, the suite run on every change ---------------------
# Budgets were chosen so the 33 runs fit in an hour on 2 cores (1 torch thread each): about 55 core-minutes
# at the speeds measured on an idle machine (ppo.py's classic preset about 2,000-4,000 steps/s on CartPole,
# a2c_atari.py about 14,000); the scripts still being written are budgeted at guesses of their speed.
CLEANRL_PPO = "CleanRL ppo.py, 500k steps, 3 seeds (REFERENCE.md, 'What other implementations report')"
RL_ZOO = "RL Zoo (SB3), one agent with the zoo's tuned settings and budget (REFERENCE.md)"

CLASSIC = Suite(
    "classic", "every algorithm on its classic-control task (CartPole-v1, Acrobot-v1, Pendulum-v1), 3 seeds; "
    "under an hour on 2 cores", seeds=(1, 2, 3),
    paper_metric="no paper reports these tasks; references are other implementations' final returns",
    entries=(
        Entry("reinforce:baseline", "CartPole-v1", 100_000),
        Entry("a2c_atari", "CartPole-v1", 500_000),
        # 2 workers, not the paper's 16: more than 4 worker processes per core are refused without
        # --oversubscribe, and this suite is meant to run on 2 cores.
        Entry("a3c_hogwild:2-workers", "CartPole-v1", 300_000),
        Entry("async_q:2-workers", "CartPole-v1", 300_000),
        Entry("paac", "CartPole-v1", 500_000),
        Entry("ppo", "CartPole-v1", 500_000, 490.0, CLEANRL_PPO),
        Entry("ppo", "Acrobot-v1", 500_000, -86.4, CLEANRL_PPO),
        Entry("trpo", "Pendulum-v1", 100_000, -175.0, RL_ZOO),
        Entry("ddpg", "Pendulum-v1", 20_000, -152.0, RL_ZOO),
        Entry("td3", "Pendulum-v1", 20_000, -152.0, RL_ZOO),
        Entry("sac", "Pendulum-v1", 20_000, -157.0, RL_ZOO),
    ),
)

# --- PPO Table 1: the surrogate objectives on the MuJoCo tasks --------------------------------------------
# The paper gives one normalised score per objective, averaged over the 7 tasks (3 seeds, 1M steps, v1
# envs); REFERENCE.md does not list those numbers, so the entries carry none.
PPO_TABLE1_ENVS = ("HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5",
                   "Reacher-v5", "Swimmer-v5", "Walker2d-v5")
PPO_TABLE1_VARIANTS = ("no-clip", "clip-0.1", "clip-0.2", "clip-0.3", "adaptive-kl-0.003", "adaptive-kl-0.01",
                       "adaptive-kl-0.03", "fixed-kl-0.3", "fixed-kl-1", "fixed-kl-3", "fixed-kl-10")
PPO_TABLE1 = Suite(
    "ppo-table1", "PPO's surrogate objectives (Schulman et al. 2017, Table 1) on 7 MuJoCo tasks, 1M steps, "
    "3 seeds", seeds=(1, 2, 3),
    paper_metric="Table 1 averages a normalised score (random policy 0, best result 1) over the 7 tasks; "
                 "its numbers are not in REFERENCE.md, so only ours are shown",
    entries=tuple(Entry(f"ppo:{v}", env, 1_000_000) for v in PPO_TABLE1_VARIANTS for env in PPO_TABLE1_ENVS),
)

# --- TD3 Table 1 -------------------------------------------------------------------------------------------
TD3_SOURCE = "Fujimoto et al. 2018, Table 1 (REFERENCE.md)"
TD3_TABLE = {  # env: (TD3, DDPG authors' tuned, DDPG Lillicrap settings, PPO, TRPO, SAC)
    "HalfCheetah-v5": (9636.95, 8577.29, 3305.60, 1795.43, -15.57, 2347.19),
    "Hopper-v5": (3564.07, 1860.02, 2020.46, 2164.70, 2471.30, 2996.66),
    "Walker2d-v5": (4682.82, 3098.11, 1843.85, 3317.69, 2321.47, 1283.67),
    "Ant-v5": (4372.44, 888.77, 1005.30, 1083.20, -75.85, 655.35),
    "Reacher-v5": (-3.60, -4.01, -6.51, -6.18, -111.43, -4.44),
    "InvertedPendulum-v5": (1000.0, 1000.0, 1000.0, 1000.0, 985.40, 1000.0),
    "InvertedDoublePendulum-v5": (9337.47, 8369.95, 9355.52, 8977.94, 205.85, 8487.15),
}
TD3_CONFIGS = ("td3", "ddpg:our-ddpg", "ddpg:lillicrap", "ppo", "trpo", "sac")
TD3_TABLE1 = Suite(
    "td3-table1", "TD3, both DDPGs, PPO, TRPO and SAC on 7 MuJoCo tasks at 1M steps (Fujimoto et al. 2018, "
    "Table 1), 10 seeds", seeds=tuple(range(1, 11)),
    paper_metric="the maximum over training of the 10-seed mean evaluation return (evaluations every 5,000 "
                 "steps, MuJoCo v1 envs; we run v5)",
    entries=tuple(Entry(config, env, 1_000_000, scores[i], TD3_SOURCE)
                  for i, config in enumerate(TD3_CONFIGS) for env, scores in TD3_TABLE.items()),
)

# --- A3C on the games of Table S3 --------------------------------------------------------------------------
# "1 day" of training = 320M frames = 80M steps; the FF 4-day and LSTM columns are about 1B frames = 250M steps.
A3C_SOURCE = "Mnih et al. 2016, Table S3, human starts (REFERENCE.md)"
A3C_TABLE = {  # game: (FF 1 day, FF 4 days, LSTM)
    "PongNoFrameskip-v4": (11.4, 5.6, 10.7),
    "BreakoutNoFrameskip-v4": (551.6, 681.9, 766.8),
    "BeamRiderNoFrameskip-v4": (13235.9, 22707.9, 24622.2),
    "QbertNoFrameskip-v4": (13752.3, 15148.8, 21307.5),
    "SeaquestNoFrameskip-v4": (2300.2, 2355.4, 1326.1),
    "SpaceInvadersNoFrameskip-v4": (2214.7, 15730.5, 23846.0),
}
A3C_ATARI = Suite(
    "a3c-atari", "A3C feed-forward (1 day = 80M steps) and LSTM (4 days, about 250M steps) on the 6 games of "
    "Mnih et al. 2016, Table S3, 3 seeds", seeds=(1, 2, 3),
    paper_metric="Table S3: scores from human starts; ours: the final training episodes (no-op starts), "
                 "so the two are not measured alike",
    entries=tuple(Entry("a3c_hogwild", game, 80_000_000, ff1, A3C_SOURCE + ", A3C FF 1 day")
                  for game, (ff1, _, _) in A3C_TABLE.items())
    + tuple(Entry("a3c_hogwild:lstm", game, 250_000_000, lstm, A3C_SOURCE + ", A3C LSTM")
            for game, (_, _, lstm) in A3C_TABLE.items()),
)

# --- PAAC Table 1 ------------------------------------------------------------------------------------------
PAAC_SOURCE = "Clemente et al. 2017, Table 1 (REFERENCE.md)"
PAAC_TABLE = {  # game: (arch_nips, arch_nature)
    "AmidarNoFrameskip-v4": (701.8, 1348.3),
    "CentipedeNoFrameskip-v4": (5747.32, 7368.1),
    "BeamRiderNoFrameskip-v4": (4062.0, 6844.0),
    "BoxingNoFrameskip-v4": (99.6, 99.8),
    "BreakoutNoFrameskip-v4": (470.1, 565.3),
    "MsPacmanNoFrameskip-v4": (2194.7, 1976.0),
    "NameThisGameNoFrameskip-v4": (9743.7, 14068.0),
    "PongNoFrameskip-v4": (20.6, 20.9),
    "QbertNoFrameskip-v4": (16561.7, 17249.2),
    "SeaquestNoFrameskip-v4": (1754.0, 1755.3),
    "SpaceInvadersNoFrameskip-v4": (1077.3, 1427.8),
    "UpNDownNoFrameskip-v4": (88105.3, 100523.3),
}
PAAC_TABLE1 = Suite(
    "paac-table1", "PAAC with both architectures on the 12 games of Clemente et al. 2017, Table 1, 80M steps "
    "(the length of its learning-rate schedule), 3 seeds", seeds=(1, 2, 3),
    paper_metric="Table 1: scores of the trained agents (30 no-op starts)",
    entries=tuple(Entry(f"paac:{arch}", game, 80_000_000, scores[i], PAAC_SOURCE + f", arch_{arch}")
                  for i, arch in enumerate(("nips", "nature")) for game, scores in PAAC_TABLE.items()),
)

# --- PPO Table 6 -------------------------------------------------------------------------------------------
PPO6_SOURCE = "Schulman et al. 2017, Table 6, 40M frames (REFERENCE.md)"
PPO_TABLE6 = Suite(
    "ppo-table6", "PPO and A2C on Pong, Breakout and BeamRider at 40M frames (10M steps), Schulman et al. 2017, "
    "Table 6, 3 seeds", seeds=(1, 2, 3),
    paper_metric="Table 6: mean final scores (the last 100 training episodes)", last_episodes=100,
    entries=tuple(Entry(config, game, 10_000_000, score, PPO6_SOURCE)
                  for config, scores in (("ppo", (20.7, 274.8, 1590.0)), ("a2c_atari", (19.7, 303.0, 3031.7)))
                  for game, score in zip(("PongNoFrameskip-v4", "BreakoutNoFrameskip-v4", "BeamRiderNoFrameskip-v4"),
                                         scores)),
)

SUITES = {suite.name: suite for suite in (CLASSIC, PPO_TABLE1, TD3_TABLE1, A3C_ATARI, PAAC_TABLE1, PPO_TABLE6)}


def find_reference(config: str, env_id: str, total_timesteps: int | None) -> Entry | None:
    """The suite entry of this config and env at this budget, for a sweep that named no suite."""
    for suite in SUITES.values():
        for entry in suite.entries:
            if (entry.config, entry.env_id, entry.total_timesteps) == (config, env_id, total_timesteps):
                return entry if entry.reference is not None else None
    return None
