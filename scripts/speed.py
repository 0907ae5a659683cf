"""Time one meta-step of second-order MAML in both execution paths, against a plain PyTorch loop.

    python scripts/speed.py          # writes docs/performance.md (about 5 minutes on 2 cores)

Two setups (the ones measured for the peer libraries in shared/research/peers-speed.md):
* sinusoid: 1-40-40-1 MLP, meta-batch 25, 10 support + 10 query points, 1 inner step (lr 0.01);
* omniglot-conv4: Conv-4 with BatchNorm (transductive), random 28×28 data, 5-way 1-shot, 15 queries per
  class, meta-batch 32, 1 inner step (lr 0.4).

Implementations:
* plain: the reference loop, written out by hand (functional_call + autograd.grad(create_graph=True),
  backward per task), as every peer library does it;
* loop / vmap: metaloop's MAML with path="loop" / path="vmap";
* loop, meta-batch 1: metaloop's loop path on one task, to show what one task's graph costs.

Each implementation runs in its own process (so its peak RSS is its own), with 2 threads; the step is
zero_grad + meta-gradient over all tasks + Adam step. We report the median, min and max over the timed
steps, and the peak RSS (ru_maxrss) minus the RSS before the first step.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, command_line, machine_summary, replace_block  # noqa: E402

PERF_HEADER = "# Performance\n\nEvery number on this page is written by a script in `benchmarks/`; none is typed in by hand.\n"

SETUPS = {"sinusoid": {"reps": 200}, "omniglot-conv4": {"reps": 7}}
IMPLS = ["plain", "loop", "vmap", "loop-mb1"]


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(setup: str, impl: str, reps: int) -> dict:
    import torch
    import torch.nn.functional as F
    from torch.func import functional_call

    from metaloop.algorithms import MAML
    from metaloop.models.conv import Conv4
    from metaloop.models.mlp import MLP
    from metaloop.tasks.base import TaskBatch
    from metaloop.tasks.sinusoid import SinusoidTasks

    torch.set_num_threads(2)
    torch.manual_seed(0)
    if setup == "sinusoid":
        model, loss_fn, lr, tasks = MLP(1, [40, 40], 1), F.mse_loss, 0.01, 25
        source = SinusoidTasks(10, 10, seed=0)
        batches = [source.batch(i * tasks, tasks) for i in range(2)]
    else:
        model, loss_fn, lr, tasks = Conv4(1, 5), F.cross_entropy, 0.4, 32
        ways, queries = 5, 15
        batches = [
            TaskBatch(torch.randn(tasks, ways, 1, 28, 28), torch.arange(ways).repeat(tasks, 1),
                      torch.randn(tasks, ways * queries, 1, 28, 28),
                      torch.arange(ways).repeat_interleave(queries).repeat(tasks, 1))
            for _ in range(2)
        ]
    if impl == "loop-mb1":
        batches = [b.slice(0, 1) for b in batches]
    if impl == "plain":
        params = dict(model.named_parameters())
        opt = torch.optim.Adam(params.values(), lr=1e-3)
        model.train()

        def step(batch: TaskBatch) -> None:
            opt.zero_grad()
            n = len(batch)
            for i in range(n):
                (sx, sy), (qx, qy) = batch.task(i)
                inner = loss_fn(functional_call(model, params, (sx,)), sy)
                grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
                fast = {k: p - lr * g for (k, p), g in zip(params.items(), grads)}
                (loss_fn(functional_call(model, fast, (qx,)), qy) / n).backward()
            opt.step()
    else:
        path = "loop" if impl.startswith("loop") else "vmap"
        learner = MAML(model, loss_fn, inner_lr=lr, inner_steps=1, path=path)
        opt = learner.make_optimizer(1e-3)

        def step(batch: TaskBatch) -> None:
            learner.meta_step(batch, opt)

    base = _rss_mb()
    step(batches[1])  # warm-up
    times = []
    for r in range(reps):
        t0 = time.perf_counter()
        step(batches[r % 2])
        times.append(time.perf_counter() - t0)
    return {"setup": setup, "impl": impl, "times": times, "base_rss_mb": base, "peak_rss_mb": _rss_mb(),
            "tasks": len(batches[0])}


def pooled(runs: list[dict]) -> dict:
    """Merge the processes of one implementation: all timed steps pooled, the largest peak RSS."""
    times = sorted(t for r in runs for t in r["times"])
    worst = max(runs, key=lambda r: r["peak_rss_mb"] - r["base_rss_mb"])
    return {**{k: runs[0][k] for k in ("setup", "impl", "tasks")}, "median": times[len(times) // 2],
            "min": times[0], "max": times[-1], "reps": len(times), "processes": len(runs),
            "base_rss_mb": worst["base_rss_mb"], "peak_rss_mb": worst["peak_rss_mb"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("SETUP", "IMPL", "REPS"), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]))))
        return
    command = command_line()
    rows = []
    for setup, spec in SETUPS.items():
        # Two passes in opposite orders for the implementations compared head to head, so that drift
        # in the machine's speed does not favour one of them; each pass is its own process.
        order = IMPLS + ["loop", "plain"]
        if setup == "sinusoid":  # cheap: a third and fourth pass
            order += ["vmap", "plain", "loop", "vmap", "loop", "plain", "vmap"]
        runs: dict[str, list[dict]] = {}
        for impl in order:
            reps = spec["reps"] if impl != "vmap" or setup == "sinusoid" else 3
            out = subprocess.run([sys.executable, __file__, "--child", setup, impl, str(reps)],
                                 check=True, capture_output=True, text=True).stdout
            runs.setdefault(impl, []).append(json.loads(out.strip().splitlines()[-1]))
        for impl in IMPLS:
            rows.append(pooled(runs[impl]))
            print(rows[-1], flush=True)
    lines = [
        "# Performance",
        "",
        "Written by `scripts/speed.py`; no number here is typed in by hand.",
        "",
        f"Command: `{command.strip()}`. {machine_summary()} 2 threads.",
        "",
        "One meta-step of second-order MAML (zero_grad, meta-gradient over the meta-batch, Adam step); "
        "median, min and max over the timed steps (each process times its steps after one warm-up step; "
        "plain and loop run in two processes on Conv-4 and four on sinusoid, in alternating orders, and "
        "their steps are pooled, since this VM's speed drifts). *Graph memory* is the peak RSS minus the RSS just before the first step (imports, "
        "model and data excluded).",
        "",
        "| setup | implementation | tasks | median s/step | min | max | timed steps | vs plain loop | peak RSS MB "
        "| graph memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for setup in SETUPS:
        plain = next(r for r in rows if r["setup"] == setup and r["impl"] == "plain")
        for r in (r for r in rows if r["setup"] == setup):
            ratio = r["median"] / plain["median"]
            lines.append(
                f"| {setup} | {r['impl']} | {r['tasks']} | {r['median']:.4f} | {r['min']:.4f} | {r['max']:.4f} | "
                f"{r['reps']} | {ratio:.2f}× | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['base_rss_mb']:.0f} |"
            )
    get = {(r["setup"], r["impl"]): r for r in rows}
    sin_speedup = get[("sinusoid", "loop")]["median"] / get[("sinusoid", "vmap")]["median"]
    conv_slow = get[("omniglot-conv4", "vmap")]["median"] / get[("omniglot-conv4", "loop")]["median"]
    conv_loop = get[("omniglot-conv4", "loop")]["median"] / get[("omniglot-conv4", "plain")]["median"]
    sin_loop = get[("sinusoid", "loop")]["median"] / get[("sinusoid", "plain")]["median"]

    def mem(impl: str) -> float:
        r = get[("omniglot-conv4", impl)]
        return r["peak_rss_mb"] - r["base_rss_mb"]

    lines += [
        "",
        "## Findings",
        "",
        f"- sinusoid: the vmap path is {sin_speedup:.1f}× faster than the loop path (target: ≥ 5×), and "
        "`path=auto` picks it there. The loop path takes "
        f"{sin_loop:.2f}× the plain loop's time: on a model this small, metaloop's per-task bookkeeping "
        "(parameter dicts, the inner-loop generator) is visible.",
        f"- Conv-4: metaloop's loop path takes {conv_loop:.2f}× the time of the hand-written plain loop "
        "(target: no slower; the peers measured here spread 11–25% from run to run).",
        f"- Conv-4: the vmap path is {conv_slow:.1f}× slower than the loop path on this CPU, and needs the "
        "whole meta-batch's graph at once (with decomposed BatchNorm for correct second-order gradients).",
        f"- Conv-4 graph memory: loop path {mem('loop'):.0f} MB for 32 tasks against {mem('loop-mb1'):.0f} MB "
        f"for one task; plain loop {mem('plain'):.0f} MB; vmap path {mem('vmap'):.0f} MB. The loop path frees "
        "each task's graph with its backward before the next task starts.",
        "",
        "## Which path",
        "",
        "`path=auto` (the default) picks **vmap** when the model holds parameters only in `nn.Linear` layers "
        "(small MLPs, where per-task work is tiny and Python overhead dominates), and **loop** otherwise "
        "(conv nets, norms, transformers). Force one with `--set path=loop|vmap`; under vmap, "
        "`--set chunk_size=N` bounds memory. Both paths give the same meta-gradient (tested in float64).",
    ]
    start = lines.index(next(line for line in lines if line.startswith("Command:")))
    replace_block(args.out, "speed", "\n".join(["## One meta-step against a plain PyTorch loop", "", *lines[start:]]),
                  header=PERF_HEADER)
    print(f"wrote the speed block of {args.out}")


if __name__ == "__main__":
    main()
