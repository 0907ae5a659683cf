"""scripts/reproduce.py reruns a block's recorded command into a fresh folder and compares its numbers with
the page's within their confidence intervals (a stand-in script serves as the benchmark)."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def page(tmp_path: Path, mean: str) -> Path:
    path = tmp_path / "results.md"
    path.write_text("# Results\n\n<!-- BEGIN fake -->\nCommand: `python tests/fixtures/fake_bench.py --mean 1.0`.\n\n"
                    f"| method | value |\n|---|---|\n| a | {mean} ± 0.10 |\n| b | 2.00 ± 0.20 |\n<!-- END fake -->\n")
    return path


def test_a_rerun_that_agrees_passes_and_the_page_is_untouched(tmp_path):
    results = page(tmp_path, "1.05")
    before = results.read_text()
    done = run("fake", "--check", "--page", str(results), "--keep", str(tmp_path / "rerun"))
    assert done.returncode == 0, done.stderr
    assert "2 of 2 numbers agree" in done.stdout and results.read_text() == before
    assert (tmp_path / "rerun" / "runs").is_dir()  # fresh runs: nothing reused


def test_a_number_outside_the_intervals_fails(tmp_path):
    done = run("fake", "--check", "--page", str(page(tmp_path, "1.50")), "--keep", str(tmp_path / "rerun"))
    assert done.returncode == 1 and "number 1: 1.5 ± 0.1 on the page, 1 ± 0.1 now" in done.stderr


def test_unknown_block_and_shell_commands(tmp_path):
    assert "no block 'nope'" in run("nope", "--page", str(page(tmp_path, "1.0"))).stderr
    shell = tmp_path / "gpu.md"
    shell.write_text("<!-- BEGIN g -->\nCommand: `bash scripts/omniglot_gpu.sh 2.5m`.\n<!-- END g -->\n")
    assert "not a Python benchmark script" in run("g", "--page", str(shell)).stderr


def test_commands_recorded_before_the_scripts_folder_was_renamed_run_from_scripts():
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import reproduce
    finally:
        sys.path.remove(str(REPO / "scripts"))
    assert reproduce.command_of("Command: `python benchmarks/llm.py --budget 3`.") == [
        sys.executable, "scripts/llm.py", "--budget", "3"]
    assert reproduce.command_of("Command: `python scripts/rl.py`.") == [sys.executable, "scripts/rl.py"]


def test_the_ci_sized_sinusoid_block_reproduces(tmp_path):
    """The `sinusoid-ci` block of docs/results.md (MAML, 200 meta-steps, 600 test tasks), rerun from scratch by its
    recorded command: every number agrees with the page within the two intervals (the runs are seeded, so on the
    machine that wrote it they are equal)."""
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), "sinusoid-ci", "--check",
                           "--keep", str(tmp_path / "rerun")], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "4 of 4 numbers agree" in done.stdout, done.stdout[-2000:]
