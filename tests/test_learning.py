"""End-to-end: meta-training on sinusoid actually learns to adapt (short in CI, longer under `slow`)."""

import pytest

import metaloop


def _train_and_eval(tmp_path, algo, iterations, **extra):
    overrides = {"iterations": iterations, "log_every": 100, "checkpoint_every": iterations, **extra}
    run = metaloop.train(algo, "sinusoid", tmp_path / algo, overrides=overrides, progress=False)
    return metaloop.evaluate(run, episodes=200, steps=[0, 1, 10], plots=False)["steps"]


def test_maml_short_run_learns_to_adapt(tmp_path):
    """After 1,500 MAML iterations one inner step already lowers the test MSE clearly."""
    steps = _train_and_eval(tmp_path, "maml", 1500)
    assert steps["1"]["mean"] < 0.8 * steps["0"]["mean"]
    assert steps["10"]["mean"] < steps["1"]["mean"]


@pytest.mark.slow
@pytest.mark.parametrize("algo", ["maml", "metasgd"])
def test_meta_learners_beat_pretraining_after_one_step(tmp_path, algo):
    """With 10,000 iterations a meta-learner is at least 2× better than the pretrained baseline after 1 step."""
    ours = _train_and_eval(tmp_path, algo, 10000)
    base = _train_and_eval(tmp_path, "pretrain", 10000)
    assert 2 * ours["1"]["mean"] < base["1"]["mean"]
