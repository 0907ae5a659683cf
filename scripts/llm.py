"""A pretrained LLM (SmolLM2-135M-Instruct + LoRA) on held-out few-shot text classification tasks: llm-tasks.

    python scripts/llm.py                                   # every method, presets, 60 minutes each
    python scripts/llm.py --budget 10m --methods icl metaicl-channel
    python scripts/llm.py --budget 3 --episodes 6 --runs /tmp/llm-smoke --results /tmp/results.md  # smoke
    python scripts/llm.py --budget 10m --methods finetune maml fomaml reptile --block llm-maml
    python scripts/llm.py --budget 10m --methods finetune multitask maml fomaml reptile --test-lr-factors 1 10 100 \
        --block llm-lr

Methods, all on the same model, test tasks and demonstrations (the `llm-tasks` benchmark: meta-training on
CLINC150's training domains, HWU64's training scenarios and HuffPost's training classes; testing on the held-out
domains, scenarios and classes and on FewRel, 5-way):

- `zero-shot`, `icl`, `icl-channel`: the pretrained model with no training, 0-shot, and in context with K
  demonstrations, direct and channel (`metaloop.tuning.evaluate_untrained`);
- `finetune`: LoRA fine-tuned on each test task's K examples from the pretrained weights (SGD at inner_lr);
- `multitask`: LoRA trained on the meta-training tasks in the 0-shot format (`pretrain`), then 0-shot and
  fine-tuned on the K examples;
- `metaicl`, `metaicl-channel`: LoRA meta-trained on K-shot prompts (Min et al. 2022), direct and channel;
- `maml`, `fomaml`, `reptile`, `metasgd`: the inner loop adapts LoRA on the K examples (each scored 0-shot);
  Meta-SGD meta-learns a step size per LoRA weight with the start, and is reported after its one step.
- `maml-icl`, `fomaml-icl`: MAML-en-LLM (Sinha et al. 2024), second and first order: the inner loop adapts LoRA
  on the K examples in the in-context format (each half after the other half's demonstrations), the queries
  are scored after all K demonstrations.

Each trained method gets the same wall-time budget (`--budget`, default 60 minutes; `metaloop train … --resume`,
so an interrupted benchmark continues). Every method is tested on the same `--episodes` test episodes (tasks ×
3 draws of demonstrations) at K = 4 and 8 (`eval_shots`), the gradient-based ones after 0, 1, 5 and 10 inner
steps. With `--test-lr-factors` (say `1 10 100`), each gradient-based method's test-time step size is chosen first,
as that multiple of its inner_lr with the lowest query loss after its test_inner_steps on `--validation-episodes`
episodes of the meta-training tasks (`metaloop.tuning.choose_test_lr`; never a test task), and the tests run at
it; without, at the preset's inner_lr. Runs and evaluations go `--jobs` at a time in subprocesses with one thread each. The tables go into the
`llm` block of docs/results.md with the command, the machine, each run's meta-steps, minutes, tokens and tokens per
second, its adaptation latency and its trainer's peak memory.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    ONE_THREAD,
    benchmark_parser,
    choose_lr,
    command_line,
    extra_settings,
    last_line,
    machine_summary,
    replace_block,
)

BENCHMARK = "llm-tasks"
SHOTS = [4, 8]
STEPS = [0, 1, 5, 10]
#: method → (algorithm, extra --set items, trained?).
METHODS: dict[str, tuple[str, list[str], bool]] = {
    "zero-shot": ("metaicl", [], False),
    "icl": ("metaicl", [], False),
    "icl-channel": ("metaicl", ["scoring=channel"], False),
    "finetune": ("pretrain", [], False),
    "multitask": ("pretrain", [], True),
    "metaicl": ("metaicl", [], True),
    "metaicl-channel": ("metaicl", ["scoring=channel"], True),
    "maml": ("maml", [], True),
    "fomaml": ("fomaml", [], True),
    "reptile": ("reptile", [], True),
    "metasgd": ("metasgd", [], True),
    "maml-icl": ("maml-icl", [], True),
    "fomaml-icl": ("maml-icl", ["first_order=true"], True),
}
GRADIENT = {"finetune", "multitask", "maml", "fomaml", "reptile", "metasgd", "maml-icl", "fomaml-icl"}
#: Gradient-based methods whose step size is their own (Meta-SGD learns one per weight): no choice of it.
LEARNED_RATES = {"metasgd"}
ANCHORS = ("Anchors (Min et al. 2022, Table 11: GPT-2 Small, 124 M parameters, 16 shots, HR→LR, macro-F1, mean over "
           "5 seeds / worst seed): Channel MetaICL 46.2 / 43.1, Channel in-context learning 41.5 / 37.4, Channel "
           "multi-task 0-shot 40.4. No anchor shows meta-training beating multi-task training, then fine-tuning.")


def evaluate_untrained(method: str, shots: int, args: argparse.Namespace, lr: list[str]) -> dict:
    algo, extra, _ = METHODS[method]
    steps = STEPS if method in GRADIENT else [0]
    sets = [*extra, *args.sets, *lr, f"eval_shots={0 if method == 'zero-shot' else shots}"]
    code = ("import json, sys; from metaloop.tuning import evaluate_untrained; "
            "print(json.dumps(evaluate_untrained(sys.argv[1], sys.argv[2], episodes=int(sys.argv[3]), "
            "steps=json.loads(sys.argv[4]), overrides=sys.argv[5:])))")
    done = subprocess.run([sys.executable, "-c", code, BENCHMARK, algo, str(args.episodes), json.dumps(steps), *sets],
                          env=ONE_THREAD, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": last_line(done.stderr)}
    return json.loads(done.stdout)


def train(method: str, args: argparse.Namespace) -> dict:
    algo, extra, _ = METHODS[method]
    out = args.runs / method
    budget = ["--set", f"time_budget={args.budget_seconds}"] if args.budget_seconds else []
    iterations = ["--set", f"iterations={args.iterations}"]
    cmd = [sys.executable, "-m", "metaloop", "train", "--algo", algo, "--benchmark", BENCHMARK, "--out", str(out),
           "--resume", "--quiet", *budget, *iterations, *[a for s in [*extra, *args.sets] for a in ("--set", s)]]
    done = subprocess.run(cmd, env=ONE_THREAD, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        return {"failed": last_line(done.stderr)}
    record = json.loads((out / "checkpoint.json").read_text())
    return {"run": str(out), "iterations": record["iteration"], "seconds": record["elapsed_seconds"],
            "peak_rss_mb": record.get("peak_rss_mb")}


def latency(method: str, args: argparse.Namespace, lr: list[str]) -> dict:
    """A trained run's adaptation latency (``metaloop.evaluation.adaptation_latency``: the median over 5 test tasks
    of adapting on K = 8 and scoring the queries, one thread) at the reported number of inner steps."""
    code = ("import json, sys; from metaloop.config import parse_set; "
            "from metaloop.evaluation import adaptation_latency, load_learner; "
            "learner, bench, cfg = load_learner(sys.argv[1], overrides=parse_set(sys.argv[3:])); "
            "print(json.dumps({'latency_ms': adaptation_latency(learner, bench, cfg, tasks=5, steps=int(sys.argv[2]))}))")
    done = subprocess.run([sys.executable, "-c", code, str(args.runs / method), reported_step(method), "eval_shots=8",
                           *lr], env=ONE_THREAD, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": "latency: " + last_line(done.stderr)}
    return json.loads(done.stdout)


def evaluate_run(method: str, shots: int, args: argparse.Namespace, lr: list[str]) -> dict:
    steps = STEPS if method in GRADIENT else [0]
    cmd = [sys.executable, "-m", "metaloop", "eval", str(args.runs / method), "--json", "--no-plots",
           "--episodes", str(args.episodes), "--steps", ",".join(map(str, steps)), "--set", f"eval_shots={shots}",
           *[a for s in lr for a in ("--set", s)]]
    done = subprocess.run(cmd, env=ONE_THREAD, capture_output=True, text=True)
    if done.returncode != 0:
        return {"failed": "eval: " + last_line(done.stderr)}
    return json.loads(done.stdout)


def cached(path: Path, compute) -> dict:  # noqa: ANN001
    """A result kept in ``path`` (an interrupted benchmark reuses it); failures are not kept."""
    if path.exists():
        return json.loads(path.read_text())
    result = compute()
    if "failed" not in result:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
    return result


def settings_key(args: argparse.Namespace) -> str:
    """The part of a cached result's name that the --set overrides decide (none: empty, as before they counted)."""
    if not args.sets:
        return ""
    return "-s" + hashlib.sha256("\n".join(args.sets).encode()).hexdigest()[:10]


def run_method(method: str, args: argparse.Namespace) -> dict:
    t0 = time.time()
    out: dict = {"evals": {}}
    tag = f"e{args.episodes}{settings_key(args)}"
    if METHODS[method][2]:
        out["train"] = train(method, args)
        if "failed" in out["train"]:
            print(f"{method}: FAILED: {out['train']['failed']}", flush=True)
            return out
        name = f"{method}-it{out['train']['iterations']}"
    else:
        name = method
    lr: list[str] = []
    if method in GRADIENT - LEARNED_RATES and len(args.test_lr_factors) > 1:
        factors = ",".join(f"{f:g}" for f in args.test_lr_factors)
        out["chosen"] = cached(args.runs / "results" / f"{name}-lr{factors}-v{args.validation_episodes}"
                               f"{settings_key(args)}.json", lambda: choose_lr(
                                   BENCHMARK, args.runs / method if METHODS[method][2] else None, args.test_lr_factors,
                                   [*METHODS[method][1], *args.sets], episodes=args.validation_episodes))
        if "failed" in out["chosen"]:
            print(f"{method}: FAILED: {out['chosen']['failed']}", flush=True)
            out["train"] = out["chosen"]
            return out
        lr = [f"test_inner_lr={out['chosen']['test_inner_lr']:g}"]
    suffix = f"-lr{out['chosen']['test_inner_lr']:g}" if lr and not at_inner_lr(out["chosen"], args) else ""
    evaluate = evaluate_run if METHODS[method][2] else evaluate_untrained
    for k in SHOTS:
        out["evals"][k] = cached(args.runs / "results" / f"{name}-k{k}{suffix}-{tag}.json",
                                 lambda k=k: evaluate(method, k, args, lr))
    if METHODS[method][2]:
        out["latency"] = cached(args.runs / "results" / f"{name}-latency{suffix}{settings_key(args)}.json",
                                lambda: latency(method, args, lr))
    print(f"{method}: done in {time.time() - t0:.0f} s", flush=True)
    return out


def worst_seed(result: dict, step: str) -> float | None:
    means = [g["steps"][step]["mean"] for g in result.get("groups", {}).values() if g["steps"][step]["mean"] is not None]
    return min(means) if means else None


def cell(result: dict, step: str = "0") -> str:
    if "failed" in result:
        return f"failed: {result['failed'].replace('|', '/')}"
    value = result["steps"].get(step)
    if value is None or value["mean"] is None:
        return "–" if value is None else "diverged"
    worst = worst_seed(result, step)
    return f"{value['mean']:.1f} ± {value['ci95']:.1f} ({worst:.1f})"


def reported_step(method: str) -> str:
    return "1" if method in LEARNED_RATES else "5" if method in GRADIENT else "0"


def at_inner_lr(chosen: dict, args: argparse.Namespace) -> bool:
    """Whether the chosen step size is factor 1, the inner_lr itself (its evaluations are those without a choice)."""
    lrs = list(chosen["validation"])
    return 1.0 in args.test_lr_factors and float(lrs[args.test_lr_factors.index(1.0)]) == chosen["test_inner_lr"]


def tokens_per_task(args: argparse.Namespace) -> dict[str, float]:
    """Mean tokens of a meta-training task's examples (each input with its right answer, demonstrations and
    queries), from 20 training episodes, and the meta-batch size: what a meta-step reads, before the template."""
    code = ("import json, sys, torch; from metaloop.benchmarks import resolve_config, get_benchmark; "
            "cfg = resolve_config('metaicl', 'llm-tasks', overrides=sys.argv[1:]); "
            "b = get_benchmark('llm-tasks').train_tasks(cfg).batch(0, 20); "
            "n = lambda x: int((x[..., 0, :] >= 0).sum()); "
            "a = lambda x, y: int((x.gather(2, (1 + y)[..., None, None].expand(-1, -1, 1, x.shape[-1])) >= 0).sum()); "
            "per = (n(b.support_x) + n(b.query_x) + a(b.support_x, b.support_y) + a(b.query_x, b.query_y)) / 20; "
            "print(json.dumps({'tokens': per, 'meta_batch_size': cfg['meta_batch_size']}))")
    done = subprocess.run([sys.executable, "-c", code, *args.sets], env=ONE_THREAD, capture_output=True, text=True)
    return json.loads(done.stdout) if done.returncode == 0 else {"tokens": float("nan"), "meta_batch_size": 4}


def latency_cell(result: dict) -> str:
    if "failed" in result:
        return f"failed: {result['failed'].replace('|', '/')}"
    if "latency_ms" not in result:
        return "–"
    ms = result["latency_ms"]
    return f"{ms:.0f} ms" if ms < 1000 else f"{ms / 1000:.1f} s"


def chosen_text(args: argparse.Namespace) -> str:
    if len(args.test_lr_factors) < 2:
        return ", at the preset's inner_lr (0.001)"
    factors = ", ".join(f"{f:g}" for f in args.test_lr_factors)
    return (f", at the step size chosen on {args.validation_episodes} validation episodes of the meta-training tasks "
            f"among {factors} × inner_lr (column 'test step size': the lowest query loss after 5 steps)")


def write(results: dict[str, dict], args: argparse.Namespace, tokens: float, batch: int) -> None:
    lr_column = len(args.test_lr_factors) > 1
    queries = next((s.split("=", 1)[1] for s in reversed(args.sets) if s.startswith("eval_queries=")), "8")
    lines = [
        "## A pretrained LLM on held-out tasks: llm-tasks (SmolLM2-135M-Instruct, LoRA rank 8 on q/v)",
        "",
        f"Command: `{command_line()}`. {machine_summary()}{extra_settings(args.sets)}",
        "",
        f"Test: {args.episodes} episodes ({args.episodes // 3} held-out 5-way tasks × 3 draws of demonstrations; "
        "CLINC150 held-out domains, HWU64 held-out scenarios, HuffPost test classes, FewRel relations: no class is a "
        f"meta-training class), {queries} queries each, rank classification. Cells: macro-F1 % mean ± 95% CI over "
        "episodes, "
        "and in parentheses the worst demonstration seed (the least of the three seeds' means). Gradient-based "
        "methods after 5 inner SGD steps on the K examples (Meta-SGD after its one step of learned rates; all step "
        "counts in the second table)"
        f"{chosen_text(args)}. Meta-training: "
        f"the preset of each method on 8-shot 5-way episodes, at most {args.budget} each, one thread; "
        f"a meta-training task's examples hold about {tokens:.0f} tokens ({batch} tasks per meta-step), before "
        "the template; tokens/s is those tokens over the meta-training time. Adaptation latency: the median over 5 "
        "test tasks of adapting on K = 8 and scoring the queries at the reported steps, one thread "
        "(`metaloop.evaluation.adaptation_latency`); peak memory: the trainer's peak RSS.",
        "",
        "| method | K = 4 | K = 8 | meta-steps | meta-training | tokens (≈) | tokens/s | adaptation latency | peak memory |"
        + (" test step size |" if lr_column else ""),
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if lr_column else ""),
    ]
    for method, r in results.items():
        step = reported_step(method)
        trained = r.get("train")
        if trained and "failed" in trained:
            lines.append(f"| {method} | failed: {trained['failed'].replace('|', '/')} | | | | | | | |")
            continue
        meta = ("–", "none", "–", "–", "–", "–") if not trained else (
            str(trained["iterations"]), f"{trained['seconds'] / 60:.1f} min",
            f"{trained['iterations'] * batch * tokens / 1e6:.2f} M",
            f"{trained['iterations'] * batch * tokens / max(trained['seconds'], 1e-9):.0f}",
            latency_cell(r.get("latency", {})),
            "–" if trained.get("peak_rss_mb") is None else f"{trained['peak_rss_mb'] / 1024:.1f} GB")
        chosen = (f" {r['chosen']['test_inner_lr']:g} |" if "chosen" in r else " – |") if lr_column else ""
        lines.append(f"| {method} | {cell(r['evals'][4], step)} | {cell(r['evals'][8], step)} | {' | '.join(meta)} |"
                     + chosen)
    missing = [m for m in METHODS if m not in results]
    if missing:
        lines += ["", f"Not run in this block (`--methods`): {', '.join(missing)}."]
    lines += ["", "Gradient-based methods by inner steps at test time, K = 8:", "",
              "| method | 0 steps | 1 step | 5 steps | 10 steps |", "|---|---|---|---|---|"]
    for method, r in results.items():
        if method in GRADIENT and 8 in r["evals"]:
            lines.append(f"| {method} | " + " | ".join(cell(r["evals"][8], str(s)) for s in STEPS) + " |")
    lines += ["", ANCHORS]
    replace_block(args.results, args.block, "\n".join(lines))


def main() -> None:
    parser = benchmark_parser(__doc__, runs="bench-llm", budget="60m", episodes=150)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--iterations", type=int, default=100_000, help="meta-step cap (the budget decides)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--test-lr-factors", type=float, nargs="+", default=[1.0],
                        help="test step sizes to choose from on validation episodes, as multiples of inner_lr "
                        "(one: no choice, the preset's)")
    parser.add_argument("--validation-episodes", type=int, default=12,
                        help="validation episodes of the meta-training tasks for choosing the step size")
    parser.add_argument("--block", default="llm", help="the block of --results to write (a subset of the methods "
                        "can go to a block of its own, e.g. llm-maml, and leave the full table as it is)")
    args = parser.parse_args()
    value, unit = args.budget.rstrip("smh") or "0", args.budget[-1] if args.budget[-1] in "smh" else "it"
    if unit == "it":
        args.iterations, args.budget_seconds = int(value), None
        args.budget = f"{value} meta-steps"
    else:
        args.budget_seconds = float(value) * {"s": 1, "m": 60, "h": 3600}[unit]
        args.budget = f"{float(value):g} {dict(s='s', m='min', h='h')[unit]} of wall time"
    args.runs.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.jobs) as pool:
        done = dict(zip(args.methods, pool.map(lambda m: run_method(m, args), args.methods)))
    counted = tokens_per_task(args)
    write(done, args, counted["tokens"], counted["meta_batch_size"])
    print(f"wrote the llm block of {args.results}")


if __name__ == "__main__":
    main()
