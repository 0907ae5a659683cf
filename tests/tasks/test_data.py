"""The data root and cache folder look-up (metaloop/data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaloop import data
from metaloop.data import cache_dir, data_root
from metaloop.errors import MetaloopError


@pytest.fixture
def no_defaults(tmp_path, monkeypatch):
    """No METALOOP_DATA, a working directory without ../shared/data, and a package far from any data."""
    monkeypatch.delenv("METALOOP_DATA", raising=False)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    monkeypatch.setattr(data, "__file__", str(tmp_path / "a" / "repo" / "metaloop" / "data.py"))
    return tmp_path


def test_order_argument_env_cwd_repository(no_defaults, monkeypatch):
    tmp = no_defaults
    with pytest.raises(MetaloopError) as e:
        data_root()
    assert str(tmp / "shared" / "data") in str(e.value)  # ../shared/data from the working directory
    assert str(tmp / "a" / "shared" / "data") in str(e.value)  # beside the repository
    assert "METALOOP_DATA" in str(e.value)
    (tmp / "a" / "shared" / "data").mkdir(parents=True)
    assert data_root() == tmp / "a" / "shared" / "data"
    (tmp / "shared" / "data").mkdir(parents=True)
    assert data_root() == tmp / "shared" / "data"
    (tmp / "env").mkdir()
    monkeypatch.setenv("METALOOP_DATA", str(tmp / "env"))
    assert data_root() == tmp / "env"
    (tmp / "arg").mkdir()
    assert data_root(tmp / "arg") == tmp / "arg"
    assert data_root(str(tmp / "arg")) == tmp / "arg"


def test_explicit_settings_that_do_not_exist_are_errors(no_defaults, monkeypatch):
    (no_defaults / "shared" / "data").mkdir(parents=True)  # a default exists, but is not used silently
    with pytest.raises(MetaloopError, match=r"data root .*missing \(the path argument\) is not a folder"):
        data_root(no_defaults / "missing")
    monkeypatch.setenv("METALOOP_DATA", str(no_defaults / "typo"))
    with pytest.raises(MetaloopError, match=r"typo \(from \$METALOOP_DATA\)"):
        data_root()


def test_repository_default_finds_shared_data():
    expected = Path(data.__file__).resolve().parents[2] / "shared" / "data"
    if not expected.is_dir():
        pytest.skip(f"{expected} is absent")
    assert data_root().is_dir()


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("METALOOP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "metaloop"
