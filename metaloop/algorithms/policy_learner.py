"""The shared base of the meta-reinforcement-learning algorithms: rollouts of a batch of tasks and the
policy-gradient inner step (Finn et al. 2017, §3.2 and §5.3).

A task is an environment; its support data are K rollouts of the current policy, its query data K rollouts of the
adapted one. The inner step is a vanilla policy gradient (REINFORCE with Duan et al. 2016's linear feature baseline
fitted per task, discount ``γ``), on advantages standardized over the task's K·H steps and averaged over them, as
in the MAML paper's code (rllab's VPG, ``center_adv``)::

    A_t = standardize(R_t − b_t),    θ' = θ + α ∇_θ (1/N) Σ_k Σ_t log π_θ(a_t | s_t) A_t

(``N`` the number of steps of the K rollouts; an episode that reaches its goal ends there). Evaluation: the mean
undiscounted return of fresh rollouts after 0, 1, 2, … inner steps, each step on the rollouts of the policy before
it. Every task's rollouts draw from a generator seeded by the task itself (:func:`metaloop.tasks.rl.rollout_seed`),
so a resumed run, or one over several processes, samples what an uninterrupted one does. The tasks of a meta-batch
are vectorized (``torch.func.vmap`` over per-task parameters; the policy is an MLP, without norm layers).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from metaloop.algorithms.base import MetaLearner, check_positive
from metaloop.core.context import vectorized
from metaloop.core.dice import reinforce_surrogate
from metaloop.core.inner import ParamDict, gradients
from metaloop.core.params import select_names
from metaloop.errors import MetaloopError
from metaloop.models.policy import act, log_prob, mean_action
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.rl import Environment, Rollouts, standardized_advantages, task_generators


def _no_loss(*args: Any) -> Tensor:
    raise MetaloopError("a reinforcement-learning learner has no supervised loss")


class PolicyLearner(MetaLearner):
    """A meta-learner of a Gaussian policy (see the module docstring). ``policy``: its parameters include
    ``log_std`` (:class:`~metaloop.models.policy.GaussianMLP`); ``environment`` samples rollouts of a batch of tasks
    (:data:`~metaloop.tasks.rl.Environment`). Subclasses define the meta-gradient (or the whole outer step)."""

    has_inner_loop = True
    reads = ("inner_lr", "inner_steps", "test_inner_lr", "adapt")
    role = "policy"
    progress = ("return", -1.0)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any], model: Callable[[], nn.Module], loss_fn: Any, *,
                    feature_dim: Any = None, **fixed: Any) -> PolicyLearner:
        return cls(model(), **cls.kwargs_from(cfg), rollouts=cfg["rollouts"], horizon=cfg["horizon"],
                   discount=cfg["discount"], **fixed)

    def __init__(self, policy: nn.Module, *, environment: Environment, inner_lr: float = 0.1, inner_steps: int = 1,
                 test_inner_lr: float | None = None, first_order: bool = False, adapt: str = "all",
                 rollouts: int = 20, horizon: int = 100, discount: float = 0.99) -> None:
        super().__init__(policy, _no_loss, path="vmap")
        check_positive(inner_lr=inner_lr, inner_steps=inner_steps, test_inner_lr=test_inner_lr, rollouts=rollouts,
                       horizon=horizon)
        if "log_std" not in dict(policy.named_parameters()):
            raise MetaloopError("the policy has no 'log_std' parameter: a policy learner needs a Gaussian policy")
        self.environment = environment
        self.inner_lr, self.inner_steps = float(inner_lr), int(inner_steps)
        self.train_steps = self.inner_steps  # inner steps inside the meta-objective (the baseline takes none)
        self.test_inner_lr = self.inner_lr if test_inner_lr is None else float(test_inner_lr)
        self.first_order = bool(first_order)
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

    def adapted(self, pre: Sequence[Rollouts], *, create_graph: bool) -> ParamDict:
        """Each task's adapted parameters from the current meta-parameters, on the fixed pre-adaptation rollouts."""
        phi = self.per_task(len(pre[0].obs)) if pre else self.per_task(0)
        for batch in pre:
            phi = self.step(phi, batch, create_graph=create_graph)
        return phi

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
