"""The registry of named benchmarks: task source, backbone, loss, metric and preset hyper-parameters."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from metaloop.algorithms import ALGORITHMS, LEO, MAML, MetaLearner, MetaOptNet
from metaloop.benchmarks.base import Benchmark, TaskSource
from metaloop.benchmarks.fewshot_images import MINIIMAGENET, OMNIGLOT, OMNIGLOT_LAKE
from metaloop.benchmarks.llm import LLM_TASKS, llm_benchmark
from metaloop.benchmarks.llm import PREFIX as LLM_PREFIX
from metaloop.benchmarks.lm import LM
from metaloop.benchmarks.sinusoid import SINUSOID
from metaloop.benchmarks.text import PREFIX as TEXT_PREFIX
from metaloop.benchmarks.text import TEXT, user_text_benchmark
from metaloop.benchmarks.user_images import PREFIX as USER_PREFIX
from metaloop.benchmarks.user_images import user_image_benchmark
from metaloop.config import load_yaml, parse_set, resolve
from metaloop.errors import MetaloopError

__all__ = ["BENCHMARKS", "Benchmark", "TaskSource", "build_learner", "check_model_size", "get_benchmark",
           "resolve_config"]

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [SINUSOID, *OMNIGLOT, OMNIGLOT_LAKE, *MINIIMAGENET, *TEXT, *LM,
                                                         LLM_TASKS]}


def get_benchmark(name: str) -> Benchmark:
    """The registered benchmark ``name``, or the user's data: ``images:PATH`` or ``text:FILE``."""
    if name.startswith(USER_PREFIX):
        return user_image_benchmark(name)
    if name.startswith(TEXT_PREFIX):
        return user_text_benchmark(name)
    if name.startswith(LLM_PREFIX):
        return llm_benchmark(name)
    if name not in BENCHMARKS:
        raise MetaloopError(f"unknown benchmark '{name}' (known: {', '.join(BENCHMARKS)}, images:PATH, text:FILE, "
                            "llm-tasks:FILE.jsonl)")
    return BENCHMARKS[name]


#: Algorithms that only classify (their heads are class prototypes or per-class solvers).
CLASSIFICATION_ONLY = frozenset({"protonet", "metaoptnet-svm", "metaoptnet-ridge", "leo"})
#: Algorithms that need the language-model benchmarks' prompt scorer (and the benchmarks those alone serve).
PROMPT_ONLY = frozenset({"metaicl"})
NOT_FOR_PROMPTS = frozenset({"protonet", "metaoptnet-svm", "metaoptnet-ridge", "leo", "anil"})


def _is_llm(benchmark: Benchmark) -> bool:
    return benchmark.name == LLM_TASKS.name or benchmark.name.startswith(LLM_PREFIX)


def check_algorithm(name: str, benchmark: Benchmark | None = None) -> None:
    if name not in ALGORITHMS:
        raise MetaloopError(f"unknown algorithm '{name}' (known: {', '.join(ALGORITHMS)})")
    if benchmark is None:
        return
    if name in CLASSIFICATION_ONLY and not benchmark.classification:
        raise MetaloopError(f"algorithm '{name}' classifies; benchmark '{benchmark.name}' is a regression benchmark")
    if name in PROMPT_ONLY and not _is_llm(benchmark):
        raise MetaloopError(f"algorithm '{name}' needs a language-model benchmark (llm-tasks), not '{benchmark.name}'")
    if name in NOT_FOR_PROMPTS and _is_llm(benchmark):
        raise MetaloopError(f"algorithm '{name}' works on embeddings or a classifier head; benchmark "
                            f"'{benchmark.name}' scores prompts with a language model (use metaicl, maml, fomaml, "
                            "reptile, metasgd or pretrain)")


def resolve_config(
    algo: str | None,
    benchmark: str | None,
    *,
    config_file: str | Path | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
) -> dict[str, Any]:
    """The full config of a run: defaults < benchmark preset < algorithm preset < file < overrides.

    ``overrides`` is a mapping, or ``key=value`` strings as given to ``--set``. ``algo`` and
    ``benchmark`` may instead come from the config file.
    """
    file_layer = dict(load_yaml(config_file)) if config_file is not None else {}
    algo = algo or file_layer.pop("algo", None)
    benchmark = benchmark or file_layer.pop("benchmark", None)
    file_layer.pop("algo", None)
    file_layer.pop("benchmark", None)
    if algo is None or benchmark is None:
        raise MetaloopError("both an algorithm (--algo) and a benchmark (--benchmark) are needed")
    benchmark = user_data_name(benchmark)
    bench = get_benchmark(benchmark)
    check_algorithm(algo, bench)
    if overrides is None:
        set_layer: Mapping[str, Any] = {}
    elif isinstance(overrides, Mapping):
        set_layer = overrides
    else:
        set_layer = parse_set(overrides)
    layers = [
        (f"benchmark '{benchmark}'", bench.defaults),
        (f"algorithm '{algo}' preset", bench.algo_defaults.get(algo, {})),
        (f"config file '{config_file}'", file_layer),
        ("--set", set_layer),
    ]
    cfg = resolve(bench.all_options(), layers)
    check_device(cfg["device"])
    return {"algo": algo, "benchmark": benchmark, **cfg}


def user_data_name(benchmark: str) -> str:
    """``images:PATH``, ``text:FILE`` and ``llm-tasks:FILE`` with an absolute path (the data must exist): a run then finds its data
    from any working directory. Other names unchanged."""
    for prefix in (USER_PREFIX, TEXT_PREFIX, LLM_PREFIX):
        if benchmark.startswith(prefix):
            path = Path(benchmark.removeprefix(prefix).strip()).expanduser()
            if not str(path) or str(path) == ".":
                break
            if prefix in (TEXT_PREFIX, LLM_PREFIX) and not path.is_file():
                raise MetaloopError(f"benchmark '{benchmark}': file {path} does not exist")
            if not path.exists():
                raise MetaloopError(f"benchmark '{benchmark}': no such folder or CSV file")
            return prefix + str(path.resolve())
    return benchmark


def check_device(device: str) -> None:
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MetaloopError(f"option 'device': {device!r} is not a torch device (cpu, cuda, cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise MetaloopError(f"option 'device': {device!r} requested but CUDA is not available (a run trained on a "
                            "GPU evaluates with `eval --set device=cpu` and adapts with `adapt --device cpu`)")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise MetaloopError(f"option 'device': {device!r} is not supported (cpu, cuda, cuda:N)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise MetaloopError(f"option 'device': {device!r} requested but this PyTorch has no MPS (Apple GPU) support")


def device_memory(device: str) -> int:
    """Bytes of memory of ``device``: the machine's physical memory for the CPU, the GPU's own for CUDA."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return int(torch.cuda.get_device_properties(dev).total_memory)
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.3g} {unit}"
        n /= 1000
    raise AssertionError


#: Copies of a meta-learned parameter that meta-training holds at least: the weights, their gradient, Adam's two
#: moments (a frozen one: its weights only).
PARAMETER_COPIES = 4


def check_model_size(bench: Benchmark, cfg: Mapping[str, Any]) -> int:
    """Build the model on the ``meta`` device (no memory) and refuse one whose weights, and the gradients and
    optimizer state of its meta-learned ones, alone exceed the device's memory, naming the benchmark's
    ``size_options``. Returns the
    parameter count (0 for a benchmark without size options)."""
    if not bench.size_options:
        return 0
    with torch.device("meta"):
        model = bench.make_model(dict(cfg))
    count = sum(p.numel() for p in model.parameters())
    copies = sum(p.numel() * (PARAMETER_COPIES if p.requires_grad else 1) for p in model.parameters())
    need = copies * max((p.element_size() for p in model.parameters()), default=4)
    have = device_memory(cfg["device"])
    if need > have:
        values = ", ".join(f"{k}={cfg[k]!r}" for k in bench.size_options)
        raise MetaloopError(f"options {values}: the model would have {count:.3g} parameters, at least "
                            f"{_bytes(need)} with their gradients and Adam's state; {cfg['device']} has {_bytes(have)}")
    return count


def build_learner(cfg: Mapping[str, Any]) -> tuple[MetaLearner, Benchmark]:
    """The benchmark's model wrapped in the configured algorithm, on ``cfg['device']``.

    The model's initialization depends only on ``cfg['seed']``; the global RNG is left as it was.
    """
    bench = get_benchmark(cfg["benchmark"])
    check_algorithm(cfg["algo"])
    cls = ALGORITHMS[cfg["algo"]][0]
    if cfg.get("test_inner_lr") is not None and not issubclass(cls, MAML):  # Meta-SGD refuses it itself
        raise MetaloopError(f"option 'test_inner_lr': algorithm '{cfg['algo']}' has no fixed inner step size "
                            "(only the gradient-based family but Meta-SGD)")
    if cls is LEO:
        if bench.feature_dim is None:
            raise MetaloopError(f"algorithm 'leo' needs pretrained features, which benchmark '{bench.name}' lacks")
        learner = LEO(bench.feature_dim(dict(cfg)), inner_lr_init=cfg["inner_lr"], inner_steps=cfg["inner_steps"],
                      test_inner_steps=cfg["test_inner_steps"], seed=cfg["seed"], outer_clip_value=0.1,
                      outer_clip_norm=0.1, clip_norm=cfg["inner_clip"], path=cfg["path"],
                      chunk_size=cfg["chunk_size"])
        return learner.to(cfg["device"]), bench
    check_model_size(bench, cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg["seed"])
        model = bench.make_model(dict(cfg))
    kwargs: dict[str, Any] = dict(bn_mode=cfg["bn_mode"], path=cfg["path"], chunk_size=cfg["chunk_size"])
    if issubclass(cls, MAML):  # the gradient-based family
        kwargs.update(
            inner_lr=cfg["inner_lr"],
            inner_steps=cfg["inner_steps"],
            test_inner_steps=cfg["test_inner_steps"],
            test_inner_lr=cfg.get("test_inner_lr"),
            adapt=cfg["adapt"],
            clip_norm=cfg["inner_clip"],
            inner_optimizer=cfg["inner_optimizer"],
        )
    if cfg["algo"] == "maml":
        kwargs["first_order"] = cfg["first_order"]
    if cfg["algo"] == "reptile":
        kwargs.update(anneal=cfg["anneal"], outer_optimizer=cfg["outer_optimizer"], inner_batches=cfg["inner_batches"])
    if cfg["algo"] == "protonet":
        kwargs["distance"] = cfg["distance"]
    if cls is MetaOptNet:
        kwargs.update(head=cfg["algo"].removeprefix("metaoptnet-"), C_reg=cfg["svm_c"],
                      lambda_reg=cfg["ridge_lambda"], scale_init=cfg["logit_scale"])
    learner = cls(model, bench.loss_fn, **kwargs)
    return learner.to(cfg["device"]), bench
