"""Atomic checkpoint writes, the choice of the checkpoint to resume from, safe reading, state
selection and matching, and the one load report."""
import io
import os
import shutil

import pytest
import torch

from engine.checkpoint import (KIND_DETECTION, KINDS, Checkpointer, LoadReport, checkpoint_kind, checkpoint_meta,
                               checkpoint_state, load_checkpoint, match_state, read_checkpoint, save_checkpoint)
from engine.data import DataError


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
    with pytest.raises(DataError, match="cannot write the checkpoint: No space left on device; the disk mounted at"):
        save_checkpoint(path, state(2))  # one line for the user (engine.data.DataError), not an OSError
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


# --------------------------------------------------------------------------------------------------
# Reading, state selection, matching and the one load report
# --------------------------------------------------------------------------------------------------


def test_a_file_that_is_no_checkpoint_is_named_for_what_it_is(tmp_path):
    json_file = tmp_path / "weights.json"
    json_file.write_text('{"model": {"w": [1, 2, 3]}}')
    with pytest.raises(DataError, match=r"weights\.json: a JSON file, not a PyTorch checkpoint; give ") as e:
        read_checkpoint(str(json_file))
    assert "run code" not in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "notes.pth").write_text("trained on 4 GPUs")
    with pytest.raises(DataError, match=r"notes\.pth: a text file"):
        read_checkpoint(str(tmp_path / "notes.pth"))
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.pth: an empty file"):
        read_checkpoint(str(tmp_path / "empty.pth"))
    with pytest.raises(DataError, match=r"nowhere\.pth: weights file not found"):
        read_checkpoint(str(tmp_path / "nowhere.pth"))
    path = os.path.join(tmp_path, "cut.pth")
    save_checkpoint(path, state(1))
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.pth: damaged or truncated.*; use another"):
        read_checkpoint(path, remedy="use another")


def test_a_checkpoint_that_would_run_code_is_refused_and_says_so(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": Payload()}}, path)
    with pytest.raises(DataError, match=r"evil\.pth: .*system.*would run code"):
        read_checkpoint(str(path))
    assert not (tmp_path / "pwned").exists()


def test_kind_meta_and_state_selection():
    ckpt = {"model": {"w": torch.zeros(1)}, "model_ema": {"w": torch.ones(1)}, "meta": {"task": KIND_DETECTION}}
    assert checkpoint_kind(ckpt) == "detection" and checkpoint_meta(ckpt) == {"task": "detection"}
    assert checkpoint_state(ckpt)["w"].item() == 0 and checkpoint_state(ckpt, prefer_ema=True)["w"].item() == 1
    bare = {"w": torch.zeros(1)}
    assert checkpoint_kind(bare) is None and checkpoint_meta(bare) == {} and checkpoint_state(bare) == bare
    with pytest.raises(DataError, match="x.pth: no 'model'"):
        checkpoint_state({"iteration": 3}, source="x.pth")
    # the values files already carry: changing one would orphan every checkpoint written so far
    assert KINDS == ("classification", "backbone", "detection", "semantic_segmentation")


def test_one_load_report_for_every_loader(tmp_path):
    from backbones import weights as backbone_weights
    from detection import weights as detection_weights
    from segmentation import weights as segmentation_weights

    assert backbone_weights.LoadReport is detection_weights.LoadReport is segmentation_weights.LoadReport \
        is LoadReport
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3), torch.nn.Linear(3, 2))
    weights = {"0.weight": torch.ones(3, 4), "0.bias": torch.ones(3), "2.weight": torch.ones(5, 3),
               "head.weight": torch.ones(1), "1.num_batches_tracked": torch.tensor(0)}
    usable, report = match_state(weights, model, "w.pth")
    # BN's counter loads but is bookkeeping: never listed, neither as loaded nor as missing
    assert set(usable) == {"0.weight", "0.bias", "1.num_batches_tracked"} and report.loaded == ["0.weight", "0.bias"]
    assert report.mismatched == [("2.weight", (5, 3), (2, 3))] and report.unexpected == ["head.weight"]
    assert report.missing == ["1.weight", "1.bias", "1.running_mean", "1.running_var", "2.bias"]
    assert not report.complete
    text = str(report)
    assert "weights    w.pth (format: reskit)" in text and "loaded     2 of 8 model tensors" in text
    assert "missing    5: 1.weight, 1.bias, 1.running_mean, 1.running_var, 2.bias" in text
    assert "unexpected 1: head.weight" in text and "mismatched 1: 2.weight (5, 3) vs model (2, 3)" in text
    with pytest.raises(DataError, match=r"w.pth: shape mismatch for '2.weight': weights have \(5, 3\), "
                                        r"the model has \(2, 3\); check it"):
        match_state(weights, model, "w.pth", allow_mismatch=False, remedy="check it")
