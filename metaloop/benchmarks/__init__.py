"""The registry of named benchmarks: task source, backbone, loss, metric and preset hyper-parameters."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from metaloop.algorithms import ALGORITHMS, MetaLearner, algorithm, check_reads, registry
from metaloop.benchmarks.base import Benchmark, TaskSource
from metaloop.benchmarks.fewshot_images import MINIIMAGENET, OMNIGLOT, OMNIGLOT_LAKE
from metaloop.benchmarks.llm import LLM_TASKS, llm_benchmark
from metaloop.benchmarks.llm import PREFIX as LLM_PREFIX
from metaloop.benchmarks.lm import LM
from metaloop.benchmarks.rl import RL_CHEETAH, RL_NAV2D
from metaloop.benchmarks.sinusoid import SINUSOID
from metaloop.benchmarks.text import PREFIX as TEXT_PREFIX
from metaloop.benchmarks.text import TEXT, user_text_benchmark
from metaloop.benchmarks.user_images import PREFIX as USER_PREFIX
from metaloop.benchmarks.user_images import user_image_benchmark
from metaloop.config import load_yaml, parse_set, resolve
from metaloop.errors import MetaloopError

__all__ = ["BENCHMARKS", "Benchmark", "TaskSource", "build_learner", "check_model_size", "check_unread",
           "get_benchmark", "preset_layers", "resolve_config"]

BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in [SINUSOID, *OMNIGLOT, OMNIGLOT_LAKE, *MINIIMAGENET, *TEXT, *LM,
                                                         LLM_TASKS, RL_NAV2D, *RL_CHEETAH]}


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


def check_algorithm(name: str, benchmark: Benchmark | None = None) -> None:
    """Refuse an unknown algorithm, or one whose declared needs (its class's ``role``, ``classification_only``,
    ``needs_head``) the benchmark does not meet. On a reinforcement-learning benchmark the names are those of
    :data:`~metaloop.algorithms.RL_ALGORITHMS`."""
    if benchmark is not None and benchmark.environment is not None:
        if name not in registry(environment=True):
            raise MetaloopError(f"algorithm '{name}' does not learn from rollouts; benchmark '{benchmark.name}' is a "
                                f"reinforcement-learning benchmark (use {', '.join(registry(environment=True))})")
        return
    cls = algorithm(name)
    if benchmark is None:
        return
    if cls.classification_only and not benchmark.classification:
        raise MetaloopError(f"algorithm '{name}' classifies; benchmark '{benchmark.name}' is a regression benchmark")
    if cls.role == "prompts" and not benchmark.prompts:
        raise MetaloopError(f"algorithm '{name}' needs a language-model benchmark (llm-tasks), not '{benchmark.name}'")
    if benchmark.prompts and (cls.role in ("embedding", "features") or cls.needs_head):
        usable = [n for n, (c, _) in ALGORITHMS.items() if c.role in ("predictor", "prompts") and not c.needs_head]
        raise MetaloopError(f"algorithm '{name}' works on embeddings or a classifier head; benchmark "
                            f"'{benchmark.name}' scores prompts with a language model (use {', '.join(usable)})")


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
    source = f"config file '{config_file}'"
    if "benchmarks" in file_layer:  # a presets file (metaloop/benchmarks/presets/*.yaml, or an edited copy)
        file_preset, file_layer = preset_layers(file_layer, benchmark, algo, source)
    else:
        file_preset = {}
    layers = [
        (f"benchmark '{benchmark}'", bench.defaults),
        (f"algorithm '{algo}' preset", bench.algo_defaults.get(algo, {})),
        (f"{source}, benchmark preset", file_preset),
        (source, file_layer),
        ("--set", set_layer),
    ]
    rl = bench.environment is not None
    check_unread(bench, file_preset, f"{source}, benchmark preset")
    for source, layer in ((source, file_layer), ("--set", set_layer)):
        check_reads(algo, layer, source, environment=rl)  # the user's own layers, not the presets
        check_unread(bench, layer, source)
    cfg = resolve(bench.all_options(), layers)
    check_device(cfg["device"])
    return {"algo": algo, "benchmark": benchmark, **cfg}


def preset_layers(doc: Mapping[str, Any], benchmark: str, algo: str, source: str) -> tuple[dict, dict]:
    """A presets file used as ``--config``: the entry of ``benchmark`` (a user benchmark's by its prefix, such
    as ``images:``) gives its ``preset`` (applied like the built-in benchmark preset, so every algorithm takes
    it) and the algorithm entry of ``algo`` (the benchmark's own, else the file's), which must be read by
    ``algo``."""
    extra = sorted(set(doc) - {"benchmarks", "algorithms"})
    if extra:
        raise MetaloopError(f"{source}: a presets file has only 'algorithms' and 'benchmarks', not '{extra[0]}'")
    entries = doc["benchmarks"]
    if not isinstance(entries, Mapping):
        raise MetaloopError(f"{source}: 'benchmarks' must map benchmark names to their presets")
    prefix = benchmark.split(":", 1)[0] + ":" if ":" in benchmark else benchmark
    key = next((k for k in (benchmark, prefix, prefix.rstrip(":")) if k in entries), None)
    if key is None:
        raise MetaloopError(f"{source}: no presets for benchmark '{benchmark}' (it has: {', '.join(map(str, entries))})")
    entry = entries[key] if isinstance(entries[key], Mapping) else None
    if entry is None or set(entry) - {"preset", "algorithms", "demo"}:  # its demo concerns `metaloop demo` only
        raise MetaloopError(f"{source}: benchmark '{key}' must have 'preset' and optionally 'algorithms' and 'demo'")
    shared, own = doc.get("algorithms") or {}, entry.get("algorithms") or {}
    if not isinstance(shared, Mapping) or not isinstance(own, Mapping):
        raise MetaloopError(f"{source}: 'algorithms' must map algorithm names to their presets")
    layers = entry.get("preset") or {}, {**shared, **own}.get(algo) or {}
    for name, layer in zip(("preset", f"algorithms: {algo}"), layers):
        if not isinstance(layer, Mapping) or any(not isinstance(k, str) for k in layer):
            raise MetaloopError(f"{source}: benchmark '{key}', {name}: expected a mapping of option: value")
    return dict(layers[0]), dict(layers[1])


def check_unread(bench: Benchmark, keys: Iterable[str], source: str) -> None:
    """Refuse an option of ``keys`` (set by the user in ``source``) that the benchmark does not read."""
    for key in keys:
        if key in bench.unread_options:
            raise MetaloopError(f"{source}: option '{key}': benchmark '{bench.name}' does not read it")


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
    """The benchmark's model wrapped in the configured algorithm (:meth:`MetaLearner.from_config`), on
    ``cfg['device']``. The model's initialization depends only on ``cfg['seed']``; the global RNG is left as it was.
    """
    bench = get_benchmark(cfg["benchmark"])
    cls = algorithm(cfg["algo"], environment=bench.environment is not None)

    def model() -> nn.Module:
        check_model_size(bench, cfg)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg["seed"])
            return bench.make_model(dict(cfg))

    feature_dim = (lambda: bench.feature_dim(dict(cfg))) if bench.feature_dim is not None else None
    fixed = {} if bench.environment is None else {"environment": bench.environment}
    learner = cls.from_config(cfg, model, bench.loss_fn, feature_dim=feature_dim, **fixed)
    return learner.to(cfg["device"]), bench
