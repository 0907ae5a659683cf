"""Reptile on a policy (Nichol, Achiam and Schulman 2018, arXiv:1803.02999, Algorithm 2)::

    for each task i:  φ_i = k policy-gradient steps from θ, each on fresh rollouts of the current φ_i
    θ ← θ − β · Adam(θ − (1/n) Σ_i φ_i)

First order: no gradient flows through the inner steps; the "gradient" ``θ − mean φ`` goes to the learner's
optimizer (Adam at ``outer_lr``, the paper's §3 variant). The inner step is MAML-RL's (REINFORCE with the linear
baseline); with ``inner_steps = 1`` Reptile is joint training of the expected post-step policy, so it needs
several steps to meta-learn anything (§6).
"""

from __future__ import annotations

from typing import Any

from torch import nn

from metaloop.algorithms.policy_learner import PolicyLearner
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.rl import task_generators


class ReptileRL(PolicyLearner):
    """Reptile (Nichol et al. 2018) on a policy: see the module docstring."""

    reads = ("inner_lr", "inner_steps", "test_inner_lr", "adapt")

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        super().__init__(policy, first_order=True, **kwargs)

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Accumulate ``θ − mean_i φ_i`` into the meta-parameters' gradients; return −(the mean return of the
        rollouts of the last inner step)."""
        tasks, generators = batch.support_x[:, 0], task_generators(batch)
        phi = {n: v.detach() for n, v in self.per_task(len(tasks)).items()}
        for _ in range(self.inner_steps):
            rollouts = self.sample(phi, tasks, generators)
            phi = {n: v.detach() for n, v in self.step(phi, rollouts, create_graph=False).items()}
        for name, p in self.params().items():
            g = p.detach() - phi[name].mean(0)
            p.grad = g if p.grad is None else p.grad + g
        return -float(rollouts.returns.mean())
