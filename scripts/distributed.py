"""Scaling of distributed meta-training (metaloop/distributed.py): throughput, the all-reduce, and on paper.

    python scripts/distributed.py           # writes the `distributed` block of docs/performance.md (~5 min)

1. Throughput of the Omniglot 5-way 1-shot Conv-4 MAML meta-step (its preset: meta-batch 32, one inner step,
   second order) with 1 process × 2 threads, 1 process × 1 thread and 2 processes × 1 thread (gloo), on random
   28×28 data; each configuration in its own processes, the three interleaved over `--rounds` rounds; median
   seconds per meta-step (after warm-up steps), as steps per second and as ratios.
2. The all-reduce of a meta-gradient alone, 2 processes × 1 thread (gloo), for the meta-parameter counts of
   Conv-4 (Omniglot), MiniLM + LoRA (text), the byte-level GPT (lm) and SmolLM2 + LoRA (llm): median of 50.
3. On paper: the bytes each process sends per meta-step and the time a ring all-reduce needs for them on N
   GPUs (2(N − 1)/N × bytes / bandwidth + 2(N − 1) × latency), for 8, 64 and 512 GPUs, beside the measured step
   time: where communication stops being small against computation, more processes stop helping.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import ROOT, command_line, machine_summary, replace_block  # noqa: E402

CONFIGS = [("1 process × 2 threads", 1, 2), ("1 process × 1 thread", 1, 1), ("2 processes × 1 thread", 2, 1)]
#: Interconnect of the on-paper estimate: 200 Gb/s InfiniBand (25 GB/s per direction), 5 µs per message.
BANDWIDTH, LATENCY = 25e9, 5e-6


def _steps(rank: int, size: int, init: str, threads: int, steps: int, out: str) -> None:
    import torch
    import torch.distributed as dist

    from metaloop.benchmarks import build_learner, resolve_config
    from metaloop.distributed import World, share, sync_gradients
    from metaloop.tasks.base import TaskBatch

    torch.set_num_threads(threads)
    if size > 1:
        dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    cfg = resolve_config("maml", "omniglot-5w1s")
    learner, _ = build_learner(cfg)
    optimizer = learner.make_optimizer(cfg["outer_lr"])
    if size > 1:
        learner.gradient_sync = sync_gradients
    start, stop = share(cfg["meta_batch_size"], World(rank, size))
    n, q = stop - start, cfg["queries"]
    gen = torch.Generator().manual_seed(rank)
    batch = TaskBatch(torch.randn(n, 5, 1, 28, 28, generator=gen), torch.arange(5).repeat(n, 1),
                      torch.randn(n, 5 * q, 1, 28, 28, generator=gen), torch.arange(5).repeat_interleave(q).repeat(n, 1))
    times = []
    for i in range(steps + 2):
        if size > 1:
            dist.barrier()
        t0 = time.perf_counter()
        learner.meta_step(batch, optimizer)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        Path(out).write_text(json.dumps(times))
    if size > 1:
        dist.destroy_process_group()


def _allreduce(rank: int, size: int, init: str, counts: dict[str, int], out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=size)
    result = {}
    for name, count in counts.items():
        flat = torch.zeros(count + 2)
        times = []
        for i in range(55):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(flat)
            if i >= 5:
                times.append(time.perf_counter() - t0)
        result[name] = statistics.median(times)
    if rank == 0:
        Path(out).write_text(json.dumps(result))
    dist.destroy_process_group()


def run_child(kind: str, size: int, threads: int, payload: dict) -> object:
    """Run ``_steps`` or ``_allreduce`` in ``size`` fresh processes (spawned, gloo); rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        code = ("import json, sys, torch.multiprocessing as mp; sys.path.insert(0, sys.argv[1]); import distributed as d; "
                "a = json.loads(sys.argv[2]); f = getattr(d, '_' + a['kind']); size = a['size']; "
                "args = (size, a['init'], a['threads'], a['steps'], a['out']) if a['kind'] == 'steps' else "
                "(size, a['init'], a['counts'], a['out']); "
                "f(0, *args) if size == 1 else mp.start_processes(f, args=args, nprocs=size, start_method='spawn')")
        args = {"kind": kind, "size": size, "threads": threads, "init": f"file://{tmp}/rdzv", "out": str(out), **payload}
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).resolve().parent), json.dumps(args)],
                       check=True, env=env, cwd=ROOT)
        return json.loads(out.read_text())


def meta_parameter_counts() -> dict[str, int]:
    """Meta-learned parameters of each family's model (built on the meta device: no memory, no weights read)."""
    import torch

    from metaloop.benchmarks import resolve_config
    from metaloop.benchmarks.fewshot_images import _omniglot_model
    from metaloop.benchmarks.lm import _model as lm_model
    from metaloop.models.llm import add_lora
    from metaloop.models.text import TextEncoder

    def trainable(model: torch.nn.Module) -> int:
        return sum(p.numel() for p in model.parameters() if p.requires_grad)

    out = {}
    with torch.device("meta"):
        out["Conv-4, Omniglot 5-way (MAML)"] = trainable(_omniglot_model(resolve_config("maml", "omniglot-5w1s")))
        out["byte-level GPT, lm-strings (MAML)"] = trainable(lm_model(resolve_config("maml", "lm-strings")))
        from transformers import BertConfig, BertModel, LlamaConfig, LlamaForCausalLM

        minilm = BertModel(BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                                      intermediate_size=1536))
        out["MiniLM + LoRA 8 + head, text 5-way (MAML)"] = trainable(TextEncoder(minilm, 5, lora_rank=8))
        smol = LlamaForCausalLM(LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536,
                                            num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                            tie_word_embeddings=True))
        out["SmolLM2-135M + LoRA 8 on q, v (llm)"] = trainable(add_lora(smol, 8))
    return out


def ring(bytes_: float, n: int) -> float:
    return 2 * (n - 1) / n * bytes_ / BANDWIDTH + 2 * (n - 1) * LATENCY


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=6, help="timed meta-steps per configuration and round")
    parser.add_argument("--results", type=Path, default=ROOT / "docs" / "performance.md")
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name, _, _ in CONFIGS}
    for _ in range(args.rounds):  # interleaved, so that a slow period of the machine hits every configuration
        for name, size, threads in CONFIGS:
            times[name] += run_child("steps", size, threads, {"steps": args.steps})
            print(f"{name}: {statistics.median(times[name]):.3f} s/step so far", flush=True)
    median = {name: statistics.median(t) for name, t in times.items()}
    counts = meta_parameter_counts()
    reduce_s = run_child("allreduce", 2, 1, {"counts": counts, "steps": 0})
    one = median["1 process × 1 thread"]
    lines = [
        "## Distributed meta-training: scaling (metaloop/distributed.py)",
        "",
        f"Command: `{command_line()}`. {machine_summary()}",
        "",
        f"Omniglot 5-way 1-shot, Conv-4 (64 filters), second-order MAML with its preset (meta-batch 32, one inner "
        f"step), random 28×28 data; median seconds per meta-step over {args.rounds} interleaved rounds of "
        f"{args.steps} timed steps (after 2 warm-up steps), each configuration in fresh processes.",
        "",
        "| configuration | s / meta-step | meta-steps / s | vs 1 process × 1 thread |",
        "|---|---|---|---|",
    ]
    for name, _, _ in CONFIGS:
        lines.append(f"| {name} | {median[name]:.3f} | {1 / median[name]:.2f} | {one / median[name]:.2f}× |")
    ratio = one / median["2 processes × 1 thread"]
    lines += ["", f"Two processes of one thread: {ratio:.2f}× one process of one thread (target ≥ 1.7×); "
              f"{median['1 process × 2 threads'] / median['2 processes × 1 thread']:.2f}× one process of two threads.",
              "", "The all-reduce alone (2 processes × 1 thread, gloo on this machine; median of 50), and on paper the "
              f"ring all-reduce of the same bytes on N GPUs ({BANDWIDTH / 1e9:.0f} GB/s, {LATENCY * 1e6:.0f} µs per "
              "message: 200 Gb/s InfiniBand):", "",
              "| meta-parameters | count | bytes (float32) | all-reduce, 2 processes here | 8 GPUs | 64 GPUs | 512 GPUs |",
              "|---|---|---|---|---|---|---|"]
    for name, count in counts.items():
        size = 4 * (count + 2)
        paper = " | ".join(f"{ring(size, n) * 1e3:.2f} ms" for n in (8, 64, 512))
        lines.append(f"| {name} | {count:,} | {size / 1e6:.2f} MB | {reduce_s[name] * 1e3:.2f} ms | {paper} |")
    conv = 4 * (counts["Conv-4, Omniglot 5-way (MAML)"] + 2)
    lines += ["", f"Against the Conv-4 meta-step ({one:.2f} s on one thread here, and some 10–100× less on a GPU), the "
              f"all-reduce is small: {ring(conv, 512) * 1e3:.1f} ms on 512 GPUs. What limits scaling is the meta-batch: "
              "each process needs at least one task, so the number of processes that help is at most the meta-batch "
              "size (32 here), beyond which processes idle."]
    page = args.results
    if page.exists() and "<!-- BEGIN" not in page.read_text():  # scripts/speed.py's page from before blocks
        old = page.read_text().split("\n")
        body = "\n".join(old[old.index(next(line for line in old if line.startswith("Command:"))):])
        page.write_text(PERF_HEADER + "\n<!-- BEGIN speed -->\n## One meta-step against a plain PyTorch loop\n\n"
                        + body.rstrip() + "\n<!-- END speed -->\n")
    replace_block(page, "distributed", "\n".join(lines), header=PERF_HEADER)
    print(f"wrote the distributed block of {page}")


PERF_HEADER = "# Performance\n\nEvery number on this page is written by a script in `benchmarks/`; none is typed in by hand.\n"

if __name__ == "__main__":
    main()
