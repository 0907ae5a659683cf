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

import hashlib
import warnings
from collections.abc import Callable, Hashable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any, NamedTuple

import torch.nn.functional as F
from torch import Tensor, nn

from metaloop.algorithms import algorithm
from metaloop.benchmarks.base import Benchmark, TaskSource, presets
from metaloop.config import MAX_EXAMPLES, WHY_EXAMPLES, Option
from metaloop.data.images import load_images
from metaloop.data.labelled import to_float
from metaloop.data.miniimagenet import miniimagenet_split
from metaloop.data.omniglot import lake_run_characters, omniglot_root, omniglot_split
from metaloop.data.tables import label_order
from metaloop.errors import MetaloopError, MetaloopWarning
from metaloop.features import feature_splits
from metaloop.models.conv import Conv4
from metaloop.models.resnet12 import ResNet12
from metaloop.tasks.base import TaskBatch
from metaloop.tasks.episodes import EpisodicTasks
from metaloop.tasks.omniglot import lake_runs


def headless(cfg: dict[str, Any]) -> bool:
    """The configured algorithm's model has no classifier head: an embedding network, or pretrained features."""
    return algorithm(cfg["algo"]).role in ("embedding", "features")


def on_features(cfg: dict[str, Any]) -> bool:
    """The configured algorithm works on pretrained features rather than the inputs (LEO)."""
    return algorithm(cfg["algo"]).role == "features"


def accuracy(logits: Tensor, y: Tensor) -> Tensor:
    """The percentage of queries whose largest logit is the true class."""
    return (logits.argmax(-1) == y).float().mean() * 100


def classification_benchmark(**fields: Any) -> Benchmark:
    """A :class:`Benchmark` scored by query accuracy (%) and trained with cross-entropy."""
    return Benchmark(metric="accuracy %", higher_is_better=True, loss_fn=F.cross_entropy, metric_fn=accuracy,
                     **fields)


def _train_ways(cfg: dict[str, Any]) -> int:
    return cfg["train_ways"] or cfg["ways"]


def _check_two_ways(cfg: dict[str, Any]) -> None:
    """At least 2 classes per task: a 1-way task has one possible answer, and any model scores 100 % on it."""
    for key in ("ways", "train_ways"):
        value = cfg.get(key)
        if value is not None and value < 2:
            raise MetaloopError(f"option '{key}': {key}={value} gives {value}-way tasks, which have one possible "
                                f"answer (accuracy is 100 % whatever the model); use {key} ≥ 2")


def _check_ways(cfg: dict[str, Any]) -> None:
    _check_two_ways(cfg)
    if not headless(cfg) and _train_ways(cfg) != cfg["ways"]:
        raise MetaloopError(
            f"option 'train_ways': {cfg['algo']} has a {cfg['ways']}-way classifier head, so it must "
            f"meta-train with ways={cfg['ways']} (got train_ways={cfg['train_ways']})"
        )


def image_encoder(size: int | None, channels: int | None, *, invert: bool = False) -> Callable[..., Tensor]:
    """``encode_inputs`` for ``metaloop adapt``: image files (relative to the data file's folder) as the
    benchmark's model input ``float32 [n, channels, size, size]``; ``invert`` for Omniglot's strokes.
    ``None`` takes the size or channels from the run's ``image_size`` / ``channels`` options."""

    def encode(cfg: dict[str, Any], paths: list[str], base_dir: Path, options: list[str] | None = None) -> Tensor:
        if on_features(cfg):
            raise MetaloopError(f"adapt: algorithm '{cfg['algo']}' works on pretrained features; "
                                "adapting it to image files is not supported")

        side = cfg["image_size"] if size is None else size
        images = load_images([base_dir / p for p in paths], (side, side), channels or cfg["channels"])
        return to_float(255 - images if invert else images)

    return encode


def _sources(data: Callable[[dict[str, Any], str], Any]) -> dict[str, Callable[[dict[str, Any]], TaskSource]]:
    """``train_tasks`` and ``test_tasks`` episodes over ``data(cfg, split)`` (the number of ways is checked
    before any data is read: LEO builds no model that would check it, and its features take time)."""

    def tasks(cfg: dict[str, Any], split: str) -> TaskSource:
        _check_two_ways(cfg)
        return _episodes(data(cfg, split), cfg, train=split == "train")

    return {"train_tasks": lambda cfg: tasks(cfg, "train"), "test_tasks": lambda cfg: tasks(cfg, "test")}


# ----------------------------------------------------------------------- the user's data: inflated accuracy
class SplitView(NamedTuple):
    """One split of the user's data, as :func:`warn_shared_splits` and :func:`warn_repeated_inputs` see it."""

    #: Where the split is, for the messages ("/data/test", "the split=test rows of data.csv").
    where: str
    #: The class name of each example.
    classes: Sequence[str]
    #: The identity of each example's input: equal keys are the same input (image pixels, normalized text).
    keys: Sequence[Hashable]
    #: How each example is shown in a message (its file, or its text).
    names: Sequence[str]


def pixels_key(image: Tensor) -> bytes:
    """The identity of a decoded image: a digest of its pixels (equal for the same picture in two files)."""
    return hashlib.blake2b(image.contiguous().numpy().tobytes(), digest_size=16).digest()


def text_key(text: str) -> str:
    """The identity of a text: case and runs of white space do not matter (``Book a  flight`` = ``book a flight``)."""
    return " ".join(text.split()).casefold()


def quoted(text: str, limit: int = 60) -> str:
    """A text as a message shows it: quoted, and cut after ``limit`` characters."""
    return repr(text if len(text) <= limit else text[: limit - 1] + "…")


def _listing(names: Sequence[str], limit: int = 5) -> str:
    return ", ".join(names[:limit]) + (", …" if len(names) > limit else "")


def _pair(a: str, b: str) -> str:
    return a if a == b else f"{a} and {b}"


def _warn(message: str) -> None:
    warnings.warn(message, MetaloopWarning, stacklevel=3)


def warn_shared_splits(benchmark: str, unit: str, train: SplitView, test: SplitView) -> None:
    """Warn (:class:`~metaloop.errors.MetaloopWarning`, once per cause) when test classes are also training classes
    (by name), and when test inputs are also training inputs (by key): meta-testing is meant to be on classes the
    model has not been meta-trained on, and accuracy on seen classes or seen examples is inflated.

    ``unit`` names one input ("image", "text")."""
    where = f"(test: {test.where}; training: {train.where})"
    seen = set(train.classes)
    test_classes = label_order(test.classes)
    shared = [c for c in test_classes if c in seen]
    if shared:
        verb = "is also a training class" if len(shared) == 1 else "are also training classes"
        _warn(f"benchmark '{benchmark}': {len(shared)} of the {len(test_classes)} test classes ({_listing(shared)}) "
              f"{verb} {where}; meta-testing is meant to be on classes not seen in meta-training, and accuracy on "
              "seen classes is inflated")
    first: dict[Hashable, int] = {}
    for i, key in enumerate(train.keys):
        first.setdefault(key, i)
    same = [i for i, key in enumerate(test.keys) if key in first]
    if same:
        i = same[0]
        verb = f"is identical to a training {unit}" if len(same) == 1 else f"are identical to training {unit}s"
        _warn(f"benchmark '{benchmark}': {len(same)} of the {len(test.keys)} test {unit}s {verb} {where}, e.g. "
              f"{_pair(test.names[i], train.names[first[test.keys[i]]])}; the model has seen them in meta-training, "
              "which inflates accuracy")


def warn_repeated_inputs(benchmark: str, unit: str, test: SplitView, how: str) -> None:
    """Warn (:class:`~metaloop.errors.MetaloopWarning`) when an input appears more than once in a class of the test
    split: an episode may draw one copy into the support set and another into the query set, and then answers
    that query by copying. ``how`` says how inputs are compared ("identical pixels")."""
    first: dict[tuple[str, Hashable], int] = {}
    second: dict[tuple[str, Hashable], int] = {}  # the repeated inputs (of a class), in the order first seen
    for i, pair in enumerate(zip(test.classes, test.keys)):
        if pair not in first:
            first[pair] = i
        elif pair not in second:
            second[pair] = i
    if second:
        pair = min(second, key=first.__getitem__)
        i, j, n = first[pair], second[pair], len(second)
        verb = f"{unit} appears" if n == 1 else f"{unit}s appear"
        _warn(f"benchmark '{benchmark}': {n} {verb} more than once in a class of the test split ({test.where}), "
              f"e.g. {_pair(test.names[i], test.names[j])} ({how}); an episode may put one copy in the support set "
              "and another in the query set, which inflates accuracy")


def warn_queries_in_support(inputs: Sequence[str], queries: Sequence[str], *, kind: str, support: str | Path,
                            query: str | Path) -> None:
    """``metaloop adapt``: warn when queries are also support examples (texts by :func:`text_key`, image paths,
    relative to their file's folder, by the files' bytes): the support label answers them, so their predictions
    say nothing about the model."""

    texts = kind != "path"  # the image runs' inputs are paths; every other kind of input is a text

    def key(value: str, base: Path) -> Hashable:
        if texts:
            return text_key(value)
        file = (base / Path(value).expanduser()).resolve()
        return hashlib.blake2b(file.read_bytes(), digest_size=16).digest() if file.is_file() else str(file)

    seen = {key(v, Path(support).parent) for v in inputs}
    n = sum(key(q, Path(query).parent) in seen for q in queries)
    if n:
        how = "compared ignoring case and spacing" if texts else "identical files"
        verb = "is" if n == 1 else "are"
        _warn(f"{query}: {n} of the {len(queries)} queries {verb} also in the support file {support} ({how}): "
              "their predictions are not a test of the model")


def _episodes(dataset: Any, cfg: dict[str, Any], *, train: bool) -> EpisodicTasks:
    if train:
        return EpisodicTasks(dataset, _train_ways(cfg), cfg["train_shots"] or cfg["shots"],
                             cfg["queries"] or 15, seed=cfg["seed"], split="train")
    return EpisodicTasks(dataset, cfg["ways"], cfg["shots"], cfg["eval_queries"], seed=cfg["eval_seed"],
                         split="test")


# ---------------------------------------------------------------------------------------------- Omniglot
@lru_cache(maxsize=4)
def _omniglot(split: str, root: str | None) -> Any:
    return omniglot_split(split, root)


def _omniglot_model(cfg: dict[str, Any]) -> nn.Module:
    _check_ways(cfg)
    return Conv4(1, None if headless(cfg) else cfg["ways"], hidden=cfg["filters"])


def _omniglot_data(cfg: dict[str, Any], split: str) -> Any:
    if not on_features(cfg):
        return _omniglot(split, cfg["data"])

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
    Option("data", str, None, "data root (default: $METALOOP_DATA, then ~/.cache/metaloop/data)", nullable=True,
           stage="place"),
    Option("feature_epochs", int, 3, "leo: epochs of supervised pretraining of the feature extractor "
           "on the meta-training classes", positive=True),
)

OMNIGLOT_OPTIONS = (*COMMON_OPTIONS, Option("filters", int, 64, "Conv-4 filters per layer", positive=True))

def _omniglot_benchmark(name: str, ways: int, shots: int) -> Benchmark:
    return classification_benchmark(
        name=name,
        description=f"Omniglot {ways}-way {shots}-shot, Vinyals split with rotations, Conv-4",
        make_model=_omniglot_model,
        **_sources(_omniglot_data),
        options=OMNIGLOT_OPTIONS,
        size_options=("filters",),
        **presets("images", name),
        feature_dim=lambda cfg: cfg["filters"],
        input_column="path",
        encode_inputs=image_encoder(28, 1, invert=True),
    )


OMNIGLOT = [
    _omniglot_benchmark("omniglot-5w1s", 5, 1),
    _omniglot_benchmark("omniglot-5w5s", 5, 5),
    _omniglot_benchmark("omniglot-20w1s", 20, 1),
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
    lake = {c for run in lake_run_characters(root) for c in run}
    return omniglot_split("train", root, exclude=lake)


def _lake_train(cfg: dict[str, Any]) -> TaskSource:
    return _episodes(_omniglot_without_lake(cfg["data"]), cfg, train=True)


def _lake_test(cfg: dict[str, Any]) -> TaskSource:
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
    **presets("images", "omniglot-lake"),
    input_column="path",
    encode_inputs=image_encoder(28, 1, invert=True),
)


# ----------------------------------------------------------------------------------------- mini-ImageNet
@lru_cache(maxsize=4)
def _miniimagenet(split: str, images: str | None, root: str | None) -> Any:
    return miniimagenet_split(split, images, root=root)


def _miniimagenet_model(cfg: dict[str, Any]) -> nn.Module:
    _check_ways(cfg)
    ways = None if headless(cfg) else cfg["ways"]
    if cfg["backbone"] == "resnet12":
        return ResNet12(3, ways)
    return Conv4(3, ways, hidden=cfg["filters"], image_size=84)


def _miniimagenet_data(cfg: dict[str, Any], split: str) -> Any:
    if not on_features(cfg):
        return _miniimagenet(split, cfg["images"], cfg["data"])

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
        **presets("images", name),
        feature_dim=lambda cfg: 640 * 25 if cfg["backbone"] == "resnet12" else cfg["filters"] * 25,
        input_column="path",
        encode_inputs=image_encoder(84, 3),
    )


MINIIMAGENET = [_miniimagenet_benchmark("miniimagenet-5w1s", 1), _miniimagenet_benchmark("miniimagenet-5w5s", 5)]
