"""ProMP (metaloop/algorithms/promp.py): the LVC inner objective has the policy gradient at θo and the low-variance
curvature (∇²π/π)·A as its Hessian; ProMP's meta-training raises the adapted return; its settings are checked."""

from __future__ import annotations

import pytest
import torch

from metaloop.algorithms.maml_rl import MAMLRL
from metaloop.algorithms import promp as promp_module
from metaloop.algorithms.promp import ProMP
from metaloop.errors import MetaloopError
from metaloop.models.policy import GaussianMLP, log_prob
from metaloop.tasks.rl import Nav2DTasks, nav2d_rollouts, standardized_advantages, task_generators

SMALL = {"rollouts": 4, "horizon": 6, "discount": 0.95}


def make(cls, **kwargs):
    torch.manual_seed(0)
    return cls(GaussianMLP(2, 2, [3]), environment=nav2d_rollouts, **{**SMALL, **kwargs}).double()


def test_lvc_has_the_policy_gradient_and_the_low_variance_curvature():
    promp, maml = make(ProMP), make(MAMLRL)
    batch = Nav2DTasks(seed=1).batch(0, 1).to("cpu", torch.float64)
    found = promp.sample(promp.per_task(1), batch.support_x[:, 0], task_generators(batch))
    obs, actions, mask = found.obs[0], found.actions[0], found.mask[0]
    adv = standardized_advantages(found, promp.discount)[0]
    names = [n for n, _ in promp.model.named_parameters()]
    shapes = [p.shape for p in promp.model.parameters()]
    theta = torch.cat([p.detach().reshape(-1) for p in promp.model.parameters()])

    def unflat(v):
        return {n: c.view(s) for n, c, s in zip(names, torch.split(v, [s.numel() for s in shapes]), shapes)}

    lvc = lambda v: promp.surrogate(unflat(v), obs, actions, adv, mask)  # noqa: E731
    pg = lambda v: maml.surrogate(unflat(v), obs, actions, adv, mask)  # noqa: E731
    g_lvc = torch.autograd.functional.jacobian(lvc, theta)
    torch.testing.assert_close(g_lvc, torch.autograd.functional.jacobian(pg, theta), rtol=1e-12, atol=1e-12)
    scores = torch.autograd.functional.jacobian(lambda v: log_prob(promp.model, unflat(v), obs, actions), theta)
    weights = adv * mask / mask.sum()
    outer = torch.einsum("rh,rhi,rhj->ij", weights, scores, scores)
    torch.testing.assert_close(torch.autograd.functional.hessian(lvc, theta),
                               torch.autograd.functional.hessian(pg, theta) + outer, rtol=1e-9, atol=1e-12)


def test_promp_meta_training_raises_the_adapted_return():
    torch.manual_seed(0)
    model = ProMP(GaussianMLP(2, 2, [32, 32]), environment=nav2d_rollouts, rollouts=10, horizon=20, discount=0.95,
                  ppo_steps=3)
    optimizer = model.make_optimizer(3e-3)  # three Adam steps per meta-step: 1e-2 overshoots here
    tasks, test = Nav2DTasks(seed=0), Nav2DTasks(seed=0, split="test").batch(0, 10)
    before = model.evaluate_batch(test, [1]).mean()
    for it in range(20):
        model.meta_step(tasks.batch(it * 10, 10), optimizer)
    after = model.evaluate_batch(test, [1]).mean()
    assert after > before + 1.0, (before, after)


def test_bad_settings_and_one_process():
    with pytest.raises(MetaloopError, match="option 'clip_eps'"):
        make(ProMP, clip_eps=1.5)
    with pytest.raises(MetaloopError, match="option 'ppo_steps'"):
        make(ProMP, ppo_steps=0)
    assert "promp" in make(ProMP).single_process_only


def test_the_inner_step_at_the_sampling_policy_is_maml_rls():
    """At θo (no sampling policy given) ProMP's LVC step is the policy-gradient step: the same adapted parameters."""
    promp, maml = make(ProMP), make(MAMLRL)
    batch = Nav2DTasks(seed=3).batch(0, 2).to("cpu", torch.float64)
    phi = promp.per_task(2)
    found = promp.sample(phi, batch.support_x[:, 0], task_generators(batch))
    for (name, a), b in zip(promp.step(phi, found, create_graph=False).items(),
                            maml.step(maml.per_task(2), found, create_graph=False).values()):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12, msg=name)


def test_the_kl_penalty_keeps_the_pre_update_policy_through_the_outer_steps(monkeypatch):
    """Every PPO step's KL penalty compares with θo, the policy that sampled the pre-update rollouts, even after
    the outer steps have moved θ (a view of θ's storage here once made the penalty compare θ with itself)."""
    model = make(ProMP, ppo_steps=3)
    optimizer = model.make_optimizer(5e-2)
    start = model.model.log_std.detach().clone()
    seen = []
    real = promp_module.gaussian_kl

    def recording(mean_p, log_std_p, mean_q, log_std_q):
        seen.append(log_std_p.detach().clone())
        return real(mean_p, log_std_p, mean_q, log_std_q)

    monkeypatch.setattr(promp_module, "gaussian_kl", recording)
    model.meta_step(Nav2DTasks(seed=3).batch(0, 2).to("cpu", torch.float64), optimizer)
    assert len(seen) == 3 and not torch.equal(model.model.log_std.detach(), start)
    for log_std in seen:
        torch.testing.assert_close(log_std, start.expand_as(log_std), rtol=0, atol=0)
