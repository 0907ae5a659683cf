"""Feature reuse (metaloop/core/reuse.py): the split head(body(x)) is found only where it holds, and the head on
the body's features gives the model's output with the same gradients."""

from __future__ import annotations

import torch
from torch import nn

from metaloop.core.functional import FunctionalModel
from metaloop.core.reuse import HeadReuse


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()


def test_head_of_body_equals_the_model_with_its_gradients():
    model = mlp()
    fmodel = FunctionalModel(model, "transductive")
    reuse = HeadReuse(fmodel, ["2.weight", "2.bias"])
    assert reuse.module == "2"
    params = {n: p.detach().clone().requires_grad_() for n, p in model.named_parameters()}
    x = torch.randn(4, 3, dtype=torch.float64)
    z = reuse.features(params, x, training=True)
    out = reuse.output(params, z)
    whole = fmodel(params, x, training=True)
    torch.testing.assert_close(out, whole, rtol=0, atol=0)
    g1 = torch.autograd.grad(out.square().sum(), list(params.values()))
    g2 = torch.autograd.grad(whole.square().sum(), list(params.values()))
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_no_split_where_more_than_the_head_adapts_or_it_is_disabled():
    fmodel = FunctionalModel(mlp(), "transductive")
    assert HeadReuse(fmodel, ["0.weight", "2.weight"]).module is None
    assert HeadReuse(fmodel, ["2.weight"], enabled=False).module is None


class Residual(nn.Module):
    """The last layer's output is not the model's: out = head(z) + z[:, :2]."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.head = nn.Linear(3, 4), nn.Linear(4, 2)

    def forward(self, x):
        z = self.body(x)
        return self.head(z) + z[:, :2]


def test_a_model_whose_output_is_not_its_last_layers_is_found_out():
    reuse = HeadReuse(FunctionalModel(Residual(), "transductive"), ["head.weight", "head.bias"])
    assert reuse.module == "head"
    params = dict(reuse.fmodel.module.named_parameters())
    assert reuse.features(params, torch.randn(2, 3), training=True) is None and reuse.module is None
