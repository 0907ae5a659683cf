"""MAML for reinforcement learning (Finn et al. 2017, §3.2 and §5.3).

A task is an environment; its support data are K rollouts of the current policy, its query data K rollouts of the
adapted one. The inner step is a vanilla policy gradient (REINFORCE with Duan et al. 2016's linear feature
baseline fitted per task, discount ``γ``), on advantages standardized over the task's K·H steps and averaged over
them, as in the paper's code (rllab's VPG, ``center_adv``), for which its step size α = 0.1 was chosen::

    A_t = standardize(R_t − b_t),    θ' = θ + α ∇_θ (1/N) Σ_k Σ_t log π_θ(a_t | s_t) A_t

(``N`` the number of steps of the K rollouts; an episode that reaches its goal ends there).

and the outer objective is the return of the adapted policy's rollouts, whose gradient (through ``θ'``, second
order unless ``first_order``) the outer step follows. ``outer_step``: ``"adam"`` (Adam on the DiCE objective, at
``outer_lr``), or ``"trpo"``, the paper's (:func:`metaloop.core.trpo.trust_region_update`): maximize the
importance-weighted surrogate ``mean_t ρ_t A_t`` of the adapted policies, ``ρ_t = π_θ'(a_t|s_t) / π_θ'_old(a_t|s_t)``,
subject to their mean KL(old ‖ new) being at most ``max_kl``. Its Fisher products differentiate that KL through
the inner step (``trpo_fisher="exact"``, the paper's) or take the adapted policies' own Fisher, ``∂θ'/∂θ = I``
(``"adapted"``, cheaper); ``fisher_rollouts`` keeps only the first k rollouts of each task in the products (rllab's
subsampling; the line search checks the KL on all of them).

``estimator`` (:mod:`metaloop.core.dice`): ``"maml"`` differentiates the post-adaptation return through ``θ'`` only,
as the paper does (low variance, biased: the pre-adaptation samples' dependence on ``θ`` is left out);
``"exact"`` adds that dependence with the magic box of the pre-adaptation log-probabilities (unbiased, higher
variance; checked against a closed form in ``tests/core/test_dice.py``).

``first_order`` (FOMAML-RL) holds the inner policy gradient constant: ``∂θ'/∂θ = I``, the meta-gradient is the
policy gradient at ``θ'``.

Evaluation: the mean undiscounted return of fresh rollouts after 0, 1, 2, … inner steps (each step on the
rollouts of the policy before it). Every task's rollouts draw from a generator seeded by the task itself
(``info["rollout_seed"]``, :func:`metaloop.tasks.rl.rollout_seed`), so a resumed run, or one over several
processes, samples exactly what an uninterrupted single-process run does.

Execution: the tasks of a meta-batch are vectorized (``torch.func.vmap`` over per-task parameters): each sampling
phase steps every task's rollouts at once, and the inner step of every task is one ``torch.func.grad`` under
``vmap`` (the policy is an MLP: no norm layers, whose second-order gradients under ``vmap`` are wrong).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metaloop.algorithms.base import MetaLearner
from metaloop.core.context import vectorized
from metaloop.core.dice import dice_objective, meta_objective, reinforce_surrogate
from metaloop.core.inner import ParamDict, gradients
from metaloop.core.params import select_names
from metaloop.core.trpo import gaussian_kl, trust_region_update
from metaloop.errors import MetaloopError
from metaloop.models.policy import act, log_prob, mean_action
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.rl import (
    Environment, Rollouts, linear_baseline, returns_to_go, standardized_advantages, task_generators,
)

ESTIMATORS = ("maml", "exact")
OUTER_STEPS = ("adam", "trpo")
FISHERS = ("exact", "adapted")


def _no_loss(*args: Any) -> Tensor:
    raise MetaloopError("a reinforcement-learning learner has no supervised loss")


class MAMLRL(MetaLearner):
    """MAML-RL (see the module docstring). ``policy``: a Gaussian policy whose parameters include ``log_std``
    (:class:`~metaloop.models.policy.GaussianMLP`); ``environment`` samples rollouts of a batch of tasks
    (:data:`~metaloop.tasks.rl.Environment`)."""

    has_inner_loop = True
    reads = ("inner_lr", "inner_steps", "test_inner_lr", "first_order", "adapt", "estimator", "outer_step", "max_kl",
             "trpo_fisher", "fisher_rollouts")
    role = "policy"
    progress = ("return", -1.0)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], model: Callable[[], nn.Module], loss_fn: Any, *,
                    feature_dim: Any = None, **fixed: Any) -> MAMLRL:
        return cls(model(), **cls.kwargs_from(cfg), rollouts=cfg["rollouts"], horizon=cfg["horizon"],
                   discount=cfg["discount"], **fixed)

    def __init__(self, policy: nn.Module, *, environment: Environment, inner_lr: float = 0.1, inner_steps: int = 1,
                 test_inner_lr: float | None = None, first_order: bool = False, adapt: str = "all",
                 estimator: str = "maml", outer_step: str = "adam", max_kl: float = 0.01, trpo_fisher: str = "exact",
                 fisher_rollouts: int | None = None, rollouts: int = 20, horizon: int = 100,
                 discount: float = 0.99) -> None:
        super().__init__(policy, _no_loss, path="vmap")
        if estimator not in ESTIMATORS:
            raise MetaloopError(f"option 'estimator': {estimator!r} is not one of {', '.join(ESTIMATORS)}")
        if outer_step not in OUTER_STEPS:
            raise MetaloopError(f"option 'outer_step': {outer_step!r} is not one of {', '.join(OUTER_STEPS)}")
        if outer_step == "trpo" and estimator != "maml":
            raise MetaloopError("option 'estimator': the trpo outer step takes the paper's estimator (maml) only")
        if not max_kl > 0:
            raise MetaloopError(f"option 'max_kl': must be positive, got {max_kl}")
        if trpo_fisher not in FISHERS:
            raise MetaloopError(f"option 'trpo_fisher': {trpo_fisher!r} is not one of {', '.join(FISHERS)}")
        if fisher_rollouts is not None and not 1 <= fisher_rollouts <= rollouts:
            raise MetaloopError(f"option 'fisher_rollouts': must be between 1 and rollouts ({rollouts}), got "
                                f"{fisher_rollouts}")
        if rollouts < 1 or horizon < 1:
            raise MetaloopError(f"options 'rollouts', 'horizon': must be positive, got {rollouts}, {horizon}")
        if "log_std" not in dict(policy.named_parameters()):
            raise MetaloopError("the policy has no 'log_std' parameter: MAML-RL needs a Gaussian policy")
        self.environment = environment
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.train_steps = self.inner_steps  # inner steps inside the meta-objective (the baseline takes none)
        self.test_inner_lr = self.inner_lr if test_inner_lr is None else float(test_inner_lr)
        self.first_order, self.estimator = first_order, estimator
        self.outer_step, self.max_kl, self.trpo_fisher = outer_step, float(max_kl), trpo_fisher
        self.fisher_rollouts = fisher_rollouts or rollouts
        self.rollouts, self.horizon, self.discount = rollouts, horizon, discount
        self.adapted_names = select_names(policy, adapt)

    # ------------------------------------------------------------------ rollouts and the inner step
    def sample(self, phi: ParamDict, tasks: Tensor, generators: Sequence[torch.Generator]) -> Rollouts:
        """``rollouts`` trajectories of each task's policy (``phi``: parameters with a task dimension; no gradient)
        on ``tasks [T, d]``, each task's noise from its own generator."""
        fixed = {n: v.detach() for n, v in phi.items()}
        dims = fixed["log_std"].shape[-1]
        noise = torch.stack([torch.randn(self.rollouts, self.horizon, dims, generator=g) for g in generators])
        noise = noise.to(device=tasks.device, dtype=fixed["log_std"].dtype)
        actions = torch.func.vmap(lambda p, obs, z: act(self.model, p, obs, z))

        with torch.no_grad():
            return self.environment(lambda obs, t: actions(fixed, obs, noise[:, :, t]), tasks, self.rollouts,
                                    self.horizon)

    def surrogate(self, params: ParamDict, obs: Tensor, actions: Tensor, advantages: Tensor, mask: Tensor,
                  sampled: Tensor | None = None) -> Tensor:
        """One task's inner objective: the REINFORCE surrogate averaged over the steps that happened (``sampled``,
        the sampling policy's log-probabilities, is for the importance-weighted objectives of subclasses)."""
        logp = log_prob(self.model, params, obs, actions)
        return reinforce_surrogate(logp, advantages, mask=mask) * mask.shape[0] / mask.sum().clamp(min=1)

    def step_sizes(self) -> float | dict[str, Tensor]:
        """The inner step size α: ``inner_lr`` (``test_inner_lr`` outside training), learned tensors in Meta-SGD."""
        return self.inner_lr if self.training else self.test_inner_lr

    def step(self, phi: ParamDict, batch: Rollouts, *, create_graph: bool, sampled: Tensor | None = None
             ) -> ParamDict:
        """One policy-gradient ascent step of every task on its rollouts ``batch`` (at ``test_inner_lr`` outside
        training); ``create_graph``: differentiable in ``phi`` through the gradient (second order). ``sampled``: the
        log-probabilities ``[T, R, H]`` of the policies that sampled ``batch``, for an importance-weighted inner
        objective (ProMP's); ``None``: ``batch`` was sampled by ``phi`` itself."""
        lr = self.step_sizes()
        names = self.adapted_names

        def one(p: ParamDict, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor, *old: Tensor) -> ParamDict:
            grads = gradients(lambda q: -self.surrogate(q, obs, actions, adv, mask, *old), p, names,
                              create_graph=create_graph)
            return {**p, **{n: p[n] - (lr[n] if isinstance(lr, dict) else lr) * grads[n] for n in names}}

        extra = () if sampled is None else (sampled,)
        with vectorized():
            return torch.func.vmap(one)(phi, batch.obs, batch.actions, standardized_advantages(batch, self.discount),
                                        batch.mask, *extra)

    def log_probs(self, phi: ParamDict, batch: Rollouts) -> Tensor:
        """Each task's policy's log-probabilities of the actions of its rollouts: ``[T, R, H]``."""
        return torch.func.vmap(lambda p, o, a: log_prob(self.model, p, o, a))(phi, batch.obs, batch.actions)

    def mean_actions(self, phi: ParamDict, obs: Tensor) -> Tensor:
        """Each task's policy's mean action at the observations ``obs [T, R, H, d]``."""
        return torch.func.vmap(lambda p, o: mean_action(self.model, p, o))(phi, obs)

    def sampled_adaptation(self, tasks: Tensor, generators: Sequence[torch.Generator], *, create_graph: bool
                           ) -> tuple[list[ParamDict], list[Rollouts], ParamDict, Rollouts]:
        """The ``train_steps`` inner steps from the meta-parameters, each on fresh rollouts of the policy before it:
        the policies before each step and their rollouts, the adapted policies and their rollouts."""
        phi, policies, pre = self.per_task(len(tasks)), [], []
        for _ in range(self.train_steps):
            policies.append(phi)
            pre.append(self.sample(phi, tasks, generators))
            phi = self.step(phi, pre[-1], create_graph=create_graph)
        return policies, pre, phi, self.sample(phi, tasks, generators)

    def per_task(self, count: int) -> ParamDict:
        """The meta-parameters with a task dimension of ``count`` (views: the gradient reaches the parameters)."""
        return {n: p.expand(count, *p.shape) for n, p in self.params().items()}

    # ------------------------------------------------------------------ meta-training
    def meta_objective(self, tasks: Tensor, generators: Sequence[torch.Generator]) -> tuple[Tensor, Tensor]:
        """The mean meta-objective of the tasks (to maximize) and each task's post-adaptation mean return."""
        policies, pre, phi, post = self.sampled_adaptation(tasks, generators, create_graph=not self.first_order)
        targets = returns_to_go(post.rewards, self.discount)
        baseline = linear_baseline(post.obs, targets, post.mask)

        def objective(p: ParamDict, obs: Tensor, actions: Tensor, rewards: Tensor, base: Tensor, mask: Tensor
                      ) -> Tensor:
            return dice_objective(log_prob(self.model, p, obs, actions), rewards, discount=self.discount,
                                  baseline=base, mask=mask)

        values = torch.func.vmap(objective)(phi, post.obs, post.actions, post.rewards, baseline, post.mask)
        if self.estimator == "exact":  # the score of every pre-adaptation sample, per task
            logps = [(self.log_probs(p, b) * b.mask).sum((1, 2)) for p, b in zip(policies, pre)]
            values = torch.func.vmap(meta_objective)(torch.stack(logps, 1), values)
        return values.mean(), post.returns.mean(-1)

    def meta_gradient(self, batch: TaskBatch) -> float:
        """Accumulate ``−∇`` of the mean meta-objective (the optimizer minimizes); return ``−`` the mean
        post-adaptation return (the logged "loss")."""
        objective, returns = self.meta_objective(batch.support_x[:, 0], task_generators(batch))
        (-objective).backward()
        return -float(returns.mean())

    # ------------------------------------------------------------------ the trpo outer step
    @property
    def single_process_only(self) -> str | None:
        """Why this learner cannot share a meta-batch over processes (``None``: it can)."""
        return "option 'outer_step': trpo" if self.outer_step == "trpo" else None

    def meta_step(self, batch: TaskBatch | None, optimizer: torch.optim.Optimizer) -> float:
        if self.outer_step == "adam":
            return super().meta_step(batch, optimizer)
        return self.trpo_step(batch)

    def adapted(self, pre: Sequence[Rollouts], *, create_graph: bool) -> ParamDict:
        """Each task's adapted parameters from the current meta-parameters, on the fixed pre-adaptation rollouts."""
        phi = self.per_task(len(pre[0].obs)) if pre else self.per_task(0)
        for batch in pre:
            phi = self.step(phi, batch, create_graph=create_graph)
        return phi

    def trust_region_terms(self, phi: ParamDict, post: Rollouts, advantages: Tensor, old: tuple[Tensor, Tensor]
                           ) -> tuple[Tensor, Tensor]:
        """The mean surrogate ``ρ A`` over tasks (to maximize) and the mean KL(old ‖ new) of the adapted policies
        over the steps that happened; ``old``: the old policies' log-probabilities and means (no gradient)."""
        def one(p: ParamDict, obs: Tensor, actions: Tensor, adv: Tensor, mask: Tensor, old_logp: Tensor,
                old_mean: Tensor, old_log_std: Tensor) -> tuple[Tensor, Tensor]:
            count = mask.sum().clamp(min=1)
            ratio = torch.exp(log_prob(self.model, p, obs, actions) - old_logp)
            kl = gaussian_kl(old_mean, old_log_std, mean_action(self.model, p, obs), p["log_std"])
            return (ratio * adv * mask).sum() / count, (kl * mask).sum() / count

        old_logp, old_mean = old
        old_log_std = phi["log_std"].detach()
        surrogate, kl = torch.func.vmap(one)(phi, post.obs, post.actions, advantages, post.mask, old_logp,
                                             old_mean, old_log_std)
        return surrogate.mean(), kl.mean()

    def trpo_step(self, batch: TaskBatch | None) -> float:
        """One TRPO outer step on the tasks of ``batch`` (see the module docstring); returns −(the mean return of
        the adapted policies' rollouts)."""
        _, pre, phi, post = self.sampled_adaptation(batch.support_x[:, 0], task_generators(batch),
                                                    create_graph=not self.first_order)
        advantages = standardized_advantages(post, self.discount)
        with torch.no_grad():
            old = self.log_probs(phi, post), self.mean_actions(phi, post.obs)
        surrogate, kl = self.trust_region_terms(phi, post, advantages, old)
        if self.trpo_fisher == "adapted" or self.fisher_rollouts < self.rollouts:
            k = self.fisher_rollouts  # the Fisher on the first k rollouts of each task
            own = self.params()
            fisher_phi = phi if self.trpo_fisher == "exact" else {  # the adapted policies' own: ∂θ'/∂θ as I
                n: v.detach() + (own[n] - own[n].detach()) for n, v in phi.items()}
            part = Rollouts(post.obs[:, :k], post.actions[:, :k], post.rewards[:, :k], post.mask[:, :k])
            kl = self.trust_region_terms(fisher_phi, part, advantages[:, :k], (old[0][:, :k], old[1][:, :k]))[1]
        trust_region_update([p for _, p in self.named_parameters()], surrogate, kl, lambda: self.trust_region_terms(
            self.adapted(pre, create_graph=False), post, advantages, old), self.max_kl)
        return -float(post.returns.mean())

    # ------------------------------------------------------------------ evaluation
    def adapt_rollouts(self, tasks: Tensor, steps: Sequence[int], generators: Sequence[torch.Generator]
                       ) -> list[Rollouts]:
        """Fresh rollouts of each task's policy after each of ``steps`` inner steps (each step on the rollouts of
        the policy before it)."""
        phi = {n: v.detach() for n, v in self.per_task(len(tasks)).items()}
        found: dict[int, Rollouts] = {}
        for k in range(max(steps) + 1):
            rollouts = self.sample(phi, tasks, generators)
            if k in steps:
                found[k] = rollouts
            if k < max(steps):
                phi = {n: v.detach() for n, v in self.step(phi, rollouts, create_graph=False).items()}
        return [found[s] for s in steps]

    def evaluate_batch(self, batch: TaskBatch, steps: Sequence[int], metric_fn: Any = None) -> Tensor:
        """The mean return after each of ``steps`` inner steps, per task: ``[tasks, len(steps)]``."""
        was_training = self.training
        self.eval()
        try:
            found = self.adapt_rollouts(batch.support_x[:, 0], list(steps), task_generators(batch))
        finally:
            self.train(was_training)
        return torch.stack([r.returns.mean(-1) for r in found], 1).double()


class FOMAMLRL(MAMLRL):
    """First-order MAML-RL: the inner policy gradient is held constant (``first_order`` fixed on)."""

    reads = tuple(r for r in MAMLRL.reads if r != "first_order")

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        super().__init__(policy, first_order=True, **kwargs)


class ANILRL(MAMLRL):
    """ANIL on a policy (Raghu et al. 2020): MAML-RL whose inner step adapts only the policy's last layer (the mean
    head; ``log_std`` and the body are meta-learned only), ``adapt="head"`` by default (any other spec is
    honoured)."""

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        if kwargs.get("adapt", "all") == "all":
            kwargs["adapt"] = "head"
        super().__init__(policy, **kwargs)


class PretrainRL(MAMLRL):
    """The baseline of Finn et al. 2017 (§5.3, "pretrained"): one policy trained on all training tasks at once (the
    policy gradient of the mean return over tasks, no inner step, Adam), then fine-tuned at test time with the
    same inner step as MAML-RL. At its initialization (no training), the "random initialization" baseline."""

    reads = ("inner_lr", "test_inner_lr", "adapt")

    def __init__(self, policy: nn.Module, **kwargs: Any) -> None:
        super().__init__(policy, **kwargs)
        self.train_steps = 0
