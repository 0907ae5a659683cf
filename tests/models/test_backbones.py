"""Backbones: output shapes and that they run unmodified through the functional engine."""

import torch
import torch.nn.functional as F

from metaloop.algorithms import MAML
from metaloop.core.params import head_names
from metaloop.models.conv import Conv4
from metaloop.models.mlp import MLP
from metaloop.models.resnet12 import ResNet12
from metaloop.tasks.base import TaskBatch


def test_mlp_shapes():
    """MLP(1, [40, 40], 1) is the sinusoid network of Finn et al. 2017."""
    net = MLP(1, [40, 40], 1)
    assert net(torch.randn(7, 1)).shape == (7, 1)
    assert sum(p.numel() for p in net.parameters()) == 1 * 40 + 40 + 40 * 40 + 40 + 40 + 1


def test_conv4_shapes_and_head():
    """Conv-4 maps 28×28 Omniglot to 64 features and 84×84 mini-ImageNet to 64·5·5, then the head."""
    assert Conv4(1, 5)(torch.randn(2, 1, 28, 28)).shape == (2, 5)
    net = Conv4(3, 5, image_size=84)
    assert net(torch.randn(2, 3, 84, 84)).shape == (2, 5)
    assert net[-1].in_features == 64 * 5 * 5
    assert head_names(net) == ["5.weight", "5.bias"]


def test_resnet12_shapes():
    """ResNet-12 gives 640·5·5 features on 84×84 inputs; a head gives logits."""
    net = ResNet12(channels=(8, 8, 8, 8))
    assert net(torch.randn(2, 3, 84, 84)).shape == (2, 8 * 5 * 5)
    assert ResNet12().out_features == 640 * 5 * 5
    assert ResNet12(3, 5, channels=(4, 4, 4, 4), image_size=32)(torch.randn(2, 3, 32, 32)).shape == (2, 5)


def test_conv4_maml_meta_step_runs():
    """One second-order MAML step on Conv-4 (transductive BatchNorm) changes the weights."""
    torch.manual_seed(0)
    net = Conv4(1, 3, hidden=8)
    learner = MAML(net, F.cross_entropy, inner_lr=0.4)
    opt = learner.make_optimizer(1e-2)
    batch = TaskBatch(torch.randn(2, 3, 1, 28, 28), torch.arange(3).repeat(2, 1),
                      torch.randn(2, 6, 1, 28, 28), torch.arange(3).repeat_interleave(2).repeat(2, 1))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    learner.meta_step(batch, opt)
    assert any(not torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items() if "running" in k)
