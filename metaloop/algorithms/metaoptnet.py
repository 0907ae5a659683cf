"""MetaOptNet: a linear classifier fitted in closed form or by a QP on the support embeddings.

Lee, Maji, Ravichandran and Soatto, "Meta-Learning with Differentiable Convex Optimization", CVPR 2019
(arXiv:1904.03758), and their code (github.com/kjunelee/MetaOptNet, ``models/classification_heads.py``). With the
support embeddings ``X = f_φ(x_s)`` (``n × d``), their one-hot labels ``Y`` and the query embeddings ``Q``::

    ridge (R2D2):  W = argmin_W ‖X W − Y‖² + λ ‖W‖² = Xᵀ (X Xᵀ + λ I)⁻¹ Y   (d > n; else (Xᵀ X + λ I)⁻¹ Xᵀ Y)
    svm:           W = Xᵀ α,  α the Crammer–Singer dual (eq. 6; :mod:`metaloop.solvers.crammer_singer`)
    logits = γ · Q W,  meta-objective  CE(logits, y_q),  differentiated through the base learner into φ and γ

No bias (as in the code); ``svm_c`` (0.1) and ``ridge_lambda`` (50) default to the code's values; the scale γ is
meta-learned (§3.3) from ``logit_scale``. Classes with no support example get ``-inf`` logits, so one learner trains
and tests with any ways. The SVM head runs on the ``loop`` path only (``path="auto"`` resolves to it). How each
choice matches the code and scikit-learn, and why: docs/algorithms.md, "MetaOptNet".
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.algorithms.base import LossFn, MetaLearner, check_positive, renamed
from metaloop.algorithms.labels import mask_logits, one_hot_bound
from metaloop.core.inner import ParamDict
from metaloop.errors import MetaloopError
from metaloop.solvers.crammer_singer import svm_weights
from metaloop.solvers.ridge import ridge_weights

HEADS: tuple[str, ...] = ("ridge", "svm")


class MetaOptState(NamedTuple):
    """A task state: the embedding parameters and the fitted linear head."""

    params: ParamDict
    weights: Tensor  # [d, n]: column k is w_k (zero for an absent class)
    dual: Tensor  # [n, n]: α with weights = Xᵀ α
    present: Tensor  # [n] bool: class k has at least one support example


class MetaOptNet(MetaLearner):
    """MetaOptNet (Lee et al. 2019) with a ridge or SVM head. See the module docstring.

    Args:
        model: the embedding network ``f_φ``; its output is flattened to ``[examples, d]``.
        loss_fn: applied to the query logits and labels (default ``F.cross_entropy``).
        head: ``"svm"`` (Crammer–Singer, the paper's final head) or ``"ridge"``.
        svm_c: the SVM's cost ``C`` (> 0; default 0.1 as in MetaOptNet's code).
        ridge_lambda: the ridge penalty ``λ`` (> 0; default 50.0 as in MetaOptNet's code).
        logit_scale: initial value of the logit scale γ (1.0 as in the code). The old names ``C_reg``,
            ``lambda_reg`` and ``scale_init`` are still accepted.
        learn_scale: meta-learn γ (an ``nn.Parameter``) or keep it fixed (a buffer).
        tol: the SVM solver's bound on the scaled KKT residual.
        max_iter: the SVM solver's iteration limit (it warns if ``tol`` is not reached).
        bn_mode, path, chunk_size: see :class:`~metaloop.algorithms.base.MetaLearner`; the SVM head
            needs ``path="loop"`` (``"auto"`` resolves to it; ``"vmap"`` raises :class:`MetaloopError`).
    """

    reads = (*MetaLearner.reads, "svm_c", "ridge_lambda", "logit_scale")
    role = "embedding"
    classification_only = True

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn = F.cross_entropy,
        *,
        head: str = "svm",
        svm_c: float = 0.1,
        ridge_lambda: float = 50.0,
        logit_scale: float = 1.0,
        learn_scale: bool = True,
        tol: float = 1e-9,
        max_iter: int = 100,
        **kwargs: Any,
    ) -> None:
        owner = type(self).__name__
        C_reg = svm_c if (old := renamed(kwargs, "C_reg", "svm_c", owner)) is None else old
        lambda_reg = ridge_lambda if (old := renamed(kwargs, "lambda_reg", "ridge_lambda", owner)) is None else old
        scale_init = logit_scale if (old := renamed(kwargs, "scale_init", "logit_scale", owner)) is None else old
        if head not in HEADS:
            raise MetaloopError(f"option 'head': {head!r} is not one of {', '.join(HEADS)}")
        if head == "svm":
            path = kwargs.get("path", "auto")
            if path == "vmap":
                raise MetaloopError(
                    "option 'path': the SVM head needs path=loop (its QP solver stops on a tolerance and "
                    "solves over the classes present, both data-dependent steps that vmap cannot run)"
                )
            if path == "auto":
                kwargs["path"] = "loop"
        super().__init__(model, loss_fn, **kwargs)
        check_positive(svm_c=C_reg, ridge_lambda=lambda_reg, tol=tol, max_iter=max_iter)
        self.head = head
        self.C_reg = float(C_reg)
        self.lambda_reg = float(lambda_reg)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        dtype = next((p.dtype for p in model.parameters()), torch.get_default_dtype())
        scale = torch.tensor(float(scale_init), dtype=dtype)
        if learn_scale:
            self.scale = nn.Parameter(scale)
        else:
            self.register_buffer("scale", scale)

    def adapt(self, params: ParamDict, support: tuple[Any, Tensor], *, steps: int | None = None) -> MetaOptState:
        x, y = support
        X = self.embed(params, x)
        Y = one_hot_bound(y, X.dtype)  # [n, n]
        if self.head == "ridge":
            W, alpha = ridge_weights(X, Y, self.lambda_reg)
        else:
            W, alpha = svm_weights(X, Y, self.C_reg, tol=self.tol, max_iter=self.max_iter)
        return MetaOptState(params, W, alpha, Y.sum(0) > 0)

    def predict(self, state: MetaOptState, x: Any) -> Tensor:
        """Logits ``γ · f_φ(x) W`` (``-inf`` for absent classes)."""
        return mask_logits(self.scale * (self.embed(state.params, x) @ state.weights), state.present)


class MetaOptNetSVM(MetaOptNet):
    """MetaOptNet with the Crammer–Singer SVM head (``head="svm"``): it reads ``svm_c``, not ``ridge_lambda``."""

    reads = tuple(name for name in MetaOptNet.reads if name != "ridge_lambda")

    def __init__(self, model: nn.Module, loss_fn: LossFn = F.cross_entropy, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, head="svm", **kwargs)


class MetaOptNetRidge(MetaOptNet):
    """MetaOptNet with the ridge-regression head (``head="ridge"``): it reads ``ridge_lambda``, not ``svm_c``."""

    reads = tuple(name for name in MetaOptNet.reads if name != "svm_c")

    def __init__(self, model: nn.Module, loss_fn: LossFn = F.cross_entropy, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, head="ridge", **kwargs)
