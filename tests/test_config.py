"""Run configuration: layer order, --set parsing and option type errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaloop.benchmarks import BENCHMARKS, resolve_config
from metaloop.config import OPTIONS, Option, parse_set, resolve
from metaloop.errors import MetaloopError


def test_resolve_order_defaults_benchmark_algorithm_file_set(tmp_path: Path):
    """defaults < benchmark preset < algorithm preset < config file < --set, key by key."""
    bench = BENCHMARKS["sinusoid"]
    preset, reptile = bench.defaults, bench.algo_defaults["reptile"]
    # a key set by the benchmark preset only, and one that the reptile preset overrides
    bench_only = next(k for k in preset if k not in reptile and preset[k] != OPTIONS[k].default)
    both = next(k for k in reptile if k in preset and reptile[k] != preset[k])
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("inner_lr: 0.0375\nshots: 4\nouter_lr: 0.2\n")
    cfg = resolve_config("reptile", "sinusoid", config_file=cfg_file, overrides=["outer_lr=0.3"])
    assert cfg["eval_seed"] == OPTIONS["eval_seed"].default  # defaults only
    assert cfg["eval_queries"] == 100  # the benchmark's own option, its default
    assert cfg[bench_only] == preset[bench_only]  # benchmark preset over the default
    assert cfg[both] == reptile[both]  # reptile preset over the benchmark preset
    assert cfg["outer_optimizer"] == reptile["outer_optimizer"] == "adam"  # reptile preset over the default
    assert cfg["inner_lr"] == 0.0375 and cfg["shots"] == 4  # file over presets
    assert cfg["outer_lr"] == 0.3  # --set over file over presets

    maml = resolve_config("maml", "sinusoid")  # the reptile preset applies to reptile only
    assert maml[both] == preset[both] and maml["outer_optimizer"] == "sgd"


def test_resolve_later_layers_win_and_defaults_are_copied():
    """resolve applies layers in order, and a default list is copied, not shared."""
    opts = {"a": Option("a", int, 1, ""), "b": Option("b", int, 2, ""), "c": Option("c", list, [1], "")}
    cfg = resolve(opts, [("first", {"a": 10, "b": 20}), ("second", {"b": 30})])
    assert cfg == {"a": 10, "b": 30, "c": [1]}
    cfg["c"].append(2)
    assert opts["c"].default == [1]


def test_resolve_config_takes_algo_and_benchmark_from_the_file(tmp_path: Path):
    """A config file may name algo and benchmark; they do not become options."""
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("algo: anil\nbenchmark: sinusoid\nshots: 10\n")
    cfg = resolve_config(None, None, config_file=cfg_file)
    assert cfg["algo"] == "anil" and cfg["benchmark"] == "sinusoid" and cfg["shots"] == 10


def test_parse_set_reads_yaml_values():
    """--set values are YAML (lists, booleans, floats, null); strings stay strings; the first '=' splits."""
    parsed = parse_set(["hidden=[40,40]", "anneal=true", "inner_lr=0.01", "queries=null", "adapt=head",
                        "iterations=7", "adapt2=a=b", " shots = 3"])
    assert parsed == {"hidden": [40, 40], "anneal": True, "inner_lr": 0.01, "queries": None, "adapt": "head",
                      "iterations": 7, "adapt2": "a=b", "shots": 3}
    assert isinstance(parsed["inner_lr"], float) and isinstance(parsed["iterations"], int)


@pytest.mark.parametrize("item", ["iterations", "=3"])
def test_parse_set_rejects_items_without_key_and_value(item: str):
    """A --set item without 'key=' is a MetaloopError quoting the item."""
    with pytest.raises(MetaloopError, match="expected key=value") as info:
        parse_set([item])
    assert repr(item) in str(info.value)


@pytest.mark.parametrize(("option", "value", "problem"), [
    (OPTIONS["iterations"], "abc", "must be int"),
    (OPTIONS["iterations"], True, "must be int"),
    (OPTIONS["iterations"], 0, "must be positive"),
    (OPTIONS["inner_lr"], "fast", "must be float"),
    (OPTIONS["inner_lr"], -0.5, "must be positive"),
    (OPTIONS["seed"], -1, "must not be negative"),
    (OPTIONS["first_order"], "yes", "must be bool"),
    (OPTIONS["eval_steps"], [0, "a"], "must be a list of integers"),
    (OPTIONS["eval_steps"], [0, -1], "must not be negative"),
    (OPTIONS["bn_mode"], "batch", "must be one of transductive, running"),
    (OPTIONS["iterations"], None, "cannot be null"),
])
def test_option_coerce_errors_name_option_and_source(option: Option, value, problem: str):
    """A bad value raises MetaloopError that starts with the source and the option's name."""
    with pytest.raises(MetaloopError) as info:
        option.coerce(value, "config file 'exp.yaml'")
    message = str(info.value)
    assert message.startswith(f"config file 'exp.yaml': option '{option.name}'")
    assert problem in message


def test_option_coerce_accepts_valid_values():
    """coerce widens int to float, and nullable options accept None."""
    widened = OPTIONS["inner_lr"].coerce(1, "--set")
    assert widened == 1.0 and isinstance(widened, float)
    assert OPTIONS["queries"].coerce(None, "--set") is None
    assert OPTIONS["eval_steps"].coerce([0, 3], "--set") == [0, 3]


def test_resolve_config_errors_name_the_file(tmp_path: Path):
    """A wrong type or unknown key in a config file is reported with the file's name."""
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("iterations: abc\n")
    with pytest.raises(MetaloopError, match=r"config file '.*exp\.yaml': option 'iterations' must be int"):
        resolve_config("maml", "sinusoid", config_file=cfg_file)
    cfg_file.write_text("iteratoins: 5\n")
    with pytest.raises(MetaloopError, match=r"config file '.*exp\.yaml': unknown option 'iteratoins'"):
        resolve_config("maml", "sinusoid", config_file=cfg_file)
    with pytest.raises(MetaloopError, match=r"--set: option 'shots' must be positive"):
        resolve_config("maml", "sinusoid", overrides={"shots": 0})


def test_float_options_accept_exponent_without_dot():
    """`--set outer_lr=1e-4` works although YAML 1.1 reads 1e-4 as a string."""
    from metaloop.benchmarks import resolve_config

    assert resolve_config("maml", "sinusoid", overrides=["outer_lr=1e-4"])["outer_lr"] == 1e-4


@pytest.mark.parametrize("algo", ["metaoptnet-svm", "metaoptnet-ridge"])
def test_metaoptnet_options_reach_the_learner(algo: str):
    """`svm_c`, `ridge_lambda` and `logit_scale` configure the MetaOptNet head (no data is read)."""
    from metaloop.benchmarks import build_learner

    own, other = ("svm_c", "ridge_lambda") if algo.endswith("svm") else ("ridge_lambda", "svm_c")
    cfg = resolve_config(algo, "omniglot-5w1s", overrides={own: 0.5, "logit_scale": 7.5})
    learner, _ = build_learner(cfg)
    value = learner.C_reg if algo.endswith("svm") else learner.lambda_reg
    assert learner.head == algo.removeprefix("metaoptnet-") and value == 0.5
    assert float(learner.scale.detach()) == 7.5 and learner.scale.requires_grad
    with pytest.raises(MetaloopError, match=rf"option '{other}': algorithm '{algo}' does not read it"):
        resolve_config(algo, "omniglot-5w1s", overrides={other: 3.0})
    with pytest.raises(MetaloopError, match=r"option 'logit_scale' must be positive"):
        resolve_config(algo, "omniglot-5w1s", overrides={"logit_scale": 0})


def test_floats_must_be_finite_and_sizes_bounded():
    """inf and NaN are refused for every float option (YAML's .inf too); a maximum bounds a number and each
    element of a list, and the message gives the bound and why."""
    opts = {"lr": Option("lr", float, 0.1, "", positive=True), "n": Option("n", int, 1, "", maximum=10,
                                                                           why_maximum="ten is plenty"),
            "widths": Option("widths", list, [1], "", maximum=100)}
    for layer in ({"lr": float("inf")}, {"lr": float("nan")}, {"lr": "inf"}, parse_set(["lr=.inf"]),
                  parse_set(["lr=-.inf"]), parse_set(["lr=.nan"])):
        with pytest.raises(MetaloopError, match="option 'lr' must be a finite number"):
            resolve(opts, [("--set", layer)])
    with pytest.raises(MetaloopError, match=r"option 'n' is at most 10 \(ten is plenty\), got 11"):
        resolve(opts, [("--set", {"n": 11})])
    with pytest.raises(MetaloopError, match="option 'widths' is at most 100"):
        resolve(opts, [("--set", {"widths": [5, 101]})])
    assert resolve(opts, [("--set", {"n": 10, "widths": [100]})])["n"] == 10
    with pytest.raises(MetaloopError, match="iterations"):
        resolve_config("maml", "sinusoid", overrides=parse_set(["iterations=1e12"]))


def test_each_option_declares_who_may_change_it():
    """An option's stage says whether a resume (schedule, test, place) and eval (test, place) may change it;
    the run's identity is its algorithm, benchmark and the training options off their defaults."""
    assert OPTIONS["iterations"].resumable and not OPTIONS["iterations"].testable
    assert OPTIONS["test_inner_lr"].resumable and OPTIONS["test_inner_lr"].testable
    assert OPTIONS["device"].testable and not OPTIONS["inner_lr"].resumable
    omniglot = BENCHMARKS["omniglot-5w1s"].all_options()
    assert omniglot["eval_queries"].testable and omniglot["data"].testable and not omniglot["ways"].testable
    with pytest.raises(ValueError, match="stage"):
        Option("x", int, 1, "", stage="sometimes")
    from metaloop.config import trained_options

    cfg = resolve_config("maml", "sinusoid", overrides={"inner_lr": 0.02, "iterations": 7, "eval_queries": 3})
    assert trained_options(cfg, BENCHMARKS["sinusoid"].all_options()) == {
        "algo": "maml", "benchmark": "sinusoid", "inner_lr": 0.02,
        **{k: cfg[k] for k, o in BENCHMARKS["sinusoid"].all_options().items()
           if o.stage == "train" and cfg[k] != o.default and k != "inner_lr"}}


def test_an_option_the_algorithm_does_not_read_is_an_error(tmp_path):
    """Options are declared on the algorithm's class (`reads`): setting one it does not read is refused, naming the
    algorithms that do; presets (which set the common inner-loop options for every algorithm) are not checked.
    first_order is read by MAML, ANIL and Meta-SGD, and it reaches their learners."""
    from metaloop.benchmarks import build_learner

    for algo, key, value in [("anil", "distance", "cosine"), ("protonet", "inner_lr", 0.1), ("fomaml", "first_order", False),
                             ("maml", "anneal", True), ("leo", "bn_mode", "running"), ("protonet", "test_inner_lr", 0.1)]:
        bench = "omniglot-5w1s" if algo in ("protonet", "leo") else "sinusoid"
        with pytest.raises(MetaloopError, match=rf"--set: option '{key}': algorithm '{algo}' does not read it"):
            resolve_config(algo, bench, overrides={key: value})
    path = tmp_path / "c.yaml"
    path.write_text("distance: cosine\n")
    with pytest.raises(MetaloopError, match="config file .*option 'distance': algorithm 'maml' does not read it"):
        resolve_config("maml", "sinusoid", config_file=path)
    for algo in ("maml", "anil", "metasgd"):
        learner, _ = build_learner(resolve_config(algo, "sinusoid", overrides={"first_order": True}))
        assert learner.first_order, algo
    assert resolve_config("protonet", "omniglot-5w1s")["inner_lr"] == 0.4  # the preset is not the user's


def test_old_constructor_names_still_work_for_a_release():
    import torch.nn.functional as F

    from metaloop.algorithms import LEO, MAML, MetaOptNet
    from metaloop.models.mlp import MLP

    with pytest.warns(DeprecationWarning, match=r"MAML\(clip_norm=...\) is now MAML\(inner_clip=...\)"):
        assert MAML(MLP(1, [4], 1), F.mse_loss, clip_norm=0.5).clip_norm == 0.5
    with pytest.warns(DeprecationWarning, match="C_reg"):
        assert MetaOptNet(MLP(1, [4], 2), C_reg=0.3).C_reg == 0.3
    with pytest.warns(DeprecationWarning, match="lambda_reg"):
        assert MetaOptNet(MLP(1, [4], 2), head="ridge", lambda_reg=0.7).lambda_reg == 0.7
    with pytest.warns(DeprecationWarning, match="scale_init"):
        assert float(MetaOptNet(MLP(1, [4], 2), scale_init=3.0).scale.detach()) == 3.0
    with pytest.warns(DeprecationWarning, match="inner_lr_init"):
        leo = LEO(16, latent_dim=8, inner_lr_init=0.25)
    assert float(leo.params()["inner_lr"].detach().mean()) == 0.25
