"""Few-shot image classification benchmarks: Omniglot (Vinyals split with rotations) and mini-ImageNet
(Ravi split), N-way K-shot episodes.

Presets follow the papers: MAML (Finn et al. 2017, §5.2 and Appendix A.1) for the gradient-based
family (Omniglot 5-way: inner lr 0.4, 1 inner step, meta-batch 32; 20-way: lr 0.1, 5 steps,
meta-batch 16; mini-ImageNet: lr 0.01, 5 steps, 32 filters, meta-batch 4 at 1 shot and 2 at 5 shots),
and the Reptile code's Omniglot/mini-ImageNet settings (inner Adam with β1 = 0, ε = 1 annealed) for
Reptile. The metric is the query accuracy; test episodes use 15 queries per class.

Meta-training may use another way and shot than testing (``train_ways``, ``train_shots``), as
Prototypical Networks do (Snell et al. 2017: 60-way training for Omniglot). The gradient-based family
needs ``train_ways == ways``, since its classifier head has one output per class.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.benchmarks.base import Benchmark, TaskSource
from metaloop.config import MAX_EXAMPLES, WHY_EXAMPLES, Option
from metaloop.errors import MetaloopError
from metaloop.models.conv import Conv4
from metaloop.models.resnet12 import ResNet12
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.episodes import EpisodicTasks

#: Algorithms whose model is an embedding network (no classifier head).
EMBEDDING_ALGOS = frozenset({"protonet", "metaoptnet-svm", "metaoptnet-ridge", "leo"})
#: Algorithms that work on pretrained features rather than images.
FEATURE_ALGOS = frozenset({"leo"})


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """The percentage of queries whose largest logit is the true class."""
    return (logits.argmax(-1) == y).float().mean() * 100


def classification_benchmark(**fields: Any) -> Benchmark:
    """A :class:`Benchmark` scored by query accuracy (%) and trained with cross-entropy."""
    return Benchmark(metric="accuracy %", higher_is_better=True, loss_fn=F.cross_entropy, metric_fn=accuracy,
                     **fields)


def _train_ways(cfg: dict[str, Any]) -> int:
    return cfg["train_ways"] or cfg["ways"]


def _check_ways(cfg: dict[str, Any]) -> None:
    if cfg["algo"] not in EMBEDDING_ALGOS and _train_ways(cfg) != cfg["ways"]:
        raise MetaloopError(
            f"option 'train_ways': {cfg['algo']} has a {cfg['ways']}-way classifier head, so it must "
            f"meta-train with ways={cfg['ways']} (got train_ways={cfg['train_ways']})"
        )


def image_encoder(size: int | None, channels: int | None, *, invert: bool = False) -> Callable[..., Tensor]:
    """``encode_inputs`` for ``metaloop adapt``: image files (relative to the data file's folder) as the
    benchmark's model input ``float32 [n, channels, size, size]``; ``invert`` for Omniglot's strokes.
    ``None`` takes the size or channels from the run's ``image_size`` / ``channels`` options."""

    def encode(cfg: dict[str, Any], paths: list[str], base_dir: Path) -> Tensor:
        if cfg["algo"] in FEATURE_ALGOS:
            raise MetaloopError(f"adapt: algorithm '{cfg['algo']}' works on pretrained features; "
                                "adapting it to image files is not supported")
        from metaloop.tasks.images import load_images, to_float

        side = cfg["image_size"] if size is None else size
        images = load_images([base_dir / p for p in paths], (side, side), channels or cfg["channels"])
        return to_float(255 - images if invert else images)

    return encode


def _sources(data: Callable[[dict[str, Any], str], Any]) -> dict[str, Callable[[dict[str, Any]], TaskSource]]:
    """``train_tasks`` and ``test_tasks`` episodes over ``data(cfg, split)``."""
    return {
        "train_tasks": lambda cfg: _episodes(data(cfg, "train"), cfg, train=True),
        "test_tasks": lambda cfg: _episodes(data(cfg, "test"), cfg, train=False),
    }


def _episodes(dataset: Any, cfg: dict[str, Any], *, train: bool) -> EpisodicTasks:
    if train:
        return EpisodicTasks(dataset, _train_ways(cfg), cfg["train_shots"] or cfg["shots"],
                             cfg["queries"] or 15, seed=cfg["seed"], split="train")
    return EpisodicTasks(dataset, cfg["ways"], cfg["shots"], cfg["eval_queries"], seed=cfg["eval_seed"],
                         split="test")


# ---------------------------------------------------------------------------------------------- Omniglot
@lru_cache(maxsize=4)
def _omniglot(split: str, root: str | None) -> Any:
    from metaloop.tasks.omniglot import omniglot_split

    return omniglot_split(split, root)


def _omniglot_model(cfg: dict[str, Any]) -> nn.Module:
    _check_ways(cfg)
    return Conv4(1, None if cfg["algo"] in EMBEDDING_ALGOS else cfg["ways"], hidden=cfg["filters"])


def _omniglot_data(cfg: dict[str, Any], split: str) -> Any:
    if cfg["algo"] not in FEATURE_ALGOS:
        return _omniglot(split, cfg["data"])
    from metaloop.features import feature_splits
    from metaloop.tasks.omniglot import omniglot_root

    return feature_splits(
        "omniglot", lambda s: _omniglot(s, cfg["data"]), lambda: (Conv4(1, None, hidden=cfg["filters"]), cfg["filters"]),
        data_key=f"{omniglot_root(cfg['data']).resolve()}|conv4-{cfg['filters']}", epochs=cfg["feature_epochs"],
        seed=cfg["seed"],
    )[split]


COMMON_OPTIONS = (
    Option("ways", int, 5, "classes per test episode (N)", positive=True),
    Option("train_ways", int, None, "classes per meta-training episode (default: ways)", positive=True,
           nullable=True),
    Option("train_shots", int, None, "support examples per class in meta-training (default: shots)",
           positive=True, nullable=True),
    Option("eval_queries", int, 15, "query examples per class in test episodes", positive=True,
           maximum=MAX_EXAMPLES, why_maximum=WHY_EXAMPLES, stage="test"),
    Option("data", str, None, "data root (default: $METALOOP_DATA, then ../shared/data)", nullable=True,
           stage="place"),
    Option("feature_epochs", int, 3, "leo: epochs of supervised pretraining of the feature extractor "
           "on the meta-training classes", positive=True),
)

OMNIGLOT_OPTIONS = (*COMMON_OPTIONS, Option("filters", int, 64, "Conv-4 filters per layer", positive=True))

# Reptile trains on 10 shots per class and uses no query set (5 queries only log a loss): 10 + 5 ≤ the
# 20 drawings of an Omniglot character.
_REPTILE_OMNIGLOT = {"inner_optimizer": "adam", "inner_lr": 0.001, "inner_steps": 5, "test_inner_steps": 50,
                     "outer_lr": 1.0, "anneal": True, "meta_batch_size": 5, "train_shots": 10, "queries": 5}
_METRIC = {"eval_steps": [0]}
# MetaOptNet's logit scale γ starts at 1.0 in its code, where SGD at lr 0.1 (momentum 0.9) grows it within a few
# hundred steps. Adam moves a parameter by about outer_lr per step, so from 1.0 it stayed near 1.3 after 300
# steps and the logits stayed too flat to learn from (Omniglot 5w1s, 5 minutes on one core: SVM 82.8 and
# ridge 93.5 with γ₀ = 1; 95.1 and 96.4 with γ₀ = 10). The image and text presets start it at 10.
LOGIT_SCALE_PRESET = 10.0
_METAOPT = {**_METRIC, "meta_batch_size": 8, "logit_scale": LOGIT_SCALE_PRESET}
# LEO (Rusu et al. 2019; deepmind/leo config.py): latent lr 1.0 (learned), 5 latent steps, Adam 1e-4,
# meta-batch 12, outer gradients clipped to 0.1 (set in build_learner).
_LEO = {"inner_lr": 1.0, "inner_steps": 5, "test_inner_steps": 5, "outer_lr": 1e-4, "meta_batch_size": 12,
        "eval_steps": [0, 5]}


def _omniglot_benchmark(name: str, ways: int, shots: int, *, inner_lr: float, inner_steps: int, meta_batch: int,
              queries: int) -> Benchmark:
    return classification_benchmark(
        name=name,
        description=f"Omniglot {ways}-way {shots}-shot, Vinyals split with rotations, Conv-4",
        make_model=_omniglot_model,
        **_sources(_omniglot_data),
        options=OMNIGLOT_OPTIONS,
        size_options=("filters",),
        defaults={
            "ways": ways, "shots": shots, "queries": queries, "inner_lr": inner_lr, "inner_steps": inner_steps,
            "test_inner_steps": max(3, inner_steps), "meta_batch_size": meta_batch, "iterations": 60000,
            "outer_lr": 1e-3, "eval_steps": [0, 1, max(3, inner_steps), 10], "eval_episodes": 1000,
            "checkpoint_every": 500, "log_every": 50,
        },
        algo_defaults={
            "reptile": _REPTILE_OMNIGLOT,
            "protonet": {**_METRIC, "meta_batch_size": 1, "train_ways": 60 if shots == 1 else ways * 12,
                         "queries": 5},
            "metaoptnet-svm": _METAOPT,
            "metaoptnet-ridge": _METAOPT,
            # LEO's support loss is a sum over the examples (as in its code) and its latent step of 1.0 was
            # set for 5 ways; at 20 ways the latent codes overflowed within 10 meta-steps, so the step
            # shrinks with the way (the paper's 5-shot runs keep 1.0).
            "leo": {**_LEO, "inner_lr": _LEO["inner_lr"] * min(1.0, 5 / ways)},
        },
        feature_dim=lambda cfg: cfg["filters"],
        input_column="path",
        encode_inputs=image_encoder(28, 1, invert=True),
    )


OMNIGLOT = [
    _omniglot_benchmark("omniglot-5w1s", 5, 1, inner_lr=0.4, inner_steps=1, meta_batch=32, queries=15),
    _omniglot_benchmark("omniglot-5w5s", 5, 5, inner_lr=0.4, inner_steps=1, meta_batch=32, queries=15),
    _omniglot_benchmark("omniglot-20w1s", 20, 1, inner_lr=0.1, inner_steps=5, meta_batch=16, queries=5),
]


# ------------------------------------------------------------------------------ Lake et al.'s one-shot runs
class FixedTasks:
    """A fixed set of test tasks (for example Lake et al.'s 20 runs) as a task source."""

    def __init__(self, tasks: TaskBatch) -> None:
        self.tasks = tasks

    def __len__(self) -> int:
        return len(self.tasks)

    def batch(self, start: int, count: int) -> TaskBatch:
        if start + count > len(self.tasks):
            raise MetaloopError(f"option 'episodes': this benchmark has {len(self.tasks)} test tasks")
        return self.tasks.slice(start, start + count)


@lru_cache(maxsize=2)
def _omniglot_without_lake(root: str | None) -> Any:
    from metaloop.tasks.omniglot import lake_run_characters, omniglot_split

    lake = {c for run in lake_run_characters(root) for c in run}
    return omniglot_split("train", root, exclude=lake)


def _lake_train(cfg: dict[str, Any]) -> TaskSource:
    return _episodes(_omniglot_without_lake(cfg["data"]), cfg, train=True)


def _lake_test(cfg: dict[str, Any]) -> TaskSource:
    from metaloop.tasks.omniglot import lake_runs

    return FixedTasks(lake_runs(cfg["data"]))


OMNIGLOT_LAKE = classification_benchmark(
    name="omniglot-lake",
    description="Lake et al.'s 20 official 20-way 1-shot runs; trained on the Vinyals train split "
    "without the runs' characters",
    make_model=_omniglot_model,
    train_tasks=_lake_train,
    test_tasks=_lake_test,
    options=OMNIGLOT_OPTIONS,
    size_options=("filters",),
    defaults={
        "ways": 20, "shots": 1, "queries": 5, "inner_lr": 0.1, "inner_steps": 5, "test_inner_steps": 5,
        "meta_batch_size": 16, "iterations": 60000, "outer_lr": 1e-3, "eval_steps": [0, 1, 5, 10],
        "eval_episodes": 20, "checkpoint_every": 500, "log_every": 50,
    },
    input_column="path",
    encode_inputs=image_encoder(28, 1, invert=True),
    algo_defaults={
        "reptile": _REPTILE_OMNIGLOT,
        "protonet": {**_METRIC, "meta_batch_size": 1, "train_ways": 60, "queries": 5},
        "metaoptnet-svm": _METAOPT,
        "metaoptnet-ridge": _METAOPT,
    },
)


# ----------------------------------------------------------------------------------------- mini-ImageNet
@lru_cache(maxsize=4)
def _miniimagenet(split: str, images: str | None, root: str | None) -> Any:
    from metaloop.tasks.miniimagenet import miniimagenet_split

    return miniimagenet_split(split, images, root=root)


def _miniimagenet_model(cfg: dict[str, Any]) -> nn.Module:
    _check_ways(cfg)
    ways = None if cfg["algo"] in EMBEDDING_ALGOS else cfg["ways"]
    if cfg["backbone"] == "resnet12":
        return ResNet12(3, ways)
    return Conv4(3, ways, hidden=cfg["filters"], image_size=84)


def _miniimagenet_data(cfg: dict[str, Any], split: str) -> Any:
    if cfg["algo"] not in FEATURE_ALGOS:
        return _miniimagenet(split, cfg["images"], cfg["data"])
    from metaloop.features import feature_splits

    def backbone() -> tuple[nn.Module, int]:
        if cfg["backbone"] == "resnet12":
            net = ResNet12(3, None)
            return net, net.out_features
        return Conv4(3, None, hidden=cfg["filters"], image_size=84), cfg["filters"] * 25

    return feature_splits(
        "miniimagenet", lambda s: _miniimagenet(s, cfg["images"], cfg["data"]), backbone,
        data_key=f"{cfg['images']}|{cfg['data']}|{cfg['backbone']}-{cfg['filters']}", epochs=cfg["feature_epochs"],
        seed=cfg["seed"],
    )[split]


def _miniimagenet_benchmark(name: str, shots: int) -> Benchmark:
    return classification_benchmark(
        name=name,
        description=f"mini-ImageNet 5-way {shots}-shot, Ravi split, 84×84 (--set images=FOLDER)",
        make_model=_miniimagenet_model,
        **_sources(_miniimagenet_data),
        options=(
            *COMMON_OPTIONS,
            Option("filters", int, 32, "Conv-4 filters per layer (MAML: 32 on mini-ImageNet)", positive=True),
            Option("backbone", str, "conv4", "feature extractor", choices=("conv4", "resnet12")),
            Option("images", str, None, "folder of mini-ImageNet images (default: <data root>/miniimagenet/images)",
                   nullable=True, stage="place"),
        ),
        size_options=("filters", "backbone"),
        defaults={
            "ways": 5, "shots": shots, "queries": 15, "inner_lr": 0.01, "inner_steps": 5, "test_inner_steps": 10,
            "meta_batch_size": 4 if shots == 1 else 2, "iterations": 60000, "outer_lr": 1e-3,
            "eval_steps": [0, 1, 5, 10], "eval_episodes": 1000, "checkpoint_every": 500, "log_every": 50,
        },
        algo_defaults={
            "reptile": {"inner_optimizer": "adam", "inner_lr": 0.001, "inner_steps": 8, "test_inner_steps": 50,
                        "outer_lr": 1.0, "anneal": True, "meta_batch_size": 5, "train_shots": 15},
            "protonet": {**_METRIC, "meta_batch_size": 1, "train_ways": 20 if shots == 1 else 15},
            "metaoptnet-svm": _METAOPT,
            "metaoptnet-ridge": _METAOPT,
            "leo": _LEO,
        },
        feature_dim=lambda cfg: 640 * 25 if cfg["backbone"] == "resnet12" else cfg["filters"] * 25,
        input_column="path",
        encode_inputs=image_encoder(84, 3),
    )


MINIIMAGENET = [_miniimagenet_benchmark("miniimagenet-5w1s", 1), _miniimagenet_benchmark("miniimagenet-5w5s", 5)]
