"""The papers' tables as data: which configs run on which envs, for how many steps and seeds, and the
published number each run is compared with, with its source.

Each Entry names the paper and table its published number comes from. Where the paper gives no number
for an entry, it is None and the report shows ours alone. Papers report different statistics (TD3's Table 1 is the maximum of a 10-seed mean
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
    measure: str = "final"
    """which of our numbers measures what `reference` measures, and so gives the ratio: "final" (the mean of
    the last training episodes), "eval" (the final noise-free evaluation) or "eval_max" (the maximum over
    training of the seed-mean evaluation curve, the TD3 paper's Table 1)"""
    flags: tuple = ()
    """(key, value) pairs of script flags this entry sets, as `run --set key=value` would (which still wins)"""
    processes: int = 1
    """the cores a run keeps busy (a script's worker processes): the local runner starts a run only while the
    runs going fit on the cores"""


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


# --- classic: every script on its classic-control task ---------------------------------------------------
# Settings per entry, chosen for a machine of 2 cores running 2 runs at a time (1 torch thread each):
# a3c_hogwild and async_q with 2 worker processes instead of the paper's 16 (16 workers on 2 cores would wait
# for each other's cores), and each of those runs takes both cores (processes=2), so no other run shares them;
# paac's classic preset steps its envs in-process; SAC takes 1,000 random steps first, as the ddpg (our-ddpg)
# and td3 (paper) presets do, instead of its MuJoCo preset's 10,000, half of this budget (a Pendulum episode
# is 200 steps); one-step actor-critic (a2c_atari's one-step preset) at its preset's budget; ddpg with
# Lillicrap et al.'s settings at 50k steps, its evaluations every 5,000 steps showing when it learns; trpo
# at 300k: at 100k all 5 seeds were still near -900, and seed 1 run to 600k passed -200 at about 200k.
CLEANRL_PPO = "CleanRL ppo.py (Huang et al. 2022, JMLR), its published benchmark: 500k steps, 3 seeds"
RL_ZOO = ("RL Baselines3 Zoo (Raffin 2020), its published benchmark: one agent with the zoo's tuned settings and "
          "budget, evaluated after training")
CLASSIC_RANDOM_STARTS = (("learning_starts", "1000"),)

CLASSIC = Suite(
    "classic", "every algorithm on its classic-control task (CartPole-v1, Acrobot-v1, Pendulum-v1), 5 seeds; "
    "about 1 h 30 min on 2 cores (its runs took 177 core-minutes, 2026-12-04; benchmark/results/classic)",
    seeds=(1, 2, 3, 4, 5),
    paper_metric="no paper reports these tasks; references are other implementations' published results: "
                 "CleanRL's, its final training returns; the RL Zoo's, evaluations of its trained agents",
    entries=(
        Entry("reinforce:baseline", "CartPole-v1", 100_000),
        Entry("a2c_atari", "CartPole-v1", 500_000),
        Entry("a2c_atari:one-step", "CartPole-v1", 150_000),
        Entry("a3c_hogwild:2-workers", "CartPole-v1", 300_000, processes=2),
        Entry("async_q:2-workers", "CartPole-v1", 300_000, processes=2),
        Entry("paac", "CartPole-v1", 500_000),
        Entry("ppo", "CartPole-v1", 500_000, 490.0, CLEANRL_PPO),
        Entry("ppo", "Acrobot-v1", 500_000, -86.4, CLEANRL_PPO),
        Entry("trpo", "Pendulum-v1", 300_000, -175.0, RL_ZOO, "eval"),
        Entry("ddpg:our-ddpg", "Pendulum-v1", 20_000, -152.0, RL_ZOO, "eval"),
        Entry("ddpg:lillicrap", "Pendulum-v1", 50_000),
        Entry("td3", "Pendulum-v1", 20_000, -152.0, RL_ZOO, "eval"),
        Entry("sac", "Pendulum-v1", 20_000, -157.0, RL_ZOO, "eval", CLASSIC_RANDOM_STARTS),
    ),
)

# --- PPO Table 1: the surrogate objectives on the MuJoCo tasks --------------------------------------------
# The paper gives one normalised score per objective, averaged over the 7 tasks (3 seeds, 1M steps, v1
# envs), not per task, so the entries carry none.
PPO_TABLE1_ENVS = ("HalfCheetah-v5", "Hopper-v5", "InvertedDoublePendulum-v5", "InvertedPendulum-v5",
                   "Reacher-v5", "Swimmer-v5", "Walker2d-v5")
PPO_TABLE1_VARIANTS = ("no-clip", "clip-0.1", "clip-0.2", "clip-0.3", "adaptive-kl-0.003", "adaptive-kl-0.01",
                       "adaptive-kl-0.03", "fixed-kl-0.3", "fixed-kl-1", "fixed-kl-3", "fixed-kl-10")
PPO_TABLE1 = Suite(
    "ppo-table1", "PPO's surrogate objectives (Schulman et al. 2017, Table 1) on 7 MuJoCo tasks, 1M steps, "
    "3 seeds", seeds=(1, 2, 3),
    paper_metric="Table 1 averages a normalised score (random policy 0, best result 1) over the 7 tasks; "
                 "it has no per-task number to set ours beside, so only ours are shown",
    entries=tuple(Entry(f"ppo:{v}", env, 1_000_000) for v in PPO_TABLE1_VARIANTS for env in PPO_TABLE1_ENVS),
)

# --- TD3 Table 1 -------------------------------------------------------------------------------------------
TD3_SOURCE = "Fujimoto et al. 2018, Addressing Function Approximation Error in Actor-Critic Methods, Table 1"
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


def td3_random_starts(config: str, env_id: str) -> tuple:
    """Fujimoto et al. 2018, Section 6.1: random actions for the first 10,000 steps on the envs whose episodes
    always last 1,000 steps (HalfCheetah, Ant), 1,000 on the others, as the authors' script for the published
    curves also passes (start_timesteps); for td3 and their tuned DDPG, whose presets take 1,000."""
    if config in ("td3", "ddpg:our-ddpg") and env_id.split("-")[0] in ("HalfCheetah", "Ant"):
        return (("learning_starts", "10000"),)
    return ()


TD3_TABLE1 = Suite(
    "td3-table1", "TD3, both DDPGs, PPO, TRPO and SAC on 7 MuJoCo tasks at 1M steps (Fujimoto et al. 2018, "
    "Table 1), 10 seeds", seeds=tuple(range(1, 11)),
    paper_metric="the maximum over training of the 10-seed mean evaluation return (evaluations every 5,000 "
                 "steps, MuJoCo v1 envs; we run v5)",
    entries=tuple(Entry(config, env, 1_000_000, scores[i], TD3_SOURCE, "eval_max", td3_random_starts(config, env))
                  for i, config in enumerate(TD3_CONFIGS) for env, scores in TD3_TABLE.items()),
)

# --- mujoco-short: TD3's comparison on two tasks, cut to fit 2 cores in a few hours ------------------------
# The off-policy scripts at 100k steps, beside the TD3 paper's own TD3 curve at 100k (benchmark/data: the
# authors' published curves, every 5,000 steps; the paper publishes no SAC or DDPG curve there, so those
# entries show ours alone), and PPO and TRPO at the paper's 1M steps, beside Table 1's PPO and TRPO columns.
# The off-policy scripts evaluate every 5,000 steps as the paper does; ppo and trpo every 25,000 (40
# evaluations of 10 episodes instead of 200, which would about double a run's time), so their maximum is
# taken over a coarser curve than Table 1's; with the Gaussian's mean action, noise-free like the paper's.
TD3_CURVES = "Fujimoto et al. 2018, the authors' published TD3 learning curves (10 seeds), at 100k steps"
MUJOCO_SHORT_TASKS = ("Hopper-v5", "HalfCheetah-v5")
TD3_AT_100K = {"Hopper-v5": 659.45, "HalfCheetah-v5": 5513.52}  # data/td3_paper_curves.csv, step 100,000
ON_POLICY_CURVE = (("eval_every", "25000"), ("eval_deterministic", "true"))
MUJOCO_SHORT = Suite(
    "mujoco-short", "td3, sac and ddpg (our-ddpg) at 100k steps, ppo and trpo at 1M steps, on Hopper-v5 and "
    "HalfCheetah-v5 (Fujimoto et al. 2018's comparison, shortened; td3 and ddpg take 10,000 random steps on "
    "HalfCheetah, as the paper), 5 seeds; about 5 h 30 min on 2 cores (its runs took 10.0 core-hours, 2026-12-04; "
    "benchmark/results/mujoco-short)", seeds=(1, 2, 3, 4, 5),
    paper_metric="TD3's curves and Table 1 are noise-free evaluations (10 episodes every 5,000 steps, MuJoCo v1 "
                 "envs; we run v5). For td3 the paper's number is its seed-mean curve at 100k steps: compare it "
                 "with our eval (the final evaluation, at 100k). For ppo and trpo it is Table 1, the maximum over "
                 "1M steps of the 10-seed mean curve: compare it with our eval max (our curve every 25,000 steps)",
    entries=tuple(Entry("td3", env, 100_000, TD3_AT_100K[env], TD3_CURVES, "eval", td3_random_starts("td3", env))
                  for env in MUJOCO_SHORT_TASKS)
    + tuple(Entry("sac", env, 100_000) for env in MUJOCO_SHORT_TASKS)
    + tuple(Entry("ddpg:our-ddpg", env, 100_000, flags=td3_random_starts("ddpg:our-ddpg", env))
            for env in MUJOCO_SHORT_TASKS)
    + tuple(Entry(config, env, 1_000_000, TD3_TABLE[env][TD3_CONFIGS.index(config)], f"{TD3_SOURCE}, {config.upper()}",
                  "eval_max", ON_POLICY_CURVE)
            for config in ("ppo", "trpo") for env in MUJOCO_SHORT_TASKS),
)

# --- A3C on the games of Table S3 --------------------------------------------------------------------------
# "1 day" of training = 320M frames = 80M steps; the FF 4-day and LSTM columns are about 1B frames = 250M steps.
# Each run keeps the paper's 16 worker processes busy (processes=16): a local sweep runs one at a time, a
# Slurm array asks 16 cores a task.
A3C_SOURCE = "Mnih et al. 2016, Asynchronous Methods for Deep Reinforcement Learning, Table S3, human starts"
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
    entries=tuple(Entry("a3c_hogwild", game, 80_000_000, ff1, A3C_SOURCE + ", A3C FF 1 day", processes=16)
                  for game, (ff1, _, _) in A3C_TABLE.items())
    + tuple(Entry("a3c_hogwild:lstm", game, 250_000_000, lstm, A3C_SOURCE + ", A3C LSTM", processes=16)
            for game, (_, _, lstm) in A3C_TABLE.items()),
)

# --- PAAC Table 1 ------------------------------------------------------------------------------------------
PAAC_SOURCE = "Clemente et al. 2017, Efficient Parallel Methods for Deep Reinforcement Learning, Table 1"
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
PPO6_SOURCE = "Schulman et al. 2017, Proximal Policy Optimization Algorithms, Table 6, 40M frames"
PPO_TABLE6 = Suite(
    "ppo-table6", "PPO and A2C on Pong, Breakout and BeamRider at 40M frames (10M steps), Schulman et al. 2017, "
    "Table 6, 3 seeds", seeds=(1, 2, 3),
    paper_metric="Table 6: mean final scores (the last 100 training episodes)", last_episodes=100,
    entries=tuple(Entry(config, game, 10_000_000, score, PPO6_SOURCE)
                  for config, scores in (("ppo", (20.7, 274.8, 1590.0)), ("a2c_atari", (19.7, 303.0, 3031.7)))
                  for game, score in zip(("PongNoFrameskip-v4", "BreakoutNoFrameskip-v4", "BeamRiderNoFrameskip-v4"),
                                         scores)),
)

SUITES = {suite.name: suite for suite in (CLASSIC, MUJOCO_SHORT, PPO_TABLE1, TD3_TABLE1, A3C_ATARI, PAAC_TABLE1,
                                          PPO_TABLE6)}


def find_reference(config: str, env_id: str, total_timesteps: int | None) -> Entry | None:
    """The suite entry of this config and env at this budget, for a sweep that named no suite."""
    for suite in SUITES.values():
        for entry in suite.entries:
            if (entry.config, entry.env_id, entry.total_timesteps) == (config, env_id, total_timesteps):
                return entry if entry.reference is not None else None
    return None
