"""Shared test set-up: long runs are marked ``slow`` and skipped unless METALOOP_SLOW=1."""

import os

import pytest


def pytest_collection_modifyitems(config, items):
    if os.environ.get("METALOOP_SLOW") == "1":
        return
    skip = pytest.mark.skip(reason="slow: set METALOOP_SLOW=1 to run")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
