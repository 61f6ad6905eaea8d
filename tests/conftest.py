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


def _cuda_simulator():
    """libccnsim_rt.so when the tests run on the CUDA simulator (tools/cudasim/run.sh), else None."""
    lib = os.environ.get("CCNSIM_RUNTIME")
    if not (os.environ.get("CCN_CORE") and lib):
        return None
    import ctypes

    rt = ctypes.CDLL(lib)
    rt.ccnsim_reports.restype = ctypes.c_char_p
    return rt


_SIM = _cuda_simulator()


@pytest.fixture(autouse=True)
def _cuda_simulator_reports(request):
    """On the CUDA simulator: each test starts with no fault on record, and fails if the
    simulator reported one during it (a fault that an unchecked call would otherwise swallow).
    A test that failed anyway gets the reports as a section of its failure instead."""
    if _SIM is None:
        yield
        return
    _SIM.ccnsim_reset()
    yield
    reports = _SIM.ccnsim_reports().decode()
    _SIM.ccnsim_reset()
    if reports:
        call = getattr(request.node, "_ccn_call_report", None)
        if call is not None and call.failed:
            call.sections.append(("CUDA simulator", reports))
        else:
            pytest.fail(f"the CUDA simulator reported:\n{reports}", pytrace=False)


@pytest.fixture(autouse=True)
def _replayable_default_rng(request, monkeypatch):
    """Tests draw fresh random inputs every run. So that a failure can be replayed, each test
    gets one seed (fresh, or CCN_PYTEST_SEED=N) and np.random.default_rng() called without a
    seed inside it returns the generators of that seed in call order; a failure's report shows
    the seed (see pytest_runtest_makereport)."""
    import itertools

    import numpy as np

    from seeds import suite_seed

    seed = suite_seed()
    request.node._ccn_seed = seed
    count = itertools.count()
    make = np.random.default_rng

    def default_rng(seed_arg=None):
        return make([seed, next(count)]) if seed_arg is None else make(seed_arg)

    monkeypatch.setattr(np.random, "default_rng", default_rng)
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item._ccn_call_report = report  # for the CUDA simulator's teardown check
    seed = getattr(item, "_ccn_seed", None)
    if report.failed and seed is not None:
        report.sections.append(("random seed", f"replay with CCN_PYTEST_SEED={seed}"))


@pytest.fixture
def rng(request, _replayable_default_rng):
    """A NumPy generator of this test's seed (see _replayable_default_rng)."""
    import numpy as np

    return np.random.default_rng([request.node._ccn_seed, 2**32])
