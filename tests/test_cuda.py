"""On a CUDA device: every algorithm's meta-gradient equals the CPU one (float64), and training, evaluation,
resuming, ``compare`` and ``adapt`` run end to end with ``--set device=cuda`` on images, text and the LM.

Skipped where CUDA is not available (CI has none); run on a GPU machine with ``pytest tests/test_cuda.py``.
The data is generated (random images and texts, the tiny BERT of ``conftest.py``), so no data folder is needed.
"""

from __future__ import annotations

import copy
import csv
import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

import metaloop
from metaloop.adaptation import Adapter
from metaloop.algorithms import ALGORITHMS, LEO
from metaloop.benchmarks import build_learner, resolve_config
from metaloop.comparison import compare
from metaloop.evaluation import evaluate_learner, load_learner
from metaloop.tasks.base import TaskBatch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

IMAGE_SETS = {"iterations": 4, "meta_batch_size": 2, "image_size": 16, "channels": 1, "filters": 4,
              "queries": 2, "eval_queries": 2, "shots": 1, "ways": 3, "eval_episodes": 6, "log_every": 1,
              "checkpoint_every": 2, "eval_steps": [0, 1], "inner_steps": 1, "test_inner_steps": 1}
#: All but LEO, whose input is features, not images (its gradient is checked on features below).
GRADIENT_ALGOS = [a for a in ALGORITHMS if a != "leo"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """``images:FOLDER``: 5 training and 3 test classes of random 20×20 images."""
    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    for split, classes in (("train", 5), ("test", 3)):
        for c in range(classes):
            (root / split / f"{split}{c}").mkdir(parents=True)
            for i in range(4):
                pixels = rng.integers(0, 255, (20, 20), dtype=np.uint8)
                Image.fromarray(pixels).save(root / split / f"{split}{c}" / f"{i}.png")
    return root


def flat_grad(learner) -> torch.Tensor:
    return torch.cat([(torch.zeros_like(p) if p.grad is None else p.grad).flatten().cpu()
                      for p in learner.parameters()])


def assert_same_meta_gradient(learner, batch: TaskBatch, rel: float = 1e-9) -> None:
    """The meta-gradient of one batch on the CPU and on CUDA, in float64."""
    cpu = learner.double()
    cuda = copy.deepcopy(cpu).to("cuda")
    grads = []
    for model, device in ((cpu, "cpu"), (cuda, "cuda")):
        model.zero_grad(set_to_none=True)
        model.meta_gradient(batch.to(device, torch.float64))
        grads.append(flat_grad(model))
    scale = grads[0].abs().max()
    assert scale > 0
    assert float((grads[0] - grads[1]).abs().max() / scale) < rel


@pytest.mark.parametrize("algo", GRADIENT_ALGOS)
def test_meta_gradient_on_cuda_equals_cpu(algo, folder):
    """Conv-4 with BatchNorm on a 3-way 1-shot batch: the same meta-gradient on both devices (float64)."""
    cfg = resolve_config(algo, f"images:{folder}", overrides={**IMAGE_SETS, "inner_steps": 2})
    learner, bench = build_learner(cfg)
    batch = bench.train_tasks(cfg).batch(0, 2)
    rel = 1e-6 if algo == "metaoptnet-svm" else 1e-9  # the QP is solved to a tolerance on each device
    assert_same_meta_gradient(learner, batch, rel)


def test_leo_meta_gradient_on_cuda_equals_cpu():
    """LEO draws its noise from a seeded CPU generator, so the same draws reach both devices."""
    gen = torch.Generator().manual_seed(0)
    ways, shots = 3, 2
    sy = torch.arange(ways).repeat_interleave(shots)[None]
    batch = TaskBatch(torch.randn(1, ways * shots, 16, generator=gen), sy,
                      torch.randn(1, ways * shots, 16, generator=gen), sy.clone())
    leo = LEO(16, latent_dim=8, inner_lr=0.1, inner_steps=2, seed=0)
    assert_same_meta_gradient(leo, batch)


@pytest.mark.parametrize("algo", list(ALGORITHMS))
def test_train_resume_eval_on_cuda(algo, folder, tmp_path):
    """Train on CUDA (peak GPU memory logged), resume on CUDA, and evaluate the checkpoint on both devices."""
    sets = {**IMAGE_SETS, "device": "cuda", "feature_epochs": 1}
    run = metaloop.train(algo, f"images:{folder}", tmp_path / "run", overrides={**sets, "iterations": 2},
                         progress=False)
    metaloop.train(algo, f"images:{folder}", run, overrides=sets, progress=False, resume=True)
    meta = json.loads((run / "checkpoint.json").read_text())
    assert meta["iteration"] == 4
    assert meta.get("peak_cuda_mb", 0) > 0, meta
    weights = (run / "checkpoint-4.safetensors")
    assert weights.exists()
    on_cuda = metaloop.evaluate(run, plots=False)
    learner, bench, cfg = load_learner(run, device="cpu")
    assert next(learner.parameters()).device.type == "cpu"
    on_cpu = evaluate_learner(learner, bench, cfg, episodes=cfg["eval_episodes"], steps=cfg["eval_steps"])
    for step, value in on_cuda["steps"].items():
        # float32 on two devices: a prediction can flip on a near tie, but not many
        assert abs(value["mean"] - on_cpu["steps"][step]["mean"]) <= 100 / 6, (step, value, on_cpu["steps"][step])


def test_compare_on_cuda_reports_gpu_memory(folder, tmp_path):
    out = tmp_path / "cmp"
    sets = [f"{k}={json.dumps(v)}" for k, v in {**IMAGE_SETS, "device": "cuda"}.items()]
    compare(f"images:{folder}", ["protonet", "maml"], out, overrides=sets, progress=False)
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert [r["algo"] for r in rows] == ["protonet", "maml"]
    assert all(float(r["peak_cuda_mb"]) > 0 for r in rows), rows


def _text_file(tmp_path) -> str:
    words = "book flight rome paris cancel card bank balance weather rain alarm music pizza recipe timer".split()
    rng = random.Random(0)
    rows = []
    for split, labels in (("train", [f"t{i}" for i in range(4)]), ("test", ["alpha", "beta", "gamma"])):
        for label in labels:
            topic = rng.sample(words, 3)
            rows += [{"text": " ".join(rng.choices(topic, k=5)), "label": label, "split": split} for _ in range(4)]
    path = tmp_path / "texts.csv"
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "label", "split"])
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


@pytest.mark.parametrize("algo", ["maml", "metasgd", "protonet", "metaoptnet-ridge", "leo"])
def test_text_on_cuda_and_adapter(algo, text_env, tmp_path):
    """A LoRA-adapted tiny BERT meta-trained on CUDA; the Python Adapter adapts once and predicts on CUDA."""
    data = _text_file(tmp_path)
    sets = {"encoder": str(text_env), "ways": 3, "shots": 1, "queries": 1, "eval_queries": 1, "iterations": 2,
            "meta_batch_size": 1, "eval_episodes": 2, "log_every": 1, "checkpoint_every": 2, "device": "cuda",
            "max_length": 16, "feature_scale": 1.0}  # LEO's preset 4 is for MiniLM's 384 dimensions, not 16
    run = metaloop.train(algo, f"text:{data}", tmp_path / "run", overrides=sets, progress=False)
    assert metaloop.evaluate(run, plots=False)["episodes"] == 2
    adapter = Adapter(run).fit(["book flight rome", "bank balance card", "rain weather"], ["a", "b", "c"])
    assert adapter._device.type == "cuda"
    rows = adapter.predict(["flight to rome", "card balance"])
    assert [label in {"a", "b", "c"} and 0 < p <= 1 for label, p in rows] == [True, True]


@pytest.mark.parametrize("algo,extra", [("maml", {}), ("reptile", {}), ("maml", {"lora_rank": 2})])
def test_lm_strings_on_cuda(algo, extra, tmp_path):
    sets = {"n_layer": 1, "n_embd": 16, "n_head": 2, "meta_batch_size": 2, "iterations": 2, "log_every": 1,
            "checkpoint_every": 2, "eval_episodes": 3, "eval_queries": 3, "shots": 2, "queries": 2,
            "device": "cuda", **extra}
    run = metaloop.train(algo, "lm-strings", tmp_path / "run", overrides=sets, progress=False)
    result = metaloop.evaluate(run, plots=False)
    assert len(result["steps"]) == 4


def test_sinusoid_vmap_on_cuda(tmp_path):
    """The sinusoid MLP takes the vmap path on CUDA too."""
    run = metaloop.train("maml", "sinusoid", tmp_path / "run",
                         overrides={"hidden": [8], "meta_batch_size": 4, "iterations": 3, "device": "cuda",
                                    "eval_episodes": 10, "path": "vmap"}, progress=False)
    assert metaloop.evaluate(run, plots=False)["episodes"] == 10
