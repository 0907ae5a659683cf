"""DiCE, the infinitely differentiable Monte-Carlo estimator, for policy gradients of any order.

Foerster, Farquhar, Al-Shedivat, Rocktäschel, Xing and Whiteson, "DiCE: The Infinitely Differentiable
Monte-Carlo Estimator", ICML 2018 (arXiv:1802.05098), with the baseline of Mao et al., "A Baseline for Any
Order Gradient Estimation in Stochastic Computation Graphs", ICML 2019. The magic box is

    ⊡(x) = exp(x − ⊥(x))        (⊥: stop-gradient; its value is 1, its derivative ⊡(x) ∇x)

and for trajectories with per-step log-probabilities ``log π(a_t | s_t)``, rewards ``r_t``, discount ``γ`` and a
baseline ``b_t`` (a function of the state, no gradient)::

    L = Σ_t γ^t [ ⊡(Σ_{t' ≤ t} log π_{t'}) r_t  +  (1 − ⊡(log π_t)) b_t ]

Its value is the discounted return, and each of its derivatives is an unbiased estimate of the corresponding
derivative of the expected return.

**MAML-RL's meta-gradient.** The adapted parameters ``θ' = θ + α ĝ(θ; τ_1..K)`` depend on ``θ`` directly and
through the sampled pre-adaptation trajectories ``τ_k ~ π_θ``. The unbiased estimate of
``∇_θ E_τ E_{τ' ~ π_θ'}[R(τ')]`` is the gradient of

    ⊡(Σ_k log π_θ(τ_k)) · L_post(θ'),    ĝ = ∇_θ Σ_k Σ_t log π_θ(a_t | s_t) A_t / K   (samples held fixed)

(:func:`meta_objective`, :func:`reinforce_surrogate`): the inner gradient is the REINFORCE surrogate's, whose
derivative in ``θ`` holds the trajectories fixed, and the sampling dependence enters once, through the magic box
of the outer objective. Putting the magic box inside the inner objective instead (DiCE's own composition) counts a
score term of its own and is biased, and leaving the score term out (the original MAML-RL) much more: all three
are measured against the closed form of a Gaussian policy on a quadratic reward in ``tests/core/test_dice.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def magic_box(x: Tensor) -> Tensor:
    """``exp(x − stop_gradient(x))``: 1 in value, ``⊡(x) ∇x`` in derivative."""
    return torch.exp(x - x.detach())


def dice_objective(log_probs: Tensor, rewards: Tensor, *, discount: float = 1.0, baseline: Tensor | None = None,
                   mask: Tensor | None = None) -> Tensor:
    """The DiCE surrogate averaged over trajectories (see the module docstring).

    Args:
        log_probs, rewards: ``[..., T]``: trajectories on the leading dimensions, time last.
        discount: ``γ``.
        baseline: ``b_t`` ``[..., T]`` (no gradient), or ``None``.
        mask: 1 for the steps that happened, 0 after an episode ended (default: all steps).
    """
    if mask is None:
        mask = torch.ones_like(rewards)
    log_probs = log_probs * mask
    weights = discount ** torch.arange(rewards.shape[-1], dtype=rewards.dtype, device=rewards.device)
    dependencies = torch.cumsum(log_probs, dim=-1)
    objective = magic_box(dependencies) * rewards * weights * mask
    if baseline is not None:
        objective = objective + (1 - magic_box(log_probs)) * baseline.detach() * weights * mask
    return objective.sum(-1).mean()


def reinforce_surrogate(log_probs: Tensor, advantages: Tensor, *, mask: Tensor | None = None) -> Tensor:
    """``Σ_t log π_t A_t`` averaged over trajectories: its gradient is the policy-gradient estimate, and its
    derivative in the parameters holds the trajectories (and ``A``) fixed."""
    if mask is None:
        mask = torch.ones_like(log_probs)
    return (log_probs * advantages.detach() * mask).sum(-1).mean()


def meta_objective(pre_log_probs: Tensor, post_objective: Tensor) -> Tensor:
    """``⊡(Σ log π(pre-adaptation samples)) · L_post``: adds the score term of the pre-adaptation sampling (see the
    module docstring). ``pre_log_probs``: every log-probability the inner step's samples had (any shape)."""
    return magic_box(pre_log_probs.sum()) * post_objective
