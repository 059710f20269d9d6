"""The torchvision reference detectors live with the benchmarks (benchmarks/torchvision_reference.py),
which compare against the same networks; the tests import them from there."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks"))

import pytest


@pytest.fixture(scope="session", autouse=True)
def _annotation_cache(tmp_path_factory):
    """The parsed-annotation cache (engine.cache) of the tests' generated jsons in a folder of the
    session, not in the user's ~/.cache/reskit (subprocesses inherit it)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESKIT_CACHE", str(tmp_path_factory.mktemp("reskit_cache")))
        yield
