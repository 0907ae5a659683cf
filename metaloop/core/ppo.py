"""The clipped surrogate of proximal policy optimization (Schulman, Wolski, Dhariwal, Radford and Klimov 2017,
arXiv:1707.06347, eq. 7), as ProMP's outer objective uses it::

    L^CLIP = mean_t min(ρ_t A_t, clip(ρ_t, 1 − ε, 1 + ε) A_t),    ρ_t = π(a_t | s_t) / π_old(a_t | s_t)

Its gradient in ``ρ`` is ``A`` where the ratio is inside the band, or where leaving it lowers the objective, and 0
where the policy has already moved ``ε`` in the direction the advantage favours.
"""

from __future__ import annotations

from torch import Tensor


def clipped_surrogate(ratio: Tensor, advantages: Tensor, mask: Tensor, clip: float) -> Tensor:
    """``L^CLIP`` averaged over the steps that happened (``mask`` 1), over all leading dimensions."""
    clipped = ratio.clamp(1 - clip, 1 + clip)
    value = (ratio * advantages).minimum(clipped * advantages)
    return (value * mask).sum() / mask.sum().clamp(min=1)


__all__ = ["clipped_surrogate"]
