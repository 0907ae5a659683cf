"""``metaloop adapt``: adapt a meta-trained classifier to the user's labelled examples, then predict.

From Python, :class:`Adapter` adapts once and predicts many times::

    adapter = Adapter("runs/clinc-protonet")
    adapter.fit(["book a flight to rome", "cancel my card", ...], ["travel", "banking", ...])
    adapter.predict(["fly me to paris"])      # [("travel", 0.93)]

From the shell::

    metaloop adapt RUN_DIR --support support.csv --query query.csv --out predictions.csv

The support file has the columns ``text,label`` (image runs: ``path,label``, paths relative to the
file's folder), the query file only ``text`` (or ``path``); CSV with a header, or JSON lines
(``.jsonl``). Predictions are written as CSV or JSON lines (by the ``--out`` suffix), one row per
query: the input, the predicted label and its probability (softmax of the adapted model's logits).

The adaptation is the run's own ``adapt`` (its inner loop with ``test_inner_steps``, or its closed-form
head): exactly what ``metaloop eval`` measures on test episodes.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from metaloop.benchmarks.fewshot_images import headless, warn_queries_in_support
from metaloop.checkpoint import atomic_write_text
from metaloop.errors import MetaloopError, MetaloopWarning
from metaloop.evaluation import load_learner
from metaloop.data.tables import read_table

FORMATS = (".csv", ".jsonl")


class Adapter:
    """A meta-trained run, adapted once to labelled examples, then predicting any number of inputs.

    Args:
        run_dir: a ``metaloop train`` run directory (its last checkpoint is used).
        steps: inner steps of the adaptation (default: the run's ``test_inner_steps``).
        min_shots: each label needs at least this many examples (default: the run's ``shots``).
        device: torch device (default: the run's).
    """

    def __init__(self, run_dir: str | Path, *, steps: int | None = None, min_shots: int | None = None,
                 device: str | None = None) -> None:
        self.run_dir = Path(run_dir)
        if not (self.run_dir / "config.yaml").is_file():
            raise MetaloopError(f"{self.run_dir}: not a run directory (no config.yaml)")
        self.learner, self.bench, self.cfg = load_learner(self.run_dir, device=device)
        if self.bench.environment is not None:
            raise MetaloopError(f"{self.run_dir}: adapt takes labelled examples; a reinforcement-learning run "
                                f"('{self.cfg['benchmark']}') adapts to its test environments in `metaloop eval`")
        if not self.bench.classification or self.bench.encode_inputs is None:
            raise MetaloopError(f"{self.run_dir}: adapt needs a classifier; benchmark '{self.cfg['benchmark']}' "
                                "is not a classification benchmark")
        self.input_column = self.bench.input_column or "text"
        self.label_column = self.bench.label_column
        self.steps = steps
        default_shots = 1 if self.bench.open_answers else self.cfg["shots"]
        self.min_shots = default_shots if min_shots is None else min_shots
        if self.min_shots < 1:
            raise MetaloopError(f"--min-shots must be positive, got {self.min_shots}")
        self.classes: list[str] = []
        self._state: Any = None
        self._device = next(self.learner.parameters()).device

    # ------------------------------------------------------------------ adapt once
    def fit(self, inputs: Sequence[str], labels: Sequence[str], *, base_dir: str | Path = ".",
            source: str = "support") -> "Adapter":
        """Adapt to labelled examples (texts, or image paths relative to ``base_dir``)."""
        if len(inputs) != len(labels) or not inputs:
            raise MetaloopError(f"{source}: need as many labels as inputs, and at least one example")
        for i, value in enumerate(inputs):
            if not str(value).strip():
                raise MetaloopError(f"{source}: example {i + 1} has an empty {self.input_column}")
        counts = Counter(str(label) for label in labels)
        self.classes = sorted(counts)
        _warn_similar_labels(self.classes, source)
        short = [c for c in self.classes if counts[c] < self.min_shots]
        if short:
            c = short[0]
            raise MetaloopError(f"{source}: label '{c}' has {counts[c]} example(s); this run needs at least "
                                f"{self.min_shots} per label (--min-shots to allow fewer)")
        if len(self.classes) < 2:
            raise MetaloopError(f"{source}: need at least 2 labels, got {len(self.classes)}")
        ways = self.cfg["ways"]
        if not self.bench.open_answers and not headless(self.cfg) and len(self.classes) > ways:
            raise MetaloopError(f"{self.run_dir}: its classifier head has {ways} outputs, but {source} has "
                                f"{len(self.classes)} labels (use a run trained with ways ≥ {len(self.classes)}, "
                                "or ProtoNet/MetaOptNet, which take any number)")
        x = self._encode(list(inputs), base_dir, source)
        y = torch.tensor([self.classes.index(str(label)) for label in labels], device=self._device)
        params = {k: v.detach() for k, v in self.learner.params().items()}
        with torch.enable_grad() if self.learner.has_inner_loop else torch.no_grad():
            state = self.learner.adapt(params, (x, y), steps=self.steps)
        self._state = _detach(state)
        return self

    def _encode(self, inputs: list[str], base_dir: str | Path, source: str) -> Any:
        assert self.bench.encode_inputs is not None
        try:
            x = self.bench.encode_inputs(self.cfg, inputs, Path(base_dir), self.classes)
        except MetaloopError as e:
            raise MetaloopError(f"{source}: {e}") from None
        return x.to(self._device)

    # ------------------------------------------------------------------ predict many times
    #: Queries encoded and predicted at a time by :meth:`predict_proba`: its peak memory is set by this
    #: batch, not by the number of queries.
    predict_batch: int = 256

    @torch.no_grad()
    def predict_proba(self, inputs: Sequence[str], *, base_dir: str | Path = ".", source: str = "query") -> torch.Tensor:
        """Class probabilities ``[n, len(classes)]`` (columns in the order of :attr:`classes`).

        The inputs are encoded and predicted :attr:`predict_batch` at a time; a query's probabilities do
        not depend on the other queries, so they are those of one batch of all. The exception is a model
        with transductive BatchNorm, which normalizes with the statistics of the whole query set (as in
        evaluation): its queries go in one batch.
        """
        if self._state is None:
            raise MetaloopError("Adapter: call fit(support examples) before predicting")
        if not inputs:
            return torch.zeros(0, len(self.classes))
        for i, value in enumerate(inputs):
            if not str(value).strip():
                raise MetaloopError(f"{source}: example {i + 1} has an empty {self.input_column}")
        values = list(inputs)
        fmodel = self.learner.fmodel
        whole_set = fmodel.has_batch_norm and fmodel.bn_mode == "transductive"
        size = len(values) if whole_set else max(1, self.predict_batch)
        probs = []
        for start in range(0, len(values), size):
            x = self._encode(values[start:start + size], base_dir, source)
            logits = self.learner.predict(self._state, x)[:, : len(self.classes)]
            probs.append(torch.softmax(logits.float(), dim=-1).cpu())
            del x, logits  # before the next batch is encoded
        return torch.cat(probs)

    def predict(self, inputs: Sequence[str], *, base_dir: str | Path = ".", source: str = "query") -> list[tuple[str, float]]:
        """``(label, probability)`` of the most probable class for each input."""
        probs = self.predict_proba(inputs, base_dir=base_dir, source=source)
        scores, index = probs.max(-1)
        return [(self.classes[int(i)], float(s)) for i, s in zip(index, scores)]


def _warn_similar_labels(labels: Sequence[str], source: str) -> None:
    """Labels that differ only by case or spacing are most likely one class written two ways."""
    groups: dict[str, list[str]] = {}
    for label in labels:
        groups.setdefault(" ".join(label.split()).lower(), []).append(label)
    similar = [names for names in groups.values() if len(names) > 1]
    if similar:
        shown = ", ".join(" / ".join(repr(n) for n in names) for names in similar[:3])
        warnings.warn(f"{source}: labels that differ only by case or spacing are separate classes: {shown}",
                      MetaloopWarning, stacklevel=3)


def _detach(state: Any) -> Any:
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {k: _detach(v) for k, v in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detach(v) for v in state))
    if isinstance(state, (list, tuple)):
        return type(state)(_detach(v) for v in state)
    return state


def check_out(out: Path, run_dir: Path, inputs: dict[str, Path], *, force: bool = False) -> None:
    """Refuse an ``--out`` that would replace an input (the support or query file), a file inside a run
    directory (its log, config or checkpoint), or, without ``force``, any existing file."""
    target = out.expanduser().resolve()
    for what, path in inputs.items():
        if target == Path(path).expanduser().resolve():
            raise MetaloopError(f"--out {out}: that is the {what} file; write the predictions to another file")
    for folder in (target.parent, *target.parent.parents):
        if folder == Path(run_dir).resolve() or (folder / "config.yaml").is_file() and (
                (folder / "checkpoint.json").exists() or (folder / "metrics.jsonl").exists()):
            raise MetaloopError(f"--out {out}: inside the run directory {folder}; write the predictions outside it")
    if target.is_dir():
        raise MetaloopError(f"--out {out}: is a directory; give a .csv or .jsonl file")
    if target.exists() and not force:
        raise MetaloopError(f"--out {out}: the file exists; --force replaces it")


def adapt_files(run_dir: str | Path, support: str | Path, query: str | Path, out: str | Path | None = None, *,
                label_column: str | None = None, input_column: str | None = None, steps: int | None = None,
                min_shots: int | None = None, device: str | None = None, force: bool = False) -> list[dict[str, Any]]:
    """``metaloop adapt``: read the files, adapt, predict; write ``out`` (CSV or JSONL) if given (atomically;
    see :func:`check_out` for what it may not replace). ``device`` overrides the run's (a run trained on a GPU
    adapts on a CPU-only machine with ``device="cpu"``)."""
    if out is not None and Path(out).suffix.lower() not in FORMATS:
        raise MetaloopError(f"--out {out}: expected a .csv or .jsonl file")
    if out is not None:
        check_out(Path(out), Path(run_dir), {"support": Path(support), "query": Path(query)}, force=force)
    # Read and check both files before the (slower) model load, so that a typo fails fast.
    support_table, query_table = read_table(support), read_table(query)
    adapter = Adapter(run_dir, steps=steps, min_shots=min_shots, device=device)
    name, kind = input_column or adapter.input_column, adapter.input_column
    what = f"the run's {kind} inputs"
    inputs = support_table.column(name, kind=kind, what=what, strip=kind != "text")
    labels = support_table.column(label_column or adapter.label_column, kind="label", what="the labels",
                                  integers=True, strip=True)
    queries = query_table.column(name, kind=kind, what=what, strip=kind != "text")
    adapter.fit(inputs, labels, base_dir=Path(support).parent, source=str(support))
    warn_queries_in_support(inputs, queries, kind=kind, support=support, query=query)  # queries in the support
    predictions = adapter.predict(queries, base_dir=Path(query).parent, source=str(query))
    rows = [{name: q, "prediction": label, "score": round(score, 6)} for q, (label, score) in zip(queries, predictions)]
    if out is not None:
        atomic_write_text(Path(out), format_rows(rows, Path(out).suffix.lower(), [name, "prediction", "score"]))
    return rows


def format_rows(rows: list[dict[str, Any]], suffix: str, fields: list[str]) -> str:
    if suffix == ".jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()
