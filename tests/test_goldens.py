"""Goldens: every resolved config (algorithm × benchmark), the parameters (names and shapes) of every learner
that builds without data or a pretrained model, and `metaloop list --options` come out as recorded in
tests/goldens/. A refactor that changes none of them changes no run. Rewrite them, after checking the change
is meant, with ``METALOOP_WRITE_GOLDENS=1 pytest tests/test_goldens.py``."""

from __future__ import annotations

import json
import os
from pathlib import Path


from metaloop.algorithms import ALGORITHMS
from metaloop.benchmarks import BENCHMARKS, build_learner, resolve_config
from metaloop.cli import main
from metaloop.errors import MetaloopError

GOLDENS = Path(__file__).resolve().parent / "goldens"
#: Benchmarks whose models are built from options alone (no data, no pretrained weights).
LIGHT = ["sinusoid", "omniglot-5w1s", "omniglot-20w1s", "miniimagenet-5w1s", "lm-strings", "rl-nav2d"]


def check(name: str, value) -> None:
    path = GOLDENS / name
    text = json.dumps(value, indent=1, sort_keys=True, default=str) + "\n"
    if os.environ.get("METALOOP_WRITE_GOLDENS") == "1":
        path.write_text(text)
    assert path.exists(), f"no golden {path}: write it with METALOOP_WRITE_GOLDENS=1"
    assert text == path.read_text(), f"{name} differs from its golden"


def test_every_resolved_config(tmp_path):
    (tmp_path / "imgs").mkdir()
    (tmp_path / "t.csv").write_text("text,label\n")
    (tmp_path / "t.jsonl").write_text("")
    names = [*BENCHMARKS, f"images:{tmp_path / 'imgs'}", f"text:{tmp_path / 't.csv'}", f"llm-tasks:{tmp_path / 't.jsonl'}"]
    out = {}
    for bench in names:
        for algo in ALGORITHMS:
            key = f"{algo} @ {bench.replace(str(tmp_path), 'TMP')}"
            try:
                cfg = resolve_config(algo, bench)
                out[key] = {k: (v.replace(str(tmp_path), "TMP") if isinstance(v, str) else v) for k, v in cfg.items()}
            except MetaloopError as exc:
                out[key] = "error: " + str(exc).replace(str(tmp_path), "TMP")
    check("configs.json", out)


def test_every_light_learner():
    out = {}
    for bench in LIGHT:
        for algo in ALGORITHMS:
            key = f"{algo} @ {bench}"
            try:
                cfg = resolve_config(algo, bench)
                if algo == "leo":
                    continue  # builds its features from data
                learner, _ = build_learner(cfg)
                out[key] = {n: list(p.shape) for n, p in learner.state_dict().items()}
                out[key]["class"] = type(learner).__name__
            except MetaloopError as exc:
                out[key] = "error: " + str(exc)
    check("learners.json", out)


def test_list_options(capsys):
    assert main(["list", "--options"]) == 0
    check("list-options.json", capsys.readouterr().out.splitlines())
