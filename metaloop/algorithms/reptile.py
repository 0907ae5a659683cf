"""Reptile.

Nichol, Achiam and Schulman, "On First-Order Meta-Learning Algorithms", 2018 (arXiv:1803.02999),
Algorithm 2 (batched)::

    for each task i:  φ_i = U^k_τi(θ)          (k steps of SGD or Adam on the task's support set)
    θ ← θ + ε · (1/n) Σ_i (φ_i − θ)

We write the outer update as plain SGD with learning rate ε on the "gradient" ``θ − mean_i φ_i``,
which is the same formula. ``anneal=True`` decays ε linearly to 0 over the run, as in the paper's
code. ``outer_optimizer="adam"`` is the variant of the paper's §3: "instead of simply updating θ in the
direction φ − θ, we can treat (θ − φ) as a gradient and plug it into a more sophisticated optimizer like
Adam"; the "gradient" is the same, Adam's step replaces θ ← θ − ε·g (``anneal`` then decays Adam's step
size).

Reptile has no query set: its inner loop takes SGD steps on minibatches of a task's examples (the paper's code
samples them from all of the task's training data), and §5 shows that gradients taken on *different*
minibatches are what makes it learn to generalize (the ``AvgGradInner`` term, as in MAML), whereas repeated
steps on one batch only reward a large gradient on that batch. ``inner_batches="support"`` (the default) takes
every step on the support set and uses the query set only to log a loss; ``inner_batches="alternate"`` takes
the steps on the support and query sets in turn (the same examples per task as MAML meta-trains on; the
query loss it logs is then on examples the inner loop has seen).
Adaptation at test time is on the support set only, either way.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from metaloop.algorithms.base import LossFn
from metaloop.algorithms.maml import MAML
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch


class Reptile(MAML):
    """Reptile (Nichol et al. 2018). ``inner_optimizer`` is ``"sgd"`` or ``"adam"``.

    Args:
        anneal: decay the outer step size ε linearly from its initial value to 0.
        outer_optimizer: ``"sgd"``: θ ← θ − ε·(θ − mean_i φ_i), the paper's Algorithm 2; ``"adam"``: the
            same ``θ − mean_i φ_i`` given to Adam as the gradient (the paper's §3). Gradient semantics: none
            flows through the inner loop either way (Reptile is first order); only the outer step differs.
        inner_batches: ``"support"``: every meta-training inner step on the support set; ``"alternate"``: on
            the support and the query set in turn (step 1 support, step 2 query, …). Test-time adaptation
            uses the support set only.
        Other arguments as in :class:`~metaloop.algorithms.maml.MAML` (always first order).
    """

    reads = (*(name for name in MAML.reads if name != "first_order"), "anneal", "outer_optimizer", "inner_batches")

    def __init__(self, model: nn.Module, loss_fn: LossFn, *, anneal: bool = False, outer_optimizer: str = "sgd",
                 inner_batches: str = "support", **kwargs: Any) -> None:
        if outer_optimizer not in ("sgd", "adam"):
            raise MetaloopError(f"option 'outer_optimizer': {outer_optimizer!r} is not one of sgd, adam")
        if inner_batches not in ("support", "alternate"):
            raise MetaloopError(f"option 'inner_batches': {inner_batches!r} is not one of support, alternate")
        kwargs["first_order"] = True
        super().__init__(model, loss_fn, **kwargs)
        self.anneal = anneal
        self.outer_optimizer = outer_optimizer
        self.inner_batches = inner_batches

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Set ``.grad`` of each adapted parameter to ``θ − mean_i φ_i``; return the mean query loss."""
        live = self.params()
        params = {k: v.detach() for k, v in live.items()}
        names = self.adapted_names
        alternate = self.inner_batches == "alternate"

        def task_delta(sx, sy, qx, qy):
            phi = self.adapt_steps(params, (sx, sy), [self.inner_steps], batches=[(qx, qy)] if alternate else [])[0]
            with torch.no_grad():
                query_loss = self.loss(phi, (qx, qy))
            return {n: (params[n] - phi[n]).detach() for n in names}, query_loss.detach()

        deltas, losses = self.map_tasks(task_delta, batch)
        for n in names:
            step = deltas[n].mean(0)
            live[n].grad = step if live[n].grad is None else live[n].grad + step
        return float(losses.mean())

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        if self.outer_optimizer == "adam":
            optimizer: torch.optim.Optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        else:
            optimizer = torch.optim.SGD(self.parameters(), lr=lr)
        for group in optimizer.param_groups:
            group["initial_lr"] = lr  # saved with the optimizer state, so annealing survives a resume
        return optimizer

    def before_step(self, optimizer: torch.optim.Optimizer, iteration: int, iterations: int) -> None:
        if self.anneal:
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] * (1.0 - iteration / iterations)
