"""The data root and cache folder look-up (metaloop/data.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from metaloop.data import cache_dir, data_root
from metaloop.errors import MetaloopError


@pytest.fixture
def no_defaults(tmp_path, monkeypatch):
    """No METALOOP_DATA, a cache without a data folder, and ../shared/data present (it is not a default)."""
    monkeypatch.delenv("METALOOP_DATA", raising=False)
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "cache"))
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path


def test_order_argument_env_user_cache(no_defaults, monkeypatch):
    tmp = no_defaults
    with pytest.raises(MetaloopError) as e:
        data_root()
    assert str(tmp / "cache" / "data") in str(e.value) and "METALOOP_DATA" in str(e.value)
    assert "metaloop data download NAME" in str(e.value)  # the command that gets the data
    (tmp / "cache" / "data").mkdir(parents=True)
    assert data_root() == tmp / "cache" / "data"  # where `metaloop data download` writes
    (tmp / "env").mkdir()
    monkeypatch.setenv("METALOOP_DATA", str(tmp / "env"))
    assert data_root() == tmp / "env"
    (tmp / "arg").mkdir()
    assert data_root(tmp / "arg") == tmp / "arg"
    assert data_root(str(tmp / "arg")) == tmp / "arg"


def test_explicit_settings_that_do_not_exist_are_errors(no_defaults, monkeypatch):
    (no_defaults / "cache" / "data").mkdir(parents=True)  # the default exists, but is not used silently
    with pytest.raises(MetaloopError, match=r"data root .*missing \(the path argument\) is not a folder"):
        data_root(no_defaults / "missing")
    monkeypatch.setenv("METALOOP_DATA", str(no_defaults / "typo"))
    with pytest.raises(MetaloopError, match=r"typo \(from \$METALOOP_DATA\)"):
        data_root()


def test_the_tests_read_the_shared_data_through_metaloop_data():
    """tests/conftest.py sets METALOOP_DATA to ../shared/data where it exists (the package has no such default)."""
    expected = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not expected.is_dir():
        pytest.skip(f"{expected} is absent")
    assert data_root() == expected


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("METALOOP_CACHE", str(tmp_path / "c"))
    assert cache_dir() == tmp_path / "c"
    monkeypatch.delenv("METALOOP_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "metaloop"
