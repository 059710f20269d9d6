"""Atomic checkpoint writes and the choice of the checkpoint to resume from."""
import io
import os
import shutil

import pytest
import torch

from engine.checkpoint import Checkpointer, load_checkpoint, save_checkpoint


def state(i):
    return {"model": {"w": torch.full((1000,), float(i))}, "iteration": i, "config": {"a": [1, None]}}


def test_failed_write_leaves_the_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = os.path.join(tmp_path, "model_final.pth")
    save_checkpoint(path, state(1))
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        f.write(buffer.getvalue()[:buffer.tell() // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="No space left"):
        save_checkpoint(path, state(2))
    assert os.listdir(tmp_path) == ["model_final.pth"]
    assert load_checkpoint(path)["iteration"] == 1


def test_keeps_the_last_n_and_skips_a_corrupt_newest(tmp_path):
    ckpt = Checkpointer(str(tmp_path), keep=2)
    for i in (5, 10, 15):
        ckpt.save(i, state(i))
    assert [i for i, _ in ckpt.all()] == [10, 15]
    assert ckpt.latest() == ckpt.path_for(15)
    # a newest file cut short (copied while a disk filled up) is skipped, with a warning
    with open(ckpt.path_for(15), "rb") as f:
        data = f.read()
    with open(ckpt.path_for(20), "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.warns(UserWarning, match="skipping unreadable checkpoint .*model_0000020.pth"):
        path, loaded = ckpt.load_latest()
    assert path == ckpt.path_for(15) and loaded["iteration"] == 15
    # garbage that is not a zip at all, too
    with open(ckpt.path_for(25), "wb") as f:
        f.write(b"not a checkpoint")
    with pytest.warns(UserWarning):
        assert ckpt.latest() == ckpt.path_for(15)
    assert Checkpointer(os.path.join(tmp_path, "empty")).latest() is None


def test_checkpoints_load_with_weights_only(tmp_path):
    path = os.path.join(tmp_path, "x.pth")
    save_checkpoint(path, state(3))
    loaded = torch.load(path, weights_only=True)  # what docs/ARCHITECTURE.md promises
    assert torch.equal(loaded["model"]["w"], state(3)["model"]["w"]) and loaded["config"] == {"a": [1, None]}
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # the usual mode, not mkstemp's 0o600
