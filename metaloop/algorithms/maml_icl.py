"""MAML over in-context prompts (MAML-en-LLM).

Sinha, Yuan, Abdullah and Abbasi, "MAML-en-LLM: Model Agnostic Meta-Training of LLMs for Improved In-Context
Learning", KDD 2024 (arXiv:2405.11446): MAML whose tasks are in MetaICL's format, so that the model learns both
to learn in context and to be adapted by gradient. Here the adapted weights are the LoRA adapters (as for
:class:`~metaloop.algorithms.maml.MAML` on ``llm-tasks``) and a task's support set of ``K`` examples gives both
the inner loss and the query's demonstrations:

* inner loss: the support set in two folds, its even and odd positions; each fold's answers are scored with the
  other fold as demonstrations, ``L_s(θ) = ½ [ℓ(S_odd | S_even; θ) + ℓ(S_even | S_odd; θ)]`` (MetaICL's
  direct or channel loss ``ℓ``, :func:`~metaloop.models.llm.answer_nll`), so no answer is in its own prompt;
* inner step: ``θ' = θ − α ∇_θ L_s(θ)``, ``inner_steps`` times (on the LoRA weights, ``adapt``);
* outer loss: the query's answers with all ``K`` support examples as demonstrations, under ``θ'``:
  ``ℓ(Q | S; θ')``, differentiated through the inner steps (second order; ``first_order=true`` drops those
  terms, as FOMAML).

At test time a query is scored with the ``K`` demonstrations in context after ``test_inner_steps`` steps; with
0 steps this is in-context learning with the meta-trained LoRA (MetaICL's test). The paper also shares the
optimizer's moments between the inner and outer loops; here the inner step is plain SGD, as in MAML.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from metaloop.algorithms.base import LossFn
from metaloop.algorithms.maml import MAML
from metaloop.algorithms.metaicl import ICLState, prompt_learner
from metaloop.core.inner import ParamDict
from metaloop.errors import MetaloopError
from metaloop.models.llm import answer_nll


class MAMLICL(MAML):
    """MAML-en-LLM (Sinha et al. 2024): MAML over LoRA on in-context prompts. See the module docstring.

    Args: those of :class:`~metaloop.algorithms.maml.MAML` (the loop path only; the model must be a
    :class:`~metaloop.models.llm.PromptScorer`).
    """

    batched_path = False  # prompts of different lengths

    role = "prompts"

    def __init__(self, model: nn.Module, loss_fn: LossFn = answer_nll, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, **prompt_learner("maml-icl", model, kwargs))

    def _score(self, params: ParamDict, x: Tensor, y: Tensor, context: Tensor | None) -> Tensor:
        return self.loss_fn(self.fmodel(params, {"tokens": x, "context": context, "answers": y},
                                        training=self.training), y)

    def data_loss(self, params: ParamDict, data: tuple[Any, Tensor]) -> Callable[[ParamDict], Tensor]:
        """The inner loss of a support set: each fold's answers with the other fold as demonstrations."""
        x, y = data
        if y.numel() < 2:
            raise MetaloopError("algorithm 'maml-icl': its inner loss needs at least 2 support examples (shots)")
        folds = [(x[0::2], y[0::2]), (x[1::2], y[1::2])]
        contexts = [self.model.demonstrations(fx, fy) for fx, fy in folds]

        def loss(p: ParamDict) -> Tensor:
            return 0.5 * (self._score(p, *folds[1], contexts[0]) + self._score(p, *folds[0], contexts[1]))

        return loss

    def adapt_steps(self, params: ParamDict, support: tuple[Any, Tensor], steps: Sequence[int], *,
                    batches: Sequence[tuple[Any, Tensor]] = ()) -> list[ICLState]:
        """The task states after each of ``steps`` inner steps: the adapted LoRA weights and all ``K``
        support examples as the demonstrations."""
        context = self.model.demonstrations(*support)
        return [ICLState(p, context) for p in super().adapt_steps(params, support, steps, batches=batches)]

    def predict(self, state: ICLState, x: Any) -> Tensor:
        return self.fmodel(state.params, {"tokens": x, "context": state.context}, training=self.training)

    def loss(self, state: ICLState, query: tuple[Any, Tensor]) -> Tensor:
        return self._score(state.params, *query, state.context)
