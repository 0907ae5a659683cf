"""A small multi-task language model meta-trained from scratch: lm-strings and lm-shakespeare.

    python scripts/lm.py                                      # every method on both benchmarks (presets)
    python scripts/lm.py --benchmarks lm-strings --methods maml pretrain scratch
    python scripts/lm.py --iterations 3 --episodes 10 --runs /tmp/lm-smoke --results /tmp/results.md  # smoke

Methods: MAML, first-order MAML, Reptile and Meta-SGD adapting all weights of a 0.48 M-parameter
byte-level GPT-2; MAML adapting only LoRA adapters (rank 8, α = 32, on the attention projections;
the base weights are meta-learned); the multi-task baseline (`pretrain`: one model trained on the pooled
task data, then fine-tuned); and `scratch`, the random initialization fine-tuned on each test task's support set
(no meta-training). Every run is `metaloop train … --resume` with the benchmark's preset (each
algorithm's meta-steps fit about 12 minutes on one thread; 20-minute cap) followed by
`metaloop eval … --json` on the held-out test tasks after 0, 1, 5 and 10 inner steps, in subprocesses,
`--jobs` at a time with one thread each. The test-time step size of each method with a fixed one (all but
Meta-SGD) is chosen first on 100 validation tasks of the meta-training split (`--test-lr-factors`: multiples
of the run's inner_lr; lowest query loss after 10 steps; `metaloop.tuning.choose_test_lr`), so that
no method, the baselines included, is tested at a step size that only suits meta-training. Finished runs
are reused, so an interrupted benchmark continues where it stopped. The tables go into the `lm` block of docs/results.md with the command, the machine,
and each run's meta-steps and wall time.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    ONE_THREAD,
    ROOT,
    benchmark_parser,
    choose_lr,
    command_line,
    extra_settings,
    last_line,
    machine_summary,
    mean_ci,
    replace_block,
)

BENCHMARKS = ["lm-strings", "lm-shakespeare"]
STEPS = [0, 1, 5, 10]
#: method name → (algorithm, extra --set items); None: the scratch baseline (no run).
METHODS: dict[str, tuple[str, list[str]] | None] = {
    "maml": ("maml", []),
    "fomaml": ("fomaml", []),
    "reptile": ("reptile", []),
    "metasgd": ("metasgd", []),
    "maml-lora": ("maml", ["lora_rank=8", "lora_alpha=32", "adapt='*lora_*'"]),
    "pretrain": ("pretrain", []),
    "scratch": None,
}


def chosen_lr(bench: str, algo: str, run: Path | None, args: argparse.Namespace, sets: list[str]) -> dict:
    """``choose_lr``'s answer; ``{}`` where there is nothing to choose (one factor, or Meta-SGD's learned
    step sizes)."""
    if algo == "metasgd" or len(args.test_lr_factors) < 2:
        return {}
    return choose_lr(bench, run, args.test_lr_factors, sets)


def run_one(bench: str, method: str, args: argparse.Namespace) -> dict:
    """Train (or reuse) and evaluate one method; the eval dict plus wall times, or {"failed": message}."""
    sets = list(args.sets) + ([f"iterations={args.iterations}"] if args.iterations else [])
    exe = [sys.executable, "-m", "metaloop"]
    t0 = time.time()
    if METHODS[method] is None:
        chosen = chosen_lr(bench, "pretrain", None, args, sets)
        if "failed" in chosen:
            return chosen
        lr_sets = [f"test_inner_lr={chosen['test_inner_lr']}"] if chosen else []
        code = ("import json, sys; from metaloop.tuning import evaluate_scratch; "
                "print(json.dumps(evaluate_scratch(sys.argv[1], episodes=int(sys.argv[2]), steps=[0, 1, 5, 10], "
                "overrides=sys.argv[3:])))")
        done = subprocess.run([sys.executable, "-c", code, bench, str(args.episodes), *sets, *lr_sets], env=ONE_THREAD,
                              capture_output=True, text=True)
        if done.returncode != 0:
            return {"failed": last_line(done.stderr)}
        result = json.loads(done.stdout)
        result.update(eval_seconds=time.time() - t0, iterations=0, chosen=chosen)
        print(f"{bench} {method}: evaluated in {time.time() - t0:.0f} s", flush=True)
        return result
    algo, extra = METHODS[method]
    out = args.runs / bench / method
    train = exe + ["train", "--algo", algo, "--benchmark", bench, "--out", str(out), "--resume", "--quiet"]
    for item in [*extra, *sets]:
        train += ["--set", item]
    done = subprocess.run(train, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        error = last_line(done.stderr)
        print(f"{bench} {method}: FAILED: {error}", flush=True)
        return {"failed": error}
    t1 = time.time()
    chosen = chosen_lr(bench, algo, out, args, [])
    if "failed" in chosen:
        return chosen
    evaluate = exe + ["eval", str(out), "--json", "--no-plots", "--steps", ",".join(map(str, STEPS)),
                      "--episodes", str(args.episodes)]
    if chosen:
        evaluate += ["--set", f"test_inner_lr={chosen['test_inner_lr']}"]
    done = subprocess.run(evaluate, env=ONE_THREAD, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": "eval: " + last_line(done.stderr)}
    result = json.loads(done.stdout)
    result.update(eval_seconds=time.time() - t1, chosen=chosen)
    result["iterations"] = result.pop("iteration")
    print(f"{bench} {method}: done in {time.time() - t0:.0f} s", flush=True)
    return result


def cell(value: dict, metric: str) -> str:
    return mean_ci(value, 1 if "%" in metric else 3)


def minutes(seconds: float | None) -> str:
    return "–" if seconds is None else f"{seconds / 60:.1f} min"


def table(results: dict[str, dict]) -> list[str]:
    metric = next((r["metric"] for r in results.values() if "metric" in r), "metric")
    lines = [f"| method | {metric}, 0 steps | 1 step | 5 steps | 10 steps | test step size | meta-steps "
             "| meta-training time | evaluation time |", "|---|---|---|---|---|---|---|---|---|"]
    for method, r in results.items():
        if "failed" in r:
            lines.append(f"| {method} | failed: {r['failed'].replace('|', '/')} | | | | | | | |")
            continue
        cells = [cell(r["steps"][str(s)], metric) for s in STEPS]
        chosen = r.get("chosen") or {}
        step = f"{chosen['test_inner_lr']:.3g}" if chosen else "learned" if method == "metasgd" else "inner_lr"
        lines.append(f"| {method} | " + " | ".join(cells) + f" | {step} | {r['iterations']:,} | "
                     f"{minutes(r.get('train_seconds'))} | {minutes(r['eval_seconds'])} |")
    return lines


def family_table(results: dict[str, dict]) -> list[str]:
    """One row per held-out task family (the ``groups`` of ``metaloop eval``), one column per method: the
    metric after 0 / 1 / 5 / 10 steps on that family's test tasks."""
    done = {m: r for m, r in results.items() if "groups" in r}
    if not done:
        return []
    first = next(iter(done.values()))["groups"]  # every method has the same test tasks
    lines = ["| family (test tasks) | " + " | ".join(done) + " |", "|---|" + "---|" * len(done)]
    for family, group in first.items():
        count = group["tasks"]
        cells = []
        for r in done.values():
            steps = r["groups"].get(family, {}).get("steps", {})
            values = [steps.get(str(s), {}).get("mean") for s in STEPS]
            cells.append(" / ".join("–" if v is None else f"{v:.1f}" for v in values))
        lines.append(f"| {family} ({count}) | " + " | ".join(cells) + " |")
    return lines


def per_family_note(results: dict[str, dict]) -> str:
    metric = next((r["metric"] for r in results.values() if "metric" in r), "metric")
    return (f"{metric} after 0 / 1 / 5 / 10 steps, same runs and test tasks as above, at the same test step "
            "sizes; the count of test tasks of each family is in parentheses (their 95% intervals are about "
            "√(all tasks / family's tasks) times the table's).")


def protocol(bench: str, args: argparse.Namespace) -> str:
    from metaloop.benchmarks import resolve_config

    cfg = resolve_config("maml", bench, overrides=args.sets)
    model = (f"GPT-2 with {cfg['n_layer']} blocks of width {cfg['n_embd']}, {cfg['n_head']} heads, bytes as tokens, "
             "built from a config (random initialization, seed 0)")
    chosen = (f"at the step size chosen on 100 validation tasks of the meta-training split among "
              f"{', '.join(f'{f:g}' for f in args.test_lr_factors)} × the run's inner rate (column 'test step size')"
              if len(args.test_lr_factors) > 1 else f"at the run's inner rate ({cfg['inner_lr']})")
    common = (f"meta-batch {cfg['meta_batch_size']}, one inner SGD step at {cfg['inner_lr']} in meta-training, Adam "
              f"{cfg['outer_lr']} outer; at test {args.episodes} held-out tasks, SGD (Reptile: its inner Adam) "
              f"{chosen}")
    if bench == "lm-strings":
        return (f"{model}. Tasks: string functions shown as `input>output` lines (Caesar shift, substitution, rotation, "
                f"every n-th letter, prefix/suffix, affine map mod m, compositions of two), K = {cfg['shots']} support "
                f"lines, {cfg['eval_queries']} query lines per test task; test tasks are functions (parameters, or "
                f"pairs of composed families) never seen in meta-training. Metric: exact match % of the query "
                f"answers (teacher-forced arg-max = greedy decoding). {common}.")
    return (f"{model}. Tasks: one TinyShakespeare speaker each, K = {cfg['shots']} support lines, "
            f"{cfg['eval_queries']} query lines; test speakers never seen in meta-training "
            f"(`metaloop/data/splits/shakespeare.json`). Metric: cross-entropy per byte of the query lines (nats, "
            f"lower is better). {common}.")


def main() -> None:
    parser = benchmark_parser(__doc__, runs="bench-lm", episodes=300)
    parser.add_argument("--benchmarks", nargs="+", default=BENCHMARKS, choices=BENCHMARKS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--iterations", type=int, help="meta-steps for every run (default: each algorithm's preset)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--test-lr-factors", type=float, nargs="+", default=[1.0, 0.3, 0.1],
                        help="test step sizes to choose from on validation tasks, as multiples of each run's "
                             "inner_lr (one value: no choice)")
    args = parser.parse_args()
    command = command_line()
    jobs = [(b, m) for b in args.benchmarks for m in args.methods]
    started = time.time()
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {job: pool.submit(run_one, *job, args) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}

    from metaloop.benchmarks import resolve_config

    cap = resolve_config("maml", args.benchmarks[0], overrides=args.sets)["time_budget"]
    budget = (f"each algorithm's preset number of meta-steps (about 12 minutes on one thread), stopped by "
              f"`time_budget` at {cap / 60:.0f} minutes of meta-training" if args.iterations is None
              else f"**{args.iterations} meta-steps per run (a shortened run, not the presets)**")
    runs = args.runs.relative_to(ROOT) if args.runs.is_relative_to(ROOT) else args.runs
    lines = [
        "## A small multi-task language model, meta-trained from scratch",
        "",
        f"Command: `{command.strip()}`; {args.jobs} runs at a time, one thread each; finished runs in `{runs}` "
        f"are reused. {machine_summary()} Budget: {budget}. Wall time of the whole benchmark: "
        f"{minutes(time.time() - started)}. The times in the tables are each run's own wall time, measured while "
        "other runs shared the cores." + extra_settings(args.sets),
        "",
        "Methods: `maml`, `fomaml`, `reptile`, `metasgd` adapt every weight; `maml-lora` adapts only rank-8 LoRA "
        "adapters on the attention projections (`--set lora_rank=8 --set lora_alpha=32 --set \"adapt='*lora_*'\"`: "
        "scale α/r = 4, since at scale 1 an SGD step at the common inner rate barely moves a zero-initialized "
        "adapter; the base weights are meta-learned); `pretrain` is the multi-task baseline (the pooled task data, then fine-tuning); "
        "`scratch` is the random initialization fine-tuned on the K support lines with the same inner steps "
        "(`metaloop.benchmarks.lm.evaluate_scratch`).",
        "",
    ]
    for bench in args.benchmarks:
        per = {m: results[(bench, m)] for m in args.methods}
        lines += [f"### {bench}", "", protocol(bench, args), "", *table(per), ""]
        by_family = family_table(per)
        if by_family:
            lines += [f"By held-out task family ({bench}): {per_family_note(per)}", "", *by_family, ""]
    replace_block(args.results, "lm", "\n".join(lines))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
