"""The benchmark registry: resolving the user's data paths, and the model-size check before allocation."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaloop.benchmarks import check_model_size, get_benchmark, resolve_config, user_data_name
from metaloop.errors import MetaloopError


def test_a_model_beyond_the_device_memory_is_refused_before_it_is_allocated():
    """The sinusoid MLP with two hidden layers of 10⁶ is 10¹² parameters: 16 TB with gradients and Adam's
    state. It is counted on the meta device (no memory) and refused, naming the option and the estimate."""
    cfg = resolve_config("maml", "sinusoid", overrides={"hidden": [1_000_000, 1_000_000]})
    with pytest.raises(MetaloopError, match=r"hidden=\[1000000, 1000000\]: the model would have 1e\+12 parameters, "
                                            r"at least 16 TB"):
        check_model_size(get_benchmark("sinusoid"), cfg)
    cfg = resolve_config("maml", "sinusoid")
    assert check_model_size(get_benchmark("sinusoid"), cfg) == 1761  # 1·40 + 40 + 40·40 + 40 + 40 + 1


def test_user_data_paths_are_made_absolute_at_train_time(tmp_path: Path, monkeypatch):
    """`text:FILE` and `images:PATH` are stored with an absolute path, so that a run's eval and adapt work from
    any working directory; a missing file is refused there, while `get_benchmark` (adapt) needs no file."""
    (tmp_path / "topics.csv").write_text("text,label\na,b\n")
    (tmp_path / "pics").mkdir()
    monkeypatch.chdir(tmp_path)
    assert user_data_name("text:topics.csv") == f"text:{tmp_path / 'topics.csv'}"
    assert user_data_name("images:pics") == f"images:{tmp_path / 'pics'}"
    assert user_data_name("sinusoid") == "sinusoid"
    with pytest.raises(MetaloopError, match="file missing.csv does not exist"):
        user_data_name("text:missing.csv")
    with pytest.raises(MetaloopError, match="no such folder or CSV file"):
        user_data_name("images:nowhere")
    assert get_benchmark("text:gone.csv").name == "text:gone.csv"
    assert resolve_config("protonet", "text:topics.csv")["benchmark"] == f"text:{tmp_path / 'topics.csv'}"
