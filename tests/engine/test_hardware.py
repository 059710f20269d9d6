"""Precision, layout and threads chosen from the hardware (engine/hardware.py)."""
import os
import subprocess
import sys

import pytest
import torch

from engine import hardware

CPU = torch.device("cpu")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _pretend_cpu(monkeypatch, capability: str, avx512_bf16: bool, amx: bool = False, onednn_bf16: bool = True):
    monkeypatch.setattr(hardware, "cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: onednn_bf16, raising=False)


def test_avx2_cpu_trains_in_fp32(monkeypatch):
    _pretend_cpu(monkeypatch, "AVX2", avx512_bf16=False)
    p = hardware.choose_precision("auto", CPU)
    assert p.name == "fp32" and p.dtype is None and not p.grad_scaler
    assert p.reason == "CPU capability AVX2: no native bf16 -> fp32"


def test_avx512_bf16_cpu_trains_in_bf16(monkeypatch):
    _pretend_cpu(monkeypatch, "AVX512", avx512_bf16=True)
    p = hardware.choose_precision("auto", CPU)
    assert p.name == "bf16" and p.dtype == torch.bfloat16
    assert "AVX512 with native bf16" in p.reason


def test_amx_counts_as_native_bf16_and_plain_avx512_does_not(monkeypatch):
    _pretend_cpu(monkeypatch, "AVX512", avx512_bf16=False, amx=True)
    assert hardware.choose_precision("auto", CPU).name == "bf16"
    _pretend_cpu(monkeypatch, "AVX512", avx512_bf16=False, amx=False)
    assert hardware.choose_precision("auto", CPU).name == "fp32"
    # oneDNN limited below bf16 (ONEDNN_MAX_CPU_ISA=AVX2) on a bf16-capable CPU: emulated, so fp32
    _pretend_cpu(monkeypatch, "AVX512", avx512_bf16=True, onednn_bf16=False)
    assert hardware.choose_precision("auto", CPU).name == "fp32"


def test_explicit_precision_is_kept(monkeypatch):
    _pretend_cpu(monkeypatch, "AVX2", avx512_bf16=False)
    assert hardware.choose_precision("bf16", CPU).name == "bf16"
    assert hardware.choose_precision("off", CPU).name == "fp32"
    with pytest.raises(ValueError, match="solver.amp"):
        hardware.choose_precision("fp8", CPU)


def test_the_emulation_variables_of_a_plain_cpu_are_followed():
    """On any machine, the variables that make a newer CPU behave as an AVX2 one give fp32."""
    code = ("import torch; from engine import hardware; "
            "print(hardware.cpu_capability(), hardware.choose_precision('auto', torch.device('cpu')).name)")
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["AVX2", "fp32"]


def test_cpu_training_layout_follows_the_precision(monkeypatch):
    fp32, bf16 = hardware.Precision("fp32", "test"), hardware.Precision("bf16", "test")
    assert hardware.choose_channels_last("auto", CPU, fp32)[0] is False  # fp32: the default layout
    assert hardware.choose_channels_last("auto", CPU, bf16)[0] is True  # bf16: channels-last
    assert hardware.choose_channels_last(True, CPU, fp32)[0] is True
    assert hardware.choose_channels_last(False, CPU, bf16)[0] is False


def test_threads_leave_room_for_loader_workers_and_the_user_wins(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert hardware.choose_num_workers("auto", 2, CPU) == 0  # 2 cores: both compute
        assert hardware.choose_num_workers("auto", 16, CPU) == 4
        assert hardware.choose_num_workers(3, 2, CPU) == 3
        threads, reason = hardware.apply_thread_policy(num_workers=4, cores=16)
        assert threads == 12 and torch.get_num_threads() == 12 and "4 loader workers" in reason
        monkeypatch.setenv("OMP_NUM_THREADS", "3")
        threads, reason = hardware.apply_thread_policy(num_workers=4, cores=16)
        assert threads == 3 and reason == "OMP_NUM_THREADS set by the user"
        monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
        assert hardware.usable_cores() == max(1, len(os.sched_getaffinity(0)) // 2)
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------- the config keys and the wiring

def test_auto_is_the_default_and_explicit_values_still_force():
    from engine.config import ConfigError, load_config
    from tiny_task import TinyConfig

    cfg = load_config(TinyConfig, None, [])
    assert (cfg.solver.amp, cfg.solver.channels_last) == ("auto", "auto")
    cfg = load_config(TinyConfig, None, ["solver.amp=off", "solver.channels_last=true"])
    assert (cfg.solver.amp, cfg.solver.channels_last) == ("off", True)
    assert load_config(TinyConfig, None, ["solver.channels_last=false"]).solver.channels_last is False
    with pytest.raises(ConfigError, match=r"solver.amp: 'fp8' is not a valid value"):
        load_config(TinyConfig, None, ["solver.amp=fp8"])
    with pytest.raises(ConfigError, match=r"solver.channels_last: 'sometimes' is not a valid value"):
        load_config(TinyConfig, None, ["solver.channels_last=sometimes"])


def test_num_workers_takes_auto_or_an_int():
    from classification.config import ClsConfig
    from detection.config import DetConfig
    from engine.config import ConfigError, from_dict
    from segmentation.config import SegConfig

    for schema in (ClsConfig, DetConfig, SegConfig):
        data = type(schema().data)
        assert schema().data.num_workers == "auto"
        assert from_dict(data, {"num_workers": 3}).num_workers == 3
        with pytest.raises(ConfigError, match=r"num_workers: 'many' is not a valid value"):
            from_dict(data, {"num_workers": "many"})
        with pytest.raises(ConfigError, match=r"num_workers: must be at least 0"):
            from_dict(data, {"num_workers": -1})


def test_every_shipped_config_leaves_precision_layout_and_workers_to_the_hardware():
    import glob

    from classification.config import ClsConfig
    from detection.config import DetConfig
    from engine.config import load_config
    from segmentation.config import SegConfig

    def _schema_of(path):
        group, name = path.split(os.sep)[-2:]
        group = {"shapes_cls.yaml": "classification", "shapes_mask_rcnn.yaml": "detection",
                 "shapes_semantic.yaml": "segmentation"}.get(name, group)
        return {"classification": ClsConfig, "detection": DetConfig, "segmentation": SegConfig}[group]

    paths = sorted(glob.glob(os.path.join(REPO, "configs", "**", "*.yaml"), recursive=True))
    assert len(paths) > 10
    for path in paths:
        if "_base_" in path:
            continue
        cfg = load_config(_schema_of(path), path, ["model.backbone.weights=null"])
        where = os.path.relpath(path, REPO)
        assert cfg.solver.amp == "auto", where
        assert cfg.solver.channels_last == "auto", where
        assert cfg.data.num_workers == "auto", where


@pytest.mark.parametrize("capability,native,expected", [("AVX2", False, "fp32"), ("AVX512", True, "bf16")])
def test_the_trainer_follows_the_cpu_and_records_its_choice(tmp_path, monkeypatch, restore_torch_state,
                                                            capability, native, expected):
    """A run on an AVX2 CPU trains in fp32, on an AVX512-BF16 one in bf16 autocast; the choice and its
    reason are in log.txt and hardware.json."""
    import json

    from engine.config import load_config
    from engine.trainer import Trainer
    from tiny_task import TinyConfig, TinyTask

    _pretend_cpu(monkeypatch, capability, avx512_bf16=native)
    seen = []

    class Probe(TinyTask):
        def training_step(self, model, batch):
            seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
            return super().training_step(model, batch)

    out = tmp_path / "run"
    cfg = load_config(TinyConfig, None, [f"output_dir={out}", "solver.max_iter=2", "solver.checkpoint_period=2"])
    Trainer(cfg, Probe(cfg)).train()
    assert seen == [{"fp32": None, "bf16": torch.bfloat16}[expected]] * 2
    record = json.loads((out / "hardware.json").read_text())
    assert record["precision"] == expected and record["cpu_capability"] == capability
    assert record["channels_last"] is (expected == "bf16") and record["num_workers"] == 0
    log = (out / "log.txt").read_text()
    reason = {"fp32": "precision: fp32 (CPU capability AVX2: no native bf16 -> fp32)",
              "bf16": "precision: bf16 (CPU capability AVX512 with native bf16 -> bf16)"}[expected]
    layout = {"fp32": "memory layout: default (NCHW) (CPU fp32 training",
              "bf16": "memory layout: channels-last (CPU bf16 training"}[expected]
    assert reason in log and layout in log, log


def test_every_tool_sets_the_wait_policy_before_torch():
    """The tools that run torch import engine.threads first; engine.threads keeps a user's value."""
    for tool in ("train_cls", "train_det", "train_seg", "predict", "eval_coco", "transfer"):
        text = open(os.path.join(REPO, "tools", tool + ".py"), encoding="utf-8").read()
        assert "import engine.threads" in text, tool
        assert text.index("import engine.threads") < min(
            (text.index(m) for m in ("\nimport torch", "\nfrom detection", "\nfrom backbones", "\nfrom classification",
                                     "\nfrom segmentation", "\nfrom engine.") if m in text)), tool
    code = "import os, engine.threads; print(os.environ['OMP_WAIT_POLICY'])"
    for env, expected in (({}, "PASSIVE"), ({"OMP_WAIT_POLICY": "ACTIVE"}, "ACTIVE")):
        environ = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
        out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env={**environ, **env},
                             capture_output=True, text=True, timeout=60)
        assert out.stdout.strip() == expected, out.stderr


def test_resolve_device_refuses_what_the_machine_lacks(monkeypatch):
    from engine.config import ConfigError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    assert hardware.resolve_device(None) == torch.device("cpu")
    assert hardware.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match=r"device 'cuda': no CUDA GPU is visible"):
        hardware.resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"device 'gpu': not a device name"):
        hardware.resolve_device("gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert hardware.resolve_device(None) == torch.device("cuda")
    assert hardware.resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(ConfigError, match=r"device 'cuda:2': this process sees 2 GPUs \(cuda:0 to cuda:1\)"):
        hardware.resolve_device("cuda:2")
