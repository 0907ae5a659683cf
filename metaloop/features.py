"""Pretrained features for LEO: a backbone trained by plain supervised classification on the
meta-training classes only, then frozen; every image of every split becomes its feature vector.

This is the protocol of LEO (Rusu et al., ICLR 2019, §4.1), whose features come from a WRN-28-10
trained on the meta-training classes of mini-ImageNet. Here the backbone is the benchmark's own
(Conv-4 by default), so the features are stated per benchmark in the results. Validation and test
classes are never seen by the extractor.

Features are cached in ``cache_dir()/features/`` under a key made of the benchmark, the data and the
pretraining settings, so the pretraining runs once per setting.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from metaloop.data import cache_dir
from metaloop.data.cache import digest, load_cache, save_cache
from metaloop.data.labelled import LabelledExamples, to_float


def pretrain_backbone(
    backbone: nn.Module,
    feature_dim: int,
    dataset: Any,
    *,
    epochs: int,
    batch_size: int = 256,
    lr: float = 1e-3,
    seed: int = 0,
    progress: bool = True,
) -> nn.Module:
    """Train ``backbone`` + a linear head to classify ``dataset`` (all its classes at once); return the
    backbone. Deterministic in ``seed``; the global RNG is not used."""
    num_classes = int(dataset.labels.max()) + 1
    head = nn.Linear(feature_dim, num_classes)
    model = nn.Sequential(backbone, head)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n = len(dataset.labels)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        bar = tqdm(range(0, n, batch_size), disable=not progress, desc=f"pretraining features, epoch {epoch + 1}")
        for start in bar:
            idx = order[start:start + batch_size]
            x, y = to_float(dataset.images[idx]), dataset.labels[idx]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.set_postfix(loss=f"{loss.item():.3f}")
    return backbone.eval()


@torch.no_grad()
def embed(backbone: nn.Module, dataset: Any, *, batch_size: int = 1024) -> LabelledExamples:
    """The frozen backbone's features of every example (evaluation mode: running BatchNorm statistics),
    scaled to unit L2 norm: LEO's variance parameterization overflows on large features."""
    backbone.eval()
    parts = [backbone(to_float(dataset.images[i:i + batch_size])) for i in range(0, len(dataset.labels), batch_size)]
    features = F.normalize(torch.cat(parts).float(), dim=-1)
    return LabelledExamples(features.contiguous(), dataset.labels.clone())


def feature_splits(
    name: str,
    load_split: Callable[[str], Any],
    make_backbone: Callable[[], tuple[nn.Module, int]],
    *,
    data_key: str,
    epochs: int,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, LabelledExamples]:
    """Features of the ``train`` and ``test`` splits of benchmark data ``name``, from a backbone
    pretrained on ``train`` only; cached under a key of ``data_key``, ``epochs`` and ``seed``."""
    key = digest(name, data_key, epochs, seed)
    path = cache_dir() / "features" / f"{name}-{key}.safetensors"
    cached = load_cache(path)
    if cached is not None:
        tensors, _ = cached
        return {s: LabelledExamples(tensors[f"{s}.features"], tensors[f"{s}.labels"]) for s in ("train", "test")}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        backbone, dim = make_backbone()
    train = load_split("train")
    backbone = pretrain_backbone(backbone, dim, train, epochs=epochs, seed=seed, progress=progress)
    splits = {"train": embed(backbone, train), "test": embed(backbone, load_split("test"))}
    tensors = {}
    for s, feats in splits.items():
        tensors[f"{s}.features"], tensors[f"{s}.labels"] = feats.images, feats.labels
    save_cache(path, tensors, {"benchmark": name, "epochs": epochs, "seed": seed, "feature_dim": dim})
    return splits
