"""Reinforcement-learning benchmarks: a task is an environment, the data are rollouts of the learner's policy.

``rl-nav2d``: 2D navigation of Finn et al. 2017 (§5.3; :mod:`metaloop.tasks.rl`), with the paper's protocol as
the preset: a Gaussian MLP policy (two hidden layers of 100 ReLU units), 20 rollouts of 100 steps per task and
adaptation step, discount 0.99, one policy-gradient step at α = 0.1, 20 tasks per meta-step, 500 meta-steps. The
metric is the mean undiscounted return of the adapted policy's rollouts (higher is better), after 0, 1, 2 and 3
inner steps (the paper's Table 4 reports these).

``rl-cheetah-dir`` and ``rl-cheetah-vel``: HalfCheetah (:mod:`metaloop.tasks.cheetah`, the ``rl`` extra) with a
reduced protocol as the preset (20 tasks × 10 rollouts of 200 steps per meta-step; the paper: 40 × 20).
The presets are in ``presets/rl.yaml``.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from metaloop.algorithms import RL_ALGORITHMS
from metaloop.benchmarks.base import Benchmark, TaskSource, presets
from metaloop.config import Option
from metaloop.errors import MetaloopError
from metaloop.models.policy import ACTIVATIONS, GaussianMLP
from metaloop.tasks.cheetah import ACT_DIM, OBS_DIM, CheetahTasks, cheetah_rollouts, mujoco_modules
from metaloop.tasks.rl import Nav2DTasks, nav2d_rollouts

#: Options of every benchmark that an RL benchmark does not read (a rollout is not a labelled example).
SUPERVISED_ONLY = ("shots", "queries", "eval_queries", "test_inner_steps")

RL_OPTIONS = (
    Option("rollouts", int, 20, "rl: trajectories per task and adaptation step (the K of K-shot)", positive=True,
           maximum=10_000, why_maximum="all of a task's rollouts are stepped as one tensor"),
    Option("horizon", int, 100, "rl: steps per trajectory", positive=True, maximum=100_000,
           why_maximum="the inner step holds every step's graph"),
    Option("discount", float, 0.99, "rl: discount γ of the returns to go", positive=True, maximum=1.0),
    Option("estimator", str, "maml", "rl: meta-gradient estimator: maml (the paper: through θ' only) or exact "
           "(adds the pre-adaptation samples' score term, unbiased)", choices=("maml", "exact")),
    Option("outer_step", str, "adam", "rl: the outer update: adam (on the DiCE objective, at outer_lr) or trpo (the "
           "paper's: conjugate gradient and a line search under a KL bound; outer_lr unused)", choices=("adam", "trpo")),
    Option("max_kl", float, 0.01, "rl: trpo's bound on the mean KL between the old and new adapted policies",
           positive=True),
    Option("trpo_fisher", str, "exact", "rl: trpo's Fisher-vector products: exact (through the inner step, the "
           "paper's) or adapted (the adapted policies' own Fisher: much cheaper; the line search checks the true KL)",
           choices=("exact", "adapted")),
    Option("fisher_rollouts", int, None, "rl: rollouts per task in trpo's Fisher-vector products (default: all)",
           positive=True, nullable=True),
    Option("clip_eps", float, 0.3, "rl: promp's PPO clipping of the likelihood ratio (ε)", positive=True, maximum=1.0),
    Option("ppo_steps", int, 5, "rl: promp's outer optimizer steps per meta-step, on the same rollouts", positive=True,
           maximum=1000),
    Option("policy_hidden", list, [100, 100], "rl: hidden layer widths of the Gaussian MLP policy", positive=True,
           maximum=65_536),
    Option("policy_activation", str, "relu", "rl: the policy's hidden activation", choices=tuple(ACTIVATIONS)),
)


def _nav2d_policy(cfg: dict[str, Any]) -> nn.Module:
    return GaussianMLP(2, 2, cfg["policy_hidden"], activation=cfg["policy_activation"])


def _nav2d_train(cfg: dict[str, Any]) -> TaskSource:
    return Nav2DTasks(seed=cfg["seed"], split="train")


def _nav2d_test(cfg: dict[str, Any]) -> TaskSource:
    return Nav2DTasks(seed=cfg["eval_seed"], split="test")


def _no_supervised_metric(output: Any, target: Tensor) -> Tensor:
    raise MetaloopError("a reinforcement-learning benchmark has no supervised loss or metric: its learner scores "
                        "returns")


RL_NAV2D = Benchmark(
    name="rl-nav2d",
    description="2D navigation to a goal, meta-RL (Finn et al. 2017 §5.3): --algo " + "|".join(RL_ALGORITHMS),
    metric="return",
    higher_is_better=True,
    make_model=_nav2d_policy,
    loss_fn=_no_supervised_metric,
    metric_fn=_no_supervised_metric,
    train_tasks=_nav2d_train,
    test_tasks=_nav2d_test,
    options=RL_OPTIONS,
    **presets("rl", "rl-nav2d"),
    classification=False,
    size_options=("policy_hidden",),
    environment=nav2d_rollouts,
    unread_options=SUPERVISED_ONLY,
    plot="nav2d_trajectories",
)


def _cheetah_benchmark(kind: str) -> Benchmark:
    what = {"dir": "run forward or backward (a direction ±1 per task)",
            "vel": "run at a target velocity in [0, 2] per task"}[kind]

    def policy(cfg: dict[str, Any]) -> nn.Module:
        mujoco_modules()  # the rl extra is installed, or one line says how to get it
        return GaussianMLP(OBS_DIM, ACT_DIM, cfg["policy_hidden"], activation=cfg["policy_activation"])

    return Benchmark(
        name=f"rl-cheetah-{kind}",
        description=f"HalfCheetah (gymnasium + MuJoCo, the rl extra): {what}; Finn et al. 2017 §5.3",
        metric="return",
        higher_is_better=True,
        make_model=policy,
        loss_fn=_no_supervised_metric,
        metric_fn=_no_supervised_metric,
        train_tasks=lambda cfg: CheetahTasks(kind, seed=cfg["seed"], split="train"),
        test_tasks=lambda cfg: CheetahTasks(kind, seed=cfg["eval_seed"], split="test"),
        options=RL_OPTIONS,
        **presets("rl", f"rl-cheetah-{kind}"),
        classification=False,
        size_options=("policy_hidden",),
        environment=cheetah_rollouts(kind),
        unread_options=SUPERVISED_ONLY,
    )


RL_CHEETAH = (_cheetah_benchmark("dir"), _cheetah_benchmark("vel"))
