"""What every task's export shares (docs/deploy.md): writing ONNX with metadata, running it on ONNX
Runtime, saving a ``torch.export`` program, and the one-line refusal.

The packages build their own wrappers (what goes in, what comes out) and call these. ONNX files are
written by torch's TorchScript-based exporter (``dynamo=False``): torchvision's detectors export
with it and not (yet) with the dynamo-based exporter, which became torch's default in 2.9. Metadata
are ONNX ``metadata_props`` (string -> string; JSON values), read back by :func:`onnx_metadata`.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Dict, Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["ExportError", "OPSET", "export_onnx", "onnx_metadata", "ort_session", "run_session",
           "export_program", "run_exported", "check_close", "require_onnxruntime"]

OPSET = 17  # >= 16: aligned RoIAlign (torchvision's detectors)


class ExportError(ValueError):
    """A model that cannot be exported in a format, or whose export does not reproduce it: one line
    saying which and why (tools/export.py: exit 1)."""


def require_onnxruntime():
    try:
        import onnx  # noqa: F401
        import onnxruntime
    except ImportError:
        raise ExportError("onnx / onnxruntime are not installed: pip install -e '.[deploy]'") from None
    return onnxruntime


def export_onnx(module: nn.Module, example: Sequence[torch.Tensor], path: str, input_names: Sequence[str],
                output_names: Sequence[str], dynamic_axes: Mapping[str, Dict[int, str]],
                metadata: Mapping[str, object], opset: int = OPSET) -> str:
    """Trace ``module`` on ``example`` into ``path`` (TorchScript-based exporter, ``dynamo=False``) and
    store ``metadata`` (JSON values) in the model's ``metadata_props``."""
    require_onnxruntime()
    import onnx

    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # the exporter's tracer warnings on torchvision's own code
        torch.onnx.export(module, tuple(example), path, dynamo=False, opset_version=opset,
                          input_names=list(input_names), output_names=list(output_names),
                          dynamic_axes={k: dict(v) for k, v in dynamic_axes.items()}, do_constant_folding=True)
    model = onnx.load(path)
    for key, value in metadata.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, json.dumps(value)
    onnx.save(model, path)
    return path


def onnx_metadata(path: str) -> Dict[str, object]:
    """The metadata :func:`export_onnx` stored (JSON values decoded)."""
    ort = require_onnxruntime()
    meta = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    out = {}
    for k, v in meta.items():
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def ort_session(path: str, threads: Optional[int] = None, providers: Optional[Sequence[str]] = None):
    """An ONNX Runtime session (CPU unless ``providers`` says otherwise), all graph optimisations on."""
    ort = require_onnxruntime()
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
    options.log_severity_level = 3  # errors only: its warnings on unused initialisers are noise here
    return ort.InferenceSession(path, options, providers=list(providers or ["CPUExecutionProvider"]))


def run_session(session, inputs: Mapping[str, np.ndarray]) -> Dict[str, np.ndarray]:
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, dict(inputs))))


def run_exported(path: str, fmt: str, images: torch.Tensor, output: str = "logits") -> np.ndarray:
    """The exported file's ``output`` for ``images`` (the graph's one input): ONNX Runtime for
    ``onnx``, the loaded program for ``torch-export``; what each task's check compares with eager."""
    if fmt == "onnx":
        return run_session(ort_session(path), {"images": images.numpy()})[output]
    return torch.export.load(path).module()(images).detach().numpy()


def check_close(what: str, expected: np.ndarray, got: np.ndarray, rtol: float = 1e-3, atol: float = 1e-5) -> float:
    """Raise ExportError unless ``got`` equals ``expected`` within rtol / atol (as torchvision's ONNX
    tests compare with onnxruntime); returns the largest absolute difference."""
    expected, got = np.asarray(expected, dtype=np.float64), np.asarray(got, dtype=np.float64)
    if expected.shape != got.shape:
        raise ExportError(f"{what}: the export returns shape {got.shape}, the model {expected.shape}")
    diff = np.abs(expected - got)
    bad = diff > atol + rtol * np.abs(expected)
    if bad.any():
        raise ExportError(f"{what}: {int(bad.sum())} of {bad.size} values differ beyond rtol {rtol:g} / atol "
                          f"{atol:g} (largest difference {diff.max():.3g})")
    return float(diff.max()) if diff.size else 0.0


def export_program(module: nn.Module, example: Sequence[torch.Tensor], path: str,
                   dynamic_shapes=None, metadata: Optional[Mapping[str, object]] = None):
    """``torch.export`` ``module`` and save the program to ``path`` (``.pt2``, metadata as extra files);
    returns the ExportedProgram."""
    try:
        program = torch.export.export(module, tuple(example), dynamic_shapes=dynamic_shapes, strict=False)
    except Exception as e:  # noqa: BLE001 - whatever torch.export refuses, the user gets one line
        raise ExportError(f"torch.export: {type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    extra = {"reskit.json": json.dumps(dict(metadata or {}))}
    os.makedirs(os.path.dirname(os.path.abspath(path)) or ".", exist_ok=True)
    torch.export.save(program, path, extra_files=extra)
    return program
