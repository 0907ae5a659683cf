"""Omniglot 5-way 1-shot and 20-way 1-shot for every algorithm, under one wall-time budget each.

    python scripts/omniglot.py                    # 20 minutes of meta-training per algorithm and benchmark
    python scripts/omniglot.py --budget 60m       # more
    python scripts/omniglot.py --algos maml protonet --benchmarks omniglot-5w1s
    python scripts/omniglot.py --budget 5m --set feature_epochs=1   # a shorter run (extra --set to every run)
    python scripts/omniglot.py --budget 30m --algos protonet --benchmarks omniglot-5w1s \
        --runs runs/bench-omniglot-30m --block omniglot-30m     # a longer budget, in a block of its own

Each (benchmark, algorithm) is `metaloop compare`'s run in runs/bench-omniglot/<benchmark>/<algo>:
trained in its own process with `--resume`, so an interrupted benchmark continues where it stopped
(also in a later session), and finished runs are only re-evaluated. Evaluation: 1000 fixed test
episodes (15 queries per class), mean ± 95% CI. The table goes into the `omniglot` block of
docs/results.md with the published figures, the budget, each run's iterations and wall time.

The papers train for far longer (MAML: 60,000 meta-steps on a GPU); on 2 CPU cores a Conv-4 MAML
meta-step of 32 tasks takes about 3 s, so the budget, not the algorithm, limits some rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import (  # noqa: E402
    benchmark_parser,
    command_line,
    extra_settings,
    machine_summary,
    mean_ci,
    memory_cell,
    replace_block,
)

ALGOS = ["maml", "fomaml", "metasgd", "anil", "reptile", "protonet", "metaoptnet-svm", "metaoptnet-ridge", "leo"]
BENCHMARKS = ["omniglot-5w1s", "omniglot-20w1s"]
PUBLISHED = {  # accuracy %, shared/research/published-numbers.md §2.2
    "omniglot-5w1s": {"maml": "98.7 ± 0.4", "protonet": "98.8", "reptile": "97.68 ± 0.04 (transductive)",
                      "fomaml": "98.3 ± 0.5", "metasgd": "99.53 ± 0.26"},
    "omniglot-20w1s": {"maml": "95.8 ± 0.3", "protonet": "96.0", "reptile": "89.43 ± 0.14 (transductive)",
                       "fomaml": "89.4 ± 0.5", "anil": "96.2 ± 0.5", "metasgd": "95.93 ± 0.38 (unverified)"},
}
BARS = {"omniglot-5w1s": (97.5, {"maml", "protonet", "metasgd", "metaoptnet-svm", "metaoptnet-ridge"}),
        "omniglot-20w1s": (93.0, {"maml", "protonet"})}


def main() -> None:
    parser = benchmark_parser(__doc__, runs="bench-omniglot", algos=ALGOS, budget="20m", episodes=1000)
    parser.add_argument("--benchmarks", nargs="+", default=BENCHMARKS)
    parser.add_argument("--block", default="omniglot",
                        help="the docs/results.md block to write (another name keeps the main table)")
    parser.add_argument("--title", help="the block's heading (default: from the budget)")
    args = parser.parse_args()
    command = command_line()

    from metaloop.comparison import compare

    lines = [
        "## " + (args.title or "Omniglot, few-shot classification"
                 + ("" if args.block == "omniglot" else f" ({args.budget} per run)")),
        "",
        f"Command: `{command.strip()}`. {machine_summary()} Budget: {args.budget} of meta-training per "
        f"algorithm and benchmark (`metaloop compare --budget {args.budget}`), Conv-4 (64 filters, BatchNorm "
        "in transductive mode for the gradient-based family), Vinyals split with rotations as classes, "
        f"{args.episodes} fixed test episodes with 15 queries per class. LEO works on 64-d features of a "
        "Conv-4 pretrained by classification on the meta-training classes (`feature_epochs` epochs; not "
        "counted in its meta-training time)." + extra_settings(args.sets),
        "",
    ]
    for bench in args.benchmarks:
        rows = compare(bench, args.algos, args.runs / bench, budget=args.budget, episodes=args.episodes,
                       overrides=["checkpoint_every=50", *args.sets], progress=False)
        bar, who = BARS.get(bench, (None, set()))
        lines += [f"### {bench}", "",
                  "| algorithm | accuracy % (± 95% CI) | published | bar | iterations | meta-training time "
                  "| adaptation latency | peak memory | meta-parameters |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            published = PUBLISHED.get(bench, {}).get(r["algo"], "–")
            if "error" in r:
                lines.append(f"| {r['algo']} | failed: {r['error'].replace('|', '/')} | {published} | | | | | | |")
                continue
            acc = mean_ci(r)
            verdict = "–"
            if r["algo"] in who and r["mean"] is not None:
                verdict = f"≥ {bar}: {'met' if r['mean'] >= bar else '**NOT met**'}"
            lines.append(
                f"| {r['algo']} | {acc} | {published} | {verdict} | {r['iterations']} | "
                f"{r['train_seconds'] / 60:.1f} min | {r['latency_ms']:.0f} ms | {memory_cell(r)} | "
                f"{r['parameters']:,} |"
            )
        done = [r for r in rows if "error" not in r]
        missed = [r["algo"] for r in done if r["algo"] in who and (r["mean"] is None or r["mean"] < bar)]
        if missed and done:
            steps = sorted(r["iterations"] for r in done)
            lines += [
                "",
                f"Bars missed by {', '.join(missed)}: a budget miss. Each run had {args.budget} of meta-training on "
                f"this machine, {steps[0]:,} to {steps[-1]:,} meta-steps; the papers train for tens of thousands "
                "(MAML: 60,000 meta-steps of 32 tasks on a GPU). The cheaper an algorithm's step, the further it "
                "gets: the metric heads (one forward pass per episode) lead, and the second-order family has barely "
                "started. The runs resume: the same command with a larger `--budget` continues them. "
                "[results-gpu.md](results-gpu.md) has these algorithms with the meta-steps of a few minutes on a GPU.",
            ]
        lines.append("")
    replace_block(args.results, args.block, "\n".join(lines))
    print(f"wrote {args.results}")


if __name__ == "__main__":
    main()
