"""`metaloop compare`: budgets, the table and CSV, reuse of finished runs, and failures."""

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metaloop.cli import main
from metaloop.comparison import choose_steps, compare, parse_budget
from metaloop.errors import MetaloopError

TINY = ["hidden=[8]", "meta_batch_size=4", "log_every=5", "checkpoint_every=10"]


@pytest.mark.parametrize(("text", "expected"), [
    ("2000", {"iterations": 2000}), ("50it", {"iterations": 50}), ("90s", {"time_budget": 90.0}),
    ("1.5m", {"time_budget": 90.0}), ("1h", {"time_budget": 3600.0}),
])
def test_parse_budget(text, expected):
    """Budgets are iterations or wall time."""
    assert parse_budget(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "0", "-5", "1.5it", "10d", "1000000000000", "1000000h"])
def test_bad_budget(text):
    """A malformed budget names --budget."""
    with pytest.raises(MetaloopError, match="--budget"):
        parse_budget(text)


def test_compare_writes_table_csv_plot_and_reuses_runs(tmp_path, capsys):
    """Two algorithms under the same 20-iteration budget: one row each, with every column filled."""
    out = tmp_path / "cmp"
    rows = compare("sinusoid", ["maml", "pretrain"], out, budget="20", overrides=TINY, episodes=20, progress=False)
    assert [r["algo"] for r in rows] == ["maml", "pretrain"]
    for r in rows:
        assert r["iterations"] == 20 and r["episodes"] == 20 and r["mean"] > 0 and r["ci95"] > 0
        assert r["latency_ms"] > 0 and r["peak_rss_mb"] > 0 and r["parameters"] == 1 * 8 + 8 + 8 + 1
    for name in ["compare.md", "compare.csv", "compare.json", "compare.png"]:
        assert (out / name).exists()
    table = list(csv.DictReader((out / "compare.csv").open()))
    assert [t["algo"] for t in table] == ["maml", "pretrain"]
    stamp = (out / "maml" / "checkpoint.json").stat().st_mtime_ns
    again = compare("sinusoid", ["maml"], out, budget="20", overrides=TINY, episodes=20, progress=False)
    assert (out / "maml" / "checkpoint.json").stat().st_mtime_ns == stamp  # reused, not retrained
    assert again[0]["mean"] == rows[0]["mean"]


def test_compare_reuses_an_evaluation_only_while_run_and_episodes_are_the_same(tmp_path, monkeypatch):
    import metaloop.evaluation as evaluation

    out = tmp_path / "cmp"
    first = compare("sinusoid", ["maml"], out, budget="5", overrides=TINY, episodes=10, progress=False)[0]
    assert (out / "maml" / "compare-row.json").exists()
    calls = []
    real = evaluation.evaluate_learner
    monkeypatch.setattr(evaluation, "evaluate_learner", lambda *a, **k: calls.append(k) or real(*a, **k))
    again = compare("sinusoid", ["maml"], out, budget="5", overrides=TINY, episodes=10, progress=False)[0]
    assert calls == [] and again == first  # the same checkpoint and episodes: the row is reused
    more = compare("sinusoid", ["maml"], out, budget="5", overrides=TINY, episodes=12, progress=False)[0]
    assert len(calls) == 1 and more["episodes"] == 12  # other episodes: evaluated again
    longer = compare("sinusoid", ["maml"], out, budget="8", overrides=TINY, episodes=12, progress=False)[0]
    assert len(calls) == 2 and longer["iterations"] == 8  # trained on: a new checkpoint, evaluated again


def test_row_cache_survives_an_option_added_after_the_run(tmp_path, monkeypatch):
    """A run whose config.yaml predates an option gets it written at its default by `train --resume`:
    its evaluation is still reused. A test-time option that differs (test_inner_steps) is evaluated again."""
    import yaml

    import metaloop.evaluation as evaluation

    out = tmp_path / "cmp"
    compare("sinusoid", ["maml"], out, budget="5", overrides=TINY, episodes=10, progress=False)
    config = out / "maml" / "config.yaml"
    cfg = yaml.safe_load(config.read_text())
    del cfg["test_inner_lr"]  # as written before test_inner_lr existed
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    calls = []
    real = evaluation.evaluate_learner
    monkeypatch.setattr(evaluation, "evaluate_learner", lambda *a, **k: calls.append(k) or real(*a, **k))
    compare("sinusoid", ["maml"], out, budget="5", overrides=TINY, episodes=10, progress=False)
    assert "test_inner_lr" in yaml.safe_load(config.read_text()) and calls == []
    compare("sinusoid", ["maml"], out, budget="5", overrides=[*TINY, "test_inner_steps=3"], episodes=10,
            progress=False)
    assert len(calls) == 1


def test_compare_reports_a_failed_algorithm_and_exits_1(tmp_path, capsys):
    """A run that fails is a row with its one-line error, and compare exits with code 1."""
    code = main(["compare", "--benchmark", "sinusoid", "--algos", "maml", "--budget", "10", "--quiet",
                 "--out", str(tmp_path / "bad"), "--set", "adapt=nothing.*"])
    rows = json.loads((tmp_path / "bad" / "compare.json").read_text())
    assert code == 1 and "adapt" in rows[0]["error"]


@pytest.mark.parametrize("args", [
    ["--algos", "maml,bogus"], ["--algos", ","], ["--algos", "maml", "--budget", "soon"],
    ["--algos", "maml", "--set", "novalue"],
])
def test_bad_compare_input_exits_2_and_trains_nothing(tmp_path, capsys, args):
    """Unknown algorithms, an empty list, a bad budget or a malformed --set: exit 2 before training."""
    code = main(["compare", "--benchmark", "sinusoid", "--out", str(tmp_path / "c"), *args])
    assert code == 2 and len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_the_reported_step_count_is_the_runs_own_or_else_the_best_finite_one():
    """A row reports the run's test_inner_steps while its metric is finite; when that diverged, the best
    step count with a finite metric (by the metric's direction) and a note; when all diverged, a note."""
    summary = {"0": {"mean": 40.0}, "1": {"mean": 70.0}, "5": {"mean": 65.0}, "10": {"mean": None}}
    assert choose_steps(summary, 5, higher_is_better=True) == (5, "")
    steps, note = choose_steps(summary, 10, higher_is_better=True)
    assert steps == 1 and note == "diverged at its 10 test steps; best finite of 0, 1, 5, 10: 1"
    assert choose_steps(summary, 10, higher_is_better=False)[0] == 0
    assert choose_steps({"1": {"mean": None}, "10": {"mean": None}}, 10, True) == (
        10, "diverged at every step count tried (1, 10)")


def test_compare_says_why_a_row_is_missing_from_the_plot(tmp_path, monkeypatch):
    """With a test-time step size that overflows, every step count but 0 diverges: the rows report step 0
    with a note; when only diverging step counts are tried, the rows are not plotted and the plot's
    footnote and the table say why."""
    import metaloop.plots

    footnotes = []
    real = metaloop.plots.metric_vs_time
    monkeypatch.setattr(metaloop.plots, "metric_vs_time",
                        lambda rows, path, **kw: (footnotes.append(kw["footnote"]), real(rows, path, **kw))[1])
    sets = [*TINY, "test_inner_lr=1e300", "test_inner_steps=1"]
    rows = compare("sinusoid", ["maml", "fomaml"], tmp_path / "c", budget="5", episodes=4, progress=False,
                   overrides=[*sets, "eval_steps=[1]"])
    note = "diverged at every step count tried (1)"
    assert [r["mean"] for r in rows] == [None, None] and all(r["note"] == note for r in rows)
    assert footnotes[-1] == f"not plotted: maml ({note}); fomaml ({note})"
    assert (tmp_path / "c" / "compare.md").read_text().count(note) == 2
    rows = compare("sinusoid", ["maml", "fomaml"], tmp_path / "c", budget="5", episodes=4, progress=False,
                   overrides=[*sets, "eval_steps=[0,1]"])
    assert all(r["steps"] == 0 and r["mean"] is not None for r in rows) and footnotes[-1] == ""
    assert all(r["note"] == "diverged at its 1 test steps; best finite of 0, 1: 0" for r in rows)


def test_a_killed_compare_takes_its_trainer_with_it(tmp_path):
    """SIGKILL of `metaloop compare` (no chance to clean up): its `metaloop train` child notices that its
    parent is gone, stops as after a Ctrl-C (with a checkpoint) and releases the run folder."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = tmp_path / "c"
    compare_proc = subprocess.Popen([sys.executable, "-m", "metaloop", "compare", "--benchmark", "sinusoid",
                                     "--algos", "maml", "--budget", "100000", "--quiet", "--out", str(out),
                                     *[a for item in TINY for a in ("--set", item)]],
                                    env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    lock = out / "maml" / ".lock"
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "maml" / "checkpoint.json").exists():
        time.sleep(0.2)
    assert lock.exists(), "the trainer did not start"
    trainer = json.loads(lock.read_text())["pid"]
    compare_proc.kill()
    compare_proc.wait()
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            os.kill(trainer, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(trainer, signal.SIGKILL)
        pytest.fail("the trainer outlived its compare")
    assert not lock.exists()
    assert json.loads((out / "maml" / "checkpoint.json").read_text())["iteration"] > 10


def _interruptible() -> None:
    """In the child, before Python starts: SIGINT as at a terminal. A job started in the background (``cmd &``,
    as CI runners and ``nohup`` do) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_ctrl_c_on_compare_stops_its_trainer_with_a_checkpoint(tmp_path):
    """The trainer runs in its own session: a Ctrl-C reaches compare only, which interrupts the trainer once, so
    that it checkpoints where it is (a second interrupt would stop it without one) and releases the folder."""
    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo)}
    out = tmp_path / "c"
    proc = subprocess.Popen([sys.executable, "-m", "metaloop", "compare", "--benchmark", "sinusoid", "--algos", "maml",
                             "--budget", "100000", "--quiet", "--out", str(out),
                             "--set", "checkpoint_every=100000", *[a for item in TINY[:3] for a in ("--set", item)]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_interruptible)
    lock = out / "maml" / ".lock"
    metrics = out / "maml" / "metrics.jsonl"
    deadline = time.time() + 120
    # a logged iteration: the training loop runs, so the trainer's Ctrl-C handler is installed (event, not a sleep)
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.1)
    assert lock.exists() and metrics.read_text().strip(), "the trainer did not start within 120 s"
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=90)
    except subprocess.TimeoutExpired:  # stop compare, so that its trainer stops too (it watches its parent)
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"compare did not stop within 90 s of a SIGINT: {err.strip()[-500:]}")
    assert proc.returncode == 130, err
    assert not lock.exists()
    pointer = json.loads((out / "maml" / "checkpoint.json").read_text())
    assert 0 < pointer["iteration"] < 100000  # not a periodic one: checkpoint_every is beyond the run
