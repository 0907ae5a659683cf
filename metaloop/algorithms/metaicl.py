"""MetaICL: meta-training a language model to learn in context.

Min, Lewis, Zettlemoyer and Hajishirzi, "MetaICL: Learning to Learn In Context", NAACL 2022
(arXiv:2110.15943). A task's support set becomes ``K`` demonstrations concatenated in front of each query;
there is no inner loop. Meta-training minimizes, over the meta-training tasks, the LM loss of the right
answer given the demonstrations (§2.2)::

    direct:   L(θ) = − Σ_q log P_θ(y_q | x_1, y_1, …, x_K, y_K, x_q)
    channel:  L(θ) = − Σ_q log P_θ(x_q | y_1, x_1, …, y_K, x_K, y_q)

with θ the LoRA adapters here (the paper tunes every weight), and a test task is answered by rank
classification over its options in the same format: ``argmax_j`` of the option scores of
:class:`~metaloop.models.llm.PromptScorer` (its ``mode`` is direct or channel). ``adapt`` builds the
demonstrations, ``loss`` scores only the right option of each query (what the objective needs).

With no meta-training step this is plain in-context learning with the pretrained model (the paper's
"In-context" and "Channel In-context" baselines), and with no demonstrations (``eval_shots=0``) it is 0-shot.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor, nn

from metaloop.algorithms.base import LossFn, MetaLearner
from metaloop.core.inner import ParamDict
from metaloop.errors import MetaloopError
from metaloop.models.llm import PromptScorer, answer_nll


class ICLState(NamedTuple):
    """A task state: the parameters and the task's demonstrations (1-D token ids, or ``None`` for 0-shot)."""

    params: ParamDict
    context: Tensor | None


def prompt_learner(name: str, model: nn.Module, kwargs: dict[str, Any]) -> dict[str, Any]:
    """The checks of a learner on prompts (algorithm ``name``): its model is a
    :class:`~metaloop.models.llm.PromptScorer`, and it runs on the loop path (prompts of different lengths);
    returns ``kwargs`` with ``path="loop"``."""
    if not isinstance(model, PromptScorer):
        raise MetaloopError(f"algorithm '{name}' needs a language-model benchmark (llm-tasks): its model "
                            "scores prompts of demonstrations")
    if kwargs.get("path", "loop") not in ("auto", "loop"):
        raise MetaloopError(f"option 'path': {name} runs on path=loop only")
    return {**kwargs, "path": "loop"}


class MetaICL(MetaLearner):
    """MetaICL (Min et al. 2022). See the module docstring.

    Args:
        model: a :class:`~metaloop.models.llm.PromptScorer` (direct or channel).
        loss_fn: unused beyond the default (the loss is :func:`~metaloop.models.llm.answer_nll` of the right
            option), kept for the common signature.
        path: the loop path only (prompts of different lengths).
    """

    role = "prompts"

    def __init__(self, model: nn.Module, loss_fn: LossFn = answer_nll, **kwargs: Any) -> None:
        super().__init__(model, loss_fn, **prompt_learner("metaicl", model, kwargs))

    def adapt(self, params: ParamDict, support: tuple[Any, Tensor], *, steps: int | None = None) -> ICLState:
        x, y = support
        context = self.model.demonstrations(x, y) if y.numel() else None
        return ICLState(params, context)

    def predict(self, state: ICLState, x: Any) -> Tensor:
        return self.fmodel(state.params, {"tokens": x, "context": state.context}, training=self.training)

    def loss(self, state: ICLState, query: tuple[Any, Tensor]) -> Tensor:
        x, y = query
        scores = self.fmodel(state.params, {"tokens": x, "context": state.context, "answers": y},
                             training=self.training)
        return answer_nll(scores, y)
