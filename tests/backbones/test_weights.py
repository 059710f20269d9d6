"""load_weights: formats, prefixes, shape errors, the report; timm round trip."""
import os

import pytest
import timm
import torch
import torchvision

from backbones import (MSRA_INPUT_NORM, TORCHVISION_INPUT_NORM, build_backbone, build_classifier, load_weights,
                       to_backbone_state_dict)
from backbone_testutils import randomize_norms


@pytest.fixture(scope="module")
def tv18():
    return randomize_norms(torchvision.models.resnet18(weights=None), seed=1).eval()


def _logits(model, x):
    with torch.no_grad():
        return model.eval()(x)


def test_timm_resnet50_round_trip():
    torch.manual_seed(0)
    source = randomize_norms(timm.create_model("resnet50", pretrained=False)).eval()
    x = torch.randn(1, 3, 64, 64)
    ours = build_classifier("resnet50")
    report = load_weights(ours, {"state_dict": source.state_dict(), "epoch": 3})  # a timm train checkpoint
    assert report.format == "timm" and not report.missing and not report.unexpected
    assert (_logits(ours, x) - _logits(source, x)).abs().max().item() <= 1e-4
    back = timm.create_model("resnet50", pretrained=False)
    back.load_state_dict(ours.state_dict(), strict=True)  # ours -> timm without renaming
    assert (_logits(back, x) - _logits(source, x)).abs().max().item() <= 1e-4


def test_timm_ema_is_preferred(tv18):
    other = torchvision.models.resnet18(weights=None).state_dict()
    ours = build_classifier("resnet18")
    report = load_weights(ours, {"state_dict": other, "state_dict_ema": tv18.state_dict()})
    assert report.format == "timm (state_dict_ema)"
    assert torch.equal(ours.conv1.weight, tv18.conv1.weight)


def test_files_torch_safetensors_reskit(tmp_path, tv18):
    from safetensors.torch import save_file

    x = torch.randn(1, 3, 32, 32)
    paths = {"torchvision": tmp_path / "r18.pth", "safetensors": tmp_path / "r18.safetensors",
             "reskit": tmp_path / "ckpt.pth"}
    torch.save(tv18.state_dict(), paths["torchvision"])
    save_file({k: v.contiguous() for k, v in tv18.state_dict().items()}, str(paths["safetensors"]))
    torch.save({"model": {"module." + k: v for k, v in tv18.state_dict().items()},
                "meta": {"input_norm": MSRA_INPUT_NORM}, "iteration": 10}, paths["reskit"])
    for fmt, path in paths.items():
        ours = build_classifier("resnet18")
        report = load_weights(ours, str(path))
        assert report.format == fmt and len(report.loaded) == 102 and not report.missing, str(report)
        assert torch.equal(_logits(ours, x), _logits(tv18, x))
    assert ours.input_norm == MSRA_INPUT_NORM  # the reskit checkpoint stated it


def test_torch_file_that_would_run_code_is_refused(tmp_path):
    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)  # torch's own zip format, a pickle inside
    with pytest.raises(ValueError, match="evil.pth"):
        load_weights(build_classifier("resnet18"), str(path))
    assert not (tmp_path / "pwned").exists()


def test_shape_mismatch_names_the_key(tv18):
    model = build_classifier("resnet18", num_classes=10)
    with pytest.raises(ValueError, match=r"'fc.weight'.*\(1000, 512\).*\(10, 512\)"):
        load_weights(model, tv18.state_dict())
    report = load_weights(model, tv18.state_dict(), strict_shapes=False)  # reuse all but the head
    assert [k for k, _, _ in report.mismatched] == ["fc.weight", "fc.bias"]
    assert torch.equal(model.layer4[1].conv2.weight, tv18.layer4[1].conv2.weight)
    assert "mismatched 2" in str(report)


def test_report_of_backbone_and_detection_checkpoints(tv18):
    backbone = build_backbone("resnet18", out_features=["res2", "res3"])
    report = load_weights(backbone, tv18.state_dict())
    assert not report.missing
    assert set(k.split(".")[0] for k in report.unexpected) == {"layer3", "layer4", "fc"}
    text = str(report)
    assert "loaded" in text and "unexpected 52: layer3.* (25), layer4.* (25), fc.* (2)" in text
    assert report.input_norm == TORCHVISION_INPUT_NORM
    # a detection checkpoint of ours: the backbone lives under backbone.bottom_up.
    detection = {"model": {**{f"backbone.bottom_up.{k}": v for k, v in tv18.state_dict().items()},
                           "roi_heads.box_predictor.cls_score.weight": torch.zeros(3, 4)}}
    backbone = build_backbone("resnet18")
    report = load_weights(backbone, detection)
    assert report.mapping == [("backbone.bottom_up.", "")] and not report.missing
    assert report.unexpected == ["backbone.bottom_up.fc.weight", "backbone.bottom_up.fc.bias",
                                 "roi_heads.box_predictor.cls_score.weight"]


def test_to_backbone_state_dict(tv18):
    detection = {"model": {f"backbone.body.{k}": v for k, v in tv18.state_dict().items()}}
    state, norm = to_backbone_state_dict(detection)
    assert set(state) == {k for k in tv18.state_dict() if not k.startswith("fc.")}
    assert norm == TORCHVISION_INPUT_NORM


def test_unknown_format_and_missing_file(tv18):
    with pytest.raises(ValueError, match="format"):
        load_weights(build_classifier("resnet18"), tv18.state_dict(), format="caffe")
    with pytest.raises(FileNotFoundError, match="nowhere.pth"):
        load_weights(build_classifier("resnet18"), "/nowhere.pth")
