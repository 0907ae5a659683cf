"""Evaluation: the 95% confidence interval, shared test tasks, and the results table."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from metaloop.algorithms import ALGORITHMS
from metaloop.benchmarks import BENCHMARKS, build_learner, resolve_config
from metaloop.errors import MetaloopError
from metaloop.evaluation import evaluate_learner, format_table, mean_ci95


def test_mean_ci95_matches_the_formula():
    """mean_ci95 is (mean, 1.96·std(ddof=1)/√n) for a known vector."""
    values = np.array([1.0, 2.0, 4.0, 8.0, 16.0, 3.5])
    mean, ci = mean_ci95(torch.tensor(values, dtype=torch.float32))
    assert math.isclose(mean, values.mean(), rel_tol=1e-12)
    assert math.isclose(ci, 1.96 * values.std(ddof=1) / math.sqrt(len(values)), rel_tol=1e-12)
    assert math.isclose(ci, 1.96 * 5.565518843737752 / math.sqrt(6), rel_tol=1e-12)


def test_mean_ci95_of_one_value_has_no_interval():
    """With a single task the mean is the value and the interval is undefined (nan)."""
    mean, ci = mean_ci95(torch.tensor([2.5]))
    assert mean == 2.5 and math.isnan(ci)


def _test_batches(algo: str, seed: int, monkeypatch) -> list[torch.Tensor]:
    """The task tensors that evaluate_learner hands to the learner of ``algo`` trained with ``seed``."""
    cfg = resolve_config(algo, "sinusoid", overrides={"seed": seed, "hidden": [8]})
    learner, bench = build_learner(cfg)
    seen: list[torch.Tensor] = []
    real = learner.evaluate_batch

    def spy(batch, steps, metric_fn):
        seen.append(torch.cat([t.flatten() for t in batch.tensors()]))
        return real(batch, steps, metric_fn)

    monkeypatch.setattr(learner, "evaluate_batch", spy)
    result = evaluate_learner(learner, bench, cfg, episodes=7, steps=[0, 1], chunk=3)
    assert result["episodes"] == 7 and set(result["steps"]) == {"0", "1"}
    assert len(seen) == 3  # chunks of 3, 3 and 1 tasks
    return seen


def test_every_algorithm_and_seed_sees_the_same_test_tasks(monkeypatch):
    """Test tasks depend on neither the algorithm nor the training seed, and differ from training tasks."""
    reference = _test_batches("maml", 0, monkeypatch)
    for algo in (a for a, (cls, _) in ALGORITHMS.items() if not cls.classification_only and cls.role != "prompts"):
        for seed in (0, 3):
            got = _test_batches(algo, seed, monkeypatch)
            assert all(torch.equal(a, b) for a, b in zip(reference, got, strict=True)), (algo, seed)

    cfg = resolve_config("maml", "sinusoid")
    bench = BENCHMARKS["sinusoid"]
    assert not torch.equal(bench.test_tasks(cfg).batch(0, 2).tensors()[0],
                           bench.train_tasks(cfg).batch(0, 2).tensors()[0])


def test_evaluate_learner_rejects_bad_steps_and_episodes():
    """Negative step counts and non-positive episode counts raise MetaloopError."""
    cfg = resolve_config("maml", "sinusoid", overrides={"hidden": [8]})
    learner, bench = build_learner(cfg)
    with pytest.raises(MetaloopError, match="steps"):
        evaluate_learner(learner, bench, cfg, episodes=2, steps=[-1])
    with pytest.raises(MetaloopError, match="episodes"):
        evaluate_learner(learner, bench, cfg, episodes=0, steps=[0])


def test_format_table():
    """format_table: a Markdown row per result, numerically sorted step columns, '–' for missing cells."""
    results = {
        "maml": {"metric": "mse", "steps": {"0": {"mean": 1.23456, "ci95": 0.1},
                                            "10": {"mean": 0.5, "ci95": 0.05},
                                            "2": {"mean": 0.75, "ci95": 0.0625}}},
        "pretrain": {"metric": "mse", "steps": {"0": {"mean": 2.0, "ci95": 0.2}}},
    }
    assert format_table(results) == (
        "| method | mse after 0 steps | mse after 2 steps | mse after 10 steps |\n"
        "|---|---|---|---|\n"
        "| maml | 1.235 ± 0.100 | 0.750 ± 0.062 | 0.500 ± 0.050 |\n"
        "| pretrain | 2.000 ± 0.200 | – | – |"
    )


def test_diverged_step_counts_are_null_in_json(monkeypatch):
    """A non-finite metric (a diverged inner loop) is reported as null, so --json stays valid JSON."""
    import json

    import metaloop.evaluation as ev
    from metaloop.benchmarks import build_learner, resolve_config

    cfg = resolve_config("maml", "sinusoid", overrides={"hidden": [4]})
    learner, bench = build_learner(cfg)
    monkeypatch.setattr(type(learner), "evaluate_batch",
                        lambda self, batch, steps, fn: torch.tensor([[1.0, float("nan")]]).repeat(len(batch), 1))
    result = ev.evaluate_learner(learner, bench, cfg, episodes=3, steps=[0, 1])
    assert result["steps"]["1"] == {"mean": None, "ci95": None}
    assert json.loads(json.dumps(result, allow_nan=False))["steps"]["0"]["mean"] == 1.0
    assert "diverged" in ev.format_table({"x": result})


# ------------------------------------------------------------------------ test-time options of a trained run


@pytest.fixture(scope="module")
def sinusoid_runs(tmp_path_factory):
    import metaloop

    root = tmp_path_factory.mktemp("runs")
    sets = {"hidden": [8], "meta_batch_size": 4, "iterations": 6, "eval_episodes": 8, "log_every": 3,
            "checkpoint_every": 3}
    return {algo: metaloop.train(algo, "sinusoid", root / algo, overrides=sets, progress=False)
            for algo in ("maml", "pretrain", "metasgd")}


def test_test_inner_lr_is_the_step_size_outside_training():
    """test_inner_lr replaces inner_lr in evaluation mode only: adapted parameters equal those of a learner
    whose inner_lr is that value, and meta-training (training mode) still steps with inner_lr."""
    from metaloop.algorithms import MAML, MetaSGD
    from metaloop.models.mlp import MLP
    from metaloop.tasks.sinusoid import SinusoidTasks

    torch.manual_seed(0)
    model = MLP(1, [8], 1).double()
    (sx, sy), _ = SinusoidTasks(5, 5).batch(0, 1).to("cpu", torch.float64).task(0)
    ref = {lr: MAML(model, torch.nn.functional.mse_loss, inner_lr=lr, inner_steps=2) for lr in (0.01, 0.3)}
    learner = MAML(model, torch.nn.functional.mse_loss, inner_lr=0.01, inner_steps=2, test_inner_lr=0.3)
    for mode, lr in ((True, 0.01), (False, 0.3)):
        learner.train(mode)
        ref[lr].train(mode)
        got, want = learner.adapt(learner.params(), (sx, sy)), ref[lr].adapt(ref[lr].params(), (sx, sy))
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=0, atol=0)
    with pytest.raises(MetaloopError, match="test_inner_lr"):
        MetaSGD(model, torch.nn.functional.mse_loss, test_inner_lr=0.1)
    for algo in ("protonet", "metasgd"):
        bench = "sinusoid" if algo == "metasgd" else "omniglot-5w1s"
        with pytest.raises(MetaloopError, match="test_inner_lr"):
            build_learner(resolve_config(algo, bench, overrides={"test_inner_lr": 0.1}))


def test_eval_set_changes_test_time_options_only(sinusoid_runs, capsys):
    """`metaloop eval RUN --set test_inner_lr=…` re-tests a trained run with another step size (recorded in
    the JSON); options that change what was trained are a one-line error."""
    import json

    from metaloop.cli import main

    run = sinusoid_runs["pretrain"]
    assert main(["eval", str(run), "--json", "--no-plots"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert main(["eval", str(run), "--json", "--no-plots", "--set", "test_inner_lr=0.001"]) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["settings"] == {"test_inner_lr": 0.001} and "settings" not in plain
    assert small["steps"]["0"] == plain["steps"]["0"]  # no step taken: the same model
    assert small["steps"]["1"] != plain["steps"]["1"]
    for bad, needle in (("inner_lr=0.5", "--set inner_lr: eval can change only"),
                        ("test_inner_lr=-1", "test_inner_lr"), ("device=tpu", "device")):
        assert main(["eval", str(run), "--json", "--no-plots", "--set", bad]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err, err
    assert main(["eval", str(sinusoid_runs["metasgd"]), "--no-plots", "--set", "test_inner_lr=0.1"]) == 2
    assert "option 'test_inner_lr': algorithm 'metasgd' does not read it" in capsys.readouterr().err


def test_a_run_older_than_an_option_loads_with_its_default(sinusoid_runs, tmp_path):
    """A run whose config.yaml predates an option (here test_inner_lr) is evaluated with that option's
    default, and a resumed run may change test-time options."""
    import shutil

    import yaml

    import metaloop
    from metaloop.evaluation import load_learner

    run = tmp_path / "old"
    shutil.copytree(sinusoid_runs["maml"], run)
    cfg = yaml.safe_load((run / "config.yaml").read_text())
    del cfg["test_inner_lr"]
    (run / "config.yaml").write_text(yaml.safe_dump(cfg))
    learner, _, loaded = load_learner(run)
    assert loaded["test_inner_lr"] is None and learner.test_inner_lr is None
    metaloop.train("maml", "sinusoid", run, overrides={"hidden": [8], "meta_batch_size": 4, "iterations": 9,
                   "eval_episodes": 8, "log_every": 3, "checkpoint_every": 3, "test_inner_lr": 0.02},
                   resume=True, progress=False)
    assert load_learner(run)[0].test_inner_lr == 0.02


def test_an_interrupted_evaluation_resumes_from_its_last_chunk(tmp_path, monkeypatch):
    """``partial=(file, key)``: the chunks finished before an interruption are kept and not evaluated again;
    the resumed result equals an uninterrupted one; another key starts over; the file goes when done."""
    cfg = resolve_config("maml", "sinusoid", overrides=["inner_steps=1"])
    learner, bench = build_learner(cfg)
    whole = evaluate_learner(learner, bench, cfg, episodes=10, steps=[0, 1], chunk=3)
    path = tmp_path / "partial.json"
    calls, fail_at = [], [3]
    real = type(learner).evaluate_batch

    class Interrupted(Exception):
        pass

    def failing(self, batch, steps, metric_fn):
        calls.append(len(batch))
        if len(calls) == fail_at[0]:
            raise Interrupted
        return real(self, batch, steps, metric_fn)

    def run(key: str) -> dict:
        calls.clear()
        return evaluate_learner(learner, bench, cfg, episodes=10, steps=[0, 1], chunk=3, partial=(path, key))

    monkeypatch.setattr(type(learner), "evaluate_batch", failing)
    with pytest.raises(Interrupted):
        run("run-a")
    assert path.exists() and calls == [3, 3, 3]
    fail_at[0] = None
    resumed = run("run-a")
    assert calls == [3, 1]  # tasks 6–9 only
    assert resumed["steps"] == whole["steps"] and not path.exists()

    fail_at[0] = 3
    with pytest.raises(Interrupted):
        run("run-a")
    fail_at[0] = None
    assert run("run-b")["steps"] == whole["steps"] and calls == [3, 3, 3, 1]  # another key: nothing reused
