"""ProMP: Proximal Meta-Policy Search (Rothfuss, Lee, Clavera, Asfour and Abbeel, ICLR 2019, arXiv:1810.06784).

Inner step: the low-variance curvature (LVC) objective on the pre-update rollouts ``τ ~ π_θo`` (eq. 4)::

    J^LVC(θ) = mean_t (π_θ(a_t | s_t) / π_θo(a_t | s_t)) A_t,      θ' = θ + α ∇_θ J^LVC(θ)

whose gradient at ``θ = θo`` is the policy gradient (the inner step of MAML-RL), and whose Hessian is
``mean_t (∇²π_θ / π_θ) A_t``: the curvature term of the exact meta-gradient without the high-variance outer product of
score functions. Outer objective (eq. 6–7), maximized by ``ppo_steps`` Adam steps (at ``outer_lr``) on the same
samples, each re-adapting θ' from the current θ::

    J(θ) = mean_tasks L^CLIP(θ'; τ' ~ π_θ'o) − η KL̄(π_θo ‖ π_θ)  on the pre-update states

with ``L^CLIP`` PPO's clipped surrogate at ``clip_eps`` (:mod:`metaloop.core.ppo`) and the KL penalty η fixed at
``5e-4`` (the paper's initial value; its code adapts η toward a target, which is not done here). One process only:
the several outer steps per meta-iteration are not shared out.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from metaloop.algorithms.policy_learner import PolicyLearner
from metaloop.core.dice import reinforce_surrogate
from metaloop.core.inner import ParamDict
from metaloop.core.ppo import clipped_surrogate
from metaloop.core.trpo import gaussian_kl
from metaloop.errors import MetaloopError
from metaloop.models.policy import log_prob
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.rl import standardized_advantages, task_generators

KL_PENALTY = 5e-4


class ProMP(PolicyLearner):
    """Proximal Meta-Policy Search (Rothfuss et al. 2019): see the module docstring."""

    reads = ("inner_lr", "inner_steps", "test_inner_lr", "adapt", "clip_eps", "ppo_steps")
    single_process_only = "algorithm 'promp' takes several outer steps per meta-step and"

    def __init__(self, policy: nn.Module, *, clip_eps: float = 0.3, ppo_steps: int = 5, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        if not 0 < clip_eps < 1:
            raise MetaloopError(f"option 'clip_eps': must be between 0 and 1, got {clip_eps}")
        if ppo_steps < 1:
            raise MetaloopError(f"option 'ppo_steps': must be positive, got {ppo_steps}")
        self.clip_eps, self.ppo_steps = float(clip_eps), int(ppo_steps)

    def surrogate(self, params: ParamDict, obs: Tensor, actions: Tensor, advantages: Tensor, mask: Tensor,
                  sampled: Tensor | None = None) -> Tensor:
        """J^LVC: the likelihood ratio to the sampling policy (``sampled``; ``None``: the current one) times the
        advantage, averaged over the steps that happened."""
        logp = log_prob(self.model, params, obs, actions)
        ratio = torch.exp(logp - (logp.detach() if sampled is None else sampled))
        return reinforce_surrogate(ratio, advantages, mask=mask) * mask.shape[0] / mask.sum().clamp(min=1)

    def meta_step(self, batch: TaskBatch | None, optimizer: torch.optim.Optimizer) -> float:
        tasks = batch.support_x[:, 0]
        with torch.no_grad():  # the rollouts of θo and of its adapted policies, and what the outer steps compare to
            policies, pre, phi, post = self.sampled_adaptation(tasks, task_generators(batch), create_graph=False)
            sampled = [self.log_probs(p, r) for p, r in zip(policies, pre)]
            post_old = self.log_probs(phi, post)
            first, first_log_std = pre[0], policies[0]["log_std"].clone()  # θo, not a view of θ
            pre_means = self.mean_actions(policies[0], first.obs)
        advantages = standardized_advantages(post, self.discount)
        for _ in range(self.ppo_steps):
            optimizer.zero_grad(set_to_none=True)
            adapted = self.per_task(len(tasks))
            for rollouts, old in zip(pre, sampled):
                adapted = self.step(adapted, rollouts, create_graph=True, sampled=old)
            ratio = torch.exp(self.log_probs(adapted, post) - post_old)
            objective = clipped_surrogate(ratio, advantages, post.mask, self.clip_eps)
            now = self.per_task(len(tasks))
            kl = gaussian_kl(pre_means, first_log_std[:, None, None, :], self.mean_actions(now, first.obs),
                             now["log_std"][:, None, None, :])
            penalty = (kl * first.mask).sum() / first.mask.sum().clamp(min=1)
            (-(objective - KL_PENALTY * penalty)).backward()
            optimizer.step()
        return -float(post.returns.mean())
