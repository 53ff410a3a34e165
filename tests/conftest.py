import pytest
import torch


@pytest.fixture(autouse=True)
def seeded_global_rng():
    """Every test starts from the same global torch RNG state, whatever ran before it, so a
    selection or an order of tests cannot change what a test sees."""
    torch.manual_seed(0)
