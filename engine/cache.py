"""Parse once, map everywhere: a disk cache of flat numpy arrays built from one source file.

A large index (a COCO json of 118k images, an ImageFolder of 1.28M files) is parsed once per
machine and kept as a folder of ``.npy`` files that every rank and every DataLoader worker of the
machine memory-maps (``np.load(mmap_mode="r")``): the page cache holds one copy per machine, and
since the arrays are flat (no per-record Python objects) a forked worker reading them copies nothing
(the copy-on-read problem of Python lists in workers, pytorch#13246, is why detectron2 and mmengine
serialise their dataset lists; flat arrays on a mapped file go one step further and share across
ranks too).

Usage::

    from engine.cache import cached_arrays

    entry = cached_arrays("coco", json_path, options={"version": 1, "max_examples": 5},
                          build=lambda: (arrays_dict, meta_dict))
    entry.arrays["boxes"]   # a read-only np.memmap (or an in-memory array for an empty one)
    entry.meta              # the json-able dict ``build`` returned
    entry.describe()        # "cache hit (/root/.cache/reskit/coco/...)" / "parsed in 41.2 s, cached for the next run (...)"
    entry.describe_size()   # "310 MB shared by 2 ranks"

The key of an entry is the source's absolute path, its size, its mtime and a blake2b digest of its
content (≈1 GB/s: under a second for a 400 MB json), plus ``kind`` and ``options`` (everything that
changes what ``build`` returns: cleaning options and a format version). A changed file or changed
options give another key: the entry is rebuilt, ``entry.reason`` says why ("the file changed since it
was cached" / "other options"), and the stale entry (same source and options, old content) is removed.

Where: ``$RESKIT_CACHE`` (default ``~/.cache/reskit``), one folder per entry under ``<kind>/``.
``RESKIT_NO_CACHE=1`` builds in memory every time (nothing written). A cache folder that cannot be
written is said once and the arrays are kept in memory.

Safety: an entry is written into a temporary folder beside its final place and renamed into it
(``os.replace``, atomic on one filesystem), so a reader never sees half an entry. Builders of one
source are serialised by an advisory lock (``fcntl.flock`` on ``<entry>.lock``): the first process
of a machine (the first local rank, or the first of two jobs) builds, the others wait on the lock and
then map what it wrote; no process group is needed, so this works before ``torch.distributed`` is
initialised and in tools without torch. Should two writers race anyway (a filesystem without locks),
the second rename fails and that writer uses the entry already in place.

The builder runs in a forked child process (where ``fork`` exists): the parse's millions of
short-lived objects never enter the heap of the rank that asked, so it stays as small as the ranks
that only map, and so do the loader workers it forks. After an in-process build (no ``fork``) the
freed heap is handed back with ``malloc_trim``.

An entry pickles as its folder's path, so a DataLoader worker started with ``spawn`` maps the files
again instead of receiving a copy of the arrays. No torch here.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from typing import Callable, Dict, Iterator, Optional, Tuple

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["cache_root", "file_digest", "cached_arrays", "CacheEntry", "local_world_size", "release_heap"]

_META = "meta.json"


def cache_root() -> Optional[str]:
    """The cache folder (``$RESKIT_CACHE``, default ``~/.cache/reskit``); None when ``RESKIT_NO_CACHE``
    is set (to anything but 0 / empty)."""
    if os.environ.get("RESKIT_NO_CACHE", "").strip() not in ("", "0"):
        return None
    root = os.environ.get("RESKIT_CACHE", "")
    return os.path.abspath(os.path.expanduser(root or os.path.join("~", ".cache", "reskit")))


def local_world_size() -> int:
    """Processes of this job on this machine (torchrun's LOCAL_WORLD_SIZE; 1 without torchrun)."""
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def file_digest(path: str) -> str:
    """blake2b digest (hex, 16 bytes) of the file's content."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _hash_text(*parts: str) -> str:
    return hashlib.blake2b("\0".join(parts).encode("utf-8"), digest_size=8).hexdigest()


class CacheEntry:
    """Arrays and metadata of one cached source.

    ``arrays``: {name: read-only array} (memory-mapped when read from the cache); ``meta``: the
    json-able dict the builder returned; ``path``: the entry's folder (None when not cached);
    ``hit``: read from the cache; ``seconds``: time to build (miss) or to open (hit); ``reason``:
    why it was built ("new", "the file changed since it was cached", "other options", "cache off",
    or a write failure). Pickles as its path when cached (workers map the files again).
    """

    def __init__(self, arrays: Dict[str, np.ndarray], meta: dict, path: Optional[str], hit: bool,
                 seconds: float, reason: str = ""):
        self.arrays, self.meta, self.path, self.hit = arrays, meta, path, hit
        self.seconds, self.reason = seconds, reason

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()))

    def describe(self) -> str:
        """Where the arrays came from: "cache hit (<path>)", "parsed in 41.2 s, cached for the next run
        (<path>)" or "parsed in 41.2 s, not cached (<why>)"."""
        if self.hit:
            return f"cache hit ({self.path})"
        why = "" if self.reason in ("", "new") else f" ({self.reason})"
        if self.path:
            return f"parsed in {self.seconds:.1f} s{why}, cached for the next run ({self.path})"
        return f"parsed in {self.seconds:.1f} s, not cached ({self.reason})"

    def describe_size(self) -> str:
        """What the arrays cost: "310 MB shared by 2 ranks" (memory-mapped, one copy per machine)."""
        size = f"{self.nbytes / 1e6:,.0f} MB" if self.nbytes >= 1e6 else f"{self.nbytes / 1e3:,.0f} kB"
        ranks = local_world_size()
        if self.path and ranks > 1:
            return f"{size} shared by {ranks} ranks"
        return size + (", memory-mapped" if self.path else " in memory")

    def __getstate__(self):
        if self.path is None:
            return self.__dict__
        return {k: v for k, v in self.__dict__.items() if k != "arrays"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "arrays" not in state:
            self.arrays = _map_arrays(self.path)


def _map_arrays(path: str) -> Dict[str, np.ndarray]:
    arrays = {}
    for name in sorted(os.listdir(path)):
        if name.endswith(".npy"):
            file = os.path.join(path, name)
            try:
                a = np.load(file, mmap_mode="r", allow_pickle=False)
            except ValueError:  # mmap cannot map an empty region: a zero-size array is read instead
                a = np.load(file, allow_pickle=False)
                a.setflags(write=False)
            arrays[name[:-4]] = a
    return arrays


def _read_entry(path: str) -> Optional[Tuple[Dict[str, np.ndarray], dict]]:
    meta_file = os.path.join(path, _META)
    if not os.path.isfile(meta_file):
        return None
    try:
        with open(meta_file, "r", encoding="utf-8") as f:
            meta = json.load(f)
        return _map_arrays(path), meta
    except (OSError, ValueError) as e:  # a damaged entry (disk full, hand edits): rebuilt
        logger.warning(f"cache: {path} is unreadable ({e}); rebuilding it")
        return None


def _write_entry(path: str, arrays: Dict[str, np.ndarray], meta: dict) -> None:
    """Write into a temporary folder beside ``path`` and rename it into place (atomic)."""
    parent = os.path.dirname(path)
    tmp = tempfile.mkdtemp(prefix=".tmp-" + os.path.basename(path) + "-", dir=parent)
    try:
        for name, a in arrays.items():
            np.save(os.path.join(tmp, name + ".npy"), np.ascontiguousarray(a), allow_pickle=False)
        with open(os.path.join(tmp, _META), "w", encoding="utf-8") as f:
            json.dump(meta, f)
        try:
            os.replace(tmp, path)
        except OSError:
            if not os.path.isfile(os.path.join(path, _META)):  # not a finished entry of another writer
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def _build_in_child(build: Callable, path: str) -> Optional[bool]:
    """Run ``build`` and write its entry in a forked child process; True when done, None when this
    process cannot fork (not POSIX, or a daemonic process). The parse's millions of short-lived
    objects then never enter this process's heap: freed, they would leave it fragmented, and every
    DataLoader worker forked later would copy those pages as it allocates into them (+29 MB a worker
    on a 10k-image json). The child's exception is raised here (DataError keeps its one line)."""
    import multiprocessing
    if "fork" not in multiprocessing.get_all_start_methods() or multiprocessing.current_process().daemon:
        return None
    ctx = multiprocessing.get_context("fork")
    receive, send = ctx.Pipe(duplex=False)

    def child() -> None:
        try:
            arrays, meta = build()
            _write_entry(path, arrays, meta)
            send.send(None)
        except BaseException as e:  # noqa: B902 - everything goes back to the parent, which raises it
            try:
                send.send(e)
            except Exception:  # an exception that does not pickle: its type and message
                send.send(RuntimeError(f"{type(e).__name__}: {e}"))

    process = ctx.Process(target=child, name="reskit-cache-build")
    process.start()
    send.close()
    try:
        error = receive.recv()
    except EOFError:
        process.join()
        raise RuntimeError(f"the process building {path} ended without a word (exit code {process.exitcode})")
    finally:
        receive.close()
    process.join()
    if error is not None:
        raise error
    return True


def release_heap() -> None:
    """Hand the heap that a parse freed back to the operating system (glibc's ``malloc_trim``): the
    builder's dicts and lists are gone, but glibc keeps their pages, which a 10k-image COCO json
    left at +60 MB of RSS in the building process (and forked workers would inherit). No-op elsewhere."""
    try:
        import ctypes
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@contextmanager
def _locked(lock_path: str) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: the atomic rename alone keeps readers safe
        yield
        return
    with open(lock_path, "a+") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def cached_arrays(kind: str, source: str, options: dict,
                  build: Callable[[], Tuple[Dict[str, np.ndarray], dict]],
                  signature: Optional[str] = None) -> CacheEntry:
    """The arrays ``build`` makes from ``source``, from the cache when its key matches.

    ``kind``: a short folder name ("coco", "imagefolder"); ``source``: the file the arrays come from
    (its path, size, mtime and content digest are in the key); ``options``: a json-able dict of
    everything else that changes the result (include a format version); ``build()``: returns
    ``(arrays, meta)``, {name: numpy array of a fixed dtype (no objects)} and a json-able dict.
    ``signature``: for a source that is a folder (an ImageFolder tree), the caller's summary of its
    content (e.g. the folders' mtimes), in place of the file's size, mtime and digest.
    See the module docstring for where, how and why.
    """
    root = cache_root()
    start = time.perf_counter()
    if root is None:
        arrays, meta = build()
        return CacheEntry(arrays, meta, None, False, time.perf_counter() - start, "cache off")
    source = os.path.abspath(source)
    st = os.stat(source)
    source_key = _hash_text(kind, source)
    options_key = _hash_text(json.dumps(options, sort_keys=True, default=str))
    content_key = (_hash_text(str(st.st_size), str(st.st_mtime_ns), file_digest(source)) if signature is None
                   else _hash_text(signature))
    folder = os.path.join(root, kind)
    name = f"{source_key}-{options_key}-{content_key}"
    path = os.path.join(folder, name)
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as e:
        arrays, meta = build()
        return CacheEntry(arrays, meta, None, False, time.perf_counter() - start,
                          f"cache folder {folder} not writable: {e.strerror}; set RESKIT_CACHE")
    with _locked(os.path.join(folder, source_key + ".lock")):
        found = _read_entry(path)
        if found is not None:
            return CacheEntry(*found, path, True, time.perf_counter() - start)
        older = [n for n in os.listdir(folder) if n.startswith(source_key + "-") and n != name
                 and not n.endswith(".lock") and not n.startswith(".")]
        if any(n.startswith(f"{source_key}-{options_key}-") for n in older):
            reason = f"the {'file' if signature is None else 'folder'} changed since it was cached"
        elif older:
            reason = "other options than the cached entry"
        else:
            reason = "new"
        try:
            built = _build_in_child(build, path)
        except OSError as e:  # the entry could not be written: kept in memory
            arrays, meta = build()
            return CacheEntry(arrays, meta, None, False, time.perf_counter() - start,
                              f"cache not written: {e}; set RESKIT_CACHE")
        if built is None:  # no fork here (or a daemon process): built in this process
            arrays, meta = build()
            try:
                _write_entry(path, arrays, meta)
            except OSError as e:
                return CacheEntry(arrays, meta, None, False, time.perf_counter() - start,
                                  f"cache not written: {e}; set RESKIT_CACHE")
            del arrays, meta
            release_heap()
        seconds = time.perf_counter() - start
        for n in older:  # an entry of the same source and options with old content is stale
            if n.startswith(f"{source_key}-{options_key}-"):
                shutil.rmtree(os.path.join(folder, n), ignore_errors=True)
        found = _read_entry(path)
        if found is None:
            raise OSError(f"cache entry {path} was written but cannot be read back")
        return CacheEntry(*found, path, False, seconds, reason)
