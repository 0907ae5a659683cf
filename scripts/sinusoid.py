"""The sinusoid benchmark of Finn et al. 2017, run in full for every gradient-based algorithm.

    python scripts/sinusoid.py                      # 70,000 iterations, K = 5 and 10, all algorithms
    python scripts/sinusoid.py --iterations 2000    # a quick smoke run (results page says so)
    python scripts/sinusoid.py --algos maml --iterations 200 --shots 5 --jobs 1 --block sinusoid-ci  # CI-sized

Each run is `metaloop train … --resume` followed by `metaloop eval … --json` (600 fixed test tasks,
0/1/5/10 steps), in subprocesses, `--jobs` at a time with one thread each. Finished runs are reused,
so an interrupted benchmark continues where it stopped. The numbers go into the `sinusoid` block of
docs/results.md, with the command, machine, torch version and date.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, benchmark_parser, command_line, machine_summary, mean_ci, replace_block  # noqa: E402

ALGOS = ["maml", "fomaml", "metasgd", "anil", "reptile", "pretrain"]
STEPS = [0, 1, 5, 10]
PAPER_K5 = {"maml": {1: 0.67, 5: 0.38, 10: 0.35}, "pretrain": {1: 2.41, 5: 2.23, 10: 2.19}}


def run_one(algo: str, shots: int, iterations: int, runs: Path) -> dict:
    out = runs / f"{algo}-k{shots}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    exe = [sys.executable, "-m", "metaloop"]
    train = exe + ["train", "--algo", algo, "--benchmark", "sinusoid", "--set", f"shots={shots}",
                   "--set", f"iterations={iterations}", "--out", str(out), "--resume", "--quiet"]
    t0 = time.time()
    done = subprocess.run(train, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if done.returncode != 0:
        error = (done.stderr.strip().splitlines() or ["no message"])[-1]
        print(f"{algo} K={shots}: FAILED: {error}", flush=True)
        return {"failed": error}
    evaluate = exe + ["eval", str(out), "--json", "--steps", ",".join(map(str, STEPS)), "--episodes", "600"]
    result = json.loads(subprocess.run(evaluate, check=True, env=env, capture_output=True, text=True).stdout)
    print(f"{algo} K={shots}: done in {time.time() - t0:.0f} s (10-step MSE {cell(result['steps']['10'])})",
          flush=True)
    return result


def cell(value: dict) -> str:
    return mean_ci(value, 3)


def table(results: dict[str, dict], shots: int) -> list[str]:
    lines = ["| method | 0 steps | 1 step | 5 steps | 10 steps | meta-training time |", "|---|---|---|---|---|---|"]
    for algo, r in results.items():
        if "failed" in r:
            lines.append(f"| {algo} | meta-training failed: {r['failed'].replace('|', '/')} | | | | |")
            continue
        cells = [cell(r["steps"][str(s)]) for s in STEPS]
        lines.append(f"| {algo} | " + " | ".join(cells) + f" | {r['train_seconds'] / 60:.1f} min |")
    if shots == 5:
        for algo, paper in PAPER_K5.items():
            lines.append(f"| *{algo}, paper (Finn et al. 2017, Table 2)* | – | "
                         + " | ".join(f"*{paper[s]:.2f}*" for s in (1, 5, 10)) + " | – |")
    return lines


def anil_bound(shots: int, run: Path, bar: float) -> str:
    """Why ANIL can or cannot reach the 1-step bar: the best one-step head-only update on ReLU features."""
    import torch

    from metaloop.benchmarks.sinusoid_bound import (
        POINTS,
        grid,
        head_step_kernel,
        one_step_bound,
        smoother_risk,
    )
    from metaloop.evaluation import load_learner

    bound, free = one_step_bound(shots), one_step_bound(shots, nonnegative=False)
    learner, _, cfg = load_learner(run)
    with torch.no_grad():
        features = learner.model[:-1](grid(POINTS)[:, None].to(torch.float32))
    own = smoother_risk(head_step_kernel(features, cfg["inner_lr"], shots), shots)
    verdict = ("so no ANIL on this network can meet the bar" if bound > bar
               else "so the bound does not rule the bar out")
    return (f"  - one step on the head alone is a linear smoother, f(x) + Σₖ g(x, xₖ)(yₖ − f(xₖ)) with "
            f"g = 2α/K·(φ(x)·φ(xₖ) + 1), and g ≥ 0 on ReLU features. The least expected 1-step MSE of any "
            f"nonnegative g at K = {shots} is **{bound:.3f}** (exact risk over the task distribution, minimized "
            f"over every nonnegative kernel: `metaloop/benchmarks/sinusoid_bound.py`; {free:.3f} if g could be "
            f"negative) against the bar's "
            f"{bar:.3f}, {verdict}. The trained ANIL's own kernel scores {own:.3f} by the same formula "
            "(started from the prior mean, the best start).")


def bars(results: dict[str, dict], shots: int, runs: Path) -> list[str]:
    out = []
    results = {a: r for a, r in results.items() if "failed" not in r}
    maml10 = results["maml"]["steps"]["10"]["mean"] if "maml" in results else None
    if maml10 is not None:
        ok = maml10 <= 0.40
        out.append(f"- MAML, 10 steps: {maml10:.3f} {'≤' if ok else '>'} 0.40: **{'met' if ok else 'NOT met'}**")
    if "pretrain" in results:
        base = results["pretrain"]["steps"]["1"]["mean"]
        for algo, r in results.items():
            if algo == "pretrain":
                continue
            ratio = base / r["steps"]["1"]["mean"] if r["steps"]["1"]["mean"] is not None else 0.0
            out.append(f"- {algo}, 1 step: {ratio:.1f}× better than the baseline "
                       f"(bar 3×): **{'met' if ratio >= 3 else 'NOT met'}**")
            if algo == "anil":
                out.append(anil_bound(shots, runs / f"anil-k{shots}", base / 3))
    return out


def reptile_preset(results: dict, args: argparse.Namespace) -> str:
    """Reptile's inner loop and outer step, read from a run's config.yaml."""
    import yaml

    for k in args.shots:
        path = args.runs / f"reptile-k{k}" / "config.yaml"
        if path.exists():
            c = yaml.safe_load(path.read_text())
            opt = "Adam (β1 = 0)" if c["inner_optimizer"] == "adam" else "SGD"
            anneal = ", annealed linearly to 0" if c["anneal"] else ""
            outer = (f"outer step: Adam at lr {c['outer_lr']}{anneal} on θ − mean φ (Nichol et al. 2018, §3)"
                     if c.get("outer_optimizer") == "adam" else f"outer step ε = {c['outer_lr']}{anneal}")
            data = ("on the support and query sets in turn (Reptile's minibatches, the same 2K points per task as "
                    "MAML)" if c.get("inner_batches") == "alternate" else "on the support set")
            return f"{c['inner_steps']} inner steps of {opt} at lr {c['inner_lr']} {data}, {outer}"
    return "not run"


def main() -> None:
    parser = benchmark_parser(__doc__, runs="bench-sinusoid", algos=ALGOS, sets=False)
    parser.add_argument("--iterations", type=int, default=70000)
    parser.add_argument("--shots", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--block", default="sinusoid", help="the block of --results to write (sinusoid-ci: the "
                        "CI-sized block that tests/test_reproduce.py reruns and checks)")
    args = parser.parse_args()
    command = command_line()
    jobs = [(a, k) for k in args.shots for a in args.algos]
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {job: pool.submit(run_one, *job, args.iterations, args.runs) for job in jobs}
        results = {job: f.result() for job, f in futures.items()}

    from metaloop.evaluation import format_table  # noqa: F401  (import check: the package is installed)
    from metaloop.plots import adaptation_curve

    lines = [
        "## Sinusoid regression (Finn et al. 2017 protocol)" + (
            "" if args.block == "sinusoid" else f": `{args.block}`, a short block for `scripts/reproduce.py --check` "
            "in CI (tests/test_reproduce.py), not a result"),
        "",
        f"Command: `{command.strip()}`; {args.jobs} runs at a time, one thread each; finished runs in "
        f"`{args.runs.relative_to(ROOT) if args.runs.is_relative_to(ROOT) else args.runs}` are reused, so a "
        "rerun only re-evaluates them. " + machine_summary() + " The meta-training times are each run's own "
        "wall time, measured while other runs shared the two cores, so they are upper bounds.",
        "",
        f"Protocol: amplitude U[0.1, 5], phase U[0, π], x U[−5, 5]; 1-40-40-1 ReLU MLP; inner SGD lr 0.01; "
        f"meta-batch 25; Adam 1e-3; {args.iterations:,} iterations; one inner step in meta-training. "
        f"Reptile uses its preset: {reptile_preset(results, args)}. "
        "Test: MSE (mean ± 95% CI) on 600 fixed held-out tasks with 100 query points each, after "
        "0/1/5/10 inner steps on the K support points (SGD at lr 0.01; Reptile: its own inner optimizer). "
        "The baseline (`pretrain`) is multi-task regression on the same tasks, fine-tuned the same way.",
        "",
    ]
    if args.iterations != 70000:
        lines += [f"**Shortened run ({args.iterations:,} iterations, not the paper's 70,000).**", ""]
    img_dir = args.results.parent / "img"
    for k in args.shots:
        per = {a: results[(a, k)] for a in args.algos}
        img = adaptation_curve({a: r for a, r in per.items() if "failed" not in r}, img_dir / f"{args.block}-k{k}.png", metric="mse")
        lines += [f"### K = {k}", "", *table(per, k), "", *bars(per, k, args.runs), "",
                  f"![adaptation curves, K={k}](img/{img.name})", ""]
    lines += [
        "### Reading the table",
        "",
        "- *diverged*: the inner loop overflowed on some test task at that step count. Meta-SGD learns one "
        "step size per parameter for the single step it is trained with (Li et al. 2017 evaluate one step); "
        "repeating that step overshoots.",
        "- ANIL adapts only the last layer: one step on the head is one step of kernel regression with the "
        "learned features, whose kernel cannot be negative on ReLU features, while the tasks' covariance, "
        "cos(x − x′) up to the mean, is negative half a period away (the bound under each ANIL line). Its "
        "features are scaled for one step at lr 0.01, so more steps can overshoot.",
        "- Reptile never evaluates the loss after one step. To second order in α its update is a sum of the "
        "tasks' gradients and of inner products of gradients taken at successive inner steps (Nichol et al. "
        "2018, §5): on one batch these only reward a large gradient on that batch, on different minibatches "
        "(here support, then query) they reward a gradient on one that lowers the loss on the other, which is "
        "MAML's one-step objective too. Hence its preset: 5 steps on the support and query sets in turn.",
        "",
    ]
    replace_block(args.results, args.block, "\n".join(lines))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
