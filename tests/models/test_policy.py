"""The Gaussian MLP policy: its log-density and its actions."""

from __future__ import annotations

import pytest
import torch

from metaloop.models.policy import GaussianMLP, act, log_prob


def test_log_prob_is_the_diagonal_gaussian_density():
    torch.manual_seed(0)
    policy = GaussianMLP(3, 2, hidden=(8,), log_std=-0.5, activation="tanh")
    params = dict(policy.named_parameters())
    obs, actions = torch.randn(5, 4, 3), torch.randn(5, 4, 2)
    mean = policy(obs)
    expected = torch.distributions.Normal(mean, torch.exp(params["log_std"])).log_prob(actions).sum(-1)
    assert torch.allclose(log_prob(policy, params, obs, actions), expected, atol=1e-6)


def test_act_is_the_mean_plus_scaled_noise():
    policy = GaussianMLP(2, 2, log_std=0.3)
    params = dict(policy.named_parameters())
    obs, noise = torch.randn(6, 2), torch.randn(6, 2)
    assert torch.allclose(act(policy, params, obs, noise), policy(obs) + torch.exp(torch.tensor(0.3)) * noise)


def test_unknown_activation_is_refused():
    with pytest.raises(ValueError, match="activation"):
        GaussianMLP(2, 2, activation="gelu")
