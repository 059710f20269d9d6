"""Weights by name (backbones/hub.py): torchvision:, timm:, detectron2:// resolved through pre-seeded
caches under the exact names the libraries use, converted once and cached; offline and uncached is
one line and exit 1."""
import os

import pytest
import torch
import torchvision

from backbones import build_backbone
from backbones.hub import resolve_weights
from backbones.locate import cache_dir
from backbones.msra import export_msra_pkl
from backbones.norm import MSRA_INPUT_NORM, TORCHVISION_INPUT_NORM
from detection.build import build_detector
from detection.config import DetConfig
from engine.config import ConfigError, load_config
from engine.data import DataError

FPN_CONFIG = "configs/detection/faster_rcnn_R50_FPN_1x.yaml"
R50_V2 = "torchvision:ResNet50_Weights.IMAGENET1K_V2"


def _randomised(model: torch.nn.Module, seed: int) -> dict:
    """A state dict with non-default BN statistics, so a tensor left unloaded cannot pass for loaded."""
    g = torch.Generator().manual_seed(seed)
    state = model.state_dict()
    for k, v in state.items():
        if v.is_floating_point():
            state[k] = torch.rand(v.shape, generator=g) + 0.5 if "running_var" in k else torch.randn(v.shape, generator=g) * 0.05
    return state


def _seed_torch_hub(home, weights_enum, model) -> dict:
    # the file name torch.hub gives the enum's URL (hash prefix included): what torchvision would find
    name = os.path.basename(weights_enum.url)
    assert name == "resnet50-11ad3fa6.pth" or name.startswith("resnet18-")
    path = home / "hub" / "checkpoints" / name
    path.parent.mkdir(parents=True)
    state = _randomised(model, 0)
    torch.save(state, path)
    return state


def test_torchvision_name_gives_a_detector_whose_backbone_loads_every_tensor(offline):
    state = _seed_torch_hub(offline, torchvision.models.ResNet50_Weights.IMAGENET1K_V2,
                            torchvision.models.resnet50())
    cfg = load_config(DetConfig, FPN_CONFIG, [f"model.backbone.weights={R50_V2}", "model.num_classes=80"])
    model = build_detector(cfg.model, cfg.input)
    report = model.backbone.load_report
    bottom_up = [k for k in model.backbone.state_dict() if k.startswith("bottom_up.")]
    assert bottom_up and set(bottom_up) <= set(report.loaded)  # every backbone tensor from the file
    assert all(k.startswith("fpn.") for k in report.missing)  # only the FPN is new
    own = model.backbone.state_dict()
    for k in bottom_up:
        assert torch.equal(own[k], state[k[len("bottom_up."):]]), k
    assert report.input_norm == TORCHVISION_INPUT_NORM
    converted = os.path.join(cache_dir(), "converted", "torchvision_ResNet50_Weights.IMAGENET1K_V2.pth")
    assert os.path.isfile(converted) and converted.startswith(os.environ["RESKIT_CACHE"])  # the test's cache
    # the converted file is what the next run reads: the library's file is no longer needed
    os.remove(offline / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth")
    assert resolve_weights(R50_V2) == converted


def test_empty_cache_and_no_network_is_one_line_and_exit_1(offline, capsys):
    from engine.launch import run_tool

    cfg = load_config(DetConfig, FPN_CONFIG, [f"model.backbone.weights={R50_V2}", "model.num_classes=80"])
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: build_detector(cfg.model, cfg.input))
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "https://download.pytorch.org/models/resnet50-11ad3fa6.pth" in err
    assert str(offline / "hub" / "checkpoints" / "resnet50-11ad3fa6.pth") in err


def test_unreachable_hub_is_one_whole_line_after_one_short_try(offline, monkeypatch, capsys):
    """Downloads allowed but no network (an endpoint nothing listens on): one connection try, no
    library retries, one whole line naming the file to fetch, in seconds."""
    import time

    import huggingface_hub

    from engine.launch import run_tool

    monkeypatch.delenv("RESKIT_OFFLINE")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # read at its import
    start = time.monotonic()
    with pytest.raises(SystemExit) as stop:
        run_tool(lambda: resolve_weights("timm:resnet18.a1_in1k"))
    assert time.monotonic() - start < 10
    assert stop.value.code == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Retry" not in err
    assert "127.0.0.1:9 cannot be reached" in err
    assert err.endswith("(hf download timm/resnet18.a1_in1k model.safetensors)")  # whole, not cut


def test_unknown_names_are_config_errors_naming_the_closest():
    with pytest.raises(ConfigError, match="IMAGENET1K_V1, IMAGENET1K_V2"):
        load_config(DetConfig, FPN_CONFIG, ["model.backbone.weights=torchvision:ResNet50_Weights.IMAGENET1K_V3"])
    with pytest.raises(ConfigError, match="ResNet50_Weights"):
        load_config(DetConfig, FPN_CONFIG, ["model.backbone.weights=torchvision:Resnet50_Weights.DEFAULT"])
    with pytest.raises(ConfigError, match="timm"):
        load_config(DetConfig, FPN_CONFIG, ["model.backbone.weights=timm:resnet50.no_such_tag"])


def test_detectron2_msra_name_from_the_reskit_cache(offline):
    source = build_backbone("resnet50", stride_in_1x1=True, out_features=["res5"])
    source.load_state_dict(_randomised(source, 1))
    source.input_norm = dict(MSRA_INPUT_NORM)
    path = os.path.join(cache_dir(), "detectron2", "ImageNetPretrained", "MSRA", "R-50.pkl")
    os.makedirs(os.path.dirname(path))
    export_msra_pkl(source, path)
    name = "detectron2://ImageNetPretrained/MSRA/R-50.pkl"
    model = build_backbone("resnet50", stride_in_1x1=True, norm="FrozenBN", out_features=["res5"], weights=name)
    assert model.load_report.complete and model.load_report.input_norm == MSRA_INPUT_NORM
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x)["res5"], source.eval()(x)["res5"], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="stride_in_1x1=True"):  # the converted file keeps the MSRA placement
        build_backbone("resnet50", stride_in_1x1=False, weights=name)


def test_timm_name_from_the_hugging_face_cache(offline, tmp_path):
    from safetensors.torch import save_file

    state = _randomised(torchvision.models.resnet18(), 2)
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file(state, str(repo / "snapshots" / revision / "model.safetensors"))
    model = build_backbone("resnet18", weights="timm:resnet18.a1_in1k")
    assert model.load_report.complete
    assert torch.equal(model.state_dict()["layer4.1.bn2.running_var"], state["layer4.1.bn2.running_var"])
    with pytest.raises(DataError, match="hf download timm/resnet34.a1_in1k model.safetensors"):
        build_backbone("resnet34", weights="timm:resnet34.a1_in1k")


def test_transfer_tool_converts_a_whole_torchvision_detector_by_name(offline, tmp_path, capsys):
    """tools/transfer.py torchvision:FasterRCNN_ResNet50_FPN_Weights.COCO_V1: the whole detector, from the
    torch hub cache under the enum URL's file name."""
    import importlib.util

    from torchvision_reference import torchvision_rcnn

    weights = torchvision.models.detection.FasterRCNN_ResNet50_FPN_Weights.COCO_V1
    path = offline / "hub" / "checkpoints" / os.path.basename(weights.url)
    path.parent.mkdir(parents=True)
    torch.save(torchvision_rcnn().state_dict(), path)
    spec = importlib.util.spec_from_file_location("transfer_tool", os.path.join(os.path.dirname(__file__), "..", "..",
                                                                                 "tools", "transfer.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    assert tool.main([f"torchvision:{weights}", "--out", str(tmp_path / "frcnn.pth")]) == 0
    out = capsys.readouterr().out
    assert "torchvision fasterrcnn_resnet50_fpn" in out and "faster_rcnn_R50_FPN_1x.yaml" in out
    assert torch.load(tmp_path / "frcnn.pth", weights_only=True)["meta"]["task"] == "detection"
