"""Our scripts against Stable-Baselines3 (SB3), side by side: speed and final return on the same settings.

Each row pits one script of algos/ against its SB3 counterpart (sb3_contrib for TRPO) on the same env, budget,
seeds, network sizes and hyperparameters. The SB3 model is built from our preset: a table per row maps each of
our settings (an Args field, or a fact of our code such as the network's layers) to the SB3 argument that
expresses it, with both values; what SB3 cannot express is listed as the row's unmatched notes. `--settings`
prints the tables; the JSON holds them.

How it is measured: a row runs --pairs pairs; in pair i both sides train with seed --seed + i, each in a fresh
Python process, ours first on even i and SB3 first on odd i, so that a drift of the machine's speed during the
row falls on both sides alike. Every process runs with --threads torch threads (torch.set_num_threads, and
OMP_NUM_THREADS / MKL_NUM_THREADS in its environment). Each side runs as it does by default: ours writes its
TensorBoard log and episodes.csv, SB3 (verbose=0) logs nothing; neither evaluates.

- steps/s, on-policy rows: env steps over the training loop's wall time (ours: the "sps" of summary.json; SB3:
  from the start of learn()'s loop to its end, timed by a callback).
- steps/s, off-policy rows (both sides act randomly for learning_starts steps, then make one gradient step per
  env step): env steps per second from the end of the first gradient step on (ours: summary.json's
  "learning_sps"; SB3: a callback notes the time and num_timesteps at the first rollout that starts after its
  first gradient step, at step learning_starts + 1, the same point).
- final return: the mean of the last 20 training episodes (ours: episodes.csv; SB3: its Monitor's episodes,
  model.ep_info_buffer). At these budgets it checks that both sides learn alike, no more.

Per row: each side's median steps/s and median final return over the pairs, and the ratio ours / SB3 of each
pair with its median and min-max. Absolute steps/s drift by 20-30% between runs on a small shared machine; the
ratios, measured side by side in one run, are the numbers to quote.

    python -m benchmark peers                                    # every row, 3 pairs each
    python -m benchmark peers --only ppo-cartpole sac-hopper --pairs 5 --out peers.json
    python -m benchmark peers --steps-scale 0.05 --pairs 1       # a quick look
    python -m benchmark peers --settings                         # the field-by-field tables only

The TRPO row needs sb3_contrib (pip install -e '.[peers]'); without it the row is skipped with a note.
"""

import argparse
import ast
import dataclasses
import importlib
import inspect
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from importlib import metadata
from typing import NamedTuple

import numpy as np
import torch
import torch.nn as nn
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_atari_env, make_vec_env
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise
from stable_baselines3.common.vec_env import VecFrameStack

from benchmark.common import read_json, write_json
from benchmark.execute import thread_env
from benchmark.plan import ROOT
from benchmark.results import read_episodes
from benchmark.throughput import SCRIPTS, off_policy, row_args

LAST_EPISODES = 20  # final return = the mean of this many last training episodes


@dataclass(frozen=True)
class Row:
    name: str  # what --only selects
    algo: str  # a key of throughput.SCRIPTS
    preset: str
    env_id: str
    peer: str  # the SB3 class (sb3_contrib's for TRPO)
    # env steps at --steps-scale 1: on-policy, rounded to whole batches; off-policy, the steps after learning_starts
    train_steps: int
    overrides: dict = field(default_factory=dict)  # our Args fields changed from the preset


# The off-policy rows: 256-256 networks and batch 256 on both sides, 1,000 random steps first.
OFF_POLICY = dict(learning_starts=1_000)
ROWS = {row.name: row for row in [
    Row("ppo-cartpole", "ppo", "classic", "CartPole-v1", "PPO", 100_000),
    Row("a2c-cartpole", "a2c", "classic", "CartPole-v1", "A2C", 100_000),
    Row("trpo-cartpole", "trpo", "classic", "CartPole-v1", "TRPO", 100_000),
    Row("sac-hopper", "sac", "mujoco", "Hopper-v5", "SAC", 10_000, OFF_POLICY),
    Row("td3-hopper", "td3", "authors", "Hopper-v5", "TD3", 10_000, OFF_POLICY),
    Row("ddpg-hopper", "ddpg", "our-ddpg", "Hopper-v5", "DDPG", 10_000,
        dict(OFF_POLICY, hidden_sizes=(256, 256), batch_size=256)),
    # ours with --bf16 (bfloat16 products, opt-in) against SB3 in float32: what the switch buys
    Row("td3-hopper-bf16", "td3", "authors", "Hopper-v5", "TD3", 10_000, dict(OFF_POLICY, bf16=True)),
    Row("ddpg-hopper-bf16", "ddpg", "our-ddpg", "Hopper-v5", "DDPG", 10_000,
        dict(OFF_POLICY, hidden_sizes=(256, 256), batch_size=256, bf16=True)),
    # ours on its gymnasium backend, so that both sides step the same ALE through the same DQN wrappers
    Row("ppo-breakout", "ppo", "atari", "BreakoutNoFrameskip-v4", "PPO", 50_000, dict(env_backend="gymnasium")),
]}


def our_args(row: Row, seed: int, steps_scale: float, threads: int):
    """Our settings for a row: the preset with the row's overrides, its budget scaled (throughput.row_args:
    whole batches, or learning_starts plus the steps after it), no evaluation, on the CPU with `threads`."""
    args = row_args(row, steps_scale)
    return dataclasses.replace(args, seed=seed, threads=threads, cuda=False)


def peer_label(row: Row) -> str:
    return f"{'sb3_contrib' if row.peer == 'TRPO' else 'SB3'} {row.peer}"


def peer_problem(row: Row) -> str | None:
    """Why the row's peer cannot run here (sb3_contrib, an optional extra, missing), or None."""
    if row.peer != "TRPO":
        return None
    try:
        importlib.import_module("sb3_contrib")
    except ImportError as error:
        return f"sb3_contrib is not importable ({error}); pip install -e '.[peers]'"
    return None


# --- settings, field by field ----------------------------------------------------------------------------


class Setting(NamedTuple):
    """One of our settings and the SB3 argument that expresses it. `peer` is where the value goes: a keyword of
    the SB3 class, "policy_kwargs.KEY" (dots nest), "env.KEY" (how SB3's envs are made: make_peer_env),
    "fixed.ATTR", a value the SB3 class sets itself, not passed but checked on the built model, or a note in
    parentheses, which documents only."""
    ours: str  # our Args field, or where our script fixes the value
    ours_value: object
    peer: str
    peer_value: object


class Anneal:
    """Our linear anneal as an SB3 schedule. Ours multiplies the value by 1 - (k - 1) / N in update k of N. SB3
    asks its schedule at progress_remaining = 1 - k / N, after collecting batch k, so the same factor is
    progress_remaining + 1 / N (a plain linear schedule to 0 would run one update behind, its last at 0)."""

    def __init__(self, start: float, updates: int):
        self.start, self.updates = start, updates

    def __call__(self, progress_remaining: float) -> float:
        return self.start * min(1.0, progress_remaining + 1 / self.updates)

    def __repr__(self) -> str:
        return f"Anneal({self.start:g} x (progress_remaining + 1/{self.updates}))"


def schedule(value: float, anneal: bool, updates: int):
    return Anneal(value, updates) if anneal else value


def require(condition: bool, what: str) -> None:
    """A setting SB3 cannot express at all: the row is refused rather than compared on different terms."""
    if not condition:
        raise ValueError(f"SB3 has no equivalent of {what}")


def mlp_layout(net: nn.Sequential) -> tuple[list[int], type]:
    """The hidden layer sizes of one of our MLPs (Linear layers, each hidden one followed by its activation) and
    the class of that activation."""
    linears = [m for m in net if isinstance(m, nn.Linear)]
    return [m.out_features for m in linears[:-1]], type(net[1])


def optimizer_eps(function, optimizer: str) -> float:
    """The eps that `function` (a script's main, where the optimiser is made, not an Args field) passes to
    torch.optim.<optimizer>, or that optimiser's default: read from its source, so that the table follows a
    change there."""
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(function)))):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == optimizer:
            for keyword in node.keywords:
                if keyword.arg == "eps":
                    return ast.literal_eval(keyword.value)
            return inspect.signature(getattr(torch.optim, optimizer)).parameters["eps"].default
    raise ValueError(f"{function.__module__}.{function.__name__} makes no torch.optim.{optimizer}")


def our_agent(script, args):
    """Our on-policy network for the row's env (built from one env's spaces), and those spaces."""
    envs = script.make_vector_env(dataclasses.replace(args, capture_video=False), args.seed, "", num_envs=1)
    try:
        if hasattr(script, "make_agent"):  # a2c_atari
            agent = script.make_agent(args, envs)
        else:
            agent = script.Agent(envs.single_observation_space, envs.single_action_space, args)
        return agent, envs.single_observation_space
    finally:
        envs.close()


def actor_critic_network(agent, observation_space) -> list[Setting]:
    """Our on-policy network as SB3's ActorCriticPolicy arguments. Vector observations: a policy MLP and a
    value MLP of their own; images: ppo's Nature CNN shared by both heads. Both orthogonally initialised as
    OpenAI baselines did (layer_init: gain sqrt 2, 0.01 on the policy head, 1 on the value head), as SB3's
    ortho_init does."""
    settings = [Setting("network init: orthogonal, gains sqrt(2) / 0.01 policy / 1 value (layer_init)", True,
                        "policy_kwargs.ortho_init", True)]
    if agent.image:
        require(isinstance(agent.trunk, nn.Sequential) and hasattr(agent.actor, "in_features"),
                "this image network (SB3's CnnPolicy is the Nature CNN, shared)")
        frames, size = observation_space.shape[0], observation_space.shape[1]
        return settings + [
            Setting("network: Nature CNN trunk (Agent.trunk)", "nature_cnn", "policy", "CnnPolicy"),
            Setting("network: the trunk shared by both heads (Agent)", True,
                    "policy_kwargs.share_features_extractor", True),
            Setting("network: heads straight on the trunk's 512 units (Agent)", [], "policy_kwargs.net_arch", []),
            Setting("frames stacked (atari kit make_env)", frames, "env.n_stack", frames),
            Setting("Atari chain (atari kit make_env): 30 no-ops, skip 4, life loss ends, fire, clip, 84x84",
                    "DQN chain", "env.wrapper_kwargs",
                    dict(noop_max=30, frame_skip=4, screen_size=size, terminal_on_life_loss=True, clip_reward=True)),
        ]
    actor, activation = mlp_layout(agent.actor)
    critic, _ = mlp_layout(agent.critic)
    return settings + [
        Setting("network: vector observations (Agent)", "MLPs", "policy", "MlpPolicy"),
        Setting("network: policy / value hidden layers, separate MLPs (Agent.actor, Agent.critic)",
                f"{actor} / {critic}", "policy_kwargs.net_arch", dict(pi=actor, vf=critic)),
        Setting("network: activation (Agent)", activation.__name__, "policy_kwargs.activation_fn", activation),
    ]


def common_on_policy(args) -> list[Setting]:
    require(args.env_backend == "gymnasium", "ours' EnvPool backend (both sides must step the same ALE)")
    return [
        Setting("num_envs", args.num_envs, "env.n_envs", args.num_envs),
        Setting("num_steps", args.num_steps, "n_steps", args.num_steps),
        Setting("gamma", args.gamma, "gamma", args.gamma),
        Setting("cuda (set off: both on the CPU)", args.cuda, "device", "cpu"),
    ]


def ppo_settings(args) -> tuple[list[Setting], list[str]]:
    require(args.surrogate == "clip", f"--surrogate {args.surrogate} (SB3's PPO clips)")
    require(not args.normalize_obs and not args.normalize_reward, "ours' normalisation inside the agent")
    agent, observation_space = our_agent(SCRIPTS["ppo"], args)
    adam_eps = optimizer_eps(SCRIPTS["ppo"].main, "Adam")
    settings = common_on_policy(args) + [
        Setting("minibatch_size", args.minibatch_size, "batch_size", args.minibatch_size),
        Setting("update_epochs", args.update_epochs, "n_epochs", args.update_epochs),
        Setting("learning_rate, anneal", (args.learning_rate, args.anneal), "learning_rate",
                schedule(args.learning_rate, args.anneal, args.num_iterations)),
        Setting("clip_coef, anneal", (args.clip_coef, args.anneal), "clip_range",
                schedule(args.clip_coef, args.anneal, args.num_iterations)),
        Setting("value clipping: none (ppo.update)", None, "clip_range_vf", None),
        Setting("gae_lambda", args.gae_lambda, "gae_lambda", args.gae_lambda),
        Setting("ent_coef", args.ent_coef, "ent_coef", args.ent_coef),
        # ours: vf_coef x 0.5 mean (V - R)^2; SB3: vf_coef x mean (V - R)^2
        Setting("vf_coef (ours weighs 0.5 x MSE, SB3 MSE: halved)", args.vf_coef, "vf_coef", args.vf_coef / 2),
        Setting("max_grad_norm", args.max_grad_norm, "max_grad_norm", args.max_grad_norm),
        Setting("norm_adv (per minibatch)", args.norm_adv, "normalize_advantage", args.norm_adv),
        Setting("no early stop on the KL (ppo.main)", None, "target_kl", None),
        Setting("optimizer: Adam (ppo.main)", "Adam", "policy_kwargs.optimizer_class", torch.optim.Adam),
        Setting("Adam eps (ppo.main)", adam_eps, "policy_kwargs.optimizer_kwargs.eps", adam_eps),
        Setting("normalize_obs, normalize_reward", (args.normalize_obs, args.normalize_reward), "(no VecNormalize)",
                None),
    ] + actor_critic_network(agent, observation_space)
    unmatched = []
    if agent.image:
        unmatched.append("frames: ours asks the ALE for greyscale (obs_type='grayscale') and resizes it; SB3's "
                         "AtariWrapper takes RGB frames and converts them with OpenCV (WarpFrame): slightly different "
                         "pixel values, and more work per frame on SB3's side")
    return settings, unmatched


def a2c_settings(args) -> tuple[list[Setting], list[str]]:
    agent, observation_space = our_agent(SCRIPTS["a2c"], args)
    require(not agent.image, "a2c's image networks (the A3C and MinAtar ones)")
    settings = common_on_policy(args) + [
        Setting("learning_rate, anneal", (args.learning_rate, args.anneal), "learning_rate",
                schedule(args.learning_rate, args.anneal, args.num_iterations)),
        Setting("n-step returns: GAE at lambda 1 (a2c kit nstep_returns)", 1.0, "gae_lambda", 1.0),
        Setting("ent_coef", args.ent_coef, "ent_coef", args.ent_coef),
        Setting("vf_coef (of MSE)", args.vf_coef, "vf_coef", args.vf_coef),
        # SB3 always clips; ours' 0 means no clipping, which an infinite norm expresses
        Setting("max_grad_norm", args.max_grad_norm, "max_grad_norm", args.max_grad_norm or float("inf")),
        Setting("advantages not normalised (a2c kit actor_critic_loss)", False, "normalize_advantage", False),
        # what SB3's use_rms_prop=True, rms_prop_eps=EPS sets, with our decay too
        Setting("optimizer: RMSProp (a2c kit RMSpropTF)", "RMSpropTF", "policy_kwargs.optimizer_class",
                torch.optim.RMSprop),
        Setting("rms_decay", args.rms_decay, "policy_kwargs.optimizer_kwargs.alpha", args.rms_decay),
        Setting("rms_eps", args.rms_eps, "policy_kwargs.optimizer_kwargs.eps", args.rms_eps),
        Setting("no weight decay (RMSpropTF)", 0.0, "policy_kwargs.optimizer_kwargs.weight_decay", 0.0),
    ] + actor_critic_network(agent, observation_space)
    unmatched = [f"RMSProp's epsilon ({args.rms_eps:g}): ours adds it inside the square root, g / sqrt(v + eps) "
                 "(TensorFlow's RMSProp, as the A3C paper and baselines), SB3 outside, g / (sqrt(v) + eps) "
                 "(torch.optim.RMSprop): for gradients much smaller than sqrt(eps) ours takes smaller steps. (SB3's "
                 "RMSpropTFLike puts it inside but starts v at 1, ours at 0.)"]
    return settings, unmatched


def trpo_settings(args) -> tuple[list[Setting], list[str]]:
    require(args.line_search, "--no-line-search (sb3_contrib's TRPO always searches)")
    require(not args.normalize_obs, "ours' observation normalisation inside the agent")
    agent, observation_space = our_agent(SCRIPTS["trpo"], args)
    require(not agent.image, "trpo's separate CNNs")
    adam_eps = optimizer_eps(SCRIPTS["trpo"].main, "Adam")
    settings = common_on_policy(args) + [
        Setting("gae_lambda", args.gae_lambda, "gae_lambda", args.gae_lambda),
        Setting("max_kl (delta)", args.max_kl, "target_kl", args.max_kl),
        Setting("cg_iters", args.cg_iters, "cg_max_steps", args.cg_iters),
        Setting("cg_damping", args.cg_damping, "cg_damping", args.cg_damping),
        Setting("backtrack_coeff", args.backtrack_coeff, "line_search_shrinking_factor", args.backtrack_coeff),
        Setting("backtrack_iters", args.backtrack_iters, "line_search_max_iter", args.backtrack_iters),
        Setting("fvp_every", args.fvp_every, "sub_sampling_factor", args.fvp_every),
        Setting("norm_adv (per batch)", args.norm_adv, "normalize_advantage", args.norm_adv),
        Setting("learning_rate (value Adam)", args.learning_rate, "learning_rate", args.learning_rate),
        Setting("value_epochs", args.value_epochs, "n_critic_updates", args.value_epochs),
        Setting("value_minibatch_size", args.value_minibatch_size, "batch_size", args.value_minibatch_size),
        Setting("optimizer: Adam (trpo.main)", "Adam", "policy_kwargs.optimizer_class", torch.optim.Adam),
        Setting("Adam eps (trpo.main: torch's default)", adam_eps, "policy_kwargs.optimizer_kwargs.eps", adam_eps),
        Setting("normalize_obs", args.normalize_obs, "(no VecNormalize)", None),
    ] + actor_critic_network(agent, observation_space)
    unmatched = [
        "the KL in the line search: sb3_contrib measures KL(new || old) and accepts KL < delta, ours KL(old || new) "
        "and KL <= delta (the same Fisher matrix at the old policy; acceptance can differ at the margin)",
        "conjugate gradient: sb3_contrib starts from 1e-4 x N(0, 1), ours from 0",
        "value loss: sb3_contrib mean (V - R)^2, ours half of it; under Adam a constant factor changes the steps "
        "only through eps",
    ]
    if args.fvp_every > 1:
        unmatched.append(f"fvp_every {args.fvp_every}: ours subsamples the Fisher-vector products only; "
                         "sb3_contrib's sub_sampling_factor the whole policy step")
    return settings, unmatched


def replay_settings(args, actor_net: nn.Sequential) -> list[Setting]:
    """What ddpg, td3 and sac share: one env, learning_starts random steps, then one gradient step per env
    step on a batch from a buffer of at most the whole run, Adam with one learning rate."""
    buffer_size = min(args.buffer_size, args.total_timesteps)  # what ours allocates
    _, activation = mlp_layout(actor_net)
    return [
        Setting("one env (replay kit make_vector_env)", 1, "env.n_envs", 1),
        Setting("learning_starts", args.learning_starts, "learning_starts", args.learning_starts),
        Setting("buffer_size (at most total_timesteps)", buffer_size, "buffer_size", buffer_size),
        Setting("batch_size", args.batch_size, "batch_size", args.batch_size),
        Setting("learning_rate", args.learning_rate, "learning_rate", args.learning_rate),
        Setting("gamma", args.gamma, "gamma", args.gamma),
        Setting("tau", args.tau, "tau", args.tau),
        Setting("one gradient step per env step (main)", 1, "train_freq", 1),
        Setting("one gradient step per env step (main)", 1, "gradient_steps", 1),
        Setting("network: MLPs of vector observations", "MLPs", "policy", "MlpPolicy"),
        Setting("network: activation (replay kit mlp)", activation.__name__, "policy_kwargs.activation_fn",
                activation),
        Setting("cuda (set off: both on the CPU)", args.cuda, "device", "cpu"),
    ]


def exploration(args, act_dim: int) -> Setting:
    """Our exploration noise as SB3 action noise: both in units of half the action range ([-1, 1] actions)."""
    sigma = args.exploration_noise * np.ones(act_dim)
    if getattr(args, "exploration", "gaussian") == "ou":  # ddpg's paper preset: OU with dt 1, reset per episode
        noise = OrnsteinUhlenbeckActionNoise(np.zeros(act_dim), sigma, theta=args.ou_theta, dt=1.0)
        return Setting("exploration ou, exploration_noise, ou_theta", (args.exploration_noise, args.ou_theta),
                       "action_noise", noise)
    return Setting("exploration_noise (Gaussian)", args.exploration_noise, "action_noise",
                   NormalActionNoise(np.zeros(act_dim), sigma))


RANDOM_WARMUP_NOTE = ("random start: SB3 adds the exploration noise to its uniform random actions too (clipped), ours "
                      "acts uniformly at random")


def deterministic_actor_settings(algo: str, args, critics: int) -> tuple[list[Setting], list[str]]:
    """What ddpg and td3 share: the replay settings, one hidden-layer list for the actor and the critics, the
    exploration noise, and SB3's one learning rate for both (a note where ours differ)."""
    obs_space, act_space = SCRIPTS[algo].env_spaces(args.env_id)
    agent = SCRIPTS[algo].Agent(obs_space.shape[0], act_space.shape[0], args)
    settings = replay_settings(args, agent.actor.net) + [
        Setting("hidden_sizes (the actor and each critic)", args.hidden_sizes, "policy_kwargs.net_arch",
                list(args.hidden_sizes)),
        Setting(f"critics: {critics} ({algo}.Agent)", critics, "policy_kwargs.n_critics", critics),
        exploration(args, act_space.shape[0]),
    ]
    unmatched = [RANDOM_WARMUP_NOTE]
    if args.bf16:
        unmatched.append("ours with --bf16: its update's matrix products in bfloat16, SB3's in float32 (the row "
                         "measures what the opt-in switch buys, not the same numerics)")
    if args.actor_learning_rate not in (None, args.learning_rate):
        unmatched.append(f"actor learning rate: ours {args.actor_learning_rate:g}, SB3 one rate for both "
                         f"({args.learning_rate:g})")
    return settings, unmatched


def td3_settings(args) -> tuple[list[Setting], list[str]]:
    settings, unmatched = deterministic_actor_settings("td3", args, critics=2)
    settings += [
        Setting("policy_noise", args.policy_noise, "target_policy_noise", args.policy_noise),
        Setting("noise_clip", args.noise_clip, "target_noise_clip", args.noise_clip),
        Setting("policy_delay", args.policy_delay, "policy_delay", args.policy_delay),
    ]
    return settings, unmatched


def ddpg_settings(args) -> tuple[list[Setting], list[str]]:
    settings, unmatched = deterministic_actor_settings("ddpg", args, critics=1)
    settings += [
        Setting("critic_weight_decay (SB3: actor's too)", args.critic_weight_decay,
                "policy_kwargs.optimizer_kwargs.weight_decay", 0.0),
        Setting("actor updated at every step (ddpg.update)", 1, "fixed.policy_delay", 1),
        Setting("no target policy smoothing (ddpg.update)", 0.0, "fixed.target_noise_clip", 0.0),
    ]
    if args.critic_weight_decay:
        unmatched.append(f"critic weight decay: ours {args.critic_weight_decay:g} on the critic only, SB3 none "
                         "(its optimizer_kwargs would reach the actor too)")
    if args.critic_action_layer != 1:
        unmatched.append(f"the action joins ours' critic at layer {args.critic_action_layer}, SB3's at the input")
    if args.final_layer_init is not None:
        unmatched.append(f"final layers: ours U(+-{args.final_layer_init:g}), SB3 PyTorch's default")
    return settings, unmatched


def sac_settings(args) -> tuple[list[Setting], list[str]]:
    obs_space, act_space = SCRIPTS["sac"].env_spaces(args.env_id)
    agent = SCRIPTS["sac"].Agent(obs_space.shape[0], act_space.shape[0], args)
    sizes, _ = mlp_layout(agent.actor.net)  # two layers of hidden_size units
    start_alpha = float(agent.log_alpha.detach().exp())
    settings = replay_settings(args, agent.actor.net) + [
        Setting("hidden_size (two layers: sac.Actor, sac.TwinQ)", args.hidden_size, "policy_kwargs.net_arch",
                dict(pi=sizes, qf=sizes)),
        Setting("two Q networks (sac.TwinQ)", 2, "policy_kwargs.n_critics", 2),
        Setting("Polyak update after every gradient step (sac.update)", 1, "target_update_interval", 1),
        Setting("alpha (None: learned, from exp(log_alpha) at the start)", args.alpha, "ent_coef",
                f"auto_{start_alpha}" if args.alpha is None else args.alpha),
        Setting("target_entropy (None: -|A|)", args.target_entropy, "target_entropy",
                "auto" if args.target_entropy is None else args.target_entropy),
        Setting("no state-dependent exploration", False, "use_sde", False),
    ]
    unmatched = [
        "update order: SB3 steps the temperature, then the Q networks, then the policy against the Q networks "
        "just stepped; ours computes the three losses from the same parameters and takes one Adam step (the "
        "authors' code)",
        "tanh correction of the log-probability: SB3 log(1 - tanh(u)^2 + 1e-6), ours exact (2 (log 2 - u - "
        "softplus(-2u)))",
    ]
    return settings, unmatched


MATCHERS = {"ppo": ppo_settings, "a2c": a2c_settings, "trpo": trpo_settings, "td3": td3_settings,
            "ddpg": ddpg_settings, "sac": sac_settings}


def match(row: Row, args) -> tuple[list[Setting], list[str]]:
    """The row's settings table (ours -> SB3) and its unmatched notes, from our settings `args`."""
    return MATCHERS[row.algo](args)


def peer_arguments(settings: list[Setting]) -> tuple[dict, dict, dict]:
    """(keywords of the SB3 class, how its envs are made, the values it fixes itself) from a settings table:
    each dot of a peer name nests one dict (policy_kwargs.optimizer_kwargs.eps)."""
    model, fixed = {}, {}
    for setting in settings:
        if setting.peer.startswith("("):
            continue
        if setting.peer.startswith("fixed."):
            fixed[setting.peer.removeprefix("fixed.")] = setting.peer_value
            continue
        *parents, leaf = setting.peer.split(".")
        tree = model
        for key in parents:
            tree = tree.setdefault(key, {})
        tree[leaf] = setting.peer_value
    return model, model.pop("env"), fixed


def peer_class(row: Row):
    if row.peer == "TRPO":
        from sb3_contrib import TRPO

        return TRPO
    import stable_baselines3

    return getattr(stable_baselines3, row.peer)


def make_peer_env(env_id: str, seed: int, env: dict):
    """SB3's vector env (DummyVecEnv, a Monitor under each env's wrappers, env i seeded seed + i, as ours):
    Atari through make_atari_env and VecFrameStack, others through make_vec_env."""
    if "wrapper_kwargs" in env:
        return VecFrameStack(make_atari_env(env_id, n_envs=env["n_envs"], seed=seed,
                                            wrapper_kwargs=env["wrapper_kwargs"]), n_stack=env["n_stack"])
    return make_vec_env(env_id, n_envs=env["n_envs"], seed=seed)


def build_peer(row: Row, args):
    """The SB3 model of a row, made from our settings `args` (seed included), untrained."""
    model_kwargs, env_kwargs, fixed = peer_arguments(match(row, args)[0])
    model = peer_class(row)(env=make_peer_env(args.env_id, args.seed, env_kwargs), seed=args.seed, verbose=0,
                            **model_kwargs)
    for name, value in fixed.items():
        if getattr(model, name) != value:
            raise ValueError(f"{row.peer} sets {name} = {getattr(model, name)}, not {value} as the table says")
    return model


def shown(value):
    """A setting's value in the JSON: as it is when JSON can hold it, else its name or repr."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [shown(v) for v in value]
    if isinstance(value, dict):
        return {key: shown(v) for key, v in value.items()}
    return getattr(value, "__name__", None) or repr(value)


# --- one side of a pair, in its own process ----------------------------------------------------------------


class Clock(BaseCallback):
    """Times SB3's learn() the way our scripts time their loops: from the start of its loop to its end and, for
    an off-policy model, from the end of its first gradient step (the first rollout that starts after it,
    at num_timesteps = learning_starts + 1, as ours' learning_sps)."""

    def __init__(self, learning_starts: int | None):
        super().__init__()
        self.learning_starts = learning_starts
        self.start = self.end = None
        self.learning_since: tuple[float, int] | None = None  # (time, num_timesteps)

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_rollout_start(self) -> None:
        steps = self.model.num_timesteps
        if self.learning_starts is not None and self.learning_since is None and steps > self.learning_starts:
            self.learning_since = (time.perf_counter(), steps)

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.end = time.perf_counter()


def final_return(returns) -> float | None:
    return float(np.mean(returns[-LAST_EPISODES:])) if len(returns) else None


def run_ours(row: Row, args, work_dir: str) -> dict:
    run_dir = os.path.join(work_dir, "run")
    summary = SCRIPTS[row.algo].main(dataclasses.replace(args, run_dir=run_dir))
    if summary.get("interrupted"):  # main turns Ctrl-C into a checkpoint and a normal return
        raise KeyboardInterrupt
    _, returns = read_episodes(os.path.join(run_dir, "episodes.csv"))
    learning = off_policy(args)
    return {"sps": float(summary["learning_sps"] if learning else summary["sps"]),
            "rate_from_step": args.learning_starts + 1 if learning else 0,  # ours counts from its first update
            "total_steps": summary["total_steps"], "whole_run_sps": float(summary["sps"]),
            "final_return": final_return(returns), "episodes": len(returns)}


def run_peer(row: Row, args) -> dict:
    torch.set_num_threads(args.threads)
    model = build_peer(row, args)
    learning_starts = args.learning_starts if off_policy(args) else None
    clock = Clock(learning_starts)
    model.learn(total_timesteps=args.total_timesteps, callback=clock)
    steps = model.num_timesteps
    since, first_step = clock.learning_since if learning_starts is not None else (clock.start, 0)
    returns = [float(episode["r"]) for episode in model.ep_info_buffer]  # the last 100, oldest first
    return {"sps": (steps - first_step) / (clock.end - since), "rate_from_step": first_step, "total_steps": steps,
            "whole_run_sps": steps / (clock.end - clock.start), "final_return": final_return(returns)}


def side_main(argv: list[str]) -> None:
    """One side of a pair (what run_side starts): train, then write DIR/result.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmark.peers _side")
    parser.add_argument("side", choices=["ours", "peer"])
    parser.add_argument("row", choices=list(ROWS))
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--steps-scale", type=float, required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--dir", required=True)
    options = parser.parse_args(argv)
    row = ROWS[options.row]
    args = our_args(row, options.seed, options.steps_scale, options.threads)
    result = run_ours(row, args, options.dir) if options.side == "ours" else run_peer(row, args)
    write_json(os.path.join(options.dir, "result.json"), result)


# --- the pairs of a row, and the report --------------------------------------------------------------------


def run_side(row: Row, side: str, seed: int, steps_scale: float, threads: int) -> dict:
    """One side of one pair in a fresh process; its result, or an error with the end of its output."""
    with tempfile.TemporaryDirectory(prefix=f"peers-{row.name}-{side}-") as work_dir:
        command = [sys.executable, "-m", "benchmark.peers", "_side", side, row.name, "--seed", str(seed),
                   "--steps-scale", repr(steps_scale), "--threads", str(threads), "--dir", work_dir]
        python_path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH")) if p)
        env = {**os.environ, **thread_env(threads), "PYTHONPATH": python_path}
        started = time.time()
        done = subprocess.run(command, cwd=work_dir, env=env, capture_output=True, text=True)
        result = read_json(os.path.join(work_dir, "result.json"))
    timing = {"started": started, "process_seconds": round(time.time() - started, 2)}
    if done.returncode or result is None:
        log = (done.stderr or done.stdout or "").strip().splitlines()
        return {"error": f"exit {done.returncode}: {log[-1] if log else 'no output'}", "log_tail": log[-20:],
                **timing}
    return {**result, **timing}


def pair_order(i: int) -> tuple[str, str]:
    """Ours first in even pairs, SB3 first in odd ones."""
    return ("ours", "peer") if i % 2 == 0 else ("peer", "ours")


def summarise(pairs: list[dict]) -> dict:
    """Medians over the pairs where both sides finished, and the ratios' spread."""
    done = [p for p in pairs if p["ratio"] is not None]
    if not done:
        return {"pairs_done": 0}

    def median_of(values):
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    ratios = [p["ratio"] for p in done]
    return {"pairs_done": len(done), "ours_sps": median_of(p["ours"]["sps"] for p in done),
            "peer_sps": median_of(p["peer"]["sps"] for p in done), "ratio_median": statistics.median(ratios),
            "ratio_min": min(ratios), "ratio_max": max(ratios),
            "ours_return": median_of(p["ours"]["final_return"] for p in done),
            "peer_return": median_of(p["peer"]["final_return"] for p in done)}


def row_info(row: Row, args, settings: list[Setting], unmatched: list[str]) -> dict:
    return {"name": row.name, "env_id": row.env_id, "ours": f"{SCRIPTS[row.algo].SCRIPT} {row.preset}",
            "peer": peer_label(row), "overrides": shown(row.overrides), "total_timesteps": args.total_timesteps,
            "learning_starts": args.learning_starts if off_policy(args) else None,
            "settings": [dict(ours=s.ours, ours_value=shown(s.ours_value), peer=s.peer,
                              peer_value=shown(s.peer_value)) for s in settings],
            "unmatched": unmatched}


def measure_row(row: Row, pairs: int, seed: int, steps_scale: float, threads: int) -> dict:
    args = our_args(row, seed, steps_scale, threads)
    result = row_info(row, args, *match(row, args))
    result["pairs"] = []
    for i in range(pairs):
        pair = {"pair": i, "seed": seed + i, "order": list(pair_order(i))}
        for side in pair_order(i):
            pair[side] = run_side(row, side, seed + i, steps_scale, threads)
            outcome = pair[side].get("error") or f"{pair[side]['sps']:,.0f} steps/s"
            print(f"[{row.name}] pair {i + 1}/{pairs}, seed {seed + i}, {side}: {outcome}", file=sys.stderr,
                  flush=True)
        failed = "error" in pair["ours"] or "error" in pair["peer"]
        pair["ratio"] = None if failed else pair["ours"]["sps"] / pair["peer"]["sps"]
        result["pairs"].append(pair)
    result["summary"] = summarise(result["pairs"])
    return result


def fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def budget(row: dict) -> str:
    if row["learning_starts"] is None:
        return f"{row['total_timesteps']:,}"
    return f"{row['learning_starts']:,} random + {row['total_timesteps'] - row['learning_starts']:,}"


def format_table(rows: list[dict]) -> str:
    """The Markdown table of the results, then the rows' unmatched settings, skips and failures."""
    lines = ["| row | ours | peer | env steps | pairs | ours steps/s | peer steps/s | ours / peer: median (min-max) "
             "| ours return | peer return |", "|---|---|---|---|---:|---:|---:|---|---:|---:|"]
    notes = []
    for row in rows:
        if "skipped" in row:
            lines.append(f"| {row['name']} | {row['ours']} | {row['peer']} | - | - | - | - | skipped | - | - |")
            notes.append(f"{row['name']} skipped: {row['skipped']}")
            continue
        s = row["summary"]
        ratio = "-" if not s["pairs_done"] else \
            f"{s['ratio_median']:.2f} ({s['ratio_min']:.2f}-{s['ratio_max']:.2f})"
        lines.append(f"| {row['name']} | {row['ours']} | {row['peer']} | {budget(row)} | {s['pairs_done']}"
                     f"/{len(row['pairs'])} | {fmt(s.get('ours_sps'), ',.0f')} | {fmt(s.get('peer_sps'), ',.0f')} | "
                     f"{ratio} | {fmt(s.get('ours_return'), '.1f')} | {fmt(s.get('peer_return'), '.1f')} |")
        for pair in row["pairs"]:
            notes += [f"{row['name']} pair {pair['pair'] + 1} {side} failed: {pair[side]['error']}"
                      for side in ("ours", "peer") if "error" in pair[side]]
    text = lines + ["", "Off-policy rows: steps/s from the first gradient step on. Return: mean of the last "
                    f"{LAST_EPISODES} training episodes (median over pairs)."]
    unmatched = [(row["name"], note) for row in rows if "skipped" not in row for note in row["unmatched"]]
    if unmatched:
        text += ["", "Unmatched settings:"] + [f"- {name}: {note}" for name, note in unmatched]
    if notes:
        text += [""] + [f"note: {note}" for note in notes]
    return "\n".join(text)


def format_settings(row: Row, args) -> str:
    settings, unmatched = match(row, args)
    lines = [f"## {row.name}: {SCRIPTS[row.algo].SCRIPT} {row.preset} vs {peer_label(row)} on {row.env_id}", "",
             "| ours | value | SB3 | value |", "|---|---|---|---|"]
    lines += [f"| {s.ours} | {shown(s.ours_value)} | {s.peer} | {shown(s.peer_value)} |" for s in settings]
    lines += [""] + [f"- unmatched: {note}" for note in unmatched or ["none found"]]
    return "\n".join(lines)


def versions() -> dict:
    found = SCRIPTS["ppo"].package_versions()
    for package in ("stable-baselines3", "sb3-contrib"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return found


def run(names: list[str], pairs: int, seed: int, steps_scale: float, threads: int, out: str | None = None) -> dict:
    """Measure the named rows; the report (settings and every measurement), also written to `out` after each
    row."""
    report = {"versions": versions(), "cpu_count": os.cpu_count(), "pairs": pairs, "seed": seed,
              "steps_scale": steps_scale, "threads": threads, "loadavg_before": os.getloadavg()[0], "rows": []}
    for name in names:
        row = ROWS[name]
        problem = peer_problem(row)
        if problem:
            report["rows"].append({"name": name, "env_id": row.env_id,
                                   "ours": f"{SCRIPTS[row.algo].SCRIPT} {row.preset}", "peer": peer_label(row),
                                   "skipped": problem})
        else:
            report["rows"].append(measure_row(row, pairs, seed, steps_scale, threads))
        report["loadavg_after"] = os.getloadavg()[0]
        if out:
            write_json(out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmark peers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="+", metavar="ROW", help=f"these rows only: {', '.join(ROWS)}")
    parser.add_argument("--pairs", type=int, default=3, help="pairs of runs per row (default 3)")
    parser.add_argument("--steps-scale", type=float, default=1.0, help="multiply each row's budget (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="torch and OpenMP threads of every run (default 1)")
    parser.add_argument("--seed", type=int, default=1, help="the first pair's seed; pair i uses seed + i (default 1)")
    parser.add_argument("--out", help="also write the settings and every measurement to this JSON file")
    parser.add_argument("--settings", action="store_true", help="print the rows' settings tables and stop")
    options = parser.parse_args(argv)
    unknown = [name for name in options.only or [] if name not in ROWS]
    if unknown:
        parser.exit(2, f"{parser.prog}: error: unknown row {unknown[0]!r} in --only; the rows are "
                       f"{', '.join(ROWS)}\n")
    if options.pairs < 1 or options.threads < 1 or not options.steps_scale > 0:
        parser.exit(2, f"{parser.prog}: error: --pairs, --threads and --steps-scale must be positive, got "
                       f"{options.pairs}, {options.threads} and {options.steps_scale}\n")
    names = [name for name in ROWS if name in (options.only or ROWS)]

    if options.settings:
        for name in names:
            row = ROWS[name]
            problem = peer_problem(row)
            args = our_args(row, options.seed, options.steps_scale, options.threads)
            print(f"## {name} skipped: {problem}" if problem else format_settings(row, args), end="\n\n")
        return 0
    found = versions()
    print(f"torch {found['torch']}, stable-baselines3 {found.get('stable-baselines3')}, sb3-contrib "
          f"{found.get('sb3-contrib', 'not installed')}, {os.cpu_count()} CPUs, {options.threads} thread(s) a run, "
          f"{options.pairs} pair(s) a row, steps scale {options.steps_scale}", flush=True)
    report = run(names, options.pairs, options.seed, options.steps_scale, options.threads, options.out)
    print(format_table(report["rows"]))
    print(f"load average (1 min) before / after: {report['loadavg_before']:.2f} / {report['loadavg_after']:.2f} "
          f"on {os.cpu_count()} CPUs")
    failed = any("error" in pair[side] for row in report["rows"] for pair in row.get("pairs", [])
                 for side in ("ours", "peer"))
    return 1 if failed else 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["_side"]:
        side_main(sys.argv[2:])
    else:
        sys.exit(main())
