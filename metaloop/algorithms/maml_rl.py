"""MAML for reinforcement learning (Finn et al. 2017, §3.2 and §5.3), and its first-order variant.

The inner step is the policy gradient of :mod:`metaloop.algorithms.policy_learner`; the outer objective is the
return of the adapted policies' rollouts, differentiated through ``θ'`` (second order unless ``first_order``:
FOMAML-RL holds the inner gradient constant, ``∂θ'/∂θ = I``). ``outer_step``: ``"adam"`` (Adam on the DiCE
objective at ``outer_lr``) or ``"trpo"``, the paper's (:func:`metaloop.core.trpo.trust_region_update`)::

    maximize  mean_tasks mean_t ρ_t A_t,   ρ_t = π_θ'(a_t|s_t) / π_θ'_old(a_t|s_t),   s.t.  KL̄(θ'_old ‖ θ') ≤ max_kl

``estimator`` (:mod:`metaloop.core.dice`): ``"maml"`` differentiates the post-adaptation return through ``θ'`` only,
as the paper does (low variance, biased); ``"exact"`` adds the pre-adaptation samples' dependence on ``θ`` by the
magic box of their log-probabilities (unbiased; checked against a closed form in ``tests/core/test_dice.py``).
The TRPO Fisher products (``trpo_fisher``, ``fisher_rollouts``): docs/algorithms.md, "MAML-RL".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metaloop.algorithms.base import check_positive
from metaloop.algorithms.policy_learner import PolicyLearner
from metaloop.core.dice import dice_objective, meta_objective
from metaloop.core.inner import ParamDict
from metaloop.core.trpo import gaussian_kl, trust_region_update
from metaloop.errors import MetaloopError
from metaloop.models.policy import log_prob, mean_action
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.rl import Rollouts, linear_baseline, returns_to_go, standardized_advantages, task_generators

ESTIMATORS = ("maml", "exact")
OUTER_STEPS = ("adam", "trpo")
FISHERS = ("exact", "adapted")


class MAMLRL(PolicyLearner):
    """MAML-RL (see the module docstring and :class:`~metaloop.algorithms.policy_learner.PolicyLearner`)."""

    reads = (*PolicyLearner.reads, "first_order", "estimator", "outer_step", "max_kl", "trpo_fisher",
             "fisher_rollouts")

    def __init__(self, policy: nn.Module, *, estimator: str = "maml", outer_step: str = "adam", max_kl: float = 0.01,
                 trpo_fisher: str = "exact", fisher_rollouts: int | None = None, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        for name, value, known in (("estimator", estimator, ESTIMATORS), ("outer_step", outer_step, OUTER_STEPS),
                                   ("trpo_fisher", trpo_fisher, FISHERS)):
            if value not in known:
                raise MetaloopError(f"option '{name}': {value!r} is not one of {', '.join(known)}")
        if outer_step == "trpo" and estimator != "maml":
            raise MetaloopError("option 'estimator': the trpo outer step takes the paper's estimator (maml) only")
        check_positive(max_kl=max_kl)
        if fisher_rollouts is not None and not 1 <= fisher_rollouts <= self.rollouts:
            raise MetaloopError(f"option 'fisher_rollouts': must be between 1 and rollouts ({self.rollouts}), got "
                                f"{fisher_rollouts}")
        self.estimator, self.outer_step, self.trpo_fisher = estimator, outer_step, trpo_fisher
        self.max_kl = float(max_kl)
        self.fisher_rollouts = fisher_rollouts or self.rollouts

    # ------------------------------------------------------------------ meta-training
    def meta_objective(self, tasks: Tensor, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        """The mean meta-objective of the tasks (to maximize) and each task's post-adaptation mean return."""
        policies, pre, phi, post = self.sampled_adaptation(tasks, generators, create_graph=not self.first_order)
        targets = returns_to_go(post.rewards, self.discount)
        baseline = linear_baseline(post.obs, targets, post.mask)

        def objective(p: ParamDict, obs: Tensor, actions: Tensor, rewards: Tensor, base: Tensor, mask: Tensor
                      ) -> Tensor:
            return dice_objective(log_prob(self.model, p, obs, actions), rewards, discount=self.discount,
                                  baseline=base, mask=mask)

        values = torch.func.vmap(objective)(phi, post.obs, post.actions, post.rewards, baseline, post.mask)
        if self.estimator == "exact":  # the score of every pre-adaptation sample, per task
            logps = [(self.log_probs(p, b) * b.mask).sum((1, 2)) for p, b in zip(policies, pre)]
            values = torch.func.vmap(meta_objective)(torch.stack(logps, 1), values)
        return values.mean(), post.returns.mean(-1)

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Accumulate ``−∇`` of the mean meta-objective (the optimizer minimizes); return ``−`` the mean
        post-adaptation return (the logged "loss")."""
        objective, returns = self.meta_objective(batch.support_x[:, 0], task_generators(batch))
        (-objective).backward()
        return -float(returns.mean())

    # ------------------------------------------------------------------ the trpo outer step
    @property
    def single_process_only(self) -> str | None:
        """Why this learner cannot share a meta-batch over processes (``None``: it can)."""
        return "option 'outer_step': trpo" if self.outer_step == "trpo" else None

    def meta_step(self, batch: TaskBatch | None, optimizer: torch.optim.Optimizer) -> float:
        if self.outer_step == "adam":
            return super().meta_step(batch, optimizer)
        return self.trpo_step(batch)

    def trust_region_terms(self, phi: ParamDict, post: Rollouts, advantages: Tensor, old: tuple[Tensor, Tensor]
                           ) -> tuple[Tensor, Tensor]:
        """The mean surrogate ``ρ A`` over tasks (to maximize) and the mean KL(old ‖ new) of the adapted policies
        over the steps that happened; ``old``: the old policies' log-probabilities and means (no gradient)."""
        def one(p: ParamDict, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor, old_logp: Tensor,
                old_mean: Tensor, old_log_std: Tensor) -> tuple[Tensor, Tensor]:
            count = mask.sum().clamp(min=1)
            ratio = torch.exp(log_prob(self.model, p, obs, actions) - old_logp)
            kl = gaussian_kl(old_mean, old_log_std, mean_action(self.model, p, obs), p["log_std"])
            return (ratio * adv * mask).sum() / count, (kl * mask).sum() / count

        old_logp, old_mean = old
        old_log_std = phi["log_std"].detach()
        surrogate, kl = torch.func.vmap(one)(phi, post.obs, post.actions, advantages, post.mask, old_logp,
                                             old_mean, old_log_std)
        return surrogate.mean(), kl.mean()

    def trpo_step(self, batch: TaskBatch | None) -> float:
        """One TRPO outer step on the tasks of ``batch`` (see the module docstring); returns −(the mean return of
        the adapted policies' rollouts)."""
        _, pre, phi, post = self.sampled_adaptation(batch.support_x[:, 0], task_generators(batch),
                                                    create_graph=not self.first_order)
        advantages = standardized_advantages(post, self.discount)
        with torch.no_grad():
            old = self.log_probs(phi, post), self.mean_actions(phi, post.obs)
        surrogate, kl = self.trust_region_terms(phi, post, advantages, old)
        if self.trpo_fisher == "adapted" or self.fisher_rollouts < self.rollouts:
            k = self.fisher_rollouts  # the Fisher on the first k rollouts of each task
            own = self.params()
            fisher_phi = phi if self.trpo_fisher == "exact" else {  # the adapted policies' own: ∂θ'/∂θ as I
                n: v.detach() + (own[n] - own[n].detach()) for n, v in phi.items()}
            part = Rollouts(post.obs[:, :k], post.actions[:, :k], post.rewards[:, :k], post.mask[:, :k])
            kl = self.trust_region_terms(fisher_phi, part, advantages[:, :k], (old[0][:, :k], old[1][:, :k]))[1]
        trust_region_update([p for _, p in self.named_parameters()], surrogate, kl, lambda: self.trust_region_terms(
            self.adapted(pre, create_graph=False), post, advantages, old), self.max_kl)
        return -float(post.returns.mean())


class FOMAMLRL(MAMLRL):
    """First-order MAML-RL: the inner policy gradient is held constant (``first_order`` fixed on)."""

    reads = tuple(r for r in MAMLRL.reads if r != "first_order")

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        super().__init__(policy, first_order=True, **kwargs)
