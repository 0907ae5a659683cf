"""MetaOptNet (Lee et al. 2019): the learner's logits and meta-gradient (against finite differences), execution
paths, ways, and end-to-end training. The solvers are tested in tests/solvers/."""

from __future__ import annotations


import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import Ridge
from cases import rel_err
from torch import nn

from metaloop.algorithms import MetaOptNet
from metaloop.errors import MetaloopError
from metaloop.solvers.crammer_singer import solve_dual
from metaloop.solvers.ridge import ridge_weights
from metaloop.tasks.base import TaskBatch


def mlp(d_in: int = 4, d_out: int = 6) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(d_in, 8), nn.Tanh(), nn.Linear(8, d_out)).double()


def episodes(tasks: int, ways: int, shots: int, queries: int, d: int, seed: int, sep: float = 1.5) -> TaskBatch:
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(ways)
    sy = labels.repeat_interleave(shots).expand(tasks, -1).clone()
    qy = labels.repeat_interleave(queries).expand(tasks, -1).clone()
    means = sep * torch.randn(tasks, ways, d, generator=gen, dtype=torch.float64)
    pick = lambda y: means.gather(1, y.unsqueeze(-1).expand(-1, -1, d))
    sx = pick(sy) + torch.randn(tasks, ways * shots, d, generator=gen, dtype=torch.float64)
    qx = pick(qy) + torch.randn(tasks, ways * queries, d, generator=gen, dtype=torch.float64)
    return TaskBatch(sx, sy, qx, qy)


def test_ridge_learner_logits():
    """The learner's logits are γ · f(x) W with W the ridge solution, -inf for absent classes."""
    model = mlp()
    learner = MetaOptNet(model, head="ridge", ridge_lambda=1.5, logit_scale=2.0)
    (sx, sy), (qx, _) = episodes(1, 3, 2, 2, 4, seed=1).task(0)
    state = learner.adapt(learner.params(), (sx, sy))
    logits = learner.predict(state, qx)
    with torch.no_grad():
        X, Q = model(sx), model(qx)
    reference = Ridge(alpha=1.5, fit_intercept=False).fit(X.numpy(), F.one_hot(sy, 3).double().numpy())
    expected = 2.0 * Q @ torch.from_numpy(reference.coef_).T
    assert rel_err(logits[:, :3].detach(), expected) < 1e-8
    assert torch.all(logits[:, 3:] == float("-inf"))


@pytest.mark.parametrize("head", ["svm", "ridge"])
def test_meta_gradient_matches_finite_differences(head):
    """∇ of the query cross-entropy w.r.t. the embedding parameters and the logit scale."""
    model = mlp(3, 7)
    learner = MetaOptNet(model, head=head, tol=1e-12, ridge_lambda=0.5)
    names = list(learner.params())
    (support, query) = episodes(1, 3, 2, 2, 3, seed=12).task(0)

    def outer(scale, *tensors):
        with torch.no_grad():
            learner.scale.copy_(scale)
        state = learner.adapt(dict(zip(names, tensors)), support)
        logits = scale * (learner.embed(state.params, query[0]) @ state.weights)
        return F.cross_entropy(logits[:, :3], query[1])

    inputs = (learner.scale.detach().clone().requires_grad_(True),) + tuple(
        p.detach().clone().requires_grad_(True) for p in learner.params().values()
    )
    assert torch.autograd.gradcheck(outer, inputs, eps=1e-6, atol=1e-7, rtol=1e-6)
    # the learner's own loss (with the masked columns) has the same value and gradient
    learner.zero_grad(set_to_none=True)
    loss = learner.outer_loss(learner.params(), support, query)
    loss.backward()
    torch.testing.assert_close(loss.detach(), outer(*inputs).detach(), rtol=1e-12, atol=0)
    assert learner.scale.grad is not None and all(p.grad is not None for p in model.parameters())


# ----------------------------------------------------------------------------------------- the learner


def test_svm_path_rules():
    """The SVM head runs on the loop path: 'auto' resolves to loop, 'vmap' is refused."""
    assert MetaOptNet(mlp(), head="svm").path == "loop"
    with pytest.raises(MetaloopError, match="path"):
        MetaOptNet(mlp(), head="svm", path="vmap")
    assert MetaOptNet(mlp(), head="ridge").path == "vmap"  # Linear-only model: auto → vmap
    for bad in ({"head": "lasso"}, {"svm_c": 0.0}, {"ridge_lambda": -1.0}):
        with pytest.raises(MetaloopError):
            MetaOptNet(mlp(), **bad)


def test_ridge_loop_equals_vmap():
    """The ridge head's meta-gradient (embedding and scale) agrees across paths to 1e-10."""
    model = mlp()
    batch = episodes(3, 3, 2, 2, 4, seed=13)
    grads = {}
    for path in ("loop", "vmap"):
        learner = MetaOptNet(model, head="ridge", path=path)
        learner.zero_grad(set_to_none=True)
        learner.meta_gradient(batch)
        grads[path] = torch.cat([p.grad.flatten() for p in learner.parameters()])
    assert float((grads["loop"] - grads["vmap"]).abs().max() / grads["loop"].abs().max()) < 1e-10


@pytest.mark.parametrize("head, path", [("svm", "loop"), ("ridge", "loop"), ("ridge", "vmap")])
def test_train_5_way_test_3_way(head, path):
    """One learner trains on 5-way episodes and evaluates 3-way ones: the metrics equal the head
    fitted on exactly 3 classes."""
    model = mlp()
    learner = MetaOptNet(model, head=head, path=path, ridge_lambda=1.0)
    optimizer = learner.make_optimizer(1e-2)
    learner.meta_step(episodes(2, 5, 2, 2, 4, seed=14), optimizer)
    test = episodes(2, 3, 3, 3, 4, seed=15)
    ce = learner.evaluate_batch(test, [0], F.cross_entropy)
    with torch.no_grad():
        for i in range(2):
            (sx, sy), (qx, qy) = test.task(i)
            X, Q, Y3 = model(sx), model(qx), F.one_hot(sy, 3).double()
            if head == "ridge":
                W = ridge_weights(X, Y3, 1.0)[0]
            else:
                W = X.T @ solve_dual(X @ X.T, Y3, 0.1)[0]
            expected = F.cross_entropy(learner.scale * Q @ W, qy)
            torch.testing.assert_close(ce[i, 0], expected, rtol=1e-7, atol=0)


@pytest.mark.parametrize("head", ["svm", "ridge"])
def test_training_lowers_the_loss(head):
    """A few meta-steps on a small random problem lower the meta-training loss."""
    model = mlp(6, 8)
    learner = MetaOptNet(model, head=head, ridge_lambda=1.0)
    optimizer = learner.make_optimizer(1e-2)
    batch = episodes(4, 3, 2, 3, 6, seed=16)
    losses = [learner.meta_step(batch, optimizer) for _ in range(15)]
    assert losses[-1] < 0.8 * losses[0]
