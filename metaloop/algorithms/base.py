"""The shared base of every meta-learner, after ``jax_meta/metalearners/base.py``
(tristandeleu/jax-meta-learning).

An algorithm defines two things:

* ``adapt(params, support) -> state``: the task state after adaptation (adapted parameters for the
  gradient-based family; prototypes or a solved head for the metric methods);
* ``loss(state, query) -> scalar``: by default ``loss_fn(predict(state, x), y)``.

``outer_loss = loss ∘ adapt`` is the per-task meta-objective. The base class runs it over a
:class:`~metaloop.tasks.base.TaskBatch` by one of two execution paths, chosen by ``path``:

* ``"loop"``: a Python loop that back-propagates task by task (``(loss_i / T).backward()``), so the
  peak memory is about one task's graph. The default for conv nets, norms, transformers.
* ``"vmap"``: ``torch.func.vmap`` over the task dimension (optionally in chunks of ``chunk_size``
  tasks), then one backward. The whole meta-batch's graph is alive at once. Much faster when the
  per-task work is tiny (the sinusoid MLP); slower and far heavier for conv nets on CPU
  (see ``docs/performance.md``).
* ``"batched"``: the tasks of a meta-batch (or of each ``chunk_size`` of them) as one call per layer, each task
  with its own weights: grouped convolutions, batched matrix products, per-task batch statistics
  (:mod:`metaloop.core.batched`), then one backward per chunk. For algorithms that declare ``batched_path``
  and models built from the layers it knows (an ``nn.Sequential`` of convolutions, linear layers, norms, pools
  and activations, as Conv-4 and the MLPs, and modules with a ``batched_forward``, as ResNet-12); forcing it
  elsewhere is an error naming the algorithm or layer.
* ``"auto"``: when the model holds parameters only in ``nn.Linear`` layers, ``batched`` where the algorithm and
  the layers allow it, else ``vmap``; ``loop`` otherwise. On this CPU the batched path is faster than vmap on
  the sinusoid MLP, and slower than the loop on Conv-4, whose per-task work already fills the cores
  (``docs/performance.md``).

The paths give the same meta-gradient (tested in float64 to 1e-10).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils._pytree import tree_map

from metaloop.config import PATHS
from metaloop.core.batched import batched_tasks, batching, task_losses, unbatchable
from metaloop.core.context import is_vectorized, vectorized
from metaloop.core.functional import FunctionalModel
from metaloop.core.inner import ParamDict
from metaloop.core.memo import EmbeddingMemo
from metaloop.errors import MetaloopError
from metaloop.tasks.base import TaskBatch, stack_tensors

LossFn = Callable[[Any, Tensor], Tensor]
_PARAM_FREE_OK = (nn.Linear,)


def resolve_path(path: str, model: nn.Module, owner: type | None = None) -> str:
    """Turn ``"auto"`` into ``"loop"``, ``"vmap"`` or ``"batched"`` (see the module docstring); refuse
    ``"batched"`` for an algorithm ``owner`` without ``batched_path`` or a model with a layer it cannot run."""
    if path not in PATHS:
        raise MetaloopError(f"option 'path': {path!r} is not one of {', '.join(PATHS)}")
    if path == "batched":
        if owner is not None and not getattr(owner, "batched_path", False):
            raise MetaloopError(f"option 'path': {owner.__name__} has no batched path; use auto or loop")
        layer = unbatchable(model)
        if layer is not None:
            raise MetaloopError(f"option 'path': the batched path cannot run layer {layer}; use loop")
    if path != "auto":
        return path
    for module in model.modules():
        owns_params = any(True for _ in module.parameters(recurse=False))
        if owns_params and not isinstance(module, _PARAM_FREE_OK):
            return "loop"
    if owner is not None and getattr(owner, "batched_path", False) and unbatchable(model) is None:
        return "batched"
    return "vmap"


def renamed(kwargs: dict[str, Any], old: str, new: str, owner: str) -> Any:
    """A constructor argument's old name, still accepted for a release (with a ``DeprecationWarning``): its value,
    or ``None`` when not given."""
    if old not in kwargs:
        return None
    warnings.warn(f"{owner}({old}=...) is now {owner}({new}=...), the name of the config option", DeprecationWarning,
                  stacklevel=3)
    return kwargs.pop(old)


def check_positive(**options: float | None) -> None:
    """Refuse the first of the constructor arguments ``options`` that is set (not ``None``) and not > 0, naming it
    as the config option of the same name."""
    for name, value in options.items():
        if value is not None and not value > 0:
            raise MetaloopError(f"option '{name}': must be positive, got {value}")


class MetaLearner(nn.Module):
    """Base class: holds the user's model (unmodified) and the meta-parameters.

    What an algorithm is, it declares here, on its class (a registry line maps a CLI name to it):

    * ``reads``: the config options it reads, each mapped to its constructor's argument of the same name
      (:meth:`from_config`); an option that it does not read is refused when a user sets it;
    * ``role``: the model it needs: ``"predictor"`` (a network whose output is the prediction: a classifier head
      with ``ways`` outputs, or a regression output), ``"embedding"`` (a network without a head: the metric and
      solver heads), ``"features"`` (pretrained features in, no network of the benchmark's) or ``"prompts"`` (a
      language model's prompt scorer);
    * ``classification_only`` and ``needs_head`` (ANIL adapts the model's last layer, which a prompt scorer lacks);
    * ``has_inner_loop``: ``adapt`` takes gradient steps (whose count evaluation varies); the closed-form heads
      and in-context learning have none.

    Args:
        model: any ``nn.Module``; its parameters are the meta-learned initialization.
        loss_fn: ``loss_fn(model_output, target) -> scalar`` (for example ``F.mse_loss``).
        bn_mode: ``"transductive"`` or ``"running"``; see :class:`~metaloop.core.functional.FunctionalModel`.
        path: ``"auto"``, ``"loop"``, ``"vmap"`` or ``"batched"``; see the module docstring.
        chunk_size: under ``vmap`` or ``batched``, process this many tasks at a time (bounds memory).
    """

    has_inner_loop: bool = False
    reads: tuple[str, ...] = ("bn_mode", "path", "chunk_size")
    role: str = "predictor"
    classification_only: bool = False
    needs_head: bool = False
    #: What the progress bar shows of the logged training loss: its name, and the sign it is shown with (a
    #: learner that maximizes a return logs −return as its loss and shows ``("return", -1.0)``).
    progress: tuple[str, float] = ("loss", 1.0)
    #: Why this learner cannot share its meta-batch over processes (``None``: it can; see metaloop.distributed).
    single_process_only: str | None = None
    #: Runs on ``path="batched"`` (:mod:`metaloop.core.batched`): its adapt and loss are written so that a meta-batch
    #: of tasks can go through them at once.
    batched_path: bool = False

    @classmethod
    def kwargs_from(cls, cfg: Mapping[str, Any]) -> dict[str, Any]:
        """The constructor's arguments for the options it reads (same names)."""
        return {name: cfg[name] for name in cls.reads if name in cfg}

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], model: Callable[[], nn.Module], loss_fn: LossFn, *,
                    feature_dim: Callable[[], int] | None = None, **fixed: Any) -> MetaLearner:
        """The learner of a resolved config: ``model()`` builds the benchmark's network (``feature_dim()`` gives
        the size of pretrained features, for the ``features`` role); ``fixed`` are the registry's arguments."""
        return cls(model(), loss_fn, **cls.kwargs_from(cfg), **fixed)

    @classmethod
    def second_order(cls, cfg: Mapping[str, Any]) -> bool:
        """Does meta-training differentiate through the inner steps (which a model's attention must support)?"""
        return cls.has_inner_loop and "first_order" in cls.reads and not cfg.get("first_order", False)

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        *,
        bn_mode: str = "transductive",
        path: str = "auto",
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn
        self.fmodel = FunctionalModel(model, bn_mode)
        self.path = resolve_path(path, model, type(self))
        check_positive(chunk_size=chunk_size)
        self.chunk_size = chunk_size
        if self.path == "vmap" and bn_mode == "running" and self.fmodel.has_batch_norm:
            raise MetaloopError("option 'bn_mode': 'running' BatchNorm needs path=loop or batched, not vmap")
        self._memo: EmbeddingMemo | None = None

    # ------------------------------------------------------------------ the algorithm contract
    def params(self) -> ParamDict:
        """The model's meta-learned initialization, by name (the live ``nn.Parameter`` objects)."""
        return dict(self.model.named_parameters())

    def adapt(self, params: ParamDict, support: tuple[Any, Tensor], *, steps: int | None = None) -> Any:
        """Adapt to one task's support set; return the task state."""
        raise NotImplementedError

    def adapt_steps(self, params: ParamDict, support: tuple[Any, Tensor], steps: Sequence[int]) -> list[Any]:
        """Task states after each of ``steps`` inner steps (closed-form methods ignore the count)."""
        state = self.adapt(params, support)
        return [state for _ in steps]

    def predict(self, state: Any, x: Any) -> Any:
        """Model output for inputs ``x`` given a task state (adapted parameters by default)."""
        return self.fmodel(state, x, training=self.training)

    def loss_inputs(self, x: Any, y: Tensor) -> Any:
        """What the model is called on for a loss: ``x``, or, when the model has a ``loss_inputs(x, y)`` method,
        what it returns (the prompt scorer of the LLM benchmarks scores only each example's right answer, which
        is all the loss needs), or ``None`` for ``x`` through :meth:`predict`."""
        hook = getattr(self.model, "loss_inputs", None)
        return None if hook is None else hook(x, y)

    def loss(self, state: Any, query: tuple[Any, Tensor]) -> Tensor:
        x, y = query
        inputs = self.loss_inputs(x, y)
        if inputs is None:
            return self.task_loss(self.loss_fn, self.predict(state, x), y)
        return self.task_loss(self.loss_fn, self.fmodel(state, inputs, training=self.training), y)

    @staticmethod
    def task_loss(fn: LossFn, pred: Any, y: Tensor) -> Tensor:
        """``fn(pred, y)``: a loss or metric of one task; on the batched path, of each task (``[T]``)."""
        return fn(pred, y) if batching() is None else task_losses(fn, pred, y)

    def outer_loss(self, params: ParamDict, support: tuple[Any, Tensor], query: tuple[Any, Tensor]) -> Tensor:
        """The per-task meta-objective ``loss(adapt(params, support), query)``."""
        return self.loss(self.adapt(params, support), query)

    # ------------------------------------------------------------------ embeddings (the metric heads)
    def embed(self, params: ParamDict, x: Any) -> Tensor:
        """``f_φ(x)`` flattened to ``[examples, d]``: the embedding of the metric heads. In evaluation
        mode inside :meth:`memoize_embeddings` (loop path), each distinct (parameters, example) is embedded once."""
        memo = self._memo
        if memo is not None and not self.training and isinstance(x, Tensor) and not is_vectorized() \
                and batching() is None:
            return memo(params, x, lambda rows: self.fmodel(params, rows, training=False).flatten(1))
        return self.fmodel(params, x, training=self.training).flatten(1)

    @contextmanager
    def memoize_embeddings(self) -> Iterator[EmbeddingMemo | None]:
        """Within this context :meth:`embed` reads a memo (:mod:`metaloop.core.memo`), so an evaluation over
        many episodes embeds each test example once. Yields the memo, or ``None`` where an example's
        embedding depends on its batch (BatchNorm in transductive mode), where it stays off."""
        previous = self._memo
        active = not (self.fmodel.has_batch_norm and self.fmodel.bn_mode == "transductive")
        self._memo = EmbeddingMemo() if active else None
        try:
            yield self._memo
        finally:
            self._memo = previous

    # ------------------------------------------------------------------ batches of tasks
    def map_tasks(self, fn: Callable[..., Any], batch: TaskBatch) -> Any:
        """``fn(support_x, support_y, query_x, query_y)`` for every task, results stacked on dim 0."""
        if self.path == "vmap":
            with vectorized():
                return torch.func.vmap(fn, chunk_size=self.chunk_size, randomness="different")(*batch.tensors())
        if self.path == "batched":
            parts = [self._batched(fn, part) for part in self._chunks(batch)]
            return parts[0] if len(parts) == 1 else tree_map(lambda *xs: torch.cat(xs), *parts)
        results = []
        for i in range(len(batch)):
            (sx, sy), (qx, qy) = batch.task(i)
            results.append(fn(sx, sy, qx, qy))
        return stack_tensors(results)

    def _chunks(self, batch: TaskBatch) -> list[TaskBatch]:
        size = self.chunk_size or len(batch)
        return [batch if size >= len(batch) else batch.slice(i, min(i + size, len(batch)))
                for i in range(0, len(batch), size)]

    def _batched(self, fn: Callable[..., Any], batch: TaskBatch) -> Any:
        with batched_tasks(len(batch), self.model, running=self.fmodel.bn_mode == "running"):
            return fn(*batch.tensors())

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Accumulate the meta-gradient of the mean outer loss into ``.grad``; return the mean loss."""
        params = self.params()
        n = len(batch)
        if self.path == "batched":  # a backward per chunk of tasks: one chunk's graph alive at a time
            total = torch.zeros(())
            for part in self._chunks(batch):
                losses = self._batched(lambda sx, sy, qx, qy: self.outer_loss(params, (sx, sy), (qx, qy)), part)
                (losses.sum() / n).backward()
                total = total + losses.detach().sum().cpu()
            return float(total / n)
        if self.path == "vmap":
            def task_loss(sx, sy, qx, qy):
                return self.outer_loss(params, (sx, sy), (qx, qy))

            losses = self.map_tasks(task_loss, batch)
            losses.mean().backward()
            return float(losses.detach().mean())
        total = torch.zeros(())
        for i in range(n):
            support, query = batch.task(i)
            loss = self.outer_loss(params, support, query)
            (loss / n).backward()
            total = total + loss.detach().cpu()
        return float(total / n)

    def before_step(self, optimizer: torch.optim.Optimizer, iteration: int, iterations: int) -> None:
        """Hook called before each outer step (Reptile anneals its step size here)."""

    #: Set by a distributed run (:mod:`metaloop.distributed`): ``sync(learner, mean loss, tasks)`` turns the
    #: meta-gradient of this process's share of the meta-batch into that of the whole meta-batch, in every
    #: process, and returns the meta-batch's mean loss. ``None``: one process, nothing to do.
    gradient_sync: Callable[[MetaLearner, float, int], float] | None = None

    def local_meta_gradient(self, batch: TaskBatch | None) -> float:
        """The meta-gradient of this process's share (``None``: no task, as when there are more processes than
        tasks), then, in a distributed run, that of the whole meta-batch; the meta-batch's mean loss."""
        loss = self.meta_gradient(batch) if batch is not None and len(batch) else 0.0
        if self.gradient_sync is None:
            return loss
        return self.gradient_sync(self, loss, 0 if batch is None else len(batch))

    def meta_step(self, batch: TaskBatch | None, optimizer: torch.optim.Optimizer) -> float:
        """One outer update: zero the gradients, accumulate the meta-gradient, step."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.local_meta_gradient(batch)
        optimizer.step()
        return loss

    def make_optimizer(self, lr: float) -> torch.optim.Optimizer:
        """The outer-loop optimizer over all meta-parameters: Adam, as in MAML's paper."""
        return torch.optim.Adam(self.parameters(), lr=lr)

    @torch.no_grad()
    def evaluate_batch(self, batch: TaskBatch, steps: Sequence[int], metric_fn: LossFn) -> Tensor:
        """``metric_fn`` on each task's query set after each of ``steps`` inner steps: ``[tasks, len(steps)]``.

        Runs in evaluation mode: the inner loop builds no second-order graph.
        """
        was_training = self.training
        self.eval()
        params = {k: v.detach() for k, v in self.params().items()}

        def task_metrics(sx, sy, qx, qy):
            states = self.adapt_steps(params, (sx, sy), steps)
            return torch.stack([self.task_loss(metric_fn, self.predict(s, qx), qy) for s in states], dim=-1)

        try:
            return self.map_tasks(task_metrics, batch)
        finally:
            self.train(was_training)

