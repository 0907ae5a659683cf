"""MetaOptNet: a linear classifier fitted in closed form or by a QP on the support embeddings.

Lee, Maji, Ravichandran and Soatto, "Meta-Learning with Differentiable Convex Optimization", CVPR 2019
(arXiv:1904.03758), and their code (github.com/kjunelee/MetaOptNet, ``models/classification_heads.py``).
The embedding ``f_φ`` (the user's model) maps the ``n`` support examples to ``X`` (``n × d``) and the
queries to ``Q``; a base learner fits class weights ``W`` (``d × classes``) on ``(X, Y)``, ``Y`` one-hot;
the query logits are ``γ · Q W`` and the meta-objective is their cross-entropy, differentiated through
the base learner into φ and γ (eq. 3-4). There is no inner gradient loop.

Heads (``head=``):

* ``"ridge"`` (``MetaOptNetHead_Ridge``; the R2D2 closed form of Bertinetto et al. 2019)::

      W = argmin_W ‖X W − Y‖² + λ ‖W‖²
        = Xᵀ (X Xᵀ + λ I)⁻¹ Y     when d > n  (dual / Woodbury form: an n × n solve)
        = (Xᵀ X + λ I)⁻¹ Xᵀ Y     otherwise   (primal form: a d × d solve)

  No bias (neither head in MetaOptNet's code has one), so it equals scikit-learn's
  ``Ridge(alpha=λ, fit_intercept=False)``. ``ridge_lambda`` defaults to 50, the code's default. Note:
  the code solves this as a QP with linear term ``−2Y``, so its logits are ``2 Q W``; the factor is
  absorbed by the learnable scale (use ``logit_scale=2.0`` to start from exactly their logits).
* ``"svm"`` (``MetaOptNetHead_SVM_CS``, the head of the paper's final results): the Crammer–Singer
  multi-class SVM, solved in the dual (eq. 6) with ``W = Xᵀ α``; see
  :mod:`metaloop.solvers.crammer_singer` for the QP, the solver, the gradients and why ``svm_c`` is
  the ``C`` of scikit-learn's ``LinearSVC(multi_class="crammer_singer")``. ``svm_c`` defaults to 0.1,
  the code's default. No bias.

The learnable scale γ (the paper, §3.3: "we found it important to ... learn a scale parameter"; the
code's ``ClassificationHead``) is an ``nn.Parameter`` initialized to 1.0 as in the code, shared by all
tasks and meta-learned with φ (``learn_scale=False`` keeps it fixed). The code trains it with SGD at lr 0.1,
where it grows quickly; under Adam it moves about one learning rate per step, so ``logit_scale`` (the
``logit_scale`` option) matters: the image and text presets start it at 10
(``metaloop/benchmarks/presets/*.yaml``; the measurements are in docs/presets.md).

Ways: N is not a constructor argument. Both heads use ``n`` class columns, a static bound, and classes
with no support example get ``-inf`` logits (:mod:`metaloop.algorithms.labels`), so the same learner
trains and tests with different ways. The ridge solution decouples over classes (an absent class's
column is zero) and runs under both execution paths. The SVM couples the classes through its
constraints, so the QP is solved for the classes present only, found from the labels: a data-dependent
step, like the solver's stopping test, that ``vmap`` cannot express. The SVM head therefore runs on the
``loop`` path only: ``path="auto"`` resolves to ``loop`` and ``path="vmap"`` is refused.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.algorithms.base import LossFn, MetaLearner, renamed
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
        if not C_reg > 0:
            raise MetaloopError(f"option 'svm_c': must be positive, got {C_reg}")
        if not lambda_reg > 0:
            raise MetaloopError(f"option 'ridge_lambda': must be positive, got {lambda_reg}")
        if not tol > 0 or max_iter < 1:
            raise MetaloopError(f"options 'tol', 'max_iter': must be positive, got {tol}, {max_iter}")
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
