"""engine.cache: parse once, map everywhere (key, atomic entries, one builder at a time)."""
import multiprocessing as mp
import os
import pickle
import time

import numpy as np
import pytest

from engine.cache import cache_root, cached_arrays


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("RESKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("RESKIT_NO_CACHE", raising=False)


def _source(tmp_path, text="abc"):
    path = tmp_path / "source.json"
    path.write_text(text)
    return str(path)


class _Calls:
    """Counts builds through files: the build runs in a forked child process."""

    def __init__(self, folder):
        self.folder = folder
        os.makedirs(folder, exist_ok=True)

    def append(self, _):
        open(os.path.join(self.folder, str(len(self))), "w").close()

    def __len__(self):
        return len(os.listdir(self.folder))


def _builder(calls, value=1):
    def build():
        calls.append(1)
        return {"x": np.arange(5, dtype=np.int64) * value, "empty": np.zeros((0, 4), np.float32)}, {"n": 5}
    return build


def test_miss_then_hit_maps_the_same_arrays(tmp_path, monkeypatch):
    src, calls = _source(tmp_path), _Calls(str(tmp_path / "calls"))
    first = cached_arrays("t", src, {"v": 1}, _builder(calls))
    second = cached_arrays("t", src, {"v": 1}, _builder(calls))
    assert len(calls) == 1 and not first.hit and second.hit and first.reason == "new"
    assert isinstance(second.arrays["x"], np.memmap) and not second.arrays["x"].flags.writeable
    np.testing.assert_array_equal(second.arrays["x"], np.arange(5))
    assert second.arrays["empty"].shape == (0, 4) and second.meta == {"n": 5}
    assert second.path.startswith(cache_root()) and "cache hit" in second.describe()
    assert "cached for the next run" in first.describe()
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert second.describe_size().endswith("shared by 2 ranks")


def test_changed_file_or_options_rebuild_and_say_so(tmp_path):
    src, calls = _source(tmp_path), _Calls(str(tmp_path / "calls"))
    cached_arrays("t", src, {"v": 1}, _builder(calls))
    time.sleep(0.01)
    with open(src, "w") as f:
        f.write("abd")  # same size, other content
    changed = cached_arrays("t", src, {"v": 1}, _builder(calls, 2))
    assert not changed.hit and "changed" in changed.reason and changed.arrays["x"][1] == 2
    other = cached_arrays("t", src, {"v": 2}, _builder(calls))
    assert not other.hit and "other options" in other.reason and len(calls) == 3
    entries = [n for n in os.listdir(os.path.join(cache_root(), "t")) if not n.endswith(".lock")]
    assert len(entries) == 2  # the stale entry of the old content is gone


def test_cache_off_builds_in_memory(tmp_path, monkeypatch):
    monkeypatch.setenv("RESKIT_NO_CACHE", "1")
    calls = []
    entry = cached_arrays("t", _source(tmp_path), {}, _builder(calls))
    entry = cached_arrays("t", _source(tmp_path), {}, _builder(calls))
    assert len(calls) == 2 and entry.path is None and "not cached (cache off)" in entry.describe()


def test_entry_pickles_as_its_path(tmp_path):
    entry = cached_arrays("t", _source(tmp_path), {}, _builder([]))
    data = pickle.dumps(entry)
    assert len(data) < 1000  # the arrays are not in the pickle
    again = pickle.loads(data)
    np.testing.assert_array_equal(again.arrays["x"], entry.arrays["x"])


def _race(src, out_dir, i):
    def build():
        open(os.path.join(out_dir, f"built-{i}"), "w").close()
        time.sleep(0.3)
        return {"x": np.full(1000, 7, np.int32)}, {}
    entry = cached_arrays("t", src, {}, build)
    assert int(entry.arrays["x"].sum()) == 7000


def test_two_processes_at_once_build_once(tmp_path):
    src = _source(tmp_path)
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_race, args=(src, str(tmp_path), i)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len([n for n in os.listdir(tmp_path) if n.startswith("built-")]) == 1


def test_a_failing_build_raises_its_error_here(tmp_path):
    from engine.data import DataError

    def build():
        raise DataError("x.json: none of its 3 annotations is usable")
    with pytest.raises(DataError, match="none of its 3 annotations is usable"):
        cached_arrays("t", _source(tmp_path), {}, build)
    assert not [n for n in os.listdir(os.path.join(cache_root(), "t")) if not n.endswith(".lock")]
