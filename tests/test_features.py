"""Feature pretraining for LEO, and LEO through the registry on a synthetic feature benchmark."""

import torch
import torch.nn.functional as F

import metaloop
from metaloop.benchmarks import BENCHMARKS
from metaloop.benchmarks.base import Benchmark
from metaloop.benchmarks.fewshot_images import accuracy
from metaloop.data.images import LabelledImages
from metaloop.data.labelled import LabelledExamples
from metaloop.features import feature_splits
from metaloop.models.conv import Conv4
from metaloop.tasks.episodes import EpisodicTasks


def _images(n_classes: int, per_class: int, seed: int) -> LabelledImages:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat_interleave(per_class)
    images = (torch.rand(len(labels), 1, 28, 28, generator=g) * 255).to(torch.uint8)
    return LabelledImages(images, labels, [str(c) for c in range(n_classes)])


def test_feature_splits_pretrain_on_train_only_and_cache(tmp_path, monkeypatch):
    """The extractor sees only the train split; features are unit-norm, cached, and reloaded as they were."""
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path))
    seen = []

    def load(split):
        seen.append(split)
        return _images(4, 5, seed=0 if split == "train" else 1)

    first = feature_splits("toy", load, lambda: (Conv4(1, None, hidden=4), 4), data_key="k", epochs=1,
                           progress=False)
    assert seen == ["train", "test"]
    assert first["train"].images.shape == (20, 4) and first["test"].labels.shape == (20,)
    assert torch.allclose(first["train"].images.norm(dim=-1), torch.ones(20))
    again = feature_splits("toy", load, lambda: (Conv4(1, None, hidden=4), 4), data_key="k", epochs=1,
                           progress=False)
    assert seen == ["train", "test"]  # cached: no reload, no pretraining
    assert torch.equal(first["test"].images, again["test"].images)


def _clusters(split: str, seed: int) -> LabelledExamples:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(12, 8, generator=g)
    labels = torch.arange(12).repeat_interleave(10)
    x = centres[labels] + 0.3 * torch.randn(len(labels), 8, generator=g)
    return LabelledExamples(F.normalize(x, dim=-1), labels)


def test_leo_trains_and_evaluates_through_the_registry(tmp_path, monkeypatch):
    """`metaloop.train('leo', ...)` on a feature benchmark: checkpoints, resumes and evaluates."""
    bench = Benchmark(
        name="toy-features", description="synthetic features", metric="accuracy %", higher_is_better=True,
        make_model=lambda cfg: None, loss_fn=F.cross_entropy, metric_fn=accuracy,
        train_tasks=lambda cfg: EpisodicTasks(_clusters("train", 0), 3, 1, 2, seed=cfg["seed"], split="train"),
        test_tasks=lambda cfg: EpisodicTasks(_clusters("test", 1), 3, 1, 3, seed=cfg["eval_seed"], split="test"),
        defaults={"inner_lr": 0.1, "meta_batch_size": 2, "outer_lr": 1e-3, "eval_steps": [0, 5],
                  "test_inner_steps": 5, "inner_steps": 2},
        feature_dim=lambda cfg: 8,
    )
    monkeypatch.setitem(BENCHMARKS, "toy-features", bench)
    over = {"iterations": 6, "log_every": 2, "checkpoint_every": 3, "eval_episodes": 10}
    a = metaloop.train("leo", "toy-features", tmp_path / "a", overrides=over, progress=False)
    b = metaloop.train("leo", "toy-features", tmp_path / "b", overrides={**over, "iterations": 3}, progress=False)
    metaloop.train("leo", "toy-features", b, overrides=over, resume=True, progress=False)
    la, _, _ = metaloop.load_learner(a)
    lb, _, _ = metaloop.load_learner(b)
    for (name, x), (_, y) in zip(la.state_dict().items(), lb.state_dict().items(), strict=True):
        assert torch.equal(x, y), name
    result = metaloop.evaluate(a, plots=False)
    assert 0 <= result["steps"]["5"]["mean"] <= 100
