"""Shared test set-up: long runs are marked ``slow`` and skipped unless METALOOP_SLOW=1."""

import os

import pytest
import torch


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
