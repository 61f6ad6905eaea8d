import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
sys.path.insert(0, os.path.join(ROOT, "tests"))


@pytest.fixture
def reference_dir():
    """The original example layer files (../shared/reference); skipped where absent."""
    d = os.path.join(SHARED, "reference")
    if not os.path.isdir(d):
        pytest.skip("../shared/reference is not present")
    return d


def _have_gpu():
    try:
        from ccn._native import core

        return len(core.cuda_devices()) > 0
    except Exception:
        return False


def pytest_collection_modifyitems(config, items):
    if any("cuda" in item.keywords for item in items) and not _have_gpu():
        skip = pytest.mark.skip(reason="no CUDA GPU visible")
        for item in items:
            if "cuda" in item.keywords:
                item.add_marker(skip)
