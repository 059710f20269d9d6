"""What every test shares: reskit's caches (the parsed annotations and folder indexes of engine.cache,
converted weights) live in a folder of the session, never in the user's ~/.cache/reskit; subprocesses
(the tools, torchrun workers) inherit it."""
import pytest


@pytest.fixture(scope="session", autouse=True)
def _reskit_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("RESKIT_CACHE", str(tmp_path_factory.mktemp("reskit_cache")))
        yield
