"""Test accuracy against meta-training wall time: MAML on real Omniglot 5-way 1-shot, one curve per execution path.

    python scripts/time_to_accuracy.py                         # loop path, to 60 minutes (about 75 minutes)
    python scripts/time_to_accuracy.py --paths loop batched --minutes 2 5 10 20 30 45 60
    python scripts/time_to_accuracy.py --minutes 1 2 --episodes 50 --runs /tmp/tta --out /tmp/perf.md  # smoke

Each path's run meta-trains `omniglot-5w1s` with its preset (second-order MAML, meta-batch 32, 1 inner step at
0.4, Adam at 1e-3), on 2 threads, and stops at each of `--minutes` of its own meta-training time (the run's
`elapsed_seconds`: `metaloop train --resume --set time_budget=...`, so evaluation is not counted); there it is
tested on the first `--episodes` of the fixed test episodes after its test_inner_steps (3). The table and the
crossing times of 90 % and 97.5 % go into the `time-to-accuracy` block of docs/performance.md, the curve into
docs/img/time_to_accuracy.png. Finished stages in `--runs` are reused, so an interrupted run continues.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, command_line, machine_summary, replace_block  # noqa: E402

BENCHMARK, ALGO, THRESHOLDS = "omniglot-5w1s", "maml", (90.0, 97.5)
PERF_HEADER = "# Performance\n\nEvery number on this page is written by a script in `scripts/`; none is typed in by hand.\n"


def curve(path: str, args: argparse.Namespace) -> list[dict]:
    """Train the path's run stage by stage; after each stage, its accuracy (cached in ``stages.json``)."""
    import torch

    from metaloop.evaluation import evaluate
    from metaloop.training import train

    torch.set_num_threads(2)
    out = args.runs / path
    cache = out / "stages.json"
    stages = json.loads(cache.read_text()) if cache.exists() else []
    done = {s["minutes"] for s in stages}
    for minutes in args.minutes:
        if minutes in done:
            continue
        train(ALGO, BENCHMARK, out, overrides={"path": path, "time_budget": 60 * minutes, "iterations": 10 ** 7},
              resume=out.exists(), progress=False)
        record = json.loads((out / "checkpoint.json").read_text())
        result = evaluate(out, episodes=args.episodes, steps=[3], plots=False)
        stages.append({"minutes": minutes, "seconds": record["elapsed_seconds"], "iterations": record["iteration"],
                       "mean": result["steps"]["3"]["mean"], "ci95": result["steps"]["3"]["ci95"]})
        cache.write_text(json.dumps(stages, indent=1))
        print(path, stages[-1], flush=True)
    return sorted((s for s in stages if s["minutes"] in args.minutes), key=lambda s: s["minutes"])


def crossing(stages: list[dict], threshold: float) -> str:
    hit = next((s for s in stages if s["mean"] >= threshold), None)
    if hit is None:
        return f"not within {stages[-1]['minutes']:g} min (best {max(s['mean'] for s in stages):.1f} %)"
    return f"by {hit['seconds'] / 60:.1f} min ({hit['iterations']} meta-steps)"


def plot(curves: dict[str, list[dict]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, stages in curves.items():
        ax.errorbar([s["seconds"] / 60 for s in stages], [s["mean"] for s in stages],
                    yerr=[s["ci95"] for s in stages], marker="o", capsize=3, label=f"path={name}")
    for t in THRESHOLDS:
        ax.axhline(t, color="grey", linewidth=0.6, linestyle=":")
    ax.set_xlabel("meta-training wall time (min)")
    ax.set_ylabel("test accuracy % (5-way 1-shot, 3 steps)")
    ax.set_title("MAML on Omniglot: accuracy against time")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--paths", nargs="+", default=["loop"], choices=["loop", "batched", "vmap"])
    parser.add_argument("--minutes", nargs="+", type=float, default=[2, 5, 10, 20, 30, 45, 60])
    parser.add_argument("--episodes", type=int, default=400, help="test episodes at each stage")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-time-to-accuracy")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "performance.md")
    parser.add_argument("--plot", type=Path, default=ROOT / "docs" / "img" / "time_to_accuracy.png")
    args = parser.parse_args()
    if any(m <= 0 for m in args.minutes):
        parser.error("--minutes: each must be positive")
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    command = command_line()
    curves = {path: curve(path, args) for path in args.paths}
    plot(curves, args.plot)
    lines = [
        "## Time to accuracy: MAML on Omniglot 5-way 1-shot",
        "",
        f"Command: `{command.strip()}`. {machine_summary()}",
        "",
        f"Second-order MAML with the `{BENCHMARK}` preset (Conv-4, meta-batch 32, 1 inner step), real Omniglot "
        "(Vinyals split, rotations as classes), 2 threads; at each stage of meta-training wall time (evaluation not "
        f"counted), the first {args.episodes} fixed test episodes after 3 inner steps, accuracy % ± 95% CI. "
        f"Curve: `{args.plot.relative_to(ROOT) if args.plot.is_relative_to(ROOT) else args.plot}`.",
        "",
        "| path | minutes | meta-steps | accuracy % |",
        "|---|---|---|---|",
    ]
    for path, stages in curves.items():
        lines += [f"| {path} | {s['seconds'] / 60:.1f} | {s['iterations']} | {s['mean']:.1f} ± {s['ci95']:.1f} |"
                  for s in stages]
    lines.append("")
    for path, stages in curves.items():
        lines.append(f"- path={path}: " + "; ".join(f"{t:g} % {crossing(stages, t)}" for t in THRESHOLDS) + ".")
    replace_block(args.out, "time-to-accuracy", "\n".join(lines), header=PERF_HEADER)
    print(f"wrote the time-to-accuracy block of {args.out}")


if __name__ == "__main__":
    main()
