import contextlib

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """The eval tests use tiny arrays: on a shared 2-core machine the per-op thread synchronisation
    of OpenMP/BLAS, not arithmetic, dominates them (observed 30x slower with 2 threads under load).
    Applies to torch and to numpy's BLAS (used by the scikit-learn reference fits)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits

        limit = threadpool_limits(limits=1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        limit = contextlib.nullcontext()
    with limit:
        yield
    torch.set_num_threads(before)
