import os

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "cuda: needs a CUDA GPU (skipped where torch.cuda.is_available() is False)")


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same global torch RNG state, whatever ran before it, so a
    selection or an order of tests cannot change what a test sees."""
    torch.manual_seed(0)


@pytest.fixture(autouse=True, scope="session")
def polygon_cache(tmp_path_factory):
    """The polygon images go to a temporary cache (``NEURALGROK_CACHE``, inherited by the
    subprocesses tests start), never to the home directory; drawn once per size per session."""
    cache = tmp_path_factory.mktemp("polygon-cache")
    before = os.environ.get("NEURALGROK_CACHE")
    os.environ["NEURALGROK_CACHE"] = str(cache)
    yield cache
    if before is None:
        del os.environ["NEURALGROK_CACHE"]
    else:
        os.environ["NEURALGROK_CACHE"] = before
