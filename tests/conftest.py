"""Shared test set-up: long runs are marked ``slow`` and skipped unless METALOOP_SLOW=1; the data root is
``../shared/data`` beside the repository where it exists and METALOOP_DATA is not set (the package itself has no
such default). The ``cli`` fixture runs the command line in-process."""

import os
from pathlib import Path

import pytest
import torch

from metaloop.cli import main

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
if SHARED_DATA.is_dir():
    os.environ.setdefault("METALOOP_DATA", str(SHARED_DATA))


@pytest.fixture
def cli(capsys):
    """``cli(*argv) -> (exit code, stdout, stderr)``: metaloop's command line run in-process (argparse's errors
    exit through SystemExit: its code is returned)."""
    def run(*argv):
        try:
            code = main([str(a) for a in argv])
        except SystemExit as exc:
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


def pytest_collection_modifyitems(config, items):
    if os.environ.get("METALOOP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set METALOOP_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Tests use tiny tensors, for which intra-op threads cost far more than they give (on a busy
    2-core machine, up to 70× on small conv and attention ops)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ------------------------------------------------------------------------------- text: a tiny offline encoder
#: Words the tiny tokenizer knows whole (any other word is split into letters and ``##`` pieces).
TINY_WORDS = (
    "a an and the to my me is what how of in on for at please can you i do it this that "
    "book flight rome paris fly cancel card bank balance transfer money weather today tomorrow rain "
    "set alarm wake play music song volume pizza order dinner recipe cook timer call mom email"
).split()


def _tiny_vocab() -> list[str]:
    import string

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    singles = list(string.ascii_lowercase + string.digits + string.punctuation)
    pieces = [f"##{c}" for c in string.ascii_lowercase + string.digits]
    return list(dict.fromkeys(specials + sorted(TINY_WORDS) + singles + pieces))


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory):
    """A tiny random BERT (hidden 16, 1 layer, 2 heads) saved with its tokenizer as a local Hugging Face
    model folder, for ``encoder=PATH``: text tests run offline in milliseconds per forward pass."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = _tiny_vocab()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    try:  # transformers ≥ 5 takes the vocabulary itself; 4.x its file
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    except TypeError:
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    if len(tokenizer) != len(vocab):
        tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    assert len(tokenizer) == len(vocab)
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        BertModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def text_cache(tmp_path_factory):
    """One ``$METALOOP_CACHE`` for the text tests of a session (token ids computed once, not in ~/.cache)."""
    return tmp_path_factory.mktemp("text-cache")


@pytest.fixture
def text_env(tiny_bert, text_cache, monkeypatch):
    """The tiny encoder's folder, with ``$METALOOP_CACHE`` pointing at the session's text cache."""
    monkeypatch.setenv("METALOOP_CACHE", str(text_cache))
    return tiny_bert


def _has_data(*files: str) -> bool:
    from metaloop.data import data_root
    from metaloop.errors import MetaloopError

    try:
        root = data_root()
    except MetaloopError:
        return False
    return all((root / f).is_file() for f in files)


@pytest.fixture(scope="session")
def clinc_data():
    """Skip unless CLINC150 is under the data root."""
    if not _has_data("clinc150/data_full.json", "clinc150/domains.json"):
        pytest.skip("CLINC150 (clinc150/data_full.json, domains.json) is not under the data root")


# ------------------------------------------------------------------------------- llm: a tiny offline causal LM
@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    """A tiny random Llama (width 32, 2 layers, tied embeddings, like SmolLM2's architecture) with a byte-level
    BPE tokenizer trained on a few words, saved as a local Hugging Face folder for ``lm=PATH``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-llama")
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    corpus = [" ".join(TINY_WORDS), "Input: Output: travel banking music weather", "\n"] * 4
    bpe.train_from_iterator(corpus, trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=bpe, pad_token="<pad>", eos_token="<eos>")
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         tie_word_embeddings=True, pad_token_id=0, eos_token_id=1, bos_token_id=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder
