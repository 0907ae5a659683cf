"""Few-shot text classification benchmarks on a pretrained sentence encoder (all-MiniLM-L6-v2 + LoRA).

Named benchmarks ``{clinc150,hwu64,huffpost,fewrel}-5w{1,5}s`` and ``clinc150-allw10s`` (all 45 test
intents, 10 shots), and the user's own file as ``text:FILE.csv|FILE.jsonl``. Classes of the test split
are never seen in meta-training (see :mod:`metaloop.data.texts` for each split). FewRel has only its
validation file, which is for testing: its benchmarks meta-train on the mix of the intent and news
sources (``train_sources``), as does ``text:FILE`` without a ``split`` column.

The backbone is :class:`~metaloop.models.text.TextEncoder`: frozen pretrained weights, LoRA adapters
(rank ``lora_rank``) on the attention projections and a zero-initialized linear head for the
gradient-based family; ProtoNet and the MetaOptNet heads work on its pooled embeddings (encoder
meta-trained through LoRA); LEO works on the frozen encoder's pooled embeddings, computed once.
The inner loop of the gradient-based family adapts the head and the LoRA parameters
(``adapt="head.*,*lora_*"``); ``train_encoder=full`` meta-learns every weight instead.

Token ids are computed once per (encoder, max_length, texts) and cached (:mod:`metaloop.data.tokens`).

Baseline (reported next to every meta-trained result): the frozen encoder with cosine nearest-centroid
classification and no meta-training — ``protonet`` with ``distance=cosine``, ``train_encoder=frozen``
and no training step (``scripts/text.py`` evaluates it directly).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from metaloop.benchmarks.base import Benchmark, presets
from metaloop.benchmarks.fewshot_images import (
    COMMON_OPTIONS,
    SplitView,
    _check_ways,
    _sources,
    classification_benchmark,
    headless,
    on_features,
    quoted,
    text_key,
    warn_repeated_inputs,
    warn_shared_splits,
)
from metaloop.config import Option
from metaloop.data import TEXT_SOURCES, file_stamp, table_texts, text_sources
from metaloop.data.labelled import LabelledExamples
from metaloop.data.tables import read_table
from metaloop.data.tokens import text_features, tokens_for
from metaloop.errors import MetaloopError
from metaloop.models.text import TextEncoder, encoder_path, load_encoder, load_tokenizer, tokenize

PREFIX = "text:"
#: Sources for meta-training when the benchmark's own data has no training classes.
DEFAULT_MIX = "clinc150,hwu64,huffpost"


@lru_cache(maxsize=8)
def _texts(source: str, split: str, root: str | None, train_sources: str | None, columns: tuple[str, ...],
           stamp: tuple[int, ...] | None = None) -> Any:
    """The labelled texts of a split: the benchmark's own source, or the mix of ``train_sources``. ``stamp``
    (:func:`~metaloop.data.file_stamp` of the user's file) makes an edited file be read again."""
    if split == "train" and train_sources:
        return text_sources(train_sources, split, root, "train_sources")
    if source.startswith(PREFIX):
        return _user_split(source.removeprefix(PREFIX), split, columns)
    return TEXT_SOURCES[source](split, root)


@lru_cache(maxsize=8)
def _tokens(source: str, split: str, root: str | None, train_sources: str | None, columns: tuple[str, ...],
            encoder: str, max_length: int, stamp: tuple[int, ...] | None = None) -> LabelledExamples:
    data = _texts(source, split, root, train_sources, columns, stamp)
    return LabelledExamples(tokens_for(list(data.texts), encoder, max_length), data.labels, list(data.classes))


@lru_cache(maxsize=8)
def _features(source: str, split: str, root: str | None, train_sources: str | None, columns: tuple[str, ...],
              encoder: str, max_length: int, stamp: tuple[int, ...] | None = None) -> Any:
    """Frozen-encoder embeddings (unit norm) of every text of a split, for LEO; cached on disk."""
    tokens = _tokens(source, split, root, train_sources, columns, encoder, max_length, stamp)
    return LabelledExamples(text_features(tokens.images, encoder), tokens.labels)


def _train_sources(cfg: dict[str, Any]) -> str | None:
    value = cfg["train_sources"]
    return value or None


def _data(source: str | None) -> Callable[[dict[str, Any], str], Any]:
    def data(cfg: dict[str, Any], split: str) -> Any:
        name = source or cfg["benchmark"]
        columns = (cfg["text_column"], cfg["label_column"], cfg["split_column"])
        args = (name, split, cfg["data"], _train_sources(cfg), columns)
        _check_length(cfg)
        stamp = file_stamp(name.removeprefix(PREFIX)) if name.startswith(PREFIX) else None
        if on_features(cfg):
            feats = _features(*args, cfg["encoder"], cfg["max_length"], stamp)
            return LabelledExamples(feats.images * cfg["feature_scale"], feats.labels)
        return _tokens(*args, cfg["encoder"], cfg["max_length"], stamp)

    return data


def make_text_model(cfg: dict[str, Any]) -> nn.Module:
    """The :class:`~metaloop.models.text.TextEncoder` for ``cfg`` (a head unless an embedding algorithm)."""
    _check_ways(cfg)
    if cfg["path"] == "vmap":  # transformers inspects the attention mask's values (data-dependent control flow)
        raise MetaloopError("option 'path': the text encoder runs on path=loop only (a Hugging Face encoder "
                            "cannot run under vmap)")
    ways = None if headless(cfg) else cfg["ways"]
    train_encoder = cfg["train_encoder"]
    rank = cfg["lora_rank"] if train_encoder == "lora" else 0
    # Scale of the unit-norm embedding: 10 before a linear head; √10 for distance heads, whose squared
    # distances then span [0, 40].
    scale = 10.0 if ways is not None else 10.0 ** 0.5
    return TextEncoder(load_encoder(cfg["encoder"]), ways, lora_rank=rank, train_encoder=train_encoder, scale=scale)


def _encoder_config(encoder: str) -> dict[str, Any]:
    return json.loads((encoder_path(encoder) / "config.json").read_text())


def _feature_dim(cfg: dict[str, Any]) -> int:
    return int(_encoder_config(cfg["encoder"])["hidden_size"])


def _check_length(cfg: dict[str, Any]) -> None:
    """``max_length`` within the encoder's position embeddings (else the forward pass fails on long texts)."""
    limit = _encoder_config(cfg["encoder"]).get("max_position_embeddings")
    if isinstance(limit, int) and cfg["max_length"] > limit:
        raise MetaloopError(f"option 'max_length': {cfg['max_length']} tokens, but the encoder has "
                            f"{limit} positions")


TEXT_OPTIONS = (
    *COMMON_OPTIONS[:4],
    Option("data", str, None, "data root (default: $METALOOP_DATA, then ~/.cache/metaloop/data)", nullable=True,
           stage="place"),
    Option("encoder", str, "minilm", "'minilm' (packaged all-MiniLM-L6-v2) or a local Hugging Face model folder"),
    Option("max_length", int, 64, "tokens per text (longer texts are truncated)", positive=True),
    Option("feature_scale", float, 1.0, "leo: multiply the frozen unit-norm embeddings by this (LEO's "
           "preset: 4, about 0.2 per dimension of MiniLM's 384; a smaller encoder needs less)", positive=True),
    Option("lora_rank", int, 8, "LoRA rank on the attention projections", positive=True),
    Option("train_encoder", str, "lora", "which encoder weights are meta-learned",
           choices=("lora", "full", "frozen")),
    Option("train_sources", str, None, "meta-train on this comma-separated mix of sources "
           "(clinc150, hwu64, huffpost) instead of the benchmark's training classes", nullable=True),
    Option("text_column", str, "text", "text:FILE: the column (or JSON field) of texts"),
    Option("label_column", str, "label", "text:FILE: the column (or JSON field) of labels"),
    Option("split_column", str, "split", "text:FILE: the column of splits (train, test); if the file has none, "
           "all its classes are for testing and meta-training uses train_sources"),
)

def encode_texts(cfg: dict[str, Any], texts: list[str], base_dir: Path, options: list[str] | None = None) -> Tensor:
    """Raw texts as the run's model input: packed tokens, or frozen-encoder features for LEO."""
    tokens = tokenize(texts, load_tokenizer(cfg["encoder"]), cfg["max_length"])
    if not on_features(cfg):
        return tokens

    model = TextEncoder(load_encoder(cfg["encoder"]), None, train_encoder="frozen", scale=1.0).eval()
    with torch.no_grad():
        return model(tokens) * cfg["feature_scale"]


def _text_benchmark(name: str, source: str | None, description: str, *, preset: str | None = None,
                    check_splits: Callable[[dict[str, Any]], None] | None = None) -> Benchmark:
    """A text benchmark; its presets are ``presets/text.yaml``'s entry ``preset`` (default: ``name``)."""
    return classification_benchmark(
        name=name,
        description=description,
        make_model=make_text_model,
        **_sources(_data(source)),
        options=TEXT_OPTIONS,
        **presets("text", preset or name),
        feature_dim=_feature_dim,
        input_column="text",
        encode_inputs=encode_texts,
        **({} if check_splits is None else {"check_splits": check_splits}),
    )


def _named() -> list[Benchmark]:
    out = []
    for src, what in [
        ("clinc150", "CLINC150 intents, held-out domains"),
        ("hwu64", "HWU64 intents, held-out scenarios"),
        ("huffpost", "HuffPost headlines, Bao et al. 2020 class split"),
        ("fewrel", "FewRel 1.0 val relations (entities marked), meta-trained on the intent+news mix"),
    ]:
        for shots in (1, 5):
            out.append(_text_benchmark(f"{src}-5w{shots}s", src, f"{what}, 5-way {shots}-shot"))
    out.append(_text_benchmark("clinc150-allw10s", "clinc150", "CLINC150, all 45 intents of the held-out domains, "
                               "10-shot"))
    return out


TEXT = _named()


# ------------------------------------------------------------------------------------- the user's own file
def _user_table(path: str) -> Any:
    return _user_table_cached(path, file_stamp(path))


@lru_cache(maxsize=8)
def _user_table_cached(path: str, stamp: tuple[int, ...] | None) -> Any:
    return read_table(path, what="text file")


def _user_split(path: str, split: str, columns: tuple[str, ...]) -> Any:
    """The rows of ``split`` (by the split column), or the whole file as the test split without one. Loading the
    test split warns when a text appears more than once in one of its classes."""
    data = _user_rows(path, split, columns)
    if split == "test":
        view = _text_view(data, _user_where(path, split, columns))
        warn_repeated_inputs(f"{PREFIX}{path}", "text", view, "compared ignoring case and spacing")
    return data


def _user_rows(path: str, split: str, columns: tuple[str, ...]) -> Any:
    """:func:`_user_split` without the check."""
    text_col, label_col, split_col = columns
    table = _user_table(path)
    if not table.has(split_col):  # every class is a test class
        if split == "train":
            raise MetaloopError(f"benchmark 'text:{path}': no '{split_col}' column, so meta-training needs "
                                "--set train_sources=clinc150,hwu64 (or other sources)")
        return table_texts(table, text_col, label_col)
    splits = table.column(split_col, kind="label", strip=True)
    rows = tuple(row for row, s in zip(table.rows, splits) if s == split)
    if not rows:
        raise MetaloopError(f"benchmark 'text:{path}': no row has {split_col}={split}")
    return table_texts(replace(table, rows=rows), text_col, label_col)


def _user_where(path: str, split: str, columns: tuple[str, ...]) -> str:
    """Where a split of ``text:FILE`` is, for messages: the rows of its split, or the whole file."""
    split_col = columns[2]
    return f"the {split_col}={split} rows of {path}" if _user_table(path).has(split_col) else path


def _text_view(data: Any, where: str) -> Any:
    classes = [data.classes[i] for i in data.labels.tolist()]
    return SplitView(where, classes, [text_key(t) for t in data.texts], [quoted(t) for t in data.texts])


def _check_user_splits(cfg: dict[str, Any]) -> None:
    """``check_splits`` of ``text:FILE``: warn when test classes are training classes (by name) or test texts
    are training texts (the training split of the file, or the ``train_sources`` mix)."""
    name = cfg["benchmark"]
    path, sources = name.removeprefix(PREFIX), _train_sources(cfg)
    columns = (cfg["text_column"], cfg["label_column"], cfg["split_column"])
    train, test = (_texts(name, s, cfg["data"], sources, columns) for s in ("train", "test"))
    train_where = f"train_sources={sources}" if sources else _user_where(path, "train", columns)
    warn_shared_splits(name, "text", _text_view(train, train_where),
                       _text_view(test, _user_where(path, "test", columns)))


def user_text_benchmark(name: str) -> Benchmark:
    """The benchmark for ``text:FILE`` (nothing is read until tasks are drawn: ``adapt`` needs no file;
    training checks that it exists, see :func:`metaloop.benchmarks.resolve_config`)."""
    path = name.removeprefix(PREFIX).strip()
    if not path:
        raise MetaloopError("benchmark 'text:': give a CSV or JSONL file after 'text:'")
    return _text_benchmark(name, None, "your own texts: text:FILE.csv|.jsonl (text,label[,split])", preset=PREFIX,
                           check_splits=_check_user_splits)
