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
    # The marker, not item.keywords: keywords also hold the names of the folders above a test,
    # so "cuda" in item.keywords would skip every test under tests/cuda, the no-GPU checks too.
    needs_gpu = [item for item in items if item.get_closest_marker("cuda") is not None]
    if needs_gpu and not _have_gpu():
        skip = pytest.mark.skip(reason="no CUDA GPU visible")
        for item in needs_gpu:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A NumPy generator with a fresh seed, printed so that a failure can be replayed
    (CCN_PYTEST_SEED=N replays seed N)."""
    import numpy as np

    seed = int(os.environ.get("CCN_PYTEST_SEED") or np.random.SeedSequence().entropy % 2**63)
    print(f"rng seed {seed} (replay with CCN_PYTEST_SEED={seed})")
    return np.random.default_rng(seed)
