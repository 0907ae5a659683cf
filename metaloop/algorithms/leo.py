"""LEO: Latent Embedding Optimization.

Rusu, Rao, Sygnowski, Vinyals, Pascanu, Osindero and Hadsell, "Meta-Learning with Latent Embedding
Optimization", ICLR 2019 (arXiv:1807.05960), and DeepMind's code (github.com/deepmind/leo, ``model.py``
and ``config.py``), which this module follows where the paper leaves a detail open.

LEO works on **features** from a pretrained extractor: ``x`` is ``[examples, d]`` (the paper uses the
640-d features of a WRN-28-10 trained on the meta-training classes), labels are ``0..N-1``. It owns its
own modules (:class:`~metaloop.models.leo.LEONet`); none of them sees images.

One task (Algorithm 1; ``n`` support examples, ``L = latent_dim``)::

    h_i        = g_e(dropout(x_i))                                 encoder: linear d → L, no bias
    (μ_i, u_i) = mean_j g_r([h_i, h_j])                            relation net on all n² pairs (§2.3):
                                                                   MLP 2L → 2L → 2L → 2L, ReLU, no bias
    (μ_c, u_c) = mean over the support examples of class c         one latent Gaussian per class
    σ_c        = max(exp(u_c) − 1, 1e-10)                          (the code's ``possibly_sample``)
    z_c        = μ_c + σ_c ⊙ ε                                     reparameterized sample (training only)

    decode(z): (μ^w_c, u^w_c) = g_d(z_c)                          decoder: linear L → 2d, no bias
               σ^w_c = max(exp(u^w_c) − 1 + s₀, 1e-10)             s₀ = sqrt(2 / (N + d)), Glorot's std
               w_c   = μ^w_c + σ^w_c ⊙ ε'                          (fresh ε' at every decode; training only)

    logits(x; w) = dropout(x) · wᵀ                                 a linear softmax classifier, no bias
    L_tr(w)      = Σ_support CE(logits(x_i; w), y_i)               a SUM over the support set (see below)

    z' = z − α ⊙ ∇_z L_tr(decode(z))            inner_steps times  (latent adaptation)
    w  = decode(z')
    w' = w − η ⊙ ∇_w L_tr(w)                    finetune_steps times (fine-tuning in parameter space)

meta-objective per task (the paper's objective, with the terms as the code computes them)::

    mean_query CE(logits(x; w'), y) + β·KL + γ·‖stopgrad(z') − z‖² + λ₂·‖C_d − I‖² + λ₁·Σ‖φ‖²/2

* **Inner loop.** Both loops differentiate ``L_tr`` with ``create_graph=True`` while meta-training, so
  the meta-gradient is second order, flows through every step into the encoder, relation net and
  decoder, and into ``α`` and ``η`` (``first_order=True`` treats the inner gradients as constants, as
  in FOMAML). In evaluation mode no second-order graph is built. ``α`` (``[L]``) and ``η`` (``[d]``) are
  meta-learned **per-dimension** step sizes, exactly as the code's ``leo_inner/lr`` (shape
  ``[1, 1, num_latents]``) and ``finetuning/lr`` (shape ``[1, 1, embedding_dim]``), initialized to
  ``inner_lr_init`` and ``finetune_lr_init``.
* **Support loss is a sum.** The code takes ``tf.gradients`` of the per-example cross-entropies, i.e.
  the gradient of their sum; keeping that is what gives ``inner_lr_init=1.0`` and
  ``finetune_lr_init=0.001`` their meaning. The query loss is the mean (``F.cross_entropy``).
* **KL** ``= mean over the present classes' latent dimensions of KL(N(μ_c, σ_c²) ‖ N(0, 1))``, in
  closed form: ``½(μ² + σ² − 1) − log σ``. The code uses the one-sample estimate
  ``log q(z) − log p(z)`` at the drawn ``z``, whose expectation this is; the closed form has no
  sampling noise and is defined in evaluation mode too. Averaged over elements as the code's
  ``reduce_mean``, so ``kl_weight`` has the code's scale.
* **Encoder penalty** ``= mean over the present classes' elements of (z − stopgrad(z'))²``
  (``tf.losses.mean_squared_error(labels=stop_gradient(latents), predictions=starting_latents)``):
  it pulls the encoder's code towards where the inner loop took it, and only the encoder gets its
  gradient.
* **Decoder orthogonality** (λ₂): ``C_d`` is the correlation matrix of the decoder's weight rows in the
  code's layout (``[L, 2d]``, i.e. the columns of ``nn.Linear.weight``): ``C_d = WWᵀ / (‖w_i‖‖w_j‖)``;
  the penalty is ``mean((C_d − I)²)`` over its ``L × L`` entries, on the whole decoder (mean and std
  halves), as in the code's ``get_orthogonality_regularizer``.
* **L2** (λ₁, ``l2_weight``): the code puts ``l2_regularizer(λ₁)``, i.e. ``λ₁ · Σ w² / 2``, on the
  encoder, relation-net and decoder weights (not on ``α``, ``η``); the same term is added here, so the
  optimizer needs no weight decay.

Defaults are the flag defaults of the code's ``config.py`` (the paper's appendix tunes them per
dataset and setting; those values are not reproduced here):
``latent_dim=64``, ``inner_lr_init=1.0``, ``finetune_lr_init=0.001``, ``inner_steps=5``,
``finetune_steps=5``, ``dropout=0.5``, ``kl_weight=1e-3`` (β), ``encoder_penalty_weight=1e-9`` (γ),
``l2_weight=1e-8`` (λ₁), ``orthogonality_weight=1e-3`` (λ₂). The code's outer loop is Adam with
``outer_lr=1e-4``, gradients clipped element-wise to ±0.1 and then to global norm 0.1:
``outer_clip_value`` / ``outer_clip_norm`` (default off) reproduce that clipping in :meth:`LEO.meta_step`.
All weights are Glorot-uniform initialized, as in the code. The code runs in float64; so can this
(``learner.double()``).

Differences from the code, on purpose:

* One latent sample per class (the paper's ``z_n``). The code tiles the class code over the
  ``K`` shots and samples each copy, then averages the logits over the ``K`` decoded weight samples;
  with ``K = 1`` (its 1-shot runs) the two coincide.
* The KL is the closed form (above) and, like the encoder penalty, is also computed in evaluation
  mode (the code sets both to 0 there); evaluation metrics use the logits only, so this changes no
  reported accuracy.
* The code's guard that replaces a NaN meta-gradient by an L2-only gradient is not reproduced: the
  training loop stops with an error on a non-finite loss.

**Randomness.** Dropout masks and the noises ``ε``, ``ε'`` come from a ``torch.Generator`` owned by the
learner, never from the global RNG: it is reseeded from ``(seed, iteration)`` in :meth:`LEO.before_step`,
so the noise of an iteration depends on nothing else and a resumed run equals an uninterrupted one bit
for bit. The noise is drawn on the CPU (so a CUDA run draws the same numbers) and moved to the
parameters' device. In evaluation mode there is no dropout and no sampling: ``z`` and ``w`` are the
means. The weights are initialized from ``seed`` as well, so construction leaves the global RNG alone.

**Ways.** N is not a constructor argument. As in ProtoNets and MetaOptNet
(:mod:`metaloop.algorithms.labels`), there are as many class slots as support examples; slots of
classes with no support example get a zero code and ``-inf`` logits, and are left out of the KL and
the encoder penalty, so the same learner trains 5-way and tests 3-way, and absent slots give zero (not
NaN) gradients. ``N`` in the decoder's std offset is the number of classes present.

**Execution path.** ``loop`` only: ``path="auto"`` resolves to it and ``path="vmap"`` raises
:class:`~metaloop.errors.MetaloopError`. The engine promises that both paths give the same
meta-gradient, and for LEO they would not: under ``torch.func.vmap(randomness="different")`` each
random draw (dropout masks, ``ε``, ``ε'``) is made once for the whole batch of tasks, so task ``i``
would get other noise than in the loop, which draws task after task from the same generator. Making
the paths agree would mean drawing every task's noise up front and passing it in; that, and checking
LEO's second-order graph under ``torch.func.grad``, is not done.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.algorithms.base import MetaLearner, renamed
from metaloop.algorithms.labels import mask_logits, one_hot_bound
from metaloop.core.inner import ParamDict, clip_by_global_norm, gradients
from metaloop.errors import MetaloopError
from metaloop.models.leo import LEONet, stream_seed

_STD_FLOOR = 1e-10  # the code's ``tf.maximum(stddev, 1e-10)``


class LatentDistribution(NamedTuple):
    """The encoder's per-class Gaussian ``q(z_c | D_tr) = N(mean_c, diag(std_c²))``."""

    mean: Tensor  # [n, L] (zero for an absent class)
    std: Tensor  # [n, L]
    present: Tensor  # [n] bool: class c has at least one support example


class LEOState(NamedTuple):
    """A task state: the adapted classifier and the per-task terms of the meta-objective (unweighted)."""

    weights: Tensor  # [n, d]: row c is w'_c, the fine-tuned classifier weights of class slot c
    present: Tensor  # [n] bool
    kl: Tensor  # scalar: KL(q(z | D_tr) ‖ N(0, I)), mean over present elements
    encoder_penalty: Tensor  # scalar: mean (z − stopgrad(z'))² over present elements
    orthogonality: Tensor  # scalar: mean (C_d − I)²
    l2: Tensor  # scalar: Σ ‖W‖² / 2 over the encoder, relation and decoder weights
    initial_latents: Tensor  # [n, L]: z, the encoder's (sampled) code
    latents: Tensor  # [n, L]: z', the code after the latent inner loop


def kl_standard_normal(mean: Tensor, std: Tensor) -> Tensor:
    """Elementwise ``KL(N(mean, std²) ‖ N(0, 1)) = ½(mean² + std² − 1) − log std``."""
    return 0.5 * (mean * mean + std * std - 1.0) - torch.log(std)


def orthogonality_penalty(decoder_weight: Tensor) -> Tensor:
    """``mean((C − I)²)`` with ``C`` the correlation matrix of the columns of ``decoder_weight``
    (``[2d, L]``, torch layout; the rows of the code's ``[L, 2d]`` matrix)."""
    w = decoder_weight.T
    norms = torch.linalg.vector_norm(w, dim=1, keepdim=True) + 1e-32
    corr = (w @ w.T) / (norms @ norms.T)
    eye = torch.eye(w.shape[0], dtype=w.dtype, device=w.device)
    return (corr - eye).pow(2).mean()


def _masked_mean(values: Tensor, present: Tensor) -> Tensor:
    """Mean of ``values`` (``[n, L]``) over the rows of present classes."""
    mask = present.unsqueeze(-1).expand_as(values)
    total = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device)).sum()
    return total / mask.sum().clamp(min=1)


class LEO(MetaLearner):
    """Latent Embedding Optimization (Rusu et al. 2019). See the module docstring.

    Args:
        feature_dim: ``d``, the dimension of the pretrained features (the inputs ``x``).
        latent_dim: ``L``, the dimension of the per-class latent code (64, the code's ``num_latents``).
        inner_lr: initial value of every entry of the latent step size α (``[L]``, meta-learned; formerly
            ``inner_lr_init``, still accepted).
        finetune_lr_init: initial value of every entry of the fine-tuning step size η (``[d]``, meta-learned).
        inner_steps: latent inner steps while meta-training (≥ 1).
        finetune_steps: fine-tuning steps on the decoded weights (≥ 0), at training and test time.
        test_inner_steps: latent inner steps in evaluation mode (≥ 0; default ``inner_steps``).
        kl_weight: β, weight of the KL term.
        encoder_penalty_weight: γ, weight of ``‖stopgrad(z') − z‖²``.
        orthogonality_weight: λ₂, weight of the decoder orthogonality penalty.
        l2_weight: λ₁, weight of ``Σ ‖W‖² / 2`` over the encoder, relation and decoder weights.
        dropout: rate of the dropout on the features (encoder input and classifier input), training only.
        first_order: treat the inner gradients as constants (no second-order terms).
        seed: seeds the weight initialization and, with the iteration, the sampling (:meth:`before_step`).
        outer_clip_value: clip each meta-gradient entry to ``±value`` before the optimizer step
            (the code: 0.1; default off).
        outer_clip_norm: then clip the meta-gradient to this global norm (the code: 0.1; default off).
        inner_clip: clip each inner gradient (latent and fine-tuning) to this norm before its step (formerly
            ``clip_norm``), as
            ``g · min(1, c / ‖g‖)`` (not in the paper; default off). The meta-gradient flows through the
            clipping factor, as in :func:`metaloop.core.inner.gradient_descent_steps`.
        path, chunk_size, bn_mode: see :class:`MetaLearner`; ``path`` must be ``"auto"`` or ``"loop"``.
    """

    single_process_only = "algorithm 'leo' draws its noise from one stream per meta-step and"

    has_inner_loop = True
    reads = ("path", "chunk_size", "inner_lr", "inner_steps", "test_inner_steps", "inner_clip", "first_order", "seed")
    role = "features"
    classification_only = True

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], model: Any, loss_fn: Any, *,
                    feature_dim: Callable[[], int] | None = None, **fixed: Any) -> LEO:
        """LEO on the benchmark's pretrained features (``feature_dim()``), with its code's outer clipping (0.1)."""
        if feature_dim is None:
            raise MetaloopError("algorithm 'leo' needs pretrained features, which this benchmark lacks")
        return cls(feature_dim(), **cls.kwargs_from(cfg), outer_clip_value=0.1, outer_clip_norm=0.1, **fixed)

    def __init__(
        self,
        feature_dim: int,
        *,
        latent_dim: int = 64,
        inner_lr: float = 1.0,
        finetune_lr_init: float = 0.001,
        inner_steps: int = 5,
        finetune_steps: int = 5,
        test_inner_steps: int | None = None,
        kl_weight: float = 1e-3,
        encoder_penalty_weight: float = 1e-9,
        orthogonality_weight: float = 1e-3,
        l2_weight: float = 1e-8,
        dropout: float = 0.5,
        first_order: bool = False,
        seed: int = 0,
        outer_clip_value: float | None = None,
        outer_clip_norm: float | None = None,
        inner_clip: float | None = None,
        **kwargs: Any,
    ) -> None:
        inner_lr_init = inner_lr if (old := renamed(kwargs, "inner_lr_init", "inner_lr", "LEO")) is None else old
        clip_norm = inner_clip if (old := renamed(kwargs, "clip_norm", "inner_clip", "LEO")) is None else old
        path = kwargs.get("path", "auto")
        if path == "vmap":
            raise MetaloopError(
                "option 'path': LEO needs path=loop (under vmap its seeded sampling would draw other noise "
                "per task than the loop path does)"
            )
        if path == "auto":
            kwargs["path"] = "loop"
        if feature_dim < 1 or latent_dim < 1:
            raise MetaloopError(
                f"options 'feature_dim', 'latent_dim': must be positive, got {feature_dim}, {latent_dim}"
            )
        for name, value in (("inner_lr_init", inner_lr_init), ("finetune_lr_init", finetune_lr_init)):
            if not value > 0:
                raise MetaloopError(f"option '{name}': must be positive, got {value}")
        if inner_steps < 1:
            raise MetaloopError(f"option 'inner_steps': must be positive, got {inner_steps}")
        if finetune_steps < 0:
            raise MetaloopError(f"option 'finetune_steps': must be non-negative, got {finetune_steps}")
        if test_inner_steps is not None and test_inner_steps < 0:
            raise MetaloopError(f"option 'test_inner_steps': must be non-negative, got {test_inner_steps}")
        for name, value in (
            ("kl_weight", kl_weight),
            ("encoder_penalty_weight", encoder_penalty_weight),
            ("orthogonality_weight", orthogonality_weight),
            ("l2_weight", l2_weight),
        ):
            if not value >= 0:
                raise MetaloopError(f"option '{name}': must be non-negative, got {value}")
        if not 0 <= dropout < 1:
            raise MetaloopError(f"option 'dropout': must lie in [0, 1), got {dropout}")
        for name, value in (("outer_clip_value", outer_clip_value), ("outer_clip_norm", outer_clip_norm),
                            ("inner_clip", clip_norm)):
            if value is not None and not value > 0:
                raise MetaloopError(f"option '{name}': must be positive, got {value}")
        net = LEONet(feature_dim, latent_dim, inner_lr_init, finetune_lr_init, seed=seed)
        super().__init__(net, F.cross_entropy, **kwargs)
        self.feature_dim = int(feature_dim)
        self.latent_dim = int(latent_dim)
        self.inner_steps = int(inner_steps)
        self.finetune_steps = int(finetune_steps)
        self.test_inner_steps = int(inner_steps if test_inner_steps is None else test_inner_steps)
        self.kl_weight = float(kl_weight)
        self.encoder_penalty_weight = float(encoder_penalty_weight)
        self.orthogonality_weight = float(orthogonality_weight)
        self.l2_weight = float(l2_weight)
        self.dropout = float(dropout)
        self.first_order = bool(first_order)
        self.seed = int(seed)
        self.outer_clip_value = outer_clip_value
        self.outer_clip_norm = outer_clip_norm
        self.clip_norm = clip_norm
        self.generator = torch.Generator()
        self.reseed(-1)

    # ------------------------------------------------------------------ randomness
    def reseed(self, iteration: int) -> None:
        """Reset the sampling generator to the stream of ``(seed, iteration)``."""
        self.generator.manual_seed(stream_seed(self.seed, iteration))

    def before_step(self, optimizer: torch.optim.Optimizer, iteration: int, iterations: int) -> None:
        """Reseed the sampling from ``(seed, iteration)``: an iteration's noise depends on nothing else."""
        self.reseed(iteration)

    def _normal(self, like: Tensor) -> Tensor:
        return torch.randn(like.shape, generator=self.generator, dtype=like.dtype).to(like.device)

    def _dropout(self, x: Tensor) -> Tensor:
        if not self.training or self.dropout == 0:
            return x
        keep = torch.rand(x.shape, generator=self.generator, dtype=x.dtype) >= self.dropout
        return x * keep.to(x.device, x.dtype) / (1.0 - self.dropout)

    # ------------------------------------------------------------------ the model
    def _features(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor) or x.ndim < 2 or x[0].numel() != self.feature_dim:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise MetaloopError(
                f"LEO takes features of dimension {self.feature_dim} "
                f"([examples, {self.feature_dim}]), got {shape}"
            )
        return x.flatten(1)

    def encode(self, params: ParamDict, x: Tensor, y: Tensor) -> LatentDistribution:
        """The per-class latent Gaussians of a support set (encoder, relation net, class means)."""
        x = self._features(x)
        onehot = one_hot_bound(y, x.dtype)  # [n, n]
        h = F.linear(self._dropout(x), params["encoder.weight"])  # [n, L]
        n = h.shape[0]
        pairs = torch.cat([h.unsqueeze(1).expand(n, n, -1), h.unsqueeze(0).expand(n, n, -1)], dim=-1)
        r = F.relu(F.linear(pairs, params["relation.0.weight"]))
        r = F.relu(F.linear(r, params["relation.2.weight"]))
        r = F.linear(r, params["relation.4.weight"]).mean(1)  # [n, 2L]: mean over the partners j
        counts = onehot.sum(0)
        per_class = (onehot.T @ r) / counts.clamp(min=1).unsqueeze(-1)  # [n, 2L]; zero for an absent class
        mean, raw_std = per_class.chunk(2, dim=-1)
        std = torch.clamp(torch.exp(raw_std) - 1.0, min=_STD_FLOOR)
        return LatentDistribution(mean, std, counts > 0)

    def decode(self, params: ParamDict, z: Tensor, present: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and std of the classifier weights ``p(w | z)``, ``[n, d]`` each."""
        mean, raw_std = F.linear(z, params["decoder.weight"]).chunk(2, dim=-1)
        classes = present.sum().to(z.dtype)
        offset = torch.sqrt(2.0 / (classes + self.feature_dim))  # Glorot's std for a [d, N] layer
        std = torch.clamp(torch.exp(raw_std) - 1.0 + offset, min=_STD_FLOOR)
        return mean, std

    def sample_weights(self, params: ParamDict, z: Tensor, present: Tensor) -> Tensor:
        """``w ~ p(w | z)`` reparameterized while training, its mean in evaluation mode."""
        mean, std = self.decode(params, z, present)
        return mean + std * self._normal(mean) if self.training else mean

    def logits(self, weights: Tensor, present: Tensor, x: Tensor) -> Tensor:
        """``dropout(x) · wᵀ``, ``-inf`` for absent classes: ``[examples, n]``."""
        return mask_logits(self._dropout(x) @ weights.T, present)

    def support_loss(self, weights: Tensor, present: Tensor, x: Tensor, y: Tensor) -> Tensor:
        """``L_tr``: the SUM of the support cross-entropies (``tf.gradients`` of per-example losses)."""
        return F.cross_entropy(self.logits(weights, present, x), y, reduction="sum")

    # ------------------------------------------------------------------ the algorithm contract
    def adapt_steps(
        self, params: ParamDict, support: tuple[Any, Tensor], steps: Sequence[int]
    ) -> list[LEOState]:
        """Task states after each of ``steps`` latent inner steps, each followed by ``finetune_steps``
        fine-tuning steps."""
        if any(s < 0 for s in steps):
            raise MetaloopError(f"inner steps must be non-negative, got {list(steps)}")
        x, y = support
        x = self._features(x)
        create_graph = self.training and not self.first_order
        q = self.encode(params, x, y)
        present = q.present
        z0 = q.mean + q.std * self._normal(q.mean) if self.training else q.mean
        kl = _masked_mean(kl_standard_normal(q.mean, q.std), present)
        orth = orthogonality_penalty(params["decoder.weight"])
        l2 = sum(params[n].pow(2).sum() for n in LEONet.weight_names()) / 2
        alpha, eta = params["inner_lr"], params["finetune_lr"]

        def latent_loss(p: ParamDict) -> Tensor:
            return self.support_loss(self.sample_weights(params, p["z"], present), present, x, y)

        def weight_loss(p: ParamDict) -> Tensor:
            return self.support_loss(p["w"], present, x, y)

        trajectory = [z0]
        for _ in range(max(steps, default=0)):
            z = trajectory[-1]
            grad = self._clip(gradients(latent_loss, {"z": z}, ["z"], create_graph=create_graph))
            trajectory.append(z - alpha * grad)

        states = []
        for s in steps:
            z = trajectory[s]
            w = self.sample_weights(params, z, present)
            for _ in range(self.finetune_steps):
                grad = self._clip(gradients(weight_loss, {"w": w}, ["w"], create_graph=create_graph))
                w = w - eta * grad
            penalty = _masked_mean((z0 - z.detach()).pow(2), present)
            states.append(LEOState(w, present, kl, penalty, orth, l2, z0, z))
        return states

    def _clip(self, grads: ParamDict) -> Tensor:
        """The one gradient of ``grads``, clipped to ``clip_norm`` when set."""
        if self.clip_norm is not None:
            grads = clip_by_global_norm(grads, self.clip_norm)
        (grad,) = grads.values()
        return grad

    def adapt(self, params: ParamDict, support: tuple[Any, Tensor], *, steps: int | None = None) -> LEOState:
        if steps is None:
            steps = self.inner_steps if self.training else self.test_inner_steps
        return self.adapt_steps(params, support, [steps])[0]

    def predict(self, state: LEOState, x: Any) -> Tensor:
        """Query logits ``dropout(x) · w'ᵀ`` (``-inf`` for absent classes; no dropout in evaluation mode)."""
        return self.logits(state.weights, state.present, self._features(x))

    def regularization(self, state: LEOState) -> Tensor:
        """``β·KL + γ·encoder penalty + λ₂·orthogonality + λ₁·L2`` of a task state."""
        return (
            self.kl_weight * state.kl
            + self.encoder_penalty_weight * state.encoder_penalty
            + self.orthogonality_weight * state.orthogonality
            + self.l2_weight * state.l2
        )

    def loss(self, state: LEOState, query: tuple[Any, Tensor]) -> Tensor:
        """The meta-objective of one task: the query cross-entropy (mean) plus :meth:`regularization`."""
        x, y = query
        return self.loss_fn(self.predict(state, x), y) + self.regularization(state)

    # ------------------------------------------------------------------ the outer step
    def meta_step(self, batch, optimizer: torch.optim.Optimizer) -> float:
        """One outer update; the meta-gradient is clipped as in the code when ``outer_clip_*`` are set."""
        optimizer.zero_grad(set_to_none=True)
        loss = self.local_meta_gradient(batch)
        params = [p for p in self.parameters() if p.grad is not None]
        if self.outer_clip_value is not None:
            nn.utils.clip_grad_value_(params, self.outer_clip_value)
        if self.outer_clip_norm is not None:
            nn.utils.clip_grad_norm_(params, self.outer_clip_norm)
        optimizer.step()
        return loss


__all__ = ["LEO", "LEONet", "LEOState", "LatentDistribution", "kl_standard_normal", "orthogonality_penalty"]
