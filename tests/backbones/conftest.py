import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread for these small models: on a shared 2-core machine, OpenMP threads that
    wait on each other behind other processes make a 0.1 s forward take seconds."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
