"""Detectron MSRA/Caffe .pkl: names, affine-only BN, round trip, and a reader that runs no code."""
import os
import pickle

import numpy as np
import pytest
import torch

from backbones import MSRA_INPUT_NORM, build_backbone, build_classifier, export_msra_pkl, load_weights
from backbones.msra import read_msra_pkl
from backbone_testutils import max_rel_diff, randomize_norms


def test_export_then_load_gives_an_equal_model(tmp_path):
    torch.manual_seed(0)
    source = randomize_norms(build_classifier("resnet50", stride_in_1x1=True)).eval()
    source.input_norm = dict(MSRA_INPUT_NORM)
    path = tmp_path / "R-50.pkl"
    export_msra_pkl(source, path)

    blobs = read_msra_pkl(path)
    for name in ("conv1_w", "res_conv1_bn_s", "res_conv1_bn_b", "res2_0_branch2a_w", "res2_0_branch2a_bn_s",
                 "res2_0_branch1_w", "res2_0_branch1_bn_b", "res5_2_branch2c_bn_s", "fc1000_w", "fc1000_b"):
        assert name in blobs, name
    assert not any("running" in n or "bn_rm" in n for n in blobs)  # BN folded into scale and bias

    x = torch.randn(2, 3, 64, 64) * 50
    for norm in ("FrozenBN", "BN"):
        model = build_classifier("resnet50", stride_in_1x1=True, norm=norm)
        report = load_weights(model, str(path))
        assert report.format == "msra" and not report.missing and not report.unexpected
        assert model.input_norm == MSRA_INPUT_NORM
        with torch.no_grad():
            assert max_rel_diff(model.eval()(x), source(x)) <= 1e-4


def test_affine_only_bn_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    s, b = rng.uniform(0.5, 2, 64).astype(np.float32), rng.normal(size=64).astype(np.float32)
    path = tmp_path / "stem.pkl"
    with open(path, "wb") as f:  # a bare dict of blobs, as some converted files are
        pickle.dump({"conv1_w": rng.normal(size=(64, 3, 7, 7)).astype(np.float32),
                     "res_conv1_bn_s": s, "res_conv1_bn_b": b, "conv1_w_momentum": np.zeros(1)}, f)
    model = build_backbone("resnet50", stride_in_1x1=True, norm="FrozenBN", out_features=["stem"])
    report = load_weights(model, str(path))
    assert report.loaded == ["conv1.weight", "bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"]
    x = torch.randn(1, 64, 5, 5)
    expected = x * torch.from_numpy(s).view(1, -1, 1, 1) + torch.from_numpy(b).view(1, -1, 1, 1)
    assert (model.bn1(x) - expected).abs().max().item() < 1e-6


def test_msra_weights_need_msra_stride_placement(tmp_path):
    with open(tmp_path / "r50.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32)}}, f, protocol=2)
    with pytest.raises(ValueError, match="stride_in_1x1=True"):
        load_weights(build_classifier("resnet50"), str(tmp_path / "r50.pkl"))
    with pytest.raises(ValueError, match="BGR"):  # exporting a torchvision-normalised model would mislead
        export_msra_pkl(build_classifier("resnet50", stride_in_1x1=True), tmp_path / "x.pkl")


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_restricted_unpickler_never_runs_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "R-50.pkl"
    with open(path, "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros((64, 3, 7, 7), np.float32), "x": _Exploit(marker)}}, f,
                    protocol=2)
    # the plain unpickler would run it: prove the file is really an exploit
    pickle.loads(pickle.dumps(_Exploit(tmp_path / "control")))
    assert (tmp_path / "control").exists()

    with pytest.raises(pickle.UnpicklingError, match=r"R-50\.pkl.*(posix|os|nt)\.system"):
        load_weights(build_classifier("resnet50", stride_in_1x1=True), str(path))
    assert not marker.exists()


def test_a_pkl_that_is_no_pickle_says_so(tmp_path):
    path = tmp_path / "R-50.pkl"
    path.write_text('{"conv1_w": [0.1, 0.2]}')  # JSON under a .pkl name
    with pytest.raises(ValueError, match=r"R-50\.pkl: not a pickle .*Detectron \.pkl"):
        load_weights(build_classifier("resnet50", stride_in_1x1=True), str(path))
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=r"R-50\.pkl: an empty file"):
        read_msra_pkl(str(path))
