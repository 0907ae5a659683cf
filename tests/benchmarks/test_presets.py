"""The presets as data: metaloop/benchmarks/presets/*.yaml give every benchmark's presets, each file is usable
as --config (the same config as without it), an edited copy changes the run, and a malformed one is refused."""

from __future__ import annotations

import pytest
import yaml

from metaloop.algorithms import ALGORITHMS
from metaloop.benchmarks import BENCHMARKS, resolve_config
from metaloop.benchmarks.base import PRESETS
from metaloop.errors import MetaloopError

FAMILY = {"sinusoid": "sinusoid", "omniglot": "images", "miniimagenet": "images", "images": "images",
          "clinc150": "text", "hwu64": "text", "huffpost": "text", "fewrel": "text", "text": "text", "lm": "lm",
          "llm": "llm", "rl": "rl"}


def family(benchmark: str) -> str:
    return FAMILY[benchmark.replace(":", "-").split("-")[0]]


def names(tmp_path) -> list[str]:
    (tmp_path / "imgs").mkdir()
    (tmp_path / "t.csv").write_text("text,label\n")
    (tmp_path / "t.jsonl").write_text("")
    return [*BENCHMARKS, f"images:{tmp_path / 'imgs'}", f"text:{tmp_path / 't.csv'}", f"llm-tasks:{tmp_path / 't.jsonl'}"]


def test_each_presets_file_as_config_resolves_the_same(tmp_path):
    checked = 0
    for bench in names(tmp_path):
        for algo in ALGORITHMS:
            try:
                plain = resolve_config(algo, bench)
            except MetaloopError:
                continue
            assert resolve_config(algo, bench, config_file=PRESETS / f"{family(bench)}.yaml") == plain, (algo, bench)
            checked += 1
    assert checked > 150
    assert sorted(p.stem for p in PRESETS.glob("*.yaml")) == sorted(set(FAMILY.values()))


def test_an_edited_copy_changes_the_run(tmp_path):
    doc = yaml.safe_load((PRESETS / "images.yaml").read_text(encoding="utf-8"))
    doc["benchmarks"]["omniglot-5w1s"]["preset"]["inner_lr"] = 0.25
    doc["benchmarks"]["omniglot-5w1s"]["algorithms"]["protonet"]["train_ways"] = 30
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    assert resolve_config("maml", "omniglot-5w1s", config_file=path)["inner_lr"] == 0.25
    proto = resolve_config("protonet", "omniglot-5w1s", config_file=path)
    assert proto["train_ways"] == 30 and proto["inner_lr"] == 0.25  # the benchmark preset applies to every algorithm
    assert resolve_config("maml", "omniglot-5w5s", config_file=path) == resolve_config("maml", "omniglot-5w5s")
    assert resolve_config("maml", "omniglot-5w1s", config_file=path, overrides=["inner_lr=0.3"])["inner_lr"] == 0.3


def test_an_option_the_benchmark_does_not_read_is_refused_in_a_presets_file(tmp_path):
    path = tmp_path / "rl.yaml"
    path.write_text(yaml.safe_dump({"benchmarks": {"rl-nav2d": {"preset": {"shots": 5}}}}))
    with pytest.raises(MetaloopError, match="option 'shots': benchmark 'rl-nav2d' does not read it"):
        resolve_config("maml", "rl-nav2d", config_file=path)


@pytest.mark.parametrize(("doc", "needle"), [
    ({"benchmarks": {"sinusoid": {"preset": {}}}}, "no presets for benchmark 'omniglot-5w1s' (it has: sinusoid)"),
    ({"benchmarks": {"omniglot-5w1s": {"preset": {}}}, "extra": 1}, "not 'extra'"),
    ({"benchmarks": ["omniglot-5w1s"]}, "'benchmarks' must map benchmark names"),
    ({"benchmarks": {"omniglot-5w1s": {"preset": [1, 2]}}}, "preset: expected a mapping"),
    ({"benchmarks": {"omniglot-5w1s": {"presets": {}}}}, "must have 'preset' and optionally 'algorithms'"),
    ({"benchmarks": {"omniglot-5w1s": {"preset": {"no_such_option": 1}}}}, "no_such_option"),
    ({"algorithms": {"maml": {"distance": "cosine"}}, "benchmarks": {"omniglot-5w1s": {"preset": {}}}},
     "option 'distance': algorithm 'maml' does not read it"),
])
def test_a_malformed_presets_file_is_refused(tmp_path, doc, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(MetaloopError, match="bad.yaml") as err:
        resolve_config("maml", "omniglot-5w1s", config_file=path)
    assert needle in str(err.value)
