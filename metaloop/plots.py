"""Plots written into run directories (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from metaloop.tasks.rl import MAX_SPEED, Nav2DTasks, task_generators  # noqa: E402
from metaloop.tasks.sinusoid import SinusoidTasks  # noqa: E402

if TYPE_CHECKING:
    from metaloop.algorithms.base import MetaLearner


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=120, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def training_curve(metrics: Path, path: Path, *, title: str = "") -> Path | None:
    """Meta-training loss against iteration, from ``metrics.jsonl``."""
    if not metrics.exists():
        return None
    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.plot([r["iteration"] for r in rows], [r["loss"] for r in rows])
    ax.set_xlabel("iteration")
    ax.set_ylabel("meta-training loss (query)")
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def adaptation_curve(results: dict[str, dict[str, Any]], path: Path, *, metric: str) -> Path:
    """Metric (mean ± 95% CI over test tasks) against the number of inner steps, one line per run."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, r in results.items():
        steps = sorted(int(s) for s in r["steps"])
        nan = float("nan")  # diverged step counts (null) leave a gap
        mean = [r["steps"][str(s)]["mean"] if r["steps"][str(s)]["mean"] is not None else nan for s in steps]
        ci = [r["steps"][str(s)]["ci95"] if r["steps"][str(s)]["ci95"] is not None else nan for s in steps]
        ax.errorbar(steps, mean, yerr=ci, marker="o", capsize=3, label=name)
    ax.set_xlabel("inner gradient steps at test time")
    ax.set_ylabel(metric)
    if metric == "mse":
        ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)


@torch.no_grad()
def sinusoid_predictions(learner: "MetaLearner", cfg: dict[str, Any], path: Path, *, tasks: int = 3,
                         steps: tuple[int, ...] = (0, 1, 10)) -> Path:
    """Like Figure 2 of Finn et al. 2017: the true curve, the K support points, and the model's
    prediction before and after 1 and 10 gradient steps, for a few test tasks."""
    source = SinusoidTasks(cfg["shots"], 200, seed=cfg["eval_seed"], split="test")
    device = next(learner.parameters()).device
    learner.eval()
    params = {k: v.detach() for k, v in learner.params().items()}
    grid = torch.linspace(-5, 5, 200, device=device)[:, None]
    fig, axes = plt.subplots(1, tasks, figsize=(4 * tasks, 3.2), sharey=True)
    for i, ax in enumerate(axes):
        task = source.batch(i, 1).to(device)
        (sx, sy), _ = task.task(0)
        amp, phase = float(task.info["amplitude"][0]), float(task.info["phase"][0])
        ax.plot(grid.cpu(), (amp * torch.sin(grid - phase)).cpu(), "k-", lw=2, label="ground truth")
        for s, state in zip(steps, learner.adapt_steps(params, (sx, sy), list(steps))):
            ax.plot(grid.cpu(), learner.predict(state, grid).cpu(), "--" if s == 0 else "-",
                    label=f"after {s} step{'s' if s != 1 else ''}")
        ax.plot(sx.cpu(), sy.cpu(), "^", color="purple", ms=8, label=f"{cfg['shots']} support points")
        ax.set_title(f"A={amp:.2f}, φ={phase:.2f}")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{cfg['algo']}: sinusoid, K={cfg['shots']}")
    return _save(fig, path)


@torch.no_grad()
def nav2d_trajectories(learner: Any, cfg: dict[str, Any], path: Path, *, tasks: int = 3,
                       steps: tuple[int, ...] = (0, 1), shown: int = 3) -> Path:
    """Like Figure 5 of Finn et al. 2017: a few trajectories of the policy before and after adaptation, for a few
    test goals of ``rl-nav2d`` (``learner``: a :class:`~metaloop.algorithms.maml_rl.MAMLRL`)."""
    source = Nav2DTasks(seed=cfg["eval_seed"], split="test")
    learner.eval()
    fig, axes = plt.subplots(1, tasks, figsize=(3.6 * tasks, 3.6))
    for i, ax in enumerate(axes):
        batch = source.batch(i, 1)
        goal = batch.support_x[0, 0]
        for s, found in zip(steps, learner.adapt_rollouts(batch.support_x[:, 0], list(steps), task_generators(batch))):
            last = found.obs[0, :, -1:] + found.actions[0, :, -1:].clamp(-MAX_SPEED, MAX_SPEED)
            positions = torch.cat([found.obs[0], last], 1)
            for r in range(min(shown, len(positions))):
                steps_done = int(found.mask[0, r].sum())  # the episode ends at the goal
                ax.plot(positions[r, :steps_done + 1, 0], positions[r, :steps_done + 1, 1], "--" if s == 0 else "-",
                        lw=1, color=f"C{steps.index(s)}", label=f"after {s} step{'s' if s != 1 else ''}" if r == 0
                        else None)
        ax.plot([float(goal[0])], [float(goal[1])], "*", color="k", ms=12, label="goal")
        ax.plot([0], [0], "o", color="gray", ms=5)
        ax.set_aspect("equal")
        ax.set_title(f"goal ({float(goal[0]):.2f}, {float(goal[1]):.2f})")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{cfg['algo']}: rl-nav2d, {cfg['rollouts']} rollouts per step")
    return _save(fig, path)


#: The benchmarks' own plots, by the name a :class:`~metaloop.benchmarks.base.Benchmark` gives: function and file.
BENCHMARK_PLOTS: dict[str, tuple[Any, str]] = {"sinusoid_predictions": (sinusoid_predictions, "predictions.png"),
                                               "nav2d_trajectories": (nav2d_trajectories, "trajectories.png")}


def benchmark_plot(name: str, learner: "MetaLearner", cfg: dict[str, Any], folder: Path) -> Path:
    function, file = BENCHMARK_PLOTS[name]
    return function(learner, cfg, folder / file)


def metric_vs_time(rows: list[dict[str, Any]], path: Path, *, metric: str, title: str = "",
                   footnote: str = "") -> Path:
    """Each algorithm's metric (mean ± 95% CI) against its meta-training wall time; ``footnote`` under the
    axes (which algorithms are missing, and why)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    if footnote:
        fig.text(0.01, -0.02, footnote, fontsize=7, va="top", wrap=True)
    for r in rows:
        minutes = r["train_seconds"] / 60
        ax.errorbar([minutes], [r["mean"]], yerr=[r["ci95"]], marker="o", capsize=3, label=r["algo"])
        ax.annotate(r["algo"], (minutes, r["mean"]), textcoords="offset points", xytext=(5, 5), fontsize=8)
    ax.set_xlabel("meta-training wall time (min)")
    ax.set_ylabel(metric)
    if metric == "mse":
        ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return _save(fig, path)
