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


def test_cpu_training_keeps_the_default_layout(monkeypatch):
    p = hardware.Precision("bf16", "test")
    assert hardware.choose_channels_last("auto", CPU, p)[0] is False
    assert hardware.choose_channels_last(True, CPU, p)[0] is True


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
