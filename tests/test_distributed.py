"""Distributed meta-training on torch.distributed (gloo, 2 processes on the CPU): the meta-gradient, the
checkpoints, a resume with another number of processes, sharded evaluation, a killed process, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from metaloop.algorithms import LEO
from metaloop.algorithms.maml_rl import MAMLRL
from metaloop.benchmarks import build_learner, resolve_config
from metaloop.distributed import World, check_limits, share, sync_gradients
from metaloop.errors import MetaloopError
from metaloop.models.policy import GaussianMLP
from metaloop.tasks.rl import nav2d_rollouts

REPO = Path(__file__).resolve().parents[1]
CASES = [("maml", "sinusoid", {"hidden": [8]}), ("reptile", "sinusoid", {"hidden": [8]}),
         ("maml", "omniglot-5w1s", {"filters": 4, "path": "batched", "chunk_size": 2}),
         ("protonet", "omniglot-5w1s", {"filters": 4}), ("metaoptnet-ridge", "omniglot-5w1s", {"filters": 4}),
         ("maml", "rl-nav2d", {"policy_hidden": [8], "rollouts": 4, "horizon": 8})]
TASKS = 5  # uneven: 3 + 2


def learner_and_batch(algo: str, bench: str, overrides: dict):
    cfg = resolve_config(algo, bench, overrides={**overrides, "meta_batch_size": TASKS})
    learner, benchmark = build_learner(cfg)
    learner = learner.double()
    batch = benchmark.train_tasks(cfg).batch(0, TASKS).to("cpu", torch.float64)
    return learner, batch


def _worker(rank: int, size: int, init: str, out: str, case: tuple) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    try:
        learner, batch = learner_and_batch(*case)
        learner.gradient_sync = sync_gradients
        start, stop = share(TASKS, World(rank, size))
        loss = learner.local_meta_gradient(batch.slice(start, stop) if stop > start else None)
        if rank == 0:
            torch.save({"loss": loss, **{n: p.grad for n, p in learner.named_parameters() if p.grad is not None}}, out)
        dist.barrier()  # both done communicating before either tears gloo down (a teardown race aborted one, rarely)
    finally:
        dist.destroy_process_group()


def test_shares_cover_the_meta_batch_once():
    for count in (1, 4, 5, 7):
        for size in (1, 2, 3, 8):
            parts = [share(count, World(r, size)) for r in range(size)]
            assert [i for a, b in parts for i in range(a, b)] == list(range(count))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_two_processes_give_the_meta_gradient_of_one(case, tmp_path):
    """float64: the all-reduced meta-gradient of 3 + 2 tasks equals one process's of 5 to 1e-12."""
    learner, batch = learner_and_batch(*case)
    loss = learner.meta_gradient(batch)
    want = {n: p.grad for n, p in learner.named_parameters() if p.grad is not None}
    out = tmp_path / "grads.pt"
    mp.start_processes(_worker, args=(2, f"file://{tmp_path / 'rdzv'}", str(out), case), nprocs=2,
                       start_method="spawn")
    got = torch.load(out)
    assert abs(got.pop("loss") - loss) < 1e-12 * max(1.0, abs(loss))
    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-12, atol=1e-14)


def metaloop(*args, check=True, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "metaloop", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=300, **kw)
    if check:
        assert done.returncode == 0, done.stderr[-2000:]
    return done


SETS = ["--set", "hidden=[8]", "--set", "meta_batch_size=5", "--set", "checkpoint_every=10", "--set", "log_every=5",
        "--set", "eval_episodes=30", "--quiet"]


def train(out: Path, iterations: int, nproc: int, *extra) -> subprocess.CompletedProcess:
    return metaloop("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", out, "--set",
                    f"iterations={iterations}", *SETS, "--resume", "--nproc", nproc, *extra)


def same_weights(a: Path, b: Path, iteration: int, tol: float = 2e-6) -> None:
    ta, tb = (load_file(str(p / f"checkpoint-{iteration}.safetensors")) for p in (a, b))
    assert ta.keys() == tb.keys()
    for key in ta:
        torch.testing.assert_close(ta[key], tb[key], rtol=tol, atol=tol)


def test_train_resume_and_eval_with_two_processes(tmp_path):
    """The checkpoint of 2 processes equals 1 process's (float32, up to the order of sums); 2 processes for 10
    steps then 1 to 20 equals 20 straight; eval --nproc 2 gives the same table as one process."""
    one, two, mixed = tmp_path / "one", tmp_path / "two", tmp_path / "mixed"
    train(one, 20, 1)
    done = train(two, 20, 2)
    assert done.stdout.count("run written") == 1  # the first process alone prints, and writes
    same_weights(one, two, 20)
    assert len((two / "metrics.jsonl").read_text().splitlines()) == 4
    train(mixed, 10, 2)
    train(mixed, 20, 1)
    same_weights(one, mixed, 20)
    single = json.loads(metaloop("eval", one, "--json", "--no-plots").stdout)
    shared = json.loads(metaloop("eval", one, "--json", "--no-plots", "--nproc", "2").stdout)
    assert single["steps"] == shared["steps"]


def test_more_processes_than_tasks(tmp_path):
    """3 processes for 2 tasks: one takes none at each step (said once), and the result is one process's."""
    one, three = tmp_path / "one", tmp_path / "three"
    train(one, 6, 1, "--set", "meta_batch_size=2")
    done = train(three, 6, 3, "--set", "meta_batch_size=2")
    assert "1 of them take no task" in done.stderr
    same_weights(one, three, 6)


def test_a_killed_process_stops_the_others(tmp_path):
    """SIGKILL of one worker: the launcher stops the other and exits with one line naming the process; the last
    checkpoint is intact and --resume continues."""
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "metaloop", "train", "--algo", "maml", "--benchmark", "sinusoid",
                             "--out", str(out), "--set", "iterations=1000000", *SETS, "--nproc", "2"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not (out / "checkpoint.json").exists():
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[-1]), signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "metaloop: error: process" in err and "of 2" in err, err
    iteration = json.loads((out / "checkpoint.json").read_text())["iteration"]
    assert iteration > 0
    done = metaloop("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", out, "--set",
                    f"iterations={iteration + 5}", *SETS, "--resume")
    assert json.loads((out / "checkpoint.json").read_text())["iteration"] == iteration + 5, done.stderr


@pytest.mark.parametrize(("args", "needle"), [
    (["--nproc", "0"], "--nproc"),
    (["--nproc", "2", "--set", "device=cuda"], "CUDA"),
    (["--nproc", "2", "--set", "inner_lr=inf"], "of 2: --set: option 'inner_lr' must be a finite number"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    if "device=cuda" in args and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    done = metaloop("train", "--algo", "maml", "--benchmark", "sinusoid", "--out", tmp_path / "r", "--quiet", *args,
                    check=False)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and needle in done.stderr, done.stderr
    assert not (tmp_path / "r").exists()


def test_learners_that_cannot_share_a_meta_batch_say_so():
    """A learner declares why it cannot run on several processes (LEO's noise stream, MAML-RL's trpo step)."""
    two = World(rank=0, size=2, local_rank=0, local_size=2)
    trpo = MAMLRL(GaussianMLP(2, 2, [4]), environment=nav2d_rollouts, outer_step="trpo")
    with pytest.raises(MetaloopError, match=r"option 'outer_step': trpo does not run on more than one process"):
        check_limits(trpo, two)
    check_limits(trpo, World())  # one process: fine
    check_limits(MAMLRL(GaussianMLP(2, 2, [4]), environment=nav2d_rollouts), two)
    assert "leo" in LEO.single_process_only
