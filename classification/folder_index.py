"""The index of an ImageFolder tree (``root/CLASS/.../image``): scanned once, kept in flat arrays.

ImageNet's training set is 1.28M files. Scanning it takes seconds to minutes (a network filesystem),
and a list of 1.28M path strings (or a numpy array of fixed-width unicode, ~400 MB) in every rank
and every loader worker multiplies with ranks x workers (forked workers copy the pages of Python
objects as reference counts change: pytorch#13246). Here the index is:

- ``path_bytes``: every file's path relative to the root, encoded (``os.fsencode``) and concatenated
  (uint8), ``path_offsets`` (int64, N + 1): file ``i`` is ``path_bytes[offsets[i]:offsets[i + 1]]``;
- ``labels`` (int64, N); the class names and what the scan ignored are in the entry's metadata;

built by the first process of a machine and memory-mapped by every rank and worker from the
parse-once cache (:mod:`engine.cache`, ``$RESKIT_CACHE``), about 50 bytes a file (64 MB for
ImageNet) once per machine. No per-sample Python object lives longer than one ``__getitem__``.

The key of the cache entry is the root's absolute path, the options (image extensions, format
version) and a signature of the listing: the modification time, inode and link count of the root,
of every class folder and of every folder below one. Adding, removing or renaming a file changes the
mtime of the folder holding it, so the index is rebuilt (and the run says why); a file rewritten in
place under the same name needs no new index. Subfolders of a class folder are found without
listing its files where the filesystem counts them in the folder's link count (ext4, xfs, tmpfs: a
folder without subfolders has 2 links); elsewhere (btrfs, some network filesystems) the class
folder is listed to find them.

Order: as torchvision's ``ImageFolder`` (``find_classes``, ``make_dataset``): classes sorted by name;
within a class, folders in sorted path order (``sorted(os.walk(...))``, following links) and files
sorted by name; an extension check, case-insensitive. Unlike torchvision, hidden entries (names
starting with ``.``) are ignored, and an empty class folder is an error naming it (or, with
``data.skip_bad``, a warning; the class keeps its label).
"""
from __future__ import annotations

import os
import warnings
from collections.abc import Sequence as SequenceABC
from typing import Dict, Iterator, List, Sequence, Tuple

import numpy as np

from engine.cache import CacheEntry, cached_arrays
from engine.data import DataError

__all__ = ["IMG_EXTENSIONS", "FolderIndex", "FolderPaths", "load_folder_index", "scan_folder_arrays",
           "listing_signature"]

# torchvision's ImageFolder extensions, plus webp/jp2/... that OpenCV decodes.
IMG_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp", ".jp2", ".pbm",
                  ".pnm", ".gif")

FORMAT_VERSION = 1


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _check_root(root: str, key: str) -> List[os.DirEntry]:
    """The root's visible entries sorted by name; DataError when it is no ImageFolder root."""
    if not os.path.isdir(root):
        what = "is a file, not a directory" if os.path.exists(root) else "directory not found"
        raise DataError(f"{key}: {root}: {what}; expected an ImageFolder tree root/CLASS/image.jpg")
    entries = sorted((e for e in os.scandir(root) if _visible(e.name)), key=lambda e: e.name)
    if not any(e.is_dir() for e in entries):
        loose = [e.name for e in entries if e.is_file()]
        hint = f" (it holds {len(loose)} loose files, e.g. {loose[0]}: move each image into a folder named " \
               "after its class, e.g. with ImageNet's valprep.sh for the validation set)" if loose else ""
        raise DataError(f"{key}: {root}: no class folders{hint}; expected root/CLASS/image.jpg")
    return entries


def _subfolders(folder: str) -> List[str]:
    """Every visible folder below ``folder`` (links followed), found by listing (os.walk)."""
    found = []
    for dirpath, dirnames, _ in os.walk(folder, followlinks=True):
        dirnames[:] = [d for d in dirnames if _visible(d)]
        found += [os.path.join(dirpath, d) for d in dirnames]
    return found


def listing_signature(root: str, key: str = "root") -> str:
    """A text that changes when a file is added to, removed from or renamed in the tree (see the
    module docstring); one ``stat`` per folder, no listing of class folders without subfolders."""
    def stamp(path: str) -> str:
        st = os.stat(path)
        return f"{st.st_mtime_ns}:{st.st_ino}:{st.st_nlink}"

    entries = _check_root(root, key)
    lines = [stamp(root)]
    for entry in entries:
        if not entry.is_dir():
            continue
        st = os.stat(entry.path)
        lines.append(f"{entry.name}\0{st.st_mtime_ns}:{st.st_ino}:{st.st_nlink}")
        if st.st_nlink != 2:  # it has subfolders, or the filesystem does not count them
            lines += [f"{os.path.relpath(d, root)}\0{stamp(d)}" for d in sorted(_subfolders(entry.path))]
    return "\n".join(lines)


def scan_folder_arrays(root: str, key: str = "root",
                       extensions: Sequence[str] = IMG_EXTENSIONS) -> Tuple[Dict[str, np.ndarray], dict]:
    """Scan the tree into ``({"path_bytes", "path_offsets", "labels"}, meta)`` (the module docstring).

    ``meta``: ``classes`` (names, sorted), ``empty_classes`` (class folders without an image),
    ``ignored`` (files without an image extension) and ``ignored_example``. Per-sample Python
    objects live for one class folder at a time.
    """
    extensions = tuple(e.lower() for e in extensions)
    classes = [e.name for e in _check_root(root, key) if e.is_dir()]
    path_bytes = bytearray()
    lengths: List[np.ndarray] = []
    counts: List[int] = []
    empty: List[str] = []
    ignored, ignored_example = 0, ""
    for name in classes:
        walked = []
        for dirpath, dirnames, filenames in os.walk(os.path.join(root, name), followlinks=True):
            dirnames[:] = [d for d in dirnames if _visible(d)]
            walked.append((dirpath, filenames))
        files: List[bytes] = []
        for dirpath, filenames in sorted(walked):  # torchvision: sorted(os.walk(...)), then sorted names
            rel = os.path.relpath(dirpath, root)
            for f in sorted(filenames):
                if not _visible(f):
                    continue
                if f.lower().endswith(extensions):
                    files.append(os.fsencode(os.path.join(rel, f)))
                else:
                    ignored += 1
                    ignored_example = ignored_example or os.path.join(dirpath, f)
        if not files:
            empty.append(name)
        path_bytes += b"".join(files)
        lengths.append(np.fromiter((len(b) for b in files), dtype=np.int64, count=len(files)))
        counts.append(len(files))
    offsets = np.zeros(sum(counts) + 1, dtype=np.int64)
    if counts and sum(counts):
        np.cumsum(np.concatenate(lengths), out=offsets[1:])
    labels = np.repeat(np.arange(len(classes), dtype=np.int64), counts)
    arrays = {"path_bytes": np.frombuffer(path_bytes, dtype=np.uint8),
              "path_offsets": offsets, "labels": labels}
    meta = {"classes": classes, "empty_classes": empty, "ignored": ignored, "ignored_example": ignored_example}
    return arrays, meta


class FolderPaths(SequenceABC):
    """The absolute file paths of an index as a read-only sequence (each made on access)."""

    def __init__(self, root: str, path_bytes: np.ndarray, path_offsets: np.ndarray):
        self.root, self.path_bytes, self.path_offsets = root, path_bytes, path_offsets

    def __len__(self) -> int:
        return len(self.path_offsets) - 1

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"file {index} of {len(self)}")
        start, end = int(self.path_offsets[index]), int(self.path_offsets[index + 1])
        return os.path.join(self.root, os.fsdecode(self.path_bytes[start:end].tobytes()))

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(len(self)))


class FolderIndex:
    """``classes``, ``labels`` (int64 [N]), ``paths`` (:class:`FolderPaths`) and ``entry`` (the
    cache entry: where it came from, what it cost) of one ImageFolder tree."""

    def __init__(self, root: str, entry: CacheEntry):
        self.root, self.entry = root, entry
        self.classes: List[str] = list(entry.meta["classes"])
        self.labels: np.ndarray = entry.arrays["labels"]
        self.paths = FolderPaths(root, entry.arrays["path_bytes"], entry.arrays["path_offsets"])

    def __len__(self) -> int:
        return len(self.paths)


def load_folder_index(root: str, key: str = "root", skip_bad: bool = False,
                      extensions: Sequence[str] = IMG_EXTENSIONS) -> FolderIndex:
    """The index of ``root`` from the cache, or scanned and cached (``key``: the config entry, for
    messages). What the scan ignored is said on every run, cached or not; an empty class folder
    raises DataError (a warning with ``skip_bad``)."""
    options = {"version": FORMAT_VERSION, "extensions": [e.lower() for e in extensions]}
    signature = listing_signature(root, key)
    entry = cached_arrays("imagefolder", root, options, lambda: scan_folder_arrays(root, key, extensions),
                          signature=signature)
    meta = entry.meta
    for name in meta["empty_classes"]:
        folder = os.path.join(root, name)
        message = (f"{key}: class folder {folder} holds no images (extensions "
                   f"{', '.join(IMG_EXTENSIONS[:5])}, ...); add images or remove the folder")
        if not skip_bad:
            raise DataError(message)
        warnings.warn(message + "; the class keeps its label (data.skip_bad)")
    if meta["ignored"]:
        warnings.warn(f"{key}: ignored {meta['ignored']} files without an image extension, "
                      f"e.g. {meta['ignored_example']}")
    return FolderIndex(root, entry)
