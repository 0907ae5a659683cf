"""Time one meta-step of second-order MAML in each execution path, against a plain PyTorch loop and a peer.

    python scripts/speed.py          # writes the speed block of docs/performance.md (about 10 minutes on 2 cores)

Setups (the first two are the ones measured for the peer libraries in shared/research/peers-speed.md):
* sinusoid: 1-40-40-1 MLP, meta-batch 25, 10 support + 10 query points, 1 inner step (lr 0.01);
* omniglot-conv4: Conv-4 with BatchNorm (transductive), random 28×28 data, 5-way 1-shot, 15 queries per
  class, meta-batch 32, 1 inner step (lr 0.4); omniglot-conv4-5steps: the same with 5 inner steps;
  omniglot-conv4-20way: 20-way 1-shot.

Implementations:
* plain: the reference loop, written out by hand (functional_call + autograd.grad(create_graph=True),
  backward per task), as every peer library does it;
* higher: the peer library higher (Grefenstette et al. 2019; `pip install higher`), its innerloop_ctx per task
  (skipped, and said so, when it is not installed);
* loop / vmap / batched: metaloop's MAML with path="loop" / "vmap" / "batched" (the whole meta-batch at once);
  batched-c2: path="batched" with chunk_size=2 (two tasks per call, a backward per chunk);
* loop, meta-batch 1: metaloop's loop path on one task, to show what one task's graph costs.

Each implementation runs in its own process (so its peak RSS is its own), with 2 threads; the step is
zero_grad + meta-gradient over all tasks + Adam step. We report the median, min and max over the timed
steps, and the peak RSS (ru_maxrss) minus the RSS before the first step. Then a profile (torch.profiler, top
operators by self CPU time) of one Conv-4 meta-step on the loop path and on the batched path.
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

PERF_HEADER = "# Performance\n\nEvery number on this page is written by a script in `scripts/`; none is typed in by hand.\n"

#: setup -> (timed steps per process, the implementations, in the order of the first pass)
SETUPS = {
    "sinusoid": (200, ["plain", "loop", "vmap", "batched", "higher", "loop-mb1"]),
    "omniglot-conv4": (7, ["plain", "loop", "vmap", "batched", "batched-c2", "higher", "loop-mb1"]),
    "omniglot-conv4-5steps": (4, ["plain", "loop", "batched-c2", "higher"]),
    "omniglot-conv4-20way": (3, ["plain", "loop", "batched-c2"]),
}
#: compared head to head: a second pass in the opposite order (its steps pooled with the first's)
SECOND_PASS = ["batched-c2", "loop", "plain"]
PROFILED = ("loop", "batched-c2")


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(setup: str, impl: str, reps: int, profile: bool = False) -> dict:
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
    steps = 5 if setup.endswith("5steps") else 1
    if setup == "sinusoid":
        model, loss_fn, lr, tasks = MLP(1, [40, 40], 1), F.mse_loss, 0.01, 25
        source = SinusoidTasks(10, 10, seed=0)
        batches = [source.batch(i * tasks, tasks) for i in range(2)]
    else:
        ways = 20 if setup.endswith("20way") else 5
        model, loss_fn, lr, tasks, queries = Conv4(1, ways), F.cross_entropy, 0.4, 32, 15
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
                fast = params
                for _ in range(steps):
                    inner = loss_fn(functional_call(model, fast, (sx,)), sy)
                    grads = torch.autograd.grad(inner, list(fast.values()), create_graph=True)
                    fast = {k: p - lr * g for (k, p), g in zip(fast.items(), grads)}
                (loss_fn(functional_call(model, fast, (qx,)), qy) / n).backward()
            opt.step()
    elif impl == "higher":
        try:
            import higher
        except ImportError:
            return {"setup": setup, "impl": impl, "missing": "pip install higher"}
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        inner_opt = torch.optim.SGD(model.parameters(), lr=lr)
        model.train()

        def step(batch: TaskBatch) -> None:
            opt.zero_grad()
            n = len(batch)
            for i in range(n):
                (sx, sy), (qx, qy) = batch.task(i)
                with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
                    for _ in range(steps):
                        diffopt.step(loss_fn(fmodel(sx), sy))
                    (loss_fn(fmodel(qx), qy) / n).backward()
            opt.step()
    else:
        path = "loop" if impl.startswith("loop") else impl.split("-")[0]
        chunk = int(impl.split("-c")[1]) if "-c" in impl else None
        learner = MAML(model, loss_fn, inner_lr=lr, inner_steps=steps, path=path, chunk_size=chunk)
        opt = learner.make_optimizer(1e-3)

        def step(batch: TaskBatch) -> None:
            learner.meta_step(batch, opt)

    base = _rss_mb()
    step(batches[1])  # warm-up
    if profile:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as profiler

        with profiler(activities=[ProfilerActivity.CPU]) as prof:
            step(batches[0])
        ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in ops)
        return {"setup": setup, "impl": impl, "total_ms": total / 1000,
                "top": [[e.key, e.self_cpu_time_total / 1000, e.count] for e in ops[:8]]}
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


def run_child(setup: str, impl: str, reps: int, *extra: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", setup, impl, str(reps), *extra],
                         check=True, capture_output=True, text=True).stdout
    return json.loads([line for line in out.splitlines() if line.startswith("{")][-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", nargs=3, metavar=("SETUP", "IMPL", "REPS"), help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], int(args.child[2]), args.profile)))
        return
    command = command_line()
    rows, missing = [], {}
    for setup, (reps, impls) in SETUPS.items():
        # A second pass in the opposite order for the implementations compared head to head, so that drift in
        # the machine's speed does not favour one of them; each pass is its own process.
        order = impls + [i for i in SECOND_PASS if i in impls]
        if setup == "sinusoid":  # cheap: a third and fourth pass
            order += ["vmap", "plain", "batched", "loop", "vmap", "batched", "plain"]
        runs: dict[str, list[dict]] = {}
        for impl in order:
            result = run_child(setup, impl, reps if impl != "vmap" or setup == "sinusoid" else 3)
            if "missing" in result:
                missing[impl] = result["missing"]
                continue
            runs.setdefault(impl, []).append(result)
        for impl in impls:
            if impl in runs:
                rows.append(pooled(runs[impl]))
                print(rows[-1], flush=True)
    profiles = [run_child("omniglot-conv4", impl, 1, "--profile") for impl in PROFILED]
    lines = [
        f"Command: `{command.strip()}`. {machine_summary()} 2 threads.",
        "",
        "One meta-step of second-order MAML (zero_grad, meta-gradient over the meta-batch, Adam step); "
        "median, min and max over the timed steps (each process times its steps after one warm-up step; "
        "plain, loop and batched-c2 run in two processes, four on sinusoid with vmap and batched, in alternating "
        "orders, and their steps are pooled, since this VM's speed drifts). *Graph memory* is the peak RSS minus "
        "the RSS just before the first step (imports, model and data excluded).",
        "",
        "| setup | implementation | tasks | median s/step | min | max | timed steps | vs plain loop | peak RSS MB "
        "| graph memory MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    get = {(r["setup"], r["impl"]): r for r in rows}
    for setup in SETUPS:
        plain = get[(setup, "plain")]
        for r in (r for r in rows if r["setup"] == setup):
            ratio = r["median"] / plain["median"]
            lines.append(
                f"| {setup} | {r['impl']} | {r['tasks']} | {r['median']:.4f} | {r['min']:.4f} | {r['max']:.4f} | "
                f"{r['reps']} | {ratio:.2f}× | {r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] - r['base_rss_mb']:.0f} |"
            )
    if missing:
        lines += ["", "Not run: " + "; ".join(f"{impl} ({how})" for impl, how in missing.items()) + "."]

    def ratio(setup: str, impl: str, to: str = "plain") -> float:
        return get[(setup, impl)]["median"] / get[(setup, to)]["median"]

    def mem(impl: str) -> float:
        r = get[("omniglot-conv4", impl)]
        return r["peak_rss_mb"] - r["base_rss_mb"]

    sin_ms = 1000 * get[("sinusoid", "batched")]["median"]
    lines += [
        "",
        "## Findings",
        "",
        f"- sinusoid: the batched path takes {sin_ms:.2f} ms per meta-step (target: ≤ 2 ms), "
        f"{ratio('sinusoid', 'vmap', 'batched'):.2f}× faster than vmap and "
        f"{ratio('sinusoid', 'loop', 'batched'):.1f}× faster than the loop path; `path=auto` picks it there. "
        f"The loop path takes {ratio('sinusoid', 'loop'):.2f}× the plain loop's time.",
        f"- Conv-4, 5-way 1-shot, 1 inner step: loop {ratio('omniglot-conv4', 'loop'):.2f}×, batched with two tasks "
        f"per call {ratio('omniglot-conv4', 'batched-c2'):.2f}×, the whole meta-batch in one call "
        f"{ratio('omniglot-conv4', 'batched'):.2f}×, vmap {ratio('omniglot-conv4', 'vmap'):.2f}× the plain loop "
        "(target for the batched path: ≤ 0.5×, not met on this CPU). Our reading of the profiles below: a task's "
        "query pass (75 images) already fills both cores, so stacking tasks buys no parallelism; a whole "
        "meta-batch's activations no longer fit in cache for the memory-bound operators (max-pool, BatchNorm, "
        "ReLU), and the convolutions already run near this machine's matmul rate. Two tasks per call, with ReLU "
        "after max-pool, is where the batched path stands level with or ahead of the loop.",
        f"- Conv-4 at 5 inner steps: loop {ratio('omniglot-conv4-5steps', 'loop'):.2f}×, batched-c2 "
        f"{ratio('omniglot-conv4-5steps', 'batched-c2'):.2f}×; 20-way: loop {ratio('omniglot-conv4-20way', 'loop'):.2f}×, "
        f"batched-c2 {ratio('omniglot-conv4-20way', 'batched-c2'):.2f}×.",
    ]
    if ("omniglot-conv4", "higher") in get:
        lines.append(
            f"- The peer higher, in the same run: {ratio('omniglot-conv4', 'higher'):.2f}× the plain loop on Conv-4 "
            f"(5 inner steps: {ratio('omniglot-conv4-5steps', 'higher'):.2f}×), {ratio('sinusoid', 'higher'):.2f}× "
            "on sinusoid.")
    lines += [
        f"- Conv-4 graph memory: loop path {mem('loop'):.0f} MB for 32 tasks against {mem('loop-mb1'):.0f} MB "
        f"for one task; plain loop {mem('plain'):.0f} MB; batched-c2 {mem('batched-c2'):.0f} MB; batched "
        f"{mem('batched'):.0f} MB; vmap path {mem('vmap'):.0f} MB. The loop path frees each task's graph with "
        "its backward before the next task starts; the batched path holds a chunk's.",
        "",
        "Profile of one Conv-4 meta-step (5-way 1-shot, 1 inner step, meta-batch 32; torch.profiler, operators by "
        "self CPU time; one step each, so noisier than the table, and the profiler's per-operator overhead weighs "
        "more on the loop's many small calls):",
        "",
    ]
    for prof in profiles:
        lines += [f"{prof['impl']} (total {prof['total_ms']:.0f} ms):", "",
                  "| operator | self CPU ms | share | calls |", "|---|---|---|---|"]
        lines += [f"| `{name}` | {ms:.0f} | {100 * ms / prof['total_ms']:.0f}% | {count} |"
                  for name, ms, count in prof["top"]]
        lines.append("")
    lines += [
        "## Which path",
        "",
        "`path=auto` (the default) picks **batched** when the model holds parameters only in `nn.Linear` layers "
        "and the algorithm has a batched path (the MAML family), **vmap** for such models otherwise, and **loop** "
        "for everything else (conv nets, norms, transformers). Force one with `--set path=loop|vmap|batched`; "
        "under vmap and batched, `--set chunk_size=N` bounds memory. All paths give the same meta-gradient "
        "(tested in float64).",
    ]
    replace_block(args.out, "speed", "\n".join(["## One meta-step against a plain PyTorch loop", "", *lines]),
                  header=PERF_HEADER)
    print(f"wrote the speed block of {args.out}")


if __name__ == "__main__":
    main()
