"""Meta-RL speed: environment steps per second, and one MAML-RL meta-iteration split into sampling, inner step
and outer step, for rl-nav2d and (with the rl extra) rl-cheetah-dir, at their presets. Writes the `rl-speed` block
of docs/performance.md.

    python scripts/rl_speed.py            # about 2 minutes on 2 cores

Environment steps: a batch of the preset's size (tasks × rollouts) for the preset's horizon under a random
Gaussian policy, counted as batch × horizon steps, median of `--reps` runs. The meta-iteration: `--reps` meta-steps
of `maml` (second order, Adam outer step) and of `maml` with `outer_step=trpo` (its exact Fisher, and the adapted
policies' own on 5 rollouts per task), after one warm-up step; sampling
and the inner step are timed inside the step (wrapping the learner's `sample` and `step`), the outer step is the
rest. Medians; one process, the torch threads it is given (`--threads`, default 2).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, command_line, machine_summary, replace_block  # noqa: E402

from metaloop.benchmarks import build_learner, get_benchmark, resolve_config  # noqa: E402
from metaloop.errors import MetaloopError  # noqa: E402

PERF_HEADER = "# Performance\n\nEvery number on this page is written by a script in `benchmarks/`; none is typed in by hand.\n"
BENCHMARKS = ["rl-nav2d", "rl-cheetah-dir"]


def env_steps_per_second(benchmark: str, reps: int) -> tuple[float, int]:
    cfg = resolve_config("maml", benchmark)
    bench = get_benchmark(benchmark)
    tasks = bench.train_tasks(cfg).batch(0, cfg["meta_batch_size"]).support_x[:, 0]
    count, horizon = cfg["rollouts"], cfg["horizon"]
    act_dim = build_learner(cfg)[0].model.log_std.shape[0]
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        bench.environment(lambda obs, t: torch.randn(*obs.shape[:-1], act_dim), tasks, count, horizon)
        times.append(time.perf_counter() - t0)
    steps = len(tasks) * count * horizon
    return steps / statistics.median(times), steps


def meta_iteration(benchmark: str, reps: int, extra: list[str]) -> dict[str, float]:
    cfg = resolve_config("maml", benchmark, overrides=extra)
    learner, bench = build_learner(cfg)
    optimizer = learner.make_optimizer(cfg["outer_lr"])
    source = bench.train_tasks(cfg)
    spent = {"sample": 0.0, "inner": 0.0}

    def timed(name, fn):  # noqa: ANN001, ANN202
        def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] += time.perf_counter() - t0
        return wrapper

    learner.sample, learner.step = timed("sample", learner.sample), timed("inner", learner.step)
    rows = []
    for i in range(reps + 1):
        spent.update(sample=0.0, inner=0.0)
        batch = source.batch(i * cfg["meta_batch_size"], cfg["meta_batch_size"])
        t0 = time.perf_counter()
        learner.meta_step(batch, optimizer)
        total = time.perf_counter() - t0
        if i:  # the first step warms up
            rows.append({"total": total, "sample": spent["sample"], "inner": spent["inner"],
                         "outer": total - spent["sample"] - spent["inner"]})
    return {k: statistics.median(r[k] for r in rows) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    lines = ["## Meta-RL speed", "", f"Command: `{command_line()}`. {machine_summary()}", "",
             "| benchmark | batch (tasks × rollouts × horizon) | env steps/s | outer step | meta-iteration | "
             "sampling | inner step | outer step |", "|---|---|---|---|---|---|---|---|"]
    for benchmark in BENCHMARKS:
        try:
            rate, steps = env_steps_per_second(benchmark, args.reps)
        except MetaloopError as exc:  # the rl extra is missing
            lines.append(f"| {benchmark} | {exc} | | | | | | |")
            continue
        cfg = resolve_config("maml", benchmark)
        shape = f"{cfg['meta_batch_size']} × {cfg['rollouts']} × {cfg['horizon']}"
        for outer, extra in (("adam", []), ("trpo", ["outer_step=trpo"]),
                             ("trpo, adapted Fisher on 5 rollouts", ["outer_step=trpo", "trpo_fisher=adapted",
                                                                     "fisher_rollouts=5"])):
            split = meta_iteration(benchmark, args.reps, extra)
            lines.append(f"| {benchmark} | {shape} | {rate:,.0f} | {outer} | {split['total']:.2f} s | "
                         f"{split['sample']:.2f} s | {split['inner']:.2f} s | {split['outer']:.2f} s |")
            print(lines[-1], flush=True)
    lines += ["", "A meta-iteration samples twice (before and after the inner step) for every task; the inner step "
              "is the vmapped policy gradient with its graph kept (second order); the outer step is the DiCE "
              "objective's backward and Adam, or TRPO's gradient, Fisher-vector products, conjugate gradient and "
              "line search (whose re-runs of the inner step, without a graph, count under inner step)."]
    replace_block(args.results, "rl-speed", "\n".join(lines), header=PERF_HEADER)
    print(f"wrote the rl-speed block of {args.results}")


if __name__ == "__main__":
    main()
