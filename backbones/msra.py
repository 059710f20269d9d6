"""The original MSRA / Caffe ResNet weights in Detectron's ``.pkl`` format.

Detectron (Caffe2) stored ImageNet ResNets as a pickle of numpy arrays, ``{"blobs": {name: array}}``
or the bare dict, with names such as ``conv1_w``, ``res_conv1_bn_s``, ``res2_0_branch2a_w``,
``res2_0_branch2a_bn_s``/``_b``, ``res2_0_branch1_w`` (projection), ``fc1000_w``/``_b``. Batch norm
is affine-only (Caffe folded the statistics into scale ``s`` and bias ``b``), so we load it as
``weight=s, bias=b, running_mean=0, running_var=1-eps``: a (Frozen)BN in eval mode then computes
exactly ``x*s + b``. These networks put the bottleneck stride in the first 1x1 convolution
(``stride_in_1x1=True``) and expect BGR input in 0..255 minus the mean pixel (``MSRA_INPUT_NORM``).

Reading never executes code: a pickle may only rebuild numpy arrays and builtin containers.
"""
from __future__ import annotations

import importlib
import os
import pickle
import re
from typing import Dict, Mapping, Union

import numpy as np
import torch
from torch import nn

from engine.data import DataError

from .norm import MSRA_INPUT_NORM
from .norm import BN_EPS

__all__ = ["read_msra_pkl", "msra_to_torchvision", "torchvision_to_msra", "export_msra_pkl", "is_msra_state",
           "RestrictedUnpickler"]

# The only globals a weights pickle may name: numpy array and scalar reconstruction, OrderedDict.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("collections", "OrderedDict"),
    ("_codecs", "encode"),  # how Python 3 writes bytes at protocol 2 (numpy array buffers); pure data
}


class RestrictedUnpickler(pickle.Unpickler):
    """An Unpickler that refuses every global outside ``_ALLOWED_GLOBALS`` (so no ``os.system``, no
    ``builtins.eval``, no arbitrary ``__reduce__``): a weights file can only describe data."""

    def __init__(self, file, source_name: str = "<pickle>") -> None:
        # latin1: Detectron's pickles were written by Python 2 (numpy buffers are byte strings).
        super().__init__(file, encoding="latin1")
        self.source_name = source_name

    def find_class(self, module: str, name: str):
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(
                f"{self.source_name}: refusing to load '{module}.{name}': a weights .pkl may only contain "
                f"numpy arrays and plain containers (this file would run code when read)")
        if module.startswith("numpy.core") and np.lib.NumpyVersion(np.__version__) >= "2.0.0":
            module = "numpy._core" + module[len("numpy.core"):]  # numpy 2 renamed the private module
        return getattr(importlib.import_module(module), name)


class RefusedPickle(DataError, pickle.UnpicklingError):
    """A pickle that names a global outside ``_ALLOWED_GLOBALS``: the one line says which and why."""


def _load_pickle(path: Union[str, os.PathLike]) -> object:
    """What a weights ``.pkl`` holds, or a DataError in one line: refused (it would run code), empty,
    truncated or no pickle. A crafted file can make the allowed numpy constructors raise anything
    (TypeError, MemoryError, ...): each is a file that is no weights pickle, never a traceback."""
    with open(path, "rb") as f:
        try:
            return RestrictedUnpickler(f, str(path)).load()
        except pickle.UnpicklingError as e:
            if str(e).startswith(str(path)):  # our refusal of a global: it names what would have run
                raise RefusedPickle(str(e)) from None
            problem = f"not a pickle ({e})"
        except (EOFError, ValueError, IndexError) as e:  # what a truncated or foreign file raises
            problem = "an empty file" if isinstance(e, EOFError) and f.tell() == 0 else \
                f"truncated or not a pickle ({type(e).__name__}: {e})"
        except Exception as e:  # noqa: BLE001 - crafted arguments to an allowed constructor
            problem = f"not a weights pickle ({type(e).__name__}: {str(e)[:120]})"
    raise DataError(f"{path}: {problem}; a Detectron .pkl is a pickle of named numpy arrays "
                    "(torch checkpoints: name them .pth)")


def read_msra_pkl(path: Union[str, os.PathLike]) -> Dict[str, np.ndarray]:
    """The named arrays of a Detectron ``.pkl`` (``blobs`` unwrapped, momentum entries dropped)."""
    data = _load_pickle(path)
    if isinstance(data, dict) and "blobs" in data:
        data = data["blobs"]
    elif isinstance(data, dict) and isinstance(data.get("model"), dict):
        data = data["model"]  # detectron2's converted zoo files
    if not isinstance(data, dict):
        raise DataError(f"{path}: expected a dict of named arrays (Detectron 'blobs'), found {type(data).__name__}")
    blobs = {}
    for name, value in data.items():
        if str(name).endswith("_momentum") or str(name).startswith("__"):
            continue  # optimizer state saved alongside some Caffe2 weights; file metadata
        if not isinstance(value, (np.ndarray, np.generic)):
            raise DataError(f"{path}: entry '{name}' is a {type(value).__name__}, not a numpy array")
        blobs[str(name)] = np.asarray(value)
    return blobs


def is_msra_state(keys) -> bool:
    keys = set(keys)
    return "conv1_w" in keys or any(re.match(r"res\d+_\d+_branch", k) for k in keys)


_BRANCH2 = {"a": 1, "b": 2, "c": 3}
_BLOCK = re.compile(r"^res(\d+)_(\d+)_branch(1|2[abc])_(w|b|bn_s|bn_b|gn_s|gn_b)$")
_STEM = {"conv1_w": "conv1.weight", "conv1_b": "conv1.bias",
         "res_conv1_bn_s": "bn1.weight", "res_conv1_bn_b": "bn1.bias",
         "conv1_gn_s": "bn1.weight", "conv1_gn_b": "bn1.bias",
         "fc1000_w": "fc.weight", "fc1000_b": "fc.bias", "pred_w": "fc.weight", "pred_b": "fc.bias"}
_NORM_PARAM = {"s": "weight", "b": "bias"}


def _msra_name_to_ours(name: str) -> str:
    if name in _STEM:
        return _STEM[name]
    m = _BLOCK.match(name)
    if not m:
        return name  # left as it is: it shows up as unexpected in the load report
    stage, block, branch, kind = int(m.group(1)), int(m.group(2)), m.group(3), m.group(4)
    prefix = f"layer{stage - 1}.{block}."
    if branch == "1":
        conv, norm = prefix + "downsample.0", prefix + "downsample.1"
    else:
        i = _BRANCH2[branch[1]]
        conv, norm = f"{prefix}conv{i}", f"{prefix}bn{i}"
    if kind in ("w", "b"):
        return f"{conv}.{'weight' if kind == 'w' else 'bias'}"
    return f"{norm}.{_NORM_PARAM[kind.split('_')[1]]}"


def msra_to_torchvision(blobs: Mapping[str, np.ndarray], eps: float = BN_EPS) -> Dict[str, torch.Tensor]:
    """Detectron names -> torchvision names. Affine-only BN gets running_mean 0, running_var 1-eps."""
    state: Dict[str, torch.Tensor] = {}
    affine_bn = set()  # modules whose scale/bias came from an affine-only Caffe batch norm
    for name, value in blobs.items():
        key = _msra_name_to_ours(name)
        state[key] = torch.from_numpy(np.ascontiguousarray(value)).float()
        if name.endswith("_bn_s"):
            affine_bn.add(key.rsplit(".", 1)[0])
    for norm in sorted(affine_bn):
        state[norm + ".running_mean"] = torch.zeros_like(state[norm + ".weight"])
        state[norm + ".running_var"] = torch.full_like(state[norm + ".weight"], 1.0 - eps)
    return state


def _ours_name_to_msra(key: str) -> str:
    inverse = {v: k for k, v in _STEM.items() if not k.endswith(("_gn_s", "_gn_b")) and not k.startswith("pred")}
    if key in inverse:
        return inverse[key]
    m = re.match(r"^layer(\d+)\.(\d+)\.(conv(\d)|bn(\d)|downsample\.(0|1))\.(weight|bias)$", key)
    if not m:
        raise ValueError(f"'{key}' has no name in the Detectron format (only ResNet stem, blocks and fc do)")
    stage, block = int(m.group(1)) + 1, int(m.group(2))
    if m.group(6) is not None:
        branch, is_norm = "branch1", m.group(6) == "1"
    else:
        i = int(m.group(4) or m.group(5))
        branch, is_norm = "branch2" + "abc"[i - 1], m.group(5) is not None
    base = f"res{stage}_{block}_{branch}"
    if is_norm:
        return f"{base}_bn_{'s' if m.group(7) == 'weight' else 'b'}"
    return f"{base}_{'w' if m.group(7) == 'weight' else 'b'}"


def torchvision_to_msra(model: nn.Module) -> Dict[str, np.ndarray]:
    """Our ResNet -> Detectron blobs, each norm folded into an affine scale/bias (its statistics applied)."""
    if any(isinstance(m, nn.GroupNorm) for m in model.modules()):
        raise ValueError("exporting GroupNorm models to the Detectron format is not supported")
    blobs: Dict[str, np.ndarray] = {}
    norms = {name: m for name, m in model.named_modules() if hasattr(m, "running_var")}
    state = model.state_dict()
    for key, value in state.items():
        module = key.rsplit(".", 1)[0]
        if module in norms:
            if not key.endswith((".weight", ".bias")):
                continue
            m = norms[module]
            scale = state[module + ".weight"].double() / torch.sqrt(state[module + ".running_var"].double() + m.eps)
            value = scale if key.endswith(".weight") else \
                state[module + ".bias"].double() - state[module + ".running_mean"].double() * scale
        elif key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        blobs[_ours_name_to_msra(key)] = value.detach().float().cpu().numpy()
    return blobs


def export_msra_pkl(model: nn.Module, path: Union[str, os.PathLike], force: bool = False) -> None:
    """Write ``model`` (a ResNet) as a Detectron-style ``{"blobs": ...}`` pickle.

    The format implies MSRA stride placement and BGR 0-255 input; a model built or trained otherwise
    would be misread by every loader of the format, so that is refused unless ``force``.
    """
    if not force:
        if getattr(model, "stride_in_1x1", True) is False and any(
                hasattr(m, "conv3") for m in model.modules()):
            raise ValueError("the Detectron format implies stride_in_1x1=True; this bottleneck model has the "
                             "stride in the 3x3 (pass force=True to write it anyway)")
        if getattr(model, "input_norm", MSRA_INPUT_NORM) != MSRA_INPUT_NORM:
            raise ValueError(f"the Detectron format implies BGR 0-255 input minus {MSRA_INPUT_NORM['mean']}; "
                             f"this model expects {model.input_norm} (pass force=True to write it anyway)")
    blobs = torchvision_to_msra(model)
    with open(path, "wb") as f:
        pickle.dump({"blobs": blobs, "__author__": "reskit"}, f, protocol=2)
