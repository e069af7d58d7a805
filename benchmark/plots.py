"""The report's figures: learning curves of every config on each env (mean over seeds with a 95% Student-t
band, the published reference (a paper or a peer, named in the legend) as a dashed line), one PNG per env and
one of every env side by side; where runs recorded evaluations, their evaluation curves on each env, beside
the references that are evaluations (the TD3 paper's numbers and its own curve); and rliable's performance
profiles, one PNG per env family whose tasks have normalised scores. Each figure says what its band is.
matplotlib is imported only when a figure is drawn."""

import math
import os

import numpy as np

from benchmark import registry
from benchmark.common import atomic_write
from benchmark.results import RunResult, td3_paper_curve
from benchmark.stats import (RESAMPLES, curve, curve_ci, evaluation_curves, evaluations, performance_profiles,
                             score_matrices)
from benchmark.tables import fmt, plural


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def config_colours(runs: list[RunResult]) -> dict:
    """One colour per config, the same on every figure of a report."""
    colours = pyplot().get_cmap("tab10").colors
    return {config: colours[i % len(colours)] for i, config in enumerate(sorted({r.config for r in runs}))}


def seed_curves(runs: list[RunResult], last: int, evaluated: bool) -> tuple[np.ndarray, np.ndarray] | None:
    """(steps, [seeds x steps] values) of one config's runs on one env: their training curves (the mean of the
    last `last` episodes) on a grid over the range every seed covers, or, where `evaluated`, their evaluation
    curves on the steps every run with evaluations has; None when there is no such step."""
    if evaluated:
        steps, values = evaluation_curves([evaluations(r) for r in runs])
        return (np.array(steps), values) if steps else None
    members = [r for r in runs if len(r.steps)]
    if not members:
        return None
    grid = np.linspace(0, min(int(r.steps[-1]) for r in members), 200)
    curves = np.array([curve(r, grid, last) for r in members])
    valid = ~np.isnan(curves).any(axis=0)  # grid steps where every seed has finished an episode
    return (grid[valid], curves[:, valid]) if valid.any() else None


def draw_env(ax, env_id: str, runs: list[RunResult], last: int, colours: dict, small: bool = False,
             evaluated: bool = False) -> list[int]:
    """Learning curves of every config on one env, training returns or (`evaluated`) evaluation returns:
    mean over seeds, shaded 95% Student-t interval of that mean, and the published references of that kind
    (a paper or a peer) as dashed lines of the same colour, with the TD3 paper's own evaluation curve where
    we have it. Returns the numbers of seeds behind the bands drawn."""
    from matplotlib.ticker import EngFormatter

    banded = []
    td3_evaluated = any(evaluations(r) for r in runs if r.config == "td3")
    for config in sorted({r.config for r in runs}):
        colour = colours[config]
        members = [r for r in runs if r.config == config]
        drawn = seed_curves(members, last, evaluated)
        if drawn is not None:
            steps, curves = drawn
            seeds = len(curves)
            ax.plot(steps, curves.mean(axis=0), color=colour, lw=1.6, marker="." if evaluated else None, ms=3,
                    label=f"{config} ({seeds} seed{'s' if seeds > 1 else ''})")
            if seeds >= 2 and len(steps) > 1:
                low, high = curve_ci(curves)
                ax.fill_between(steps, low, high, color=colour, alpha=0.2, lw=0)
                banded.append(seeds)
        referenced = next((r for r in members if r.reference is not None), None)
        if referenced is not None and (referenced.measure != "final") == evaluated:
            ax.axhline(referenced.reference, color=colour, ls="--", lw=1.0, alpha=0.8,
                       label=f"{config}: {short_source(referenced.source)} {fmt(referenced.reference)}"
                       + (" (max of its curve)" if referenced.measure == "eval_max" else ""))
        if config == "td3" and evaluated == td3_evaluated and (paper := td3_paper_curve(env_id)) is not None:
            steps, paper_mean, paper_std = paper
            ax.plot(steps, paper_mean, color=colour, ls=":", lw=1.2, label="td3: paper's curve (mean +- std, 10 seeds)")
            ax.fill_between(steps, paper_mean - paper_std, paper_mean + paper_std, color=colour, alpha=0.08, lw=0)
    ax.set_title(env_id, fontsize=9 if small else 11)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.tick_params(labelsize=7 if small else 9)
    ax.grid(alpha=0.25, lw=0.6)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return banded


def short_source(source: str) -> str:
    """A reference's source as a legend names it: "RL Baselines3 Zoo (Raffin 2020), its published ..." ->
    "RL Baselines3 Zoo"; "paper" where none is recorded."""
    return source.split(" (")[0].split(",")[0].strip() or "paper"


def band_caption(seeds: list[int], legend: bool = True) -> str:
    """What the learning curves' bands are, given the numbers of seeds behind them (which the legend gives
    config by config, where `legend`); "" without bands."""
    if not seeds:
        return ""
    low, high = min(seeds), max(seeds)
    over = f"{low} seeds" if low == high else f"{low} to {high} seeds" + (" (see the legend)" if legend else "")
    return f"band: 95% Student-t interval of the mean over {over}"


def plot_env(env_id: str, runs: list[RunResult], last: int, path: str, colours: dict, evaluated: bool = False) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
    caption = band_caption(draw_env(ax, env_id, runs, last, colours, evaluated=evaluated))
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return" if evaluated else f"episodic return (last {last} episodes)")
    ax.legend(fontsize=7.5, frameon=False, loc="best")
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    fig.text(0.01, 0.012, caption, fontsize=7, color="0.3", ha="left", va="bottom")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def plot_overview(runs: list[RunResult], last: int, path: str, colours: dict) -> None:
    """Every env of the sweep side by side (at most 4 a row), one legend for all."""
    from matplotlib.lines import Line2D

    plt = pyplot()
    envs = sorted({r.env_id for r in runs}, key=lambda e: (registry.env_family(e), e))
    columns = min(4, len(envs))
    rows = math.ceil(len(envs) / columns)
    height = 2.5 * rows + 0.85  # inches; the bottom 0.85 hold the x label, the legend and the caption
    fig, axes = plt.subplots(rows, columns, figsize=(3.3 * columns, height), dpi=150, squeeze=False)
    banded = []
    for ax, env_id in zip(axes.flat, envs):
        banded += draw_env(ax, env_id, [r for r in runs if r.env_id == env_id], last, colours, small=True)
    for ax in list(axes.flat)[len(envs):]:
        ax.set_visible(False)
    handles = [Line2D([], [], color=c, lw=1.6, label=config) for config, c in colours.items()]
    sources = sorted({short_source(r.source) for r in runs if r.reference is not None and r.measure == "final"})
    if sources:
        handles.append(Line2D([], [], color="grey", ls="--", lw=1.0, label="reference: " + ", ".join(sources)))
    fig.legend(handles=handles, loc="lower center", bbox_to_anchor=(0.5, 0.15 / height), ncol=min(len(handles), 6),
               fontsize=8, frameon=False)
    fig.supylabel(f"return (last {last} episodes)", fontsize=9)
    fig.tight_layout(rect=(0, 0.77 / height, 1, 1))
    fig.text(0.5, 0.65 / height, "environment steps", ha="center", va="center", fontsize=9)
    fig.text(0.5, 0.02 / height, band_caption(banded, legend=False), ha="center", va="bottom", fontsize=7, color="0.3")
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)


def plot_curves(runs: list[RunResult], last: int, out: str) -> dict:
    """Write out/curves/<env>.png for each env, out/curves/overview.png when there are several, and
    out/curves/<env>-eval.png for each env where runs recorded evaluations; their titles -> paths relative to
    out, in the order the report shows them."""
    os.makedirs(os.path.join(out, "curves"), exist_ok=True)
    colours = config_colours(runs)
    envs = sorted({r.env_id for r in runs})
    figures = {}
    if len(envs) > 1:
        plot_overview(runs, last, os.path.join(out, "curves", "overview.png"), colours)
        figures["every env"] = os.path.join("curves", "overview.png")
    for env_id in envs:
        relative = os.path.join("curves", env_id.replace("/", "-") + ".png")
        plot_env(env_id, [r for r in runs if r.env_id == env_id], last, os.path.join(out, relative), colours)
        figures[env_id] = relative
    for env_id in envs:
        on_env = [r for r in runs if r.env_id == env_id]
        if any(evaluations(r) for r in on_env):
            relative = os.path.join("curves", env_id.replace("/", "-") + "-eval.png")
            plot_env(env_id, on_env, last, os.path.join(out, relative), colours, evaluated=True)
            figures[f"{env_id}, evaluations"] = relative
    return figures


def plot_profiles(runs: list[RunResult], last: int, out: str) -> dict:
    """rliable's performance profiles of every config on each env family with at least two tasks of
    normalised scores (the groups of the report's table across tasks), one figure a family: the fraction of
    runs scoring above each threshold, with its 95% stratified bootstrap band. Writes
    out/curves/profile-<family>.png; returns their titles -> paths relative to out."""
    by_family = {}
    for (config, family), group in score_matrices(runs, last).items():
        by_family.setdefault(family, {})[config] = group
    colours = config_colours(runs)  # the learning curves' colours
    figures = {}
    for family, groups in sorted(by_family.items()):
        scores = np.concatenate([g["matrix"].ravel() for g in groups.values()])
        taus = np.linspace(min(0.0, scores.min()), max(1.0, scores.max()), 101)
        profiles, bands = performance_profiles({c: g["matrix"] for c, g in groups.items()}, taus)
        scale = "human-normalised score" if family == "atari" else "ours / paper"
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=150)
        for config, group in groups.items():
            seeds, tasks = group["seeds"], len(group["tasks"])
            ax.plot(taus, profiles[config], color=colours[config], lw=1.6,
                    label=f"{config} ({plural(seeds, 'seed')} x {tasks} tasks)")
            if seeds >= 2:
                ax.fill_between(taus, bands[config][0], bands[config][1], color=colours[config], alpha=0.2, lw=0)
        ax.set_title(f"performance profile: {family}", fontsize=11)
        ax.set_xlabel(f"{scale} threshold tau")
        ax.set_ylabel("fraction of runs with score > tau")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.25, lw=0.6)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        ax.legend(fontsize=7.5, frameon=False, loc="best")
        fig.tight_layout(rect=(0, 0.05, 1, 1))
        fig.text(0.01, 0.012, "band: 95% stratified bootstrap interval (rliable; runs resampled within each task, "
                 f"{RESAMPLES:,} resamples)", fontsize=7, color="0.3", ha="left", va="bottom")
        relative = os.path.join("curves", f"profile-{family}.png")
        atomic_write(os.path.join(out, relative), lambda tmp: fig.savefig(tmp, format="png"))
        plt.close(fig)
        figures[f"performance profile: {family}"] = relative
    return figures
