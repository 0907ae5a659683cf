"""Few-shot text classification: every algorithm and the frozen-encoder baseline on CLINC150, HuffPost and
FewRel, on all-MiniLM-L6-v2 (+ LoRA), under one wall-time budget per run.

    python scripts/text.py                          # 4 minutes of meta-training per algorithm and source
    python scripts/text.py --budget 10m --sources huffpost --algos protonet maml
    python scripts/text.py --settings 5w1s          # only the 5-way 1-shot test episodes (the slow part
                                                       # is testing the gradient-based family: 10 LoRA steps)
    python scripts/text.py --shot-matched protonet  # also meta-train ProtoNet on 5-shot episodes for 5w5s

For each source, each algorithm is meta-trained once on ``SOURCE-5w1s`` (``metaloop compare``, runs in
runs/bench-text/SOURCE/ALGO, resumable) and evaluated on the same fixed test episodes at 5-way 1-shot and
5-way 5-shot (and, for CLINC150, all 45 held-out intents at 10 shots, for the algorithms without a
fixed-size head). FewRel's runs meta-train on the intent + news mix, since its only file is for testing.
``--shot-matched ALGO …`` adds, for those algorithms, a second run meta-trained on ``SOURCE-5w5s`` episodes
(runs/bench-text/SOURCE/5w5s/ALGO) and tested at 5-way 5-shot on the same episodes: the protocol of
Snell et al. (2017), who meta-train with the test shot, and of MetaOptNet, which meta-trains with more.
The baseline is the frozen encoder with cosine nearest-centroid classification and no meta-training.
Also measured: the latency of ``metaloop adapt``'s :class:`~metaloop.adaptation.Adapter` for 5-way
5-shot with ProtoNet (tokenization included, 75 queries). Each source's table goes into its own block
of docs/results.md (``text-huffpost``, …), with the command that wrote it, so sources can be run apart.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from metaloop.algorithms import algorithm

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import benchmark_parser, command_line, extra_settings, machine_summary, mean_ci, replace_block  # noqa: E402

ALGOS = ["protonet", "metaoptnet-svm", "metaoptnet-ridge", "leo", "maml", "fomaml", "anil", "metasgd", "reptile"]
SOURCES = ["clinc150", "huffpost", "fewrel"]

#: Settings evaluated per source: (label, overrides of the test episodes).
SETTINGS = {
    "clinc150": [("5w1s", {"shots": 1}), ("5w5s", {"shots": 5}),
                 ("45w10s", {"ways": 45, "shots": 10, "eval_queries": 5})],
    "huffpost": [("5w1s", {"shots": 1}), ("5w5s", {"shots": 5})],
    "fewrel": [("5w1s", {"shots": 1}), ("5w5s", {"shots": 5})],
}
ANCHORS = {
    "clinc150": "CPFT (Zhang et al. 2021), 10-shot intent detection on all 150 intents: 94.18; the frozen "
                "MiniLM with cosine centroids, 150-way 10-shot, measured when the issue was written: 90.7",
    "huffpost": "frozen MiniLM with cosine centroids, measured when the issue was written: 46.9 (5w1s), 66.8 (5w5s)",
    "fewrel": "BERT-PAIR (Gao et al. 2019), FewRel val: 88.32 (5w1s), 93.22 (5w5s); frozen MiniLM with cosine "
              "centroids without entity marks, measured when the issue was written: 62.8 / 76.7",
}


def _baseline(bench: str, settings, episodes: int) -> dict[str, dict]:
    """Cosine nearest centroid on the frozen encoder's pooled embeddings, on the same test episodes as the
    runs (episodes depend only on the labels and the seed), from embeddings computed once per text."""
    from torch import nn

    from metaloop.algorithms import ProtoNet
    from metaloop.benchmarks import get_benchmark, resolve_config
    from metaloop.evaluation import evaluate_learner

    cfg = resolve_config("leo", bench)  # "leo" selects the frozen-encoder features as inputs
    learner = ProtoNet(nn.Flatten(), distance="cosine").eval()
    b = get_benchmark(bench)
    return {label: evaluate_learner(learner, b, {**cfg, **over}, episodes=episodes, steps=[0])["steps"]["0"]
            for label, over in settings}


def _adapt_latency(run: Path, repeats: int = 5) -> float:
    """Median ms of Adapter.fit (25 support texts) + predict (75 queries) on the run, tokenization included."""
    from metaloop.adaptation import Adapter
    from metaloop.benchmarks.text import _texts

    adapter = Adapter(run, min_shots=1)
    data = _texts("clinc150", "test", adapter.cfg["data"], None, ("text", "label", "split"))
    support, labels, queries = [], [], []
    for c in range(5):
        idx = (data.labels == c).nonzero().flatten().tolist()
        support += [data.texts[i] for i in idx[:5]]
        labels += [data.classes[c]] * 5
        queries += [data.texts[i] for i in idx[5:20]]
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        adapter.fit(support, labels).predict(queries)
        times.append(time.perf_counter() - t0)
    times = sorted(times[1:])
    return 1000 * times[len(times) // 2]


#: A run's results at the settings other than the one it was compared on, reused while its checkpoint,
#: config, the episodes and the setting are the same (testing the gradient-based family takes 30–150 min;
#: an interrupted test resumes from its last chunk of 100 episodes, kept in ``RUN/LABEL.partial.json``).
SETTING_CACHE = "text-settings.json"


def _device_label(device: str | None) -> str | None:
    """How a result tested on ``device`` is labelled in the table: ``None`` on a CPU (the block's machine
    sentence describes it), else the accelerator and the torch build that tested it."""
    where = torch.device(device or "cpu")
    if where.type == "cpu":
        return None
    name = torch.cuda.get_device_name(where.index) if where.type == "cuda" else str(where)
    return f"{name}, torch {torch.__version__}"


def _setting_result(run: Path, bench, label: str, over: dict, episodes: int, steps: int, evaluate: bool,
                    loaded: list, device: str | None = None) -> dict | None:
    """``{"mean", "ci95"}`` of ``run`` at one setting (plus ``"device"`` where it was tested on an accelerator,
    see ``_device_label``): from the run's cache, else evaluated (when ``evaluate``; ``None`` otherwise) on
    ``device`` (default: the run's). ``loaded`` holds the run's learner once it has been loaded. The test
    episodes and the key do not depend on the device, so a cached result is reused whichever device made it."""
    import json

    from metaloop.checkpoint import atomic_write_text
    from metaloop.comparison import _row_key
    from metaloop.evaluation import evaluate_learner, load_learner

    record = json.loads((run / "checkpoint.json").read_text())
    # compare's row key plus the setting, as JSON reads it back (tuples become lists), so that it compares equal to the stored key
    key = json.loads(json.dumps([*_row_key(run, record, episodes), steps, sorted(over.items())]))
    try:
        cache = json.loads((run / SETTING_CACHE).read_text())
    except (OSError, ValueError):
        cache = {}
    if cache.get(label, {}).get("key") == key:
        return cache[label]["result"]
    if not evaluate:
        return None
    if not loaded:
        loaded.append(load_learner(run, device=device))
    learner, _, cfg = loaded[0]
    # resumable: an interrupted test keeps its finished chunks of 100 episodes in the run
    result = evaluate_learner(learner, bench, {**cfg, **over}, episodes=episodes, steps=[steps],
                              partial=(run / f"{label}.partial.json", key))["steps"][str(steps)]
    tested_on = _device_label(cfg["device"])
    if tested_on is not None:
        result["device"] = tested_on
    cache[label] = {"key": key, "result": result}
    atomic_write_text(run / SETTING_CACHE, json.dumps(cache, indent=1))
    return result


def _failed_row(name: str, error: str, settings: int) -> str:
    """A table row for a run that failed: its error in the first setting's cell."""
    return f"| {name} | failed: {error.replace('|', '/')} |" + " |" * (settings + 2)


def main() -> None:
    parser = benchmark_parser(__doc__, runs="bench-text", algos=ALGOS, budget="4m", episodes=600)
    parser.add_argument("--sources", nargs="+", default=SOURCES, choices=SOURCES)
    parser.add_argument("--settings", nargs="+", metavar="LABEL",
                        help="evaluate only these settings (5w1s, 5w5s, 45w10s; default: all of each source's)")
    parser.add_argument("--evaluate", nargs="*", metavar="ALGO",
                        help="only these algorithms get new evaluations at the settings other than 5w1s; the "
                             "others show their cached ones, or 'not run' (default: all; none when empty)")
    parser.add_argument("--device", help="test the --evaluate runs on this device (e.g. cuda); a result from an "
                                         "accelerator is marked in the table with the device and torch build that "
                                         "made it (default: the device each run was trained on)")
    parser.add_argument("--shot-matched", nargs="+", default=[], metavar="ALGO", choices=ALGOS,
                        help="these algorithms also get a run meta-trained on 5-way 5-shot episodes, tested at 5w5s")
    args = parser.parse_args()
    command = command_line()

    from metaloop.benchmarks import get_benchmark
    from metaloop.comparison import compare

    protocol = (
        f"{machine_summary()} Budget: {args.budget} of meta-training per algorithm (`metaloop compare`), on "
        "all-MiniLM-L6-v2 with LoRA (rank 8) on the attention projections (frozen pretrained weights) and a "
        "zero-initialized head for the gradient-based family (inner loop: head + LoRA); LEO on the frozen encoder's "
        "pooled, unit-norm embeddings × 4 (`feature_scale`). Each run meta-trains once on 5-way 1-shot episodes "
        "and is tested on "
        f"{args.episodes} fixed episodes (15 queries per class; 5 at 45-way) of the held-out classes at each "
        "setting. Baseline: the frozen encoder, cosine nearest centroid, no meta-training." + extra_settings(args.sets)
        + (" Rows 'meta-trained at 5w5s' are a second run of the algorithm, meta-trained on 5-way 5-shot episodes "
           "under the same budget and tested at 5w5s only (Snell et al. 2017 meta-train with the test shot)."
           if args.shot_matched else "")
    )
    for source in args.sources:
        started = time.perf_counter()
        bench = f"{source}-5w1s"
        settings = [s for s in SETTINGS[source] if not args.settings or s[0] in args.settings]
        if not settings:
            parser.error(f"--settings: none of {' '.join(args.settings)} is a setting of {source} "
                         f"({', '.join(label for label, _ in SETTINGS[source])})")
        t0 = time.perf_counter()
        base = _baseline(bench, settings, args.episodes)
        base_time = time.perf_counter() - t0
        overrides = ["checkpoint_every=50", *args.sets]
        rows = compare(bench, args.algos, args.runs / source, budget=args.budget, episodes=args.episodes,
                       overrides=overrides, progress=False)
        b = get_benchmark(bench)
        header = " | ".join(f"{label} accuracy %" for label, _ in settings)
        lines = [f"## Few-shot text classification: {source}", "", f"Command: `{command}`. {protocol}", "",
                 f"Anchors: {ANCHORS[source]}.", "",
                 f"| algorithm | {header} | iterations | meta-training time | adaptation latency (5w1s) |",
                 "|---|" + "---|" * (len(settings) + 3)]
        cells = " | ".join(mean_ci(base[label]) for label, _ in settings)
        lines.append(f"| frozen encoder, cosine centroids | {cells} | 0 | – (eval {base_time:.0f} s) | – |")
        latency_note = ""
        pending = False
        measured: dict[str, dict[str, dict]] = {}
        elsewhere: dict[str, list[str]] = {}  # accelerator -> the cells tested on it
        for r in rows:
            if "error" in r:
                lines.append(_failed_row(r["algo"], r["error"], len(settings)))
                continue
            loaded: list = []
            cells = []
            for label, over in settings:
                if "ways" in over and algorithm(r["algo"]).role == "predictor":  # a head with ways outputs
                    cells.append("n/a (fixed 5-way head)")
                    continue
                if label == "5w1s":  # the benchmark's own setting: compare evaluated it
                    s = {"mean": r["mean"], "ci95": r["ci95"]}
                else:
                    s = _setting_result(Path(r["run"]), b, label, over, args.episodes, r["steps"],
                                        args.evaluate is None or r["algo"] in args.evaluate, loaded, args.device)
                if s is not None and "device" in s:
                    elsewhere.setdefault(s["device"], []).append(f"{r['algo']} at {label}")
                cells.append("not run" if s is None else mean_ci(s) + (" †" if "device" in s else ""))
                pending |= s is None
                if s is not None:
                    measured.setdefault(label, {})[r["algo"]] = s
            lines.append(f"| {r['algo']} | {' | '.join(cells)} | {r['iterations']} | "
                         f"{r['train_seconds'] / 60:.1f} min | {r['latency_ms']:.0f} ms |")
            if r["algo"] == "protonet":
                latency_note = (f"`metaloop adapt` latency, this ProtoNet run, 5-way 5-shot on CLINC150 test intents "
                                f"(fit on 25 texts + predict 75, tokenization included, median of 5): "
                                f"{_adapt_latency(Path(r['run'])):.0f} ms.")
        matched = [] if not args.shot_matched or "5w5s" not in dict(settings) else compare(
            f"{source}-5w5s", args.shot_matched, args.runs / source / "5w5s", budget=args.budget,
            episodes=args.episodes, overrides=overrides, progress=False)
        for r in matched:  # the same test episodes as the 5w5s column (they depend on the labels and seed only)
            name = f"{r['algo']}, meta-trained at 5w5s"
            if "error" in r:
                lines.append(_failed_row(name, r["error"], len(settings)))
                continue
            s = {"mean": r["mean"], "ci95": r["ci95"]}
            measured.setdefault("5w5s", {})[name] = s
            cells = " | ".join(mean_ci(s) if label == "5w5s" else "–" for label, _ in settings)
            lines.append(f"| {name} | {cells} | {r['iterations']} | {r['train_seconds'] / 60:.1f} min | "
                         f"{r['latency_ms']:.0f} ms (5w5s) |")
        lines += ["", verdict(base, measured)]
        for device, cells in elsewhere.items():
            lines += ["", f"† tested on {device} ({', '.join(cells)}; same stored run and test episodes, "
                          "`--evaluate ALGO --device cuda`), not on the machine above."]
        if latency_note:
            lines += ["", latency_note]
        lines += ["", f"Wall time of this invocation for {source}: {(time.perf_counter() - started) / 60:.0f} min. "
                      "Finished runs are reused and their evaluations cached, so it counts only what this invocation "
                      f"trained and evaluated; a run's evaluation takes about {args.episodes} × its adaptation "
                      "latency (plus the query predictions), on top of its meta-training time."]
        if pending:
            lines += ["", "*not run*: that run has not been tested at that setting yet. Testing is what costs time here "
                          "(the gradient-based family takes 10 LoRA steps through the encoder per episode, so more at "
                          "5 shots than at 1; the SVM head solves a QP in 45 × the support size unknowns at 45-way "
                          "10-shot); `--evaluate ALGO` tests it from the stored run and fills the cell in."]
        replace_block(args.results, f"text-{source}", "\n".join(lines))
        print(f"wrote {source} to {args.results}", flush=True)


def verdict(base: dict[str, dict], measured: dict[str, dict[str, dict]]) -> str:
    """Per setting: whether the best meta-trained result beats the baseline beyond both 95% intervals.
    ``measured[label][algo]`` is ``{"mean", "ci95"}``; settings without a measured run are left out."""
    lines = []
    for label, b in base.items():
        done = {a: r for a, r in measured.get(label, {}).items() if r["mean"] is not None}
        if not done:
            continue
        algo, best = max(done.items(), key=lambda item: item[1]["mean"])
        clear = best["mean"] - best["ci95"] > b["mean"] + b["ci95"]
        lines.append(f"- {label}: the best meta-trained run ({algo}, {best['mean']:.2f}) is "
                     f"{best['mean'] - b['mean']:+.2f} points from the frozen baseline ({b['mean']:.2f}): "
                     + ("**beats it beyond both 95% intervals**." if clear else "**does not beat it clearly** (the "
                        "95% intervals overlap, or it is below)."))
    return "\n".join(lines) if lines else "No meta-trained run finished."


if __name__ == "__main__":
    main()
