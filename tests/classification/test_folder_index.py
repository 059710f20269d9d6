"""The ImageFolder index: torchvision's order, flat arrays from the parse-once cache, rebuilt when
the listing changes."""
import os
import pickle
import time

import numpy as np
import pytest
from torchvision.datasets import ImageFolder as TorchvisionImageFolder

from classification.data import ImageFolder
from classification.folder_index import listing_signature, load_folder_index

# names chosen so that a depth-first walk and torchvision's sorted(os.walk(...)) disagree
# ("n1/a/x" comes after "n1/a-b/y" in sorted path order), with mixed-case extensions
FILES = ["n1/z.jpg", "n1/a/x.JPEG", "n1/a-b/y.png", "n1/a/deeper/w.jpg", "n1/B.Png",
         "n0/img10.jpg", "n0/img2.jpg", "n0/img1.jpeg",
         "cls with space/é.png", "cls with space/sub/1.bmp",
         "Upper/p.webp"]
IGNORED = ["n0/notes.txt", "n1/a/readme"]


def make_tree(root):
    for rel in FILES + IGNORED:
        path = os.path.join(root, rel)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x")  # the index never decodes; torchvision reads through the loader below
    return str(root)


def test_same_samples_labels_and_classes_as_torchvision(tmp_path):
    root = make_tree(tmp_path / "train")
    reference = TorchvisionImageFolder(root, loader=lambda p: p)
    with pytest.warns(UserWarning, match="ignored 2 files without an image extension"):
        ours = ImageFolder(root)
    assert ours.classes == reference.classes == ["Upper", "cls with space", "n0", "n1"]
    assert list(ours.paths) == [p for p, _ in reference.samples]
    assert ours.labels.tolist() == [label for _, label in reference.samples]
    assert len(ours) == len(FILES)
    # flat arrays, memory-mapped from the cache: no list of str in the dataset
    assert ours.index.entry.path is not None
    assert isinstance(ours.index.entry.arrays["path_bytes"], np.memmap)
    assert ours.labels.dtype == np.int64


def test_second_load_is_a_cache_hit_and_pickles_as_the_cache_path(tmp_path):
    root = make_tree(tmp_path / "train")
    first = load_folder_index(root)
    second = load_folder_index(root)
    assert not first.entry.hit and second.entry.hit and "cache hit" in second.entry.describe()
    assert list(second.paths) == list(first.paths)
    # a spawned loader worker receives the cache folder's path, not the arrays, and maps them again
    ds = ImageFolder(root)
    data = pickle.dumps(ds)
    assert len(data) < 2000
    back = pickle.loads(data)
    assert list(back.paths) == list(ds.paths) and isinstance(back.labels, np.memmap)


@pytest.mark.parametrize("change", ["add", "add_nested", "remove", "rename", "new_class"])
def test_a_changed_listing_rebuilds_the_index(tmp_path, change):
    root = make_tree(tmp_path / "train")
    before = load_folder_index(root)
    assert not before.entry.hit
    time.sleep(0.02)  # the filesystem's mtime clock is coarse (a few ms)
    if change == "add":
        open(os.path.join(root, "n0", "img3.jpg"), "wb").close()
    elif change == "add_nested":
        open(os.path.join(root, "n1", "a", "deeper", "v.jpg"), "wb").close()
    elif change == "remove":
        os.remove(os.path.join(root, "n1", "a", "x.JPEG"))
    elif change == "rename":
        os.rename(os.path.join(root, "n0", "img2.jpg"), os.path.join(root, "n0", "img0.jpg"))
    else:
        os.makedirs(os.path.join(root, "m"))
        open(os.path.join(root, "m", "q.jpg"), "wb").close()
    after = load_folder_index(root)
    assert not after.entry.hit and "folder changed" in after.entry.reason
    reference = TorchvisionImageFolder(root, loader=lambda p: p)
    assert list(after.paths) == [p for p, _ in reference.samples]
    assert after.labels.tolist() == [label for _, label in reference.samples]
    assert after.classes == reference.classes
    assert load_folder_index(root).entry.hit  # and cached again


def test_signature_lists_no_class_folder_without_subfolders(tmp_path, monkeypatch):
    root = make_tree(tmp_path / "train")
    listed = []
    import classification.folder_index as fi
    real = fi._subfolders
    monkeypatch.setattr(fi, "_subfolders", lambda folder: listed.append(os.path.basename(folder)) or real(folder))
    listing_signature(root)
    if os.stat(os.path.join(root, "n0")).st_nlink == 2:  # a filesystem that counts subfolders in links
        assert sorted(listed) == ["cls with space", "n1"]
