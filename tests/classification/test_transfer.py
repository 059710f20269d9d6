"""tools/transfer.py: classification weights of any origin -> backbone weights detection loads whole."""
from __future__ import annotations

import importlib.util
import os

import pytest
import timm
import torch
import torchvision

from backbones import MSRA_INPUT_NORM, TORCHVISION_INPUT_NORM, build_backbone, build_classifier, load_weights
from backbones.msra import export_msra_pkl
from backbones.transfer import infer_resnet_name, transfer_weights
from engine.checkpoint import load_checkpoint

from conftest import ROOT

STAGES = ["res2", "res3", "res4", "res5"]


def _tool():
    spec = importlib.util.spec_from_file_location("transfer_tool", os.path.join(ROOT, "tools", "transfer.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _randomize_bn(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="module")
def torchvision_r50(tmp_path_factory):
    torch.manual_seed(0)
    state = _randomize_bn(torchvision.models.resnet50(weights=None)).state_dict()
    path = str(tmp_path_factory.mktemp("tv") / "resnet50.pth")
    torch.save(state, path)
    return path, state


def test_torchvision_resnet50_to_a_detection_backbone_loads_every_key(torchvision_r50, tmp_path, capsys):
    src, state = torchvision_r50
    out = str(tmp_path / "R50_backbone.pth")
    assert _tool().main([src, "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "backbone   resnet50" in printed and "missing    0" in printed and "mismatched 0" in printed
    assert "dropped    2: fc.weight, fc.bias" in printed

    saved = load_checkpoint(out)
    assert not any(k.startswith("fc.") for k in saved["model"])
    meta = saved["meta"]
    assert meta["backbone"]["name"] == "resnet50" and meta["format"] == "torchvision"
    assert meta["input_norm"] == TORCHVISION_INPUT_NORM and meta["task"] == "backbone"

    backbone = build_backbone("resnet50", out_features=STAGES, norm="FrozenBN", freeze_at=2)
    report = load_weights(backbone, out)
    assert not report.missing and not report.mismatched and not report.unexpected
    assert len(report.loaded) == len([k for k in state if not k.startswith("fc.") and "num_batches" not in k])
    loaded = backbone.state_dict()
    for k in ("conv1.weight", "layer3.5.bn2.running_var", "layer4.2.conv3.weight", "layer1.0.downsample.1.bias"):
        assert torch.equal(loaded[k], state[k])
    fpn = build_backbone("resnet50", fpn=True)
    report = load_weights(fpn, out)
    assert not report.unexpected and not report.mismatched
    assert all(k.startswith("fpn.") for k in report.missing)  # only the new pyramid starts from scratch


def test_wrong_architecture_writes_nothing(torchvision_r50, tmp_path, capsys):
    src, _ = torchvision_r50
    out = str(tmp_path / "never.pth")
    with pytest.raises(SystemExit) as info:
        _tool().main([src, "--out", out, "--name", "resnet101"])
    assert info.value.code == 1 and not os.path.exists(out)
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing    " in err and "nothing written" in err
    torch.save({"encoder.w": torch.zeros(3)}, str(tmp_path / "odd.pth"))
    with pytest.raises(ValueError, match="cannot tell the architecture from its keys; name it"):
        transfer_weights(str(tmp_path / "odd.pth"), None)


def test_our_classification_checkpoint_prefers_ema_and_keeps_the_recorded_architecture(tmp_path):
    torch.manual_seed(0)
    model, ema = build_classifier("plain18", 5), build_classifier("plain18", 5)
    meta = {"task": "classification", "input_norm": dict(MSRA_INPUT_NORM, color="RGB"), "class_names": list("abcde"),
            "backbone": {"name": "plain18", "options": {"norm": "SyncBN", "shortcut": "B", "stride_in_1x1": False,
                                                       "freeze_at": 2, "dilation": [1, 1]}}}
    src = str(tmp_path / "model_final.pth")
    torch.save({"model": model.state_dict(), "model_ema": ema.state_dict(), "meta": meta, "iteration": 9}, src)
    result = transfer_weights(src, str(tmp_path / "bb.pth"))
    assert result.name == "plain18"  # from the record: keys alone would say resnet18 or plain18
    assert result.options == {"norm": "BN", "shortcut": "B", "stride_in_1x1": False}
    assert result.report.format == "reskit classification (model_ema)" and result.complete
    saved = load_checkpoint(str(tmp_path / "bb.pth"))
    assert torch.equal(saved["model"]["layer2.1.conv1.weight"], ema.state_dict()["layer2.1.conv1.weight"])
    assert saved["meta"]["input_norm"] == meta["input_norm"]
    backbone = build_backbone("plain18", out_features=STAGES)
    report = load_weights(backbone, str(tmp_path / "bb.pth"))
    assert not report.missing and not report.unexpected and backbone.input_norm == meta["input_norm"]


def test_a_narrower_network_keeps_its_width(tmp_path):
    """model.backbone.width: recorded by our checkpoints, read off the stem of a bare state dict; the
    backbone written loads whole into a detector backbone of that width only."""
    torch.manual_seed(0)
    model = build_classifier("resnet18", 8, width=32)
    meta = {"task": "classification", "class_names": list("abcdefgh"),
            "backbone": {"name": "resnet18", "options": {"norm": "BN", "shortcut": "B", "stride_in_1x1": False,
                                                        "width": 32}}}
    recorded = str(tmp_path / "model_final.pth")
    torch.save({"model": model.state_dict(), "meta": meta}, recorded)
    bare = str(tmp_path / "bare.pth")
    torch.save(model.state_dict(), bare)
    for src in (recorded, bare):
        result = transfer_weights(src, str(tmp_path / "bb.pth"))
        assert result.options["width"] == 32 and result.complete, (src, result.options)
        backbone = build_backbone("resnet18", width=32, norm="FrozenBN", out_features=STAGES)
        report = load_weights(backbone, str(tmp_path / "bb.pth"))
        assert not report.missing and not report.mismatched
        assert torch.equal(backbone.layer4[1].conv2.weight, model.layer4[1].conv2.weight)
    torch.save(build_classifier("resnet18", 8).state_dict(), bare)  # the paper's width: nothing to record
    assert "width" not in transfer_weights(bare, str(tmp_path / "bb64.pth")).options


def test_msra_timm_and_safetensors_sources(tmp_path):
    torch.manual_seed(0)
    ours = _randomize_bn(build_classifier("resnet50", 1000, stride_in_1x1=True))
    ours.input_norm = dict(MSRA_INPUT_NORM)
    export_msra_pkl(ours, str(tmp_path / "R-50.pkl"))
    result = transfer_weights(str(tmp_path / "R-50.pkl"), str(tmp_path / "msra.pth"))
    assert result.options == {"stride_in_1x1": True} and result.meta["input_norm"] == MSRA_INPUT_NORM
    assert result.complete and not result.report.unexpected

    tm = timm.create_model("resnet18", pretrained=False)
    torch.save({"state_dict": tm.state_dict(), "epoch": 3}, str(tmp_path / "timm.pth.tar"))
    result = transfer_weights(str(tmp_path / "timm.pth.tar"), None)
    assert result.name == "resnet18" and result.report.format == "timm" and result.complete

    from safetensors.torch import save_file

    save_file(tm.state_dict(), str(tmp_path / "r18.safetensors"))
    result = transfer_weights(str(tmp_path / "r18.safetensors"), str(tmp_path / "st.pth"))
    assert result.report.format == "safetensors" and result.complete


@pytest.mark.parametrize("depth", [18, 34, 50, 101, 152])
def test_architecture_inferred_from_the_keys(depth):
    with torch.device("meta"):  # keys and shapes only: no memory, no initialisation
        state = getattr(torchvision.models, f"resnet{depth}")(weights=None).state_dict()
    assert infer_resnet_name(state) == f"resnet{depth}"


def test_cifar_architecture_inferred_from_the_keys():
    with torch.device("meta"):
        state = build_classifier("cifar_resnet56", 10).state_dict()
    assert infer_resnet_name(state) == "cifar_resnet56"


def test_a_json_file_given_as_weights_is_named_as_json(tmp_path, capsys):
    src = tmp_path / "resnet50.json"
    src.write_text('{"arch": "resnet50"}')
    with pytest.raises(SystemExit) as e:
        _tool().main([str(src), "--out", str(tmp_path / "x.pth")])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 1 and err.count("\n") == 0 and not (tmp_path / "x.pth").exists()
    assert "resnet50.json: a JSON file, not a PyTorch checkpoint" in err and "run code" not in err


def test_detector_checkpoint_transfers_at_its_recorded_backbone_width(tmp_path):
    """A detector checkpoint names its backbone in meta and keeps the options (width...) in the run's
    config: transfer.py builds that network, so a narrow detector's backbone fits."""
    from detection.build import build_detector
    from detection.config import DetModelConfig
    from engine.checkpoint import save_checkpoint

    cfg = DetModelConfig(num_classes=2, fpn_channels=32)
    cfg.backbone.name, cfg.backbone.weights, cfg.backbone.width = "resnet18", None, 16
    detector = build_detector(cfg)
    path = str(tmp_path / "det.pth")
    save_checkpoint(path, {"model": detector.state_dict(), "meta": {"task": "detection", "backbone": "resnet18"},
                           "config": {"model": {"backbone": {"name": "resnet18", "width": 16, "norm": "FrozenBN"}}}})
    result = transfer_weights(path, str(tmp_path / "bb.pth"))
    assert result.complete and result.name == "resnet18" and result.options["width"] == 16
    assert result.backbone.conv1.weight.shape[0] == 16
