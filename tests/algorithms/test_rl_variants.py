"""Meta-SGD and Reptile on a policy (metaloop/algorithms/metasgd_rl.py, reptile_rl.py): Meta-SGD's learned step
sizes start as MAML-RL's and get the meta-gradient; Reptile's outer "gradient" is θ − mean φ after k
policy-gradient steps on fresh rollouts."""

from __future__ import annotations

import pytest
import torch

from metaloop.algorithms.maml_rl import MAMLRL
from metaloop.algorithms.metasgd_rl import MetaSGDRL
from metaloop.algorithms.reptile_rl import ReptileRL
from metaloop.errors import MetaloopError
from metaloop.models.policy import GaussianMLP
from metaloop.tasks.rl import Nav2DTasks, nav2d_rollouts, task_generators

SMALL = {"rollouts": 5, "horizon": 10, "discount": 0.95}


def make(cls, **kwargs):
    torch.manual_seed(0)
    return cls(GaussianMLP(2, 2, [8]), environment=nav2d_rollouts, **{**SMALL, **kwargs}).double()


def test_metasgd_starts_as_maml_and_learns_its_step_sizes():
    batch = Nav2DTasks(seed=1).batch(0, 3).to("cpu", torch.float64)
    meta, maml = make(MetaSGDRL, inner_lr=0.25), make(MAMLRL, inner_lr=0.25)  # exact in float32
    assert {n: p.shape for n, p in meta.step_sizes().items()} == {n: p.shape for n, p in meta.model.named_parameters()}
    meta.meta_gradient(batch)
    maml.meta_gradient(batch)
    for (name, a), b in zip(meta.model.named_parameters(), maml.model.parameters()):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-10, atol=1e-12, msg=name)
    assert all(lr.grad is not None and lr.grad.abs().sum() > 0 for lr in meta.lrs.values())
    with torch.no_grad():
        meta.lrs["net__0__weight"].mul_(2.0)
    tasks, gens = batch.support_x[:, 0], task_generators(batch)
    phi = meta.per_task(3)
    rollouts = meta.sample(phi, tasks, gens)
    doubled, plain = meta.step(phi, rollouts, create_graph=False), maml.step(phi, rollouts, create_graph=False)
    assert not torch.allclose(doubled["net.0.weight"], plain["net.0.weight"])
    torch.testing.assert_close(doubled["net.2.weight"], plain["net.2.weight"])
    with pytest.raises(MetaloopError, match="test_inner_lr"):
        make(MetaSGDRL, test_inner_lr=0.1)


def test_reptile_moves_toward_the_adapted_policies():
    batch = Nav2DTasks(seed=2).batch(0, 3).to("cpu", torch.float64)
    model = make(ReptileRL, inner_steps=3, inner_lr=0.1)
    reference = make(MAMLRL, inner_lr=0.1)  # the same inner step, taken by hand
    tasks, gens = batch.support_x[:, 0], task_generators(batch)
    phi = {n: v.detach() for n, v in reference.per_task(3).items()}
    for _ in range(3):
        phi = {n: v.detach() for n, v in reference.step(phi, reference.sample(phi, tasks, gens),
                                                          create_graph=False).items()}
    model.meta_gradient(batch)
    for name, p in model.model.named_parameters():
        torch.testing.assert_close(p.grad, p.detach() - phi[name].mean(0), rtol=1e-10, atol=1e-12, msg=name)
    assert not model.second_order({"first_order": False})
