"""The test suite's seed: fresh each run, or CCN_PYTEST_SEED=N to replay a failure (conftest.py)."""

import os


def suite_seed() -> int:
    import numpy as np

    return int(os.environ.get("CCN_PYTEST_SEED") or np.random.SeedSequence().entropy % 2**63)
