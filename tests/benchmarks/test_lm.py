"""The lm-strings and lm-shakespeare benchmarks: presets, loss masking, exact match = greedy decoding,
and tiny end-to-end runs through the command line (MAML, Reptile, MAML on LoRA adapters, scratch)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")
pytest.importorskip("peft")

from metaloop.benchmarks import BENCHMARKS, build_learner, resolve_config  # noqa: E402
from metaloop.benchmarks.lm import exact_match, exact_match_percent, lm_loss  # noqa: E402
from metaloop.tuning import evaluate_scratch  # noqa: E402
from metaloop.cli import main  # noqa: E402
from metaloop.data import data_root  # noqa: E402
from metaloop.errors import MetaloopError  # noqa: E402
from metaloop.models.gpt import TinyGPT, greedy_decode  # noqa: E402
from metaloop.tasks.strings import SEP, StringTasks, encode  # noqa: E402

TINY = {"n_layer": 1, "n_embd": 16, "n_head": 2, "meta_batch_size": 2, "iterations": 2, "log_every": 1,
        "checkpoint_every": 2, "eval_episodes": 3, "eval_queries": 3, "shots": 2, "queries": 2}


def set_args(items: dict) -> list[str]:
    return [arg for k, v in items.items() for arg in ("--set", f"{k}={v}")]


def test_registered_with_presets():
    for name in ("lm-strings", "lm-shakespeare"):
        bench = BENCHMARKS[name]
        assert not bench.classification
        cfg = resolve_config("maml", name)
        assert cfg["eval_steps"] == [0, 1, 5, 10] and cfg["lora_rank"] == 0 and cfg["adapt"] == "all"
        assert cfg["time_budget"] is not None
        reptile = resolve_config("reptile", name)
        assert reptile["inner_optimizer"] == "adam" and reptile["anneal"]
    assert BENCHMARKS["lm-strings"].higher_is_better and not BENCHMARKS["lm-shakespeare"].higher_is_better
    with pytest.raises(MetaloopError, match="classifies"):
        resolve_config("protonet", "lm-strings")


def test_loss_scores_only_the_targets():
    """lm_loss is the mean cross-entropy over the positions whose target is not -100."""
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 7, generator=gen)
    y = torch.randint(7, (3, 5), generator=gen)
    y[0, :2] = y[2, 4] = -100
    keep = y != -100
    expected = F.cross_entropy(logits[keep], y[keep])
    torch.testing.assert_close(lm_loss(logits, y), expected)


def test_exact_match_on_hand_logits():
    y = torch.tensor([[-100, 2, 1], [-100, 0, 1]])
    logits = torch.zeros(2, 3, 3)
    logits[0, 0, 0] = logits[0, 1, 2] = logits[0, 2, 1] = 1.0  # right at both scored positions
    logits[1, 1, 0] = logits[1, 2, 2] = 1.0  # wrong at the last one
    assert exact_match(logits, y).tolist() == [True, False]
    assert exact_match_percent(logits, y).item() == pytest.approx(50.0)


def test_exact_match_equals_greedy_decoding():
    """On a random model, a query is teacher-forced exact iff greedy decoding after ``input>`` emits the
    answer: checked on answers the model decodes itself (exact), the same with one byte changed (not),
    and real task answers."""
    torch.manual_seed(0)
    model = TinyGPT(n_layer=1, n_embd=16, n_head=2).eval()
    _, pairs = StringTasks(1, 5, seed=1).examples(0)
    cases = []
    for inp, out in pairs:
        prompt = torch.tensor(list((inp + SEP).encode()))
        decoded = bytes(greedy_decode(model, prompt, 4).tolist())
        cases.append((inp, decoded))  # what greedy decoding says
        changed = bytearray(decoded)
        changed[2] = (changed[2] + 1) % 256
        cases.append((inp, bytes(changed)))  # wrong from the third byte on
        cases.append((inp, (out + "\n").encode()))  # the true answer
    length = max(len(i) + 1 + len(a) for i, a in cases)
    x = torch.zeros(len(cases), length, dtype=torch.long)
    y = torch.full((len(cases), length), -100, dtype=torch.long)
    for row, (inp, answer) in enumerate(cases):
        line = list((inp + SEP).encode() + answer)
        x[row, : len(line) - 1] = torch.tensor(line[:-1])
        y[row, len(inp): len(line) - 1] = torch.tensor(line[len(inp) + 1:])
    forced = exact_match(model(x), y).tolist()
    for row, (inp, answer) in enumerate(cases):
        greedy = bytes(greedy_decode(model, torch.tensor(list((inp + SEP).encode())), len(answer)).tolist())
        assert forced[row] == (greedy == answer), (inp, answer, greedy)
    assert forced[0::3] == [True] * len(pairs) and not any(forced[1::3])
    # the real answers, encoded by the task code, give the same verdicts
    xs, ys = encode(pairs, length=length)
    truth = [bytes(greedy_decode(model, torch.tensor(list((i + SEP).encode())), len(o) + 1).tolist())
             == (o + "\n").encode() for i, o in pairs]
    assert exact_match(model(xs), ys).tolist() == truth


def test_model_options_are_checked():
    cfg = resolve_config("maml", "lm-strings", overrides={"n_embd": 10, "n_head": 4})
    with pytest.raises(MetaloopError, match="n_embd"):
        build_learner(cfg)
    cfg = resolve_config("maml", "lm-strings", overrides={"adapt": "*lora_*"})
    with pytest.raises(MetaloopError, match="adapt"):
        build_learner(cfg)  # no adapters without lora_rank


def test_lora_learner_adapts_only_the_adapters():
    cfg = resolve_config("maml", "lm-strings", overrides={**TINY, "lora_rank": 2, "adapt": "*lora_*"})
    learner, _ = build_learner(cfg)
    assert learner.adapted_names and all("lora_" in n for n in learner.adapted_names)
    assert all(p.requires_grad for p in learner.parameters())  # the base is still meta-learned
    frozen, _ = build_learner({**cfg, "lora_freeze_base": True})
    opt_params = [p for p in frozen.parameters() if p.requires_grad]
    assert sum(p.numel() for p in opt_params) < 1000


@pytest.mark.parametrize("algo, extra", [("maml", {}), ("reptile", {}),
                                         ("maml", {"lora_rank": 2, "adapt": "'*lora_*'"})])  # YAML-quoted
def test_train_and_eval_through_the_cli(tmp_path, capsys, algo, extra):
    """`metaloop train` then `metaloop eval --json` on lm-strings: a checkpoint and exact-match percentages."""
    run = tmp_path / "run"
    assert main(["train", "--algo", algo, "--benchmark", "lm-strings", "--out", str(run), "--quiet",
                 *set_args({**TINY, **extra})]) == 0
    assert (run / "checkpoint.json").exists()
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--steps", "0,1", "--no-plots"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["metric"] == "exact match %" and result["episodes"] == 3
    for step in ("0", "1"):
        assert 0 <= result["steps"][step]["mean"] <= 100


def test_scratch_baseline():
    """evaluate_scratch: the random initialization fine-tuned on the support set, evaluated like a run."""
    result = evaluate_scratch("lm-strings", episodes=2, steps=[0, 2], overrides=TINY)
    assert result["algo"] == "scratch" and set(result["steps"]) == {"0", "2"}
    again = evaluate_scratch("lm-strings", episodes=2, steps=[0, 2], overrides=TINY)
    assert again["steps"] == result["steps"]


def test_results_per_task_family():
    """lm-strings reports each function family too: the families' task counts add up to the episodes, and
    their means, weighted by those counts, give the overall mean; the families are those of the test tasks."""
    from metaloop.tasks.strings import FAMILIES

    result = evaluate_scratch("lm-strings", episodes=12, steps=[0, 2], overrides=TINY)
    groups = result["groups"]
    assert set(groups) <= set(FAMILIES) and sum(g["tasks"] for g in groups.values()) == 12
    tasks = StringTasks(TINY["shots"], TINY["eval_queries"], seed=0, split="test")
    assert set(groups) == {tasks.task(i).family for i in range(12)}
    for step in ("0", "2"):
        weighted = sum(g["tasks"] * g["steps"][step]["mean"] for g in groups.values()) / 12
        assert weighted == pytest.approx(result["steps"][step]["mean"], abs=1e-9)


def _has_shakespeare() -> bool:
    try:
        return (data_root() / "tinyshakespeare" / "input.txt").exists()
    except MetaloopError:
        return False


@pytest.mark.skipif(not _has_shakespeare(), reason="TinyShakespeare not found under the data root")
def test_shakespeare_scratch_loss_decreases_with_steps():
    """lm-shakespeare's metric is the loss per byte: fine-tuning the random model on a speaker's lines
    lowers it on their other lines, from about ln 256."""
    result = evaluate_scratch("lm-shakespeare", episodes=2, steps=[0, 5],
                              overrides={**TINY, "inner_lr": 0.5, "shots": 3})
    before, after = result["steps"]["0"]["mean"], result["steps"]["5"]["mean"]
    assert abs(before - torch.log(torch.tensor(256.0)).item()) < 0.5
    assert after < before


def test_validation_tasks_come_from_the_meta_training_split():
    """choose_test_lr's tasks: meta-training functions (never a held-out one), not the training stream."""
    from metaloop.benchmarks.lm import validation_tasks
    from metaloop.tasks.strings import is_test

    cfg = resolve_config("maml", "lm-strings", overrides=TINY)
    tasks = validation_tasks(cfg)
    picked = [tasks.task(i) for i in range(40)]
    assert not any(is_test(t) for t in picked)
    train = BENCHMARKS["lm-strings"].train_tasks(cfg)
    assert [t.key for t in picked[:10]] != [train.task(i).key for i in range(10)]
    assert tasks.batch(0, 2).query_x.shape[1] == cfg["eval_queries"]


def test_choose_test_lr_picks_the_lowest_validation_loss(tmp_path, monkeypatch):
    """The chosen step size is the one with the lowest mean validation loss; the scratch baseline (no run)
    and a trained run both work, and Meta-SGD (learned rates) is refused."""
    import dataclasses

    from metaloop import tuning
    from metaloop.benchmarks import BENCHMARKS

    run = tmp_path / "run"
    assert main(["train", "--algo", "pretrain", "--benchmark", "lm-strings", "--out", str(run), "--quiet",
                 *set_args(TINY)]) == 0
    for run_dir in (str(run), None):
        chosen = tuning.choose_test_lr("lm-strings", run_dir, [1.0, 0.1], episodes=4, overrides=TINY)
        losses = {float(k): v for k, v in chosen["validation"].items()}
        assert len(losses) == 2
        assert chosen["test_inner_lr"] == min(losses, key=losses.__getitem__)
    # the choice follows the scores: make the smaller step size score lower
    real = BENCHMARKS["lm-strings"]
    monkeypatch.setitem(BENCHMARKS, "lm-strings",
                        dataclasses.replace(real, loss_fn=lambda logits, y: real.loss_fn(logits, y) * 0))
    tie = tuning.choose_test_lr("lm-strings", str(run), [1.0, 0.1], episodes=2)
    assert tie["test_inner_lr"] == 0.1  # a tie keeps the first (the run's own inner rate, 0.1 × 1)
    with pytest.raises(MetaloopError, match="factors"):
        tuning.choose_test_lr("lm-strings", str(run), [0.0])
    metasgd = tmp_path / "metasgd"
    assert main(["train", "--algo", "metasgd", "--benchmark", "lm-strings", "--out", str(metasgd), "--quiet",
                 *set_args(TINY)]) == 0
    with pytest.raises(MetaloopError, match="test_inner_lr"):
        tuning.choose_test_lr("lm-strings", str(metasgd), [1.0, 0.1], episodes=2)
