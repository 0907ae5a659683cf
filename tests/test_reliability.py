"""Reliability, measured: memory stays flat over many meta-steps, and a run killed with SIGKILL at random
moments (while a checkpoint is written too) resumes to the bit-identical final checkpoint."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from metaloop.benchmarks import build_learner, resolve_config

REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not Path("/proc/self/statm").exists(), reason="needs Linux's /proc")
@pytest.mark.parametrize(("algo", "benchmark", "overrides"), [
    ("maml", "sinusoid", {"hidden": [40, 40], "meta_batch_size": 10}),
    ("protonet", "images:{folder}", {"image_size": 16, "filters": 8, "ways": 3, "shots": 2, "queries": 2,
                                     "channels": 1, "meta_batch_size": 1}),
])
def test_memory_stays_flat_over_200_meta_steps(algo, benchmark, overrides, tmp_path):
    """After 50 warm-up steps, 200 more raise the resident memory by less than 20 MB (a leak of one task's
    graph per step would add far more)."""
    if "{folder}" in benchmark:
        import numpy as np
        from PIL import Image

        rng = np.random.default_rng(0)
        for split, classes in (("train", 5), ("test", 3)):
            for c in range(classes):
                (tmp_path / split / f"c{c}").mkdir(parents=True)
                for i in range(6):
                    Image.fromarray(rng.integers(0, 255, (16, 16), dtype=np.uint8)).save(tmp_path / split / f"c{c}" / f"{i}.png")
        benchmark = benchmark.format(folder=tmp_path)
    cfg = resolve_config(algo, benchmark, overrides=overrides)
    learner, bench = build_learner(cfg)
    tasks = bench.train_tasks(cfg)
    optimizer = learner.make_optimizer(cfg["outer_lr"])
    batch = cfg["meta_batch_size"]
    for i in range(50):
        learner.meta_step(tasks.batch(i * batch, batch), optimizer)
    before = rss_mb()
    for i in range(50, 250):
        learner.meta_step(tasks.batch(i * batch, batch), optimizer)
    assert rss_mb() - before < 20, (before, rss_mb())


def _train(out: Path, iterations: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    sets = [f"iterations={iterations}", "hidden=[16]", "meta_batch_size=4", "checkpoint_every=7", "log_every=7"]
    return subprocess.Popen([sys.executable, "-m", "metaloop", "train", "--algo", "maml", "--benchmark", "sinusoid",
                             "--out", str(out), "--resume", "--quiet", *[a for s in sets for a in ("--set", s)]],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _checkpointed(out: Path) -> int:
    pointer = out / "checkpoint.json"
    try:
        return int(json.loads(pointer.read_text())["iteration"])
    except (OSError, ValueError, KeyError):  # none yet
        return 0


def test_kill_9_at_random_moments_then_resume_is_bit_identical(tmp_path):
    """Four SIGKILLs at random moments (the checkpoint is written every 7 steps, so some land in a write), each
    followed by --resume: the final checkpoint equals that of an uninterrupted run, and no temp file is left.
    Each kill waits for the run to have checkpointed a random number of steps past where it resumed, so the
    kills land mid-run however fast or loaded the machine is."""
    iterations = 1200
    straight = tmp_path / "straight"
    assert _train(straight, iterations).wait(timeout=300) == 0
    killed = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    while kills < 4:
        target = _checkpointed(killed) + rng.randint(3, 30) * 7
        proc = _train(killed, iterations)
        deadline = time.time() + 300
        while proc.poll() is None and _checkpointed(killed) < target and time.time() < deadline:
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.05))  # anywhere in the next steps, a checkpoint write among them
        assert proc.poll() is None, "the run ended before its kill"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
    assert _train(killed, iterations).wait(timeout=300) == 0
    a = load_file(str(straight / f"checkpoint-{iterations}.safetensors"))
    b = load_file(str(killed / f"checkpoint-{iterations}.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not [p for p in killed.iterdir() if p.name.endswith(".tmp")]
