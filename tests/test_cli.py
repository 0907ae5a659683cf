"""The `metaloop` command line: what `train`, `eval` and `list` write and print, and how bad input fails."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from metaloop.benchmarks import BENCHMARKS
from metaloop.cli import main

REPO = Path(__file__).resolve().parents[1]
TINY = ["iterations=20", "hidden=[8]", "eval_episodes=20", "log_every=5", "checkpoint_every=10",
        "meta_batch_size=4"]
PNG = b"\x89PNG\r\n\x1a\n"


def set_args(items) -> list[str]:
    return [arg for item in items for arg in ("--set", item)]


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime of every file under ``root`` (empty when ``root`` does not exist)."""
    if not root.exists():
        return {}
    files = [p for p in root.rglob("*") if p.is_file()]
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


def assert_one_line_error(code: int, err: str, needle: str) -> None:
    assert code == 2
    assert err.startswith("metaloop: error: "), err
    assert err.endswith("\n") and err.count("\n") == 1, err
    assert needle in err, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("cli") / "run"
    code = main(["train", "--algo", "maml", "--benchmark", "sinusoid", "--out", str(run), "--quiet",
                 *set_args(TINY)])
    assert code == 0
    return run


@pytest.fixture
def run(trained: Path, tmp_path: Path) -> Path:
    """A private copy of the trained run directory (tests may modify it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained, dst)
    return dst


# ------------------------------------------------------------------------------------------------ train
def test_train_writes_the_run_directory(trained: Path):
    """train writes config.yaml (every option), metrics.jsonl, the checkpoint pair and the training curve."""
    cfg = yaml.safe_load((trained / "config.yaml").read_text())
    assert set(cfg) == {"algo", "benchmark", *BENCHMARKS["sinusoid"].all_options()}
    assert cfg["algo"] == "maml" and cfg["benchmark"] == "sinusoid"
    assert cfg["iterations"] == 20 and cfg["hidden"] == [8] and cfg["test_inner_steps"] == 10

    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows] == [5, 10, 15, 20]
    for r in rows:
        assert set(r) == {"iteration", "loss", "time"}
        assert isinstance(r["loss"], float) and r["loss"] > 0 and r["time"] >= 0

    pointer = json.loads((trained / "checkpoint.json").read_text())
    assert pointer["iteration"] == 20 and pointer["file"] == "checkpoint-20.safetensors"
    assert sorted(p.name for p in trained.glob("checkpoint-*.safetensors")) == ["checkpoint-20.safetensors"]
    assert (trained / "plots" / "training_curve.png").read_bytes().startswith(PNG)


def test_train_prints_where_the_run_is(tmp_path: Path, cli):
    """train exits 0 and names the run directory on stdout."""
    out = tmp_path / "r"
    code, stdout, _ = cli("train", "--algo", "fomaml", "--benchmark", "sinusoid", "--out", out,
                          "--quiet", *set_args(["iterations=2", "hidden=[8]", "meta_batch_size=2"]))
    assert code == 0 and str(out) in stdout


def test_every_set_option_reaches_config_yaml(tmp_path: Path, cli):
    """--set of iterations, meta_batch_size, inner_lr, inner_steps, shots, seed, device reach config.yaml."""
    out = tmp_path / "r"
    sets = ["iterations=3", "meta_batch_size=2", "inner_lr=0.02", "inner_steps=2", "shots=3", "seed=7",
            "device=cpu", "hidden=[8]", "log_every=1"]
    code, _, err = cli("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", out, "--quiet",
                       *set_args(sets))
    assert code == 0, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["iterations"] == 3 and cfg["meta_batch_size"] == 2 and cfg["inner_lr"] == 0.02
    assert cfg["inner_steps"] == 2 and cfg["shots"] == 3 and cfg["seed"] == 7 and cfg["device"] == "cpu"
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3


def test_config_file_is_read_and_set_overrides_it(tmp_path: Path, cli):
    """A YAML --config gives algo, benchmark and options; --set overrides the file."""
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("algo: fomaml\nbenchmark: sinusoid\ninner_lr: 0.05\nshots: 4\nhidden: [8]\n"
                        "iterations: 2\nmeta_batch_size: 2\n")
    out = tmp_path / "r"
    code, _, err = cli("train", "--config", cfg_file, "--out", out, "--quiet", "--set", "shots=6")
    assert code == 0, err
    cfg = yaml.safe_load((out / "config.yaml").read_text())
    assert cfg["algo"] == "fomaml" and cfg["inner_lr"] == 0.05 and cfg["iterations"] == 2
    assert cfg["shots"] == 6


# ------------------------------------------------------------------------------------------------ eval, list
def test_eval_json_prints_one_object(run: Path, cli):
    """eval --json prints exactly one JSON object with the requested steps, and writes it, named by the
    settings that differ from the run's own (here the steps), and plots."""
    code, out, err = cli("eval", run, "--json", "--episodes", "20", "--steps", "0,1")
    assert code == 0, err
    assert out.count("\n") == 1
    result = json.loads(out)
    assert isinstance(result, dict)
    assert result["episodes"] == 20 and result["iteration"] == 20 and result["metric"] == "mse"
    assert set(result["steps"]) == {"0", "1"}
    for entry in result["steps"].values():
        assert set(entry) == {"mean", "ci95"} and entry["mean"] > 0 and entry["ci95"] > 0
    assert result["file"] == "eval-steps=0,1.json" and not (run / "eval.json").exists()
    assert json.loads((run / result["file"]).read_text()) == result
    assert not (run / "plots" / "adaptation_curve.png").exists()  # plots show the run's own settings only
    code, out, err = cli("eval", run, "--json")
    assert code == 0 and json.loads(out)["file"] == "eval.json", err
    for name in ("adaptation_curve.png", "predictions.png"):
        assert (run / "plots" / name).read_bytes().startswith(PNG)


def test_eval_prints_a_table(run: Path, cli):
    """Plain eval prints a Markdown table with a row for the run and the run's eval_steps as columns."""
    code, out, err = cli("eval", run, "--episodes", "20")
    assert code == 0, err
    lines = out.splitlines()
    head = next(line for line in lines if line.startswith("| method |"))
    assert [f"mse after {s} steps" in head for s in (0, 1, 5, 10)] == [True] * 4
    assert any(line.startswith("| maml | ") for line in lines)
    assert (run / "eval.json").exists() and (run / "plots" / "adaptation_curve.png").exists()


def test_eval_keeps_each_result_under_its_settings(run: Path, cli):
    """A quick check at other settings never replaces the run's own result: eval.json holds the evaluation
    at the run's settings, and others get a file named by what differs."""
    code, out, err = cli("eval", run, "--json", "--no-plots")
    assert code == 0, err
    full = json.loads(out)
    assert full["file"] == "eval.json" and full["episodes"] == 20
    code, out, err = cli("eval", run, "--json", "--no-plots", "--episodes", "5")
    assert code == 0, err
    quick = json.loads(out)
    assert quick["file"] == "eval-episodes=5.json" and quick["episodes"] == 5
    assert json.loads((run / "eval.json").read_text()) == full
    code, out, err = cli("eval", run, "--json", "--no-plots", "--set", "test_inner_lr=0.005",
                         "--set", "eval_queries=7", "--set", "device=cpu")
    assert code == 0, err
    assert json.loads(out)["file"] == "eval-eval_queries=7_test_inner_lr=0.005.json"  # device: no change
    code, out, err = cli("eval", run, "--no-plots")
    assert code == 0 and f"result in {run / 'eval.json'}" in out


def test_list_options_names_every_benchmarks_options(cli):
    """`list --options` includes the options of the user's own data (images:PATH, text:FILE), says which
    benchmarks take each, and gives the upper bounds."""
    code, out, _ = cli("list", "--options")
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("option ")}
    for name in ("image_size", "channels", "path_column", "text_column", "split_column", "train_sources"):
        assert name in lines, name
    assert "images:" in lines["image_size"] and "default 84" in lines["image_size"]
    assert "at most 100,000,000" in lines["iterations"]


def test_list_names_algorithms_and_benchmarks(cli):
    """list prints one line per algorithm and one per benchmark."""
    code, out, _ = cli("list")
    assert code == 0
    from metaloop.algorithms import ALGORITHMS, RL_ALGORITHMS
    from metaloop.benchmarks import BENCHMARKS

    rows = [line.split()[:2] for line in out.splitlines()]
    assert [line.split()[2] for line in out.splitlines() if "(rl-*)" in line] == ["(rl-*)"] * len(RL_ALGORITHMS)
    algos = ["maml", "fomaml", "anil", "metasgd", "reptile", "pretrain"]
    assert all(["algorithm", a] in rows for a in algos) and ["benchmark", "sinusoid"] in rows
    expected = [["algorithm", a] for a in [*ALGORITHMS, *RL_ALGORITHMS]] + [
        ["benchmark", b] for b in [*BENCHMARKS, "images:PATH", "text:FILE"]]
    assert sorted(rows) == sorted(expected)


# ------------------------------------------------------------------------------------------------ bad input
def train_argv(out: Path, tmp_path: Path, *, algo="maml", benchmark="sinusoid", sets=(), config=None,
               missing_config=False, flags=(), resume=True) -> list:
    argv = ["train", "--algo", algo, "--benchmark", benchmark, "--out", out, "--quiet",
            *set_args([*TINY, *sets]), *flags]
    if resume:
        argv.append("--resume")
    if config is not None:
        path = tmp_path / "bad.yaml"
        path.write_text(config)
        argv += ["--config", path]
    if missing_config:
        argv += ["--config", tmp_path / "no-such-config.yaml"]
    return argv


BAD_OPTIONS = [
    pytest.param(dict(algo="nosuchalgo"), "nosuchalgo", id="unknown-algorithm"),
    pytest.param(dict(benchmark="nosuchbench"), "nosuchbench", id="unknown-benchmark"),
    pytest.param(dict(sets=["bogus_opt=1"]), "bogus_opt", id="unknown-option-set"),
    pytest.param(dict(config="bogus_opt: 1\n"), "bogus_opt", id="unknown-option-file"),
    pytest.param(dict(flags=["--bogus-flag"]), "--bogus-flag", id="unknown-flag"),
    pytest.param(dict(sets=["iterations"]), "expected key=value", id="set-without-equals"),
    pytest.param(dict(config="inner_lr: [0.1, 0.2\n"), "malformed YAML", id="malformed-yaml"),
    pytest.param(dict(config="- 1\n- 2\n"), "mapping", id="config-not-mapping"),
    pytest.param(dict(missing_config=True), "no-such-config.yaml", id="missing-config"),
    pytest.param(dict(sets=["iterations=abc"]), "iterations", id="iterations-not-int"),
    pytest.param(dict(sets=["iterations=0"]), "iterations", id="iterations-zero"),
    pytest.param(dict(sets=["inner_steps=0"]), "inner_steps", id="inner-steps-zero"),
    pytest.param(dict(sets=["inner_lr=-0.01"]), "inner_lr", id="inner-lr-negative"),
    pytest.param(dict(sets=["outer_lr=0"]), "outer_lr", id="outer-lr-zero"),
    pytest.param(dict(sets=["shots=0"]), "shots", id="shots-zero"),
    pytest.param(dict(sets=["inner_lr=inf"]), "finite", id="inner-lr-infinite"),
    pytest.param(dict(sets=["outer_lr=.nan"]), "finite", id="outer-lr-nan"),
    pytest.param(dict(sets=["iterations=1000000000000"]), "at most", id="iterations-unbounded"),
    pytest.param(dict(sets=["meta_batch_size=1000000000"]), "at most", id="meta-batch-unbounded"),
    pytest.param(dict(sets=["inner_steps=1000000000"]), "at most", id="inner-steps-unbounded"),
    pytest.param(dict(sets=["time_budget=1e12"]), "at most", id="time-budget-unbounded"),
    pytest.param(dict(sets=["hidden=[1000000,1000000]"]), "hidden", id="model-beyond-memory"),
    pytest.param(dict(sets=["device=cuda"]), "cuda", id="cuda-unavailable",
                 marks=pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")),
]


@pytest.mark.parametrize(("case", "needle"), BAD_OPTIONS)
def test_bad_train_input_leaves_the_run_untouched(run: Path, tmp_path: Path, cli, case, needle):
    """Bad train input (with --resume into a run) exits 2 with one stderr line and changes no file."""
    before = snapshot(run)
    code, _, err = cli(*train_argv(run, tmp_path, **case))
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before


@pytest.mark.parametrize(("case", "needle"), BAD_OPTIONS)
def test_bad_train_input_creates_no_run_directory(tmp_path: Path, cli, case, needle):
    """Bad train input into a fresh --out exits 2 with one stderr line and creates nothing."""
    out = tmp_path / "fresh"
    code, _, err = cli(*train_argv(out, tmp_path, resume=False, **case))
    assert_one_line_error(code, err, needle)
    assert not out.exists()


@pytest.mark.parametrize(("case", "needle"), [
    pytest.param(dict(resume=False), "already holds a metaloop run", id="existing-run-without-resume"),
    pytest.param(dict(sets=["inner_lr=0.02"]), "'inner_lr'", id="resume-different-run"),
    pytest.param(dict(sets=["iterations=5"]), "below the checkpoint",
                 id="resume-iterations-below-checkpoint"),
])
def test_bad_train_into_an_existing_run(run: Path, tmp_path: Path, cli, case, needle):
    """Training over a run without --resume, or resuming with other options, exits 2 and changes no file."""
    before = snapshot(run)
    code, _, err = cli(*train_argv(run, tmp_path, **case))
    assert_one_line_error(code, err, needle)
    assert snapshot(run) == before


def _no_checkpoint(run: Path) -> Path:
    for p in [run / "checkpoint.json", *run.glob("checkpoint-*.safetensors")]:
        p.unlink()
    return run


def _flip_tensor_bytes(run: Path) -> Path:
    path = next(run.glob("checkpoint-*.safetensors"))
    data = bytearray(path.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])  # weights, not the header: only the sha256 notices
    path.write_bytes(bytes(data))
    return run


def _garbage_pointer(run: Path) -> Path:
    (run / "checkpoint.json").write_text("{not json")
    return run


@pytest.mark.parametrize(("prepare", "args", "needle"), [
    pytest.param(None, ["--steps", "-1"], "--steps", id="negative-step"),
    pytest.param(None, ["--steps", "a,b"], "--steps", id="non-integer-steps"),
    pytest.param(None, ["--episodes", "0"], "--episodes", id="zero-episodes"),
    pytest.param(None, ["--episodes", "1000000000000"], "at most", id="episodes-unbounded"),
    pytest.param(None, ["--steps", "0,1000000000"], "at most", id="steps-unbounded"),
    pytest.param(None, ["--set", "inner_lr=0.5"], "changes what is trained", id="set-a-training-option"),
    pytest.param(None, ["--set", "test_inner_lr=inf"], "finite", id="set-infinite"),
    pytest.param(_no_checkpoint, [], "no checkpoint", id="no-checkpoint"),
    pytest.param(lambda run: run / "missing", [], "does not exist", id="missing-dir"),
    pytest.param(_flip_tensor_bytes, [], "sha256", id="corrupt-tensors"),
    pytest.param(_garbage_pointer, [], "checkpoint.json", id="garbage-pointer"),
])
def test_bad_eval_input(run: Path, cli, prepare, args, needle):
    """Bad eval input exits 2 with one stderr line naming the problem, and writes nothing."""
    target = prepare(run) if prepare is not None else run
    before = snapshot(run)
    code, out, err = cli("eval", target, "--json", *args)
    assert_one_line_error(code, err, needle)
    assert out == ""
    assert snapshot(run) == before and not (run / "missing").exists()


# ---------------------------------------------------------------------------------------------- real process
def _python_m(*argv) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "metaloop", *map(str, argv)], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=120)


def test_process_exit_code_for_a_bad_flag(tmp_path: Path):
    """`python -m metaloop train --bogus-flag` exits 2 with exactly one stderr line and no stdout."""
    proc = _python_m("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", tmp_path / "r",
                     "--bogus-flag")
    assert_one_line_error(proc.returncode, proc.stderr, "--bogus-flag")
    assert proc.stdout == "" and not (tmp_path / "r").exists()


def test_process_exit_code_for_a_corrupt_checkpoint(run: Path):
    """`python -m metaloop eval` of a corrupt checkpoint exits 2 with exactly one stderr line."""
    _flip_tensor_bytes(run)
    before = snapshot(run)
    proc = _python_m("eval", run, "--json")
    assert_one_line_error(proc.returncode, proc.stderr, "sha256")
    assert proc.stdout == "" and snapshot(run) == before


# ------------------------------------------------------------------------------- defects found as a new user
def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


@pytest.mark.parametrize(("argv", "needle"), [
    pytest.param(lambda t: ["--set", "seed=100000000000000000000"], "option 'seed' is at most 4,294,967,295",
                 id="seed-overflow"),
    pytest.param(lambda t: ["--set", "device=mps"], "MPS", id="mps-unavailable",
                 marks=pytest.mark.skipif(torch.backends.mps.is_available(), reason="MPS is available here")),
    pytest.param(lambda t: ["--config", _file(t, "latin1.yaml", "shots: 5 # café".encode("latin-1"))],
                 "not UTF-8 text", id="yaml-latin1"),
    pytest.param(lambda t: ["--config", _file(t, "utf16.yaml", "shots: 5\n".encode("utf-16"))], "not UTF-8 text",
                 id="yaml-utf16"),
    pytest.param(lambda t: ["--config", _file(t, "binary.yaml", bytes(range(256)))], "not UTF-8 text",
                 id="yaml-binary"),
    pytest.param(lambda t: ["--config", _file(t, "twice.yaml", b"shots: 5\nshots: 6\n")],
                 "key 'shots' appears twice (lines 1 and 2)", id="yaml-duplicate-key"),
])
def test_new_user_train_defects_are_one_line_errors(tmp_path: Path, cli, argv, needle):
    """Each used to end in a traceback, or to be accepted silently."""
    out = tmp_path / "run"
    code, _, err = cli("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", out, "--quiet",
                       *set_args(TINY), *argv(tmp_path))
    assert_one_line_error(code, err, needle)
    assert not out.exists()


def test_out_that_is_a_file_or_under_one(tmp_path: Path, cli):
    """train and compare refuse an --out that is a file or lies under one (each was a traceback)."""
    afile = tmp_path / "notes.txt"
    afile.write_text("mine")
    for out, needle in [(afile, "exists and is not a directory"), (afile / "run", "is a file, not a folder")]:
        code, _, err = cli("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", out, "--quiet")
        assert_one_line_error(code, err, needle)
    code, _, err = cli("compare", "--benchmark", "sinusoid", "--algos", "maml", "--out", afile / "c")
    assert_one_line_error(code, err, "is a file, not a folder")
    code, _, err = cli("compare", "--benchmark", "sinusoid", "--algos", "maml", "--out", afile)
    assert_one_line_error(code, err, str(afile))
    assert afile.read_text() == "mine"


def test_cache_that_is_a_file(tmp_path: Path, cli, monkeypatch):
    afile = tmp_path / "cache"
    afile.write_text("")
    monkeypatch.setenv("METALOOP_CACHE", str(afile))
    from metaloop.data import cache_dir
    from metaloop.errors import MetaloopError

    with pytest.raises(MetaloopError, match=r"cache folder .* \(\$METALOOP_CACHE\) is a file"):
        cache_dir()
    monkeypatch.delenv("METALOOP_DATA", raising=False)  # so that a download goes into the cache
    code, _, err = cli("data", "download", "clinc150")
    assert_one_line_error(code, err, "($METALOOP_CACHE) is a file")
    assert afile.read_text() == ""

def test_compare_checks_every_option_before_training(tmp_path: Path, cli):
    """A bad --set reaches the user as one line from compare itself, before any child process trains."""
    out = tmp_path / "c"
    code, _, err = cli("compare", "--benchmark", "sinusoid", "--algos", "maml,fomaml", "--out", out,
                       "--set", "iterations=abc")
    assert_one_line_error(code, err, "option 'iterations' must be int")
    assert not out.exists()


@pytest.mark.parametrize(("steps", "needle"), [("1,,2", "expected comma-separated integers"),
                                               ("5,5", "5 is given twice")])
def test_eval_steps_must_be_distinct_integers(run: Path, cli, steps, needle):
    code, _, err = cli("eval", run, "--steps", steps)
    assert_one_line_error(code, err, needle)


def test_eval_result_path_that_is_a_folder(run: Path, cli):
    (run / "eval.json").mkdir()
    code, _, err = cli("eval", run, "--no-plots")
    assert_one_line_error(code, err, "is a folder")


def test_resume_removes_the_temp_files_of_a_killed_write(run: Path, cli):
    """A kill during a checkpoint write leaves `.checkpoint-*.tmp` files; the next train in the folder (it holds
    the lock) removes them, and nothing else."""
    leftovers = [run / ".checkpoint-30.safetensors.abc123.tmp", run / ".checkpoint.json.x9.tmp"]
    for path in leftovers:
        path.write_bytes(b"partial")
    mine = run / ".notes.tmp"
    mine.write_text("keep")
    code, _, err = cli(*train_argv(run, run.parent, sets=["iterations=30"]))
    assert code == 0, err
    assert not any(p.exists() for p in leftovers) and mine.read_text() == "keep"


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux's /proc")
def test_out_that_cannot_be_created(cli):
    """/proc passes os.access's write check (as root) but refuses a new folder: one line for train and compare
    (each was a traceback)."""
    for argv in (["train", "--algo", "maml", "--benchmark", "sinusoid", "--quiet"],
                 ["compare", "--benchmark", "sinusoid", "--algos", "maml"]):
        code, _, err = cli(*argv, "--out", "/proc/metaloop-test-run", "--set", "iterations=1")
        assert_one_line_error(code, err, "cannot create the folder")


def test_demo_runs_what_the_benchmark_declares(tmp_path: Path, cli):
    """`metaloop demo` meta-trains the algorithm that the sinusoid presets declare, tests it and prints the
    published figures they give; the LLM demo is declared the same way."""
    from metaloop.algorithms import ALGORITHMS
    from metaloop.benchmarks import get_benchmark

    spec = get_benchmark("sinusoid").demo
    assert spec["algo"] in ALGORITHMS and get_benchmark("llm-tasks").demo["algo"] in ALGORITHMS
    code, out, _ = cli("demo", "--iterations", "3", "--out", str(tmp_path / "demo"))
    assert code == 0
    assert f"{spec['algo']}, 3 meta-steps (this run)" in out and spec["anchor"] in out
    assert (tmp_path / "demo" / "checkpoint.json").exists()
