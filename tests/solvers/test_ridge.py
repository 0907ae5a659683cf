"""Ridge regression without bias (metaloop.solvers.ridge): both forms against scikit-learn's Ridge, gradients
against finite differences."""

from __future__ import annotations

import pytest
import torch
from cases import clustered, rel_err
from sklearn.linear_model import Ridge

from metaloop.solvers.ridge import ridge_weights


@pytest.mark.parametrize("d, form", [(20, "dual"), (5, "primal")])
def test_ridge_equals_sklearn(monkeypatch, d, form):
    """W = argmin ‖XW − Y‖² + λ‖W‖² equals Ridge(alpha=λ, fit_intercept=False) to 1e-8, in the dual
    (Woodbury, n × n solve: d > n) and the primal (d × d solve: d ≤ n) regimes."""
    ways, shots, lam = 3, 4, 2.5
    X, _, Y, _ = clustered(ways, shots, d, seed=0)
    n = ways * shots
    sizes = []
    solve = torch.linalg.solve
    monkeypatch.setattr(torch.linalg, "solve", lambda A, B: sizes.append(A.shape[0]) or solve(A, B))
    W, alpha = ridge_weights(X, Y, lam)
    assert sizes == [n if form == "dual" else d]
    reference = Ridge(alpha=lam, fit_intercept=False, solver="cholesky").fit(X.numpy(), Y[:, :ways].numpy())
    coef = torch.from_numpy(reference.coef_).T
    assert rel_err(W[:, :ways], coef) < 1e-8
    assert torch.all(W[:, ways:] == 0)  # absent classes: zero weights
    torch.testing.assert_close(X.T @ alpha, W, rtol=1e-10, atol=1e-12)  # W = Xᵀα in both forms


@pytest.mark.parametrize("d", [9, 4])
def test_ridge_gradients_match_finite_differences(d):
    """Query logits through the ridge solution, w.r.t. support and query embeddings, both regimes."""
    X, _, Y, Q = clustered(3, 2, d, seed=2)

    def logits(X, Q):
        return Q @ ridge_weights(X, Y, 0.7)[0]

    inputs = (X.clone().requires_grad_(True), Q.clone().requires_grad_(True))
    assert torch.autograd.gradcheck(logits, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)
