"""The few-shot image benchmarks: registry, presets, tiny end-to-end runs and their errors."""

import pytest
import torch

import metaloop
from metaloop.benchmarks import BENCHMARKS, build_learner, resolve_config
from metaloop.benchmarks.fewshot_images import accuracy
from metaloop.cli import main
from metaloop.data import data_root
from metaloop.errors import MetaloopError


def _has_omniglot() -> bool:
    try:
        return (data_root() / "omniglot" / "images_background.zip").exists()
    except MetaloopError:
        return False


needs_omniglot = pytest.mark.skipif(not _has_omniglot(), reason="Omniglot not found under the data root")


def _has_miniimagenet_splits() -> bool:
    try:
        return (data_root() / "miniimagenet-splits" / "train.csv").exists()
    except MetaloopError:
        return False


needs_miniimagenet_splits = pytest.mark.skipif(not _has_miniimagenet_splits(),
                                               reason="the mini-ImageNet split CSVs are not under the data root")
TINY = {"filters": 4, "meta_batch_size": 2, "iterations": 3, "log_every": 1, "checkpoint_every": 3,
        "eval_episodes": 10, "queries": 2, "eval_queries": 3}


def test_names_and_presets():
    """The issue's names exist; presets follow MAML's Omniglot protocol (lr 0.4/0.1, 1/5 steps)."""
    for name in ["omniglot-5w1s", "omniglot-20w1s", "omniglot-5w5s", "miniimagenet-5w1s", "miniimagenet-5w5s"]:
        assert name in BENCHMARKS
    five = resolve_config("maml", "omniglot-5w1s")
    twenty = resolve_config("maml", "omniglot-20w1s")
    assert (five["ways"], five["shots"], five["inner_lr"], five["inner_steps"]) == (5, 1, 0.4, 1)
    assert (twenty["ways"], twenty["inner_lr"], twenty["inner_steps"], twenty["meta_batch_size"]) == (20, 0.1, 5, 16)
    assert resolve_config("maml", "omniglot-5w5s")["shots"] == 5


def test_accuracy_is_a_percentage():
    """accuracy() is the percentage of queries whose arg-max logit is the label."""
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [1.0, 2.0]])
    assert accuracy(logits, torch.tensor([0, 1, 1, 0])).item() == pytest.approx(50.0)


def test_gradient_methods_need_matching_ways():
    """MAML's head has `ways` outputs, so train_ways must equal ways: a clear error names the option."""
    cfg = resolve_config("maml", "omniglot-5w1s", overrides={"train_ways": 20})
    with pytest.raises(MetaloopError, match="train_ways"):
        build_learner(cfg)


@needs_omniglot
def test_tiny_maml_run_on_omniglot(tmp_path):
    """A 3-iteration MAML run on Omniglot trains, checkpoints and evaluates to a valid accuracy."""
    run = metaloop.train("maml", "omniglot-5w1s", tmp_path / "run", overrides=TINY, progress=False)
    result = metaloop.evaluate(run, steps=[0, 1], plots=False)
    assert result["metric"] == "accuracy %" and result["episodes"] == 10
    for step in ("0", "1"):
        assert 0 <= result["steps"][step]["mean"] <= 100


@needs_omniglot
def test_test_episodes_do_not_depend_on_the_algorithm_or_training_seed():
    """Every algorithm and seed is tested on the same Omniglot episodes (fixed by eval_seed)."""
    a = BENCHMARKS["omniglot-5w1s"].test_tasks(resolve_config("maml", "omniglot-5w1s", overrides={"seed": 1}))
    b = BENCHMARKS["omniglot-5w1s"].test_tasks(resolve_config("reptile", "omniglot-5w1s", overrides={"seed": 7}))
    x, y = a.batch(0, 3), b.batch(0, 3)
    assert torch.equal(x.query_x, y.query_x) and torch.equal(x.support_y, y.support_y)


@needs_miniimagenet_splits
def test_missing_miniimagenet_images_is_a_one_line_error(tmp_path, capsys):
    """Training mini-ImageNet without images exits 2 with one line naming the folder searched."""
    code = main(["train", "--algo", "maml", "--benchmark", "miniimagenet-5w1s", "--set", f"images={tmp_path}",
                 "--set", "iterations=1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and str(tmp_path) in err
    assert not (tmp_path / "run").exists()


@needs_omniglot
@pytest.mark.parametrize("algo", ["protonet", "metaoptnet-ridge", "metaoptnet-svm"])
def test_tiny_metric_runs_on_omniglot(tmp_path, algo):
    """ProtoNet (60-way training by default) and both MetaOptNet heads train and evaluate on Omniglot."""
    overrides = {**TINY, "iterations": 2, "meta_batch_size": 1, "train_ways": 8}
    run = metaloop.train(algo, "omniglot-5w1s", tmp_path / algo, overrides=overrides, progress=False)
    result = metaloop.evaluate(run, plots=False)
    assert list(result["steps"]) == ["0"] and 0 <= result["steps"]["0"]["mean"] <= 100
    learner, _, cfg = metaloop.load_learner(run)
    assert cfg["train_ways"] == 8 and not any(n.endswith("5.weight") for n, _ in learner.named_parameters())


@needs_omniglot
def test_lake_runs_benchmark_trains_without_the_runs_characters(tmp_path, capsys):
    """omniglot-lake tests on the 20 official runs and meta-trains on 4112 − 4·78 classes."""
    cfg = resolve_config("protonet", "omniglot-lake", overrides={"filters": 4})
    train = BENCHMARKS["omniglot-lake"].train_tasks(cfg)
    assert len(train.class_ids) == 4112 - 4 * 78
    run = metaloop.train("protonet", "omniglot-lake", tmp_path / "r", progress=False,
                         overrides={**TINY, "iterations": 2, "meta_batch_size": 1, "train_ways": 6})
    assert metaloop.evaluate(run, episodes=20, plots=False)["episodes"] == 20
    code = main(["eval", str(run), "--episodes", "21"])
    assert code == 2 and "20 test tasks" in capsys.readouterr().err


@pytest.mark.parametrize("bench", ["omniglot-5w1s", "omniglot-5w5s", "omniglot-20w1s", "omniglot-lake"])
def test_every_omniglot_preset_fits_a_characters_20_drawings(bench):
    """Meta-training episodes draw train_shots + queries drawings of a character, which has 20."""
    from metaloop.algorithms import ALGORITHMS

    for algo in (a for a, (cls, _) in ALGORITHMS.items() if cls.role != "prompts"):
        cfg = resolve_config(algo, bench)
        need = (cfg["train_shots"] or cfg["shots"]) + (cfg["queries"] or 15)
        assert need <= 20, (algo, need)
