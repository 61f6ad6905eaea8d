"""The test suite's random inputs are fresh each run but replayable (tests/conftest.py)."""

import numpy as np


def test_unseeded_default_rng_follows_the_tests_seed(request):
    seed = request.node._ccn_seed
    a, b = np.random.default_rng(), np.random.default_rng()
    assert a.integers(2**62) == np.random.Generator(np.random.PCG64([seed, 0])).integers(2**62)
    assert b.integers(2**62) == np.random.Generator(np.random.PCG64([seed, 1])).integers(2**62)
    # a seed given explicitly is used as given
    assert np.random.default_rng(5).integers(2**62) == np.random.Generator(np.random.PCG64(5)).integers(2**62)


def test_replay_with_the_environment_variable(monkeypatch):
    from seeds import suite_seed

    monkeypatch.setenv("CCN_PYTEST_SEED", "1234")
    assert suite_seed() == 1234
