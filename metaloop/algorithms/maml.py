"""MAML and first-order MAML.

Finn, Abbeel and Levine, "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks",
ICML 2017 (arXiv:1703.03400). Inner loop (Algorithm 2, line 7)::

    θ'_i = θ − α ∇_θ L_{T_i}(f_θ)                 (repeated ``inner_steps`` times)

outer update (line 10) ``θ ← θ − β ∇_θ Σ_i L_{T_i}(f_{θ'_i})`` with Adam. The meta-gradient is
second order: it differentiates through the inner gradient. ``first_order=True`` gives FOMAML
(§5.2 of the paper): the inner gradients are constants, so the meta-gradient is
``Σ_i ∇_{θ'} L_{T_i}(f_{θ'_i})``.

The fast weights are a new parameter dict at every step (the model is never written to); when only the final
linear layer adapts, the body runs once per task (``reuse_features``): docs/algorithms.md, "MAML".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from metaloop.algorithms.base import LossFn, MetaLearner, check_positive, renamed
from metaloop.core.inner import LearningRate, ParamDict, gradient_descent_steps
from metaloop.core.params import select_names
from metaloop.core.reuse import HeadReuse
from metaloop.errors import MetaloopError


class MAML(MetaLearner):
    """Model-Agnostic Meta-Learning (Finn et al. 2017). See the module docstring.

    Args:
        model, loss_fn, bn_mode, path, chunk_size: see :class:`MetaLearner`.
        inner_lr: the inner step size α (> 0).
        inner_steps: inner steps during meta-training (≥ 1).
        test_inner_steps: inner steps at evaluation and in ``adapt`` outside training (default:
            ``inner_steps``).
        test_inner_lr: the step size outside training (default: ``inner_lr``). Meta-training never uses
            it, so nothing is meta-learned for it: a fine-tuning baseline's step size, or a smaller step
            for more test steps, chosen without retraining (``metaloop eval --set test_inner_lr=…``).
        first_order: drop the second-order terms (FOMAML). See :mod:`metaloop.core.inner`.
        adapt: which parameters the inner loop updates: ``"all"``, ``"head"`` or glob patterns.
            The others keep their meta-learned values inside a task, but are still meta-learned.
        inner_clip: clip the inner gradient to this global norm (differentiably) before each step (formerly
            ``clip_norm``, still accepted).
        inner_optimizer: ``"sgd"`` (the paper) or ``"adam"`` (first order only).
        reuse_features: when only the final linear layer adapts, compute the body once per task (see the
            module docstring); ``False`` runs the whole model at every inner step (same result, slower).
    """

    has_inner_loop = True
    batched_path = True
    reads = (*MetaLearner.reads, "inner_lr", "inner_steps", "test_inner_steps", "test_inner_lr", "first_order",
             "adapt", "inner_clip", "inner_optimizer")

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        *,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        test_inner_steps: int | None = None,
        test_inner_lr: float | None = None,
        first_order: bool = False,
        adapt: str = "all",
        inner_clip: float | None = None,
        inner_optimizer: str = "sgd",
        reuse_features: bool = True,
        **kwargs: Any,
    ) -> None:
        old = renamed(kwargs, "clip_norm", "inner_clip", type(self).__name__)
        clip_norm = inner_clip if old is None else old
        super().__init__(model, loss_fn, **kwargs)
        check_positive(inner_lr=inner_lr, inner_steps=inner_steps, test_inner_steps=test_inner_steps,
                       test_inner_lr=test_inner_lr, inner_clip=clip_norm)
        self.inner_lr = float(inner_lr)
        self.inner_steps = int(inner_steps)
        self.test_inner_steps = int(test_inner_steps or inner_steps)
        self.test_inner_lr = None if test_inner_lr is None else float(test_inner_lr)
        self.first_order = bool(first_order)
        self.adapted_names = select_names(model, adapt)
        self.clip_norm = clip_norm
        self.inner_optimizer = inner_optimizer
        if inner_optimizer == "adam" and not self.first_order:
            raise MetaloopError("option 'inner_optimizer': adam is first-order only; use fomaml or reptile")
        self.reuse = HeadReuse(self.fmodel, self.adapted_names, enabled=reuse_features)

    @property
    def head_module(self) -> str | None:
        """The final linear layer's name while the body's features are reused (see the module docstring)."""
        return self.reuse.module

    def head_features(self, params: ParamDict, x: Any) -> Tensor | None:
        """The head's input for ``x`` under the body's ``params`` (memoized in evaluation), or ``None``."""
        return self.reuse.features(params, x, training=self.training, memo=self._memo)

    def predict(self, state: ParamDict, x: Any) -> Any:
        z = self.head_features(state, x)
        return super().predict(state, x) if z is None else self.reuse.output(state, z)

    def inner_learning_rate(self) -> LearningRate:
        """The step size(s) of the inner loop: a float here (``test_inner_lr`` outside training, when
        set), learned tensors in Meta-SGD."""
        if not self.training and self.test_inner_lr is not None:
            return self.test_inner_lr
        return self.inner_lr

    def data_loss(self, params: ParamDict, data: tuple[Any, Tensor]) -> Callable[[ParamDict], Tensor]:
        """The loss on ``data`` as a function of the adapted parameters (the body's features computed once
        under ``params`` when only the head adapts)."""
        x, y = data
        training = self.training
        z = self.head_features(params, x)
        inputs = x if (hooked := self.loss_inputs(x, y)) is None else hooked

        def loss(p: ParamDict) -> Tensor:
            if z is not None:
                return self.task_loss(self.loss_fn, self.reuse.output(p, z), y)
            return self.task_loss(self.loss_fn, self.fmodel(p, inputs, training=training), y)

        return loss

    def adapt_steps(self, params: ParamDict, support: tuple[Any, Tensor], steps: Sequence[int], *,
                    batches: Sequence[tuple[Any, Tensor]] = ()) -> list[ParamDict]:
        """The adapted parameters after each of ``steps`` inner steps on ``support``; with ``batches``, the
        steps cycle through ``support, *batches`` (step 1 on ``support``, step 2 on ``batches[0]``, …)."""
        losses = [self.data_loss(params, data) for data in (support, *batches)]
        trajectory = gradient_descent_steps(losses, params, self.adapted_names, lr=self.inner_learning_rate(),
                                            steps=max(steps), first_order=self.first_order or not self.training,
                                            clip_norm=self.clip_norm, optimizer=self.inner_optimizer)
        wanted = set(steps)
        found = {t: p for t, p in enumerate(trajectory) if t in wanted}
        return [found[s] for s in steps]

    def adapt(self, params: ParamDict, support: tuple[Any, Tensor], *, steps: int | None = None) -> ParamDict:
        if steps is None:
            steps = self.inner_steps if self.training else self.test_inner_steps
        return self.adapt_steps(params, support, [steps])[0]


class FOMAML(MAML):
    """First-order MAML (Finn et al. 2017, §5.2): MAML with ``first_order=True``."""

    reads = tuple(name for name in MAML.reads if name != "first_order")

    def __init__(self, model: nn.Module, loss_fn: LossFn, **kwargs: Any) -> None:
        kwargs["first_order"] = True
        super().__init__(model, loss_fn, **kwargs)
