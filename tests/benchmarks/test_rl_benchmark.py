"""rl-nav2d from the command line: train, resume, eval (returns after 0–3 steps, the trajectories plot), compare,
and one-line errors for what a reinforcement-learning benchmark cannot take."""

from __future__ import annotations

import json
import sys

import pytest

from metaloop.tasks import cheetah

TINY = ["--set", "policy_hidden=[8]", "--set", "rollouts=4", "--set", "horizon=8", "--set", "meta_batch_size=2",
        "--set", "log_every=1", "--set", "checkpoint_every=1", "--set", "eval_episodes=3"]


def test_train_resume_eval(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", "--algo", "maml", "--benchmark", "rl-nav2d", "--out", out, "--quiet", *TINY,
                       "--set", "iterations=2")
    assert code == 0, err
    code, _, err = cli("train", "--algo", "maml", "--benchmark", "rl-nav2d", "--out", out, "--quiet",
                       "--resume", *TINY, "--set", "iterations=3")
    assert code == 0, err
    assert [json.loads(line)["iteration"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]
    code, stdout, err = cli("eval", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["metric"] == "return"
    assert sorted(result["steps"], key=int) == ["0", "1", "2", "3"]
    assert all(row["mean"] < 0 for row in result["steps"].values())
    assert (out / "plots" / "trajectories.png").is_file() and (out / "plots" / "adaptation_curve.png").is_file()
    code, again, _ = cli("eval", out, "--json", "--no-plots")
    assert json.loads(again)["steps"] == result["steps"]  # the test tasks' rollouts are seeded


def test_the_progress_bar_shows_the_return(tmp_path, cli):
    code, _, err = cli("train", "--algo", "maml", "--benchmark", "rl-nav2d", "--out", tmp_path / "run", *TINY,
                       "--set", "iterations=2")
    assert code == 0, err
    shown = float(err.rsplit("return=", 1)[1].split("]")[0])
    logged = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])["loss"]
    assert "loss=" not in err and shown == pytest.approx(-logged, rel=1e-3)


def test_compare_maml_and_fomaml(tmp_path, cli):
    code, _, err = cli("compare", "--algos", "maml,fomaml", "--benchmark", "rl-nav2d", "--out", tmp_path,
                       "--budget", "2", "--quiet", *TINY, "--set", "estimator=exact")
    assert code == 0, err
    rows = json.loads((tmp_path / "compare.json").read_text())
    assert [r["algo"] for r in rows] == ["maml", "fomaml"]


@pytest.mark.parametrize(("args", "needle"), [
    (["--algo", "protonet"], "does not learn from rollouts"),
    (["--algo", "maml", "--set", "shots=5"], "option 'shots': benchmark 'rl-nav2d' does not read it"),
    (["--algo", "maml", "--set", "path=loop"], "'maml' on a reinforcement-learning benchmark does not read it"),
    (["--algo", "fomaml", "--set", "first_order=true"], "does not read it"),
    (["--algo", "maml", "--set", "horizon=0"], "option 'horizon' must be positive"),
    (["--algo", "maml", "--set", "rollouts=-1"], "option 'rollouts' must be positive"),
    (["--algo", "maml", "--set", "discount=1.5"], "option 'discount' is at most 1"),
    (["--algo", "maml", "--set", "estimator=dice"], "option 'estimator' must be one of maml, exact"),
    (["--algo", "maml", "--set", "horizon_steps=3"], "horizon_steps"),
    (["--algo", "maml", "--set", "outer_step=trpo", "--set", "estimator=exact"], "the trpo outer step takes"),
    (["--algo", "pretrain", "--set", "outer_step=trpo"], "option 'outer_step': algorithm 'pretrain'"),
    (["--algo", "maml", "--set", "max_kl=0"], "option 'max_kl' must be positive"),
    (["--algo", "maml", "--set", "outer_step=newton"], "option 'outer_step' must be one of adam, trpo"),
    (["--algo", "promp", "--set", "clip_eps=0"], "option 'clip_eps' must be positive"),
    (["--algo", "maml", "--set", "ppo_steps=3"], "option 'ppo_steps': algorithm 'maml' on a reinforcement-learning"),
])
def test_bad_input_is_one_line(tmp_path, cli, args, needle):
    code, _, err = cli("train", "--benchmark", "rl-nav2d", "--out", tmp_path / "run", *args)
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_promp_trains_and_evaluates(tmp_path, cli):
    out = tmp_path / "run"
    code, _, err = cli("train", "--algo", "promp", "--benchmark", "rl-nav2d", "--out", out, "--quiet", *TINY,
                       "--set", "iterations=2", "--set", "ppo_steps=2")
    assert code == 0, err
    code, stdout, err = cli("eval", out, "--json", "--no-plots")
    assert code == 0 and json.loads(stdout)["metric"] == "return", err


def test_train_and_resume_with_the_trpo_outer_step(tmp_path, cli):
    out = tmp_path / "run"
    for iterations in (1, 2):
        code, _, err = cli("train", "--algo", "maml", "--benchmark", "rl-nav2d", "--out", out, "--quiet",
                           "--resume", *TINY, "--set", "outer_step=trpo", "--set", f"iterations={iterations}")
        assert code == 0, err
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2


def test_estimator_is_refused_on_a_supervised_benchmark(tmp_path, cli):
    code, _, err = cli("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", tmp_path / "r",
                       "--set", "estimator=exact")
    assert code == 2 and "maml on rl-* benchmarks" in err


def test_adapt_refuses_a_reinforcement_learning_run(tmp_path, cli):
    out = tmp_path / "run"
    assert cli("train", "--algo", "fomaml", "--benchmark", "rl-nav2d", "--out", out, "--quiet", *TINY,
               "--set", "iterations=1")[0] == 0
    support = tmp_path / "s.csv"
    support.write_text("text,label\na,b\n")
    code, _, err = cli("adapt", out, "--support", support, "--query", support, "--out", tmp_path / "p.csv")
    assert code == 2 and "adapts to its test environments in `metaloop eval`" in err


def test_list_names_the_rl_algorithms_and_benchmark(cli):
    code, out, _ = cli("list")
    assert code == 0 and "rl-nav2d" in out and "maml (rl-*)" in out


@pytest.mark.parametrize("benchmark", ["rl-cheetah-dir", "rl-cheetah-vel"])
def test_halfcheetah_trains_and_evaluates_from_the_cli(tmp_path, cli, benchmark):
    pytest.importorskip("mujoco")
    out = tmp_path / "run"
    tiny = ["--set", "policy_hidden=[8]", "--set", "rollouts=2", "--set", "horizon=6", "--set", "meta_batch_size=2",
            "--set", "eval_episodes=2", "--set", "iterations=2"]
    code, _, err = cli("train", "--algo", "maml", "--benchmark", benchmark, "--out", out, "--quiet", *tiny)
    assert code == 0, err
    code, stdout, err = cli("eval", out, "--json", "--no-plots")
    assert code == 0, err
    assert sorted(json.loads(stdout)["steps"], key=int) == ["0", "1", "2", "3"]


def test_halfcheetah_without_the_rl_extra_is_one_line(tmp_path, cli, monkeypatch):
    cheetah.mujoco_modules.cache_clear()
    monkeypatch.setitem(sys.modules, "mujoco", None)
    try:
        code, _, err = cli("train", "--algo", "maml", "--benchmark", "rl-cheetah-dir", "--out",
                           tmp_path / "run", "--quiet")
    finally:
        monkeypatch.undo()
        cheetah.mujoco_modules.cache_clear()
    assert code == 2 and "pip install -e '.[rl]'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "run").exists()
