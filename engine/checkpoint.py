"""THE checkpoint module: atomic writes, safe reading, state selection, matching a state to a model,
and the one :class:`LoadReport` every loader returns (see docs/ARCHITECTURE.md, "checkpoint layout").

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` reads: tensors, numbers,
strings, lists and dicts only, so loading a file never runs code from it. Weights live under
``"model"`` (``"model_ema"`` beside them when the run kept an EMA), what the weights are under
``"meta"``; ``meta["task"]`` is the checkpoint's kind, one of the ``KIND_*`` constants below.
Foreign formats (torchvision, timm, safetensors, MSRA ``.pkl``) are read by ``backbones.weights``.
"""
from __future__ import annotations

import codecs
import glob
import os
import random
import re
import tempfile
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from .data import DataError

__all__ = ["KIND_CLASSIFICATION", "KIND_BACKBONE", "KIND_DETECTION", "KIND_SEMANTIC_SEGMENTATION", "KINDS",
           "LoadReport", "read_checkpoint", "load_checkpoint", "checkpoint_kind", "checkpoint_meta",
           "checkpoint_state", "match_state", "check_fit", "save_checkpoint", "Checkpointer", "get_rng_state", "set_rng_state"]

# What a checkpoint holds, written to meta["task"]. The values are those files already carry.
KIND_CLASSIFICATION = "classification"  # a whole classifier (tools/train_cls.py)
KIND_BACKBONE = "backbone"  # a feature extractor alone (tools/transfer.py)
KIND_DETECTION = "detection"  # Faster / Mask R-CNN (tools/train_det.py, converted torchvision detectors)
KIND_SEMANTIC_SEGMENTATION = "semantic_segmentation"  # tools/train_seg.py, converted torchvision models
KINDS = (KIND_CLASSIFICATION, KIND_BACKBONE, KIND_DETECTION, KIND_SEMANTIC_SEGMENTATION)

_NAME = re.compile(r"model_(\d{7,})\.pth$")


def _file_mode() -> int:
    # mkstemp creates files readable by the owner only; give the checkpoint the usual umask mode.
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # some platforms / filesystems cannot open a directory
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# Held while a checkpoint is written: a worker whose torchrun agent died waits for it before it
# ends (engine.dist.exit_with_agent), so the write in progress completes instead of being cut.
CHECKPOINT_WRITE = threading.Lock()


def save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    """Write ``state`` to ``path`` atomically: a reader sees the old file or the complete new one.

    The bytes go to a temporary file in the same directory, are flushed and fsynced, then
    ``os.replace`` swaps the name (atomic on POSIX within one filesystem) and the directory is fsynced
    so the rename itself survives a power cut.
    """
    with CHECKPOINT_WRITE:
        _save_checkpoint(path, state)


def _save_checkpoint(path: str, state: Dict[str, Any]) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-" + os.path.basename(path) + ".")
        with os.fdopen(fd, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException as e:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        problem = _write_problem(e, directory)
        if problem is None:
            raise
        raise DataError(f"{path}: cannot write the checkpoint: {problem}") from None
    _fsync_dir(directory)


def _write_problem(e: BaseException, directory: str) -> Optional[str]:
    """The user's words for a failed checkpoint write, or None when it is not a disk problem.
    torch.save reports a full disk from its C++ zip writer as a RuntimeError ("enforce fail at
    inline_container.cc ... file write failed"), not as an OSError."""
    import errno
    import shutil

    text = str(e)
    if isinstance(e, OSError) or (isinstance(e, RuntimeError) and ("inline_container" in text
                                                                     or "PytorchStreamWriter" in text)):
        code = getattr(e, "errno", None)
        if code in (errno.EROFS, errno.EACCES, errno.EPERM):
            return f"{e.strerror}; choose a writable output_dir"
        mount = os.path.abspath(directory)
        while not os.path.ismount(mount) and os.path.dirname(mount) != mount:
            mount = os.path.dirname(mount)
        where = f"the disk mounted at {mount}"
        try:
            usage = shutil.disk_usage(directory)
            where += f" ({usage.free / 2**20:.0f} MiB free of {usage.total / 2**30:.1f} GiB)"
        except OSError:
            pass
        reason = e.strerror if isinstance(e, OSError) and e.strerror else "the write failed"
        return f"{reason}; {where} is full or failing: free space there or move output_dir to another disk"
    return None


# --------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------

_REMEDY = "give weights saved as tensors only (a state dict, or a run's model_final.pth)"
_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def _not_torch(head: bytes) -> Optional[str]:
    """What a file that torch.save did not write is, from its first bytes; None when it may be one
    (torch's zip format, or a pickle as torch.save wrote before 1.6)."""
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return None
    if not head:
        return "an empty file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array, not a PyTorch checkpoint"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras / TensorFlow weights?), not a PyTorch checkpoint"
    if len(head) > 9 and head[8:10] in (b'{"', b"{'"):
        return "a safetensors file, not a PyTorch checkpoint; give it a .safetensors name"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file, not a PyTorch checkpoint"
    try:  # final=False: the last bytes may cut a multi-byte character short
        text = b"\0" not in head and codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        text = False
    return "a text file, not a PyTorch checkpoint" if text else \
        "not a PyTorch checkpoint (neither torch's zip format nor a pickle)"


def read_checkpoint(path: str, remedy: str = _REMEDY) -> Dict[str, Any]:
    """The dict in the torch file ``path``, read on the CPU without executing code from it.

    Anything else raises :class:`engine.data.DataError` with one line naming the file, what it is
    (missing, empty, JSON, text, damaged, a pickle that would run code, ...) and ``remedy``.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path}: weights file not found; check the path")
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise DataError(f"{path}: cannot read the file ({e.strerror}); check its permissions") from None
    what = _not_torch(head)
    if what is not None:
        raise DataError(f"{path}: {what}; {remedy}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - each failure is told apart below, in the user's words
        text = str(e)
        code = _GLOBAL.search(text)
        if code:  # weights_only met a reference to a function or class: loading it would run code
            what = (f"holds Python objects beyond tensors and containers ('{code.group(1)}'); reading them "
                    "would run code from the file, so it is refused")
        elif head[:1] == b"\x80":
            what = "a plain Python pickle, not a file torch.save wrote"
        else:
            detail = text.splitlines()[0].split(". ")[0][:120] if text else "no detail"
            what = f"damaged or truncated ({type(e).__name__}: {detail})"
        raise DataError(f"{path}: {what}; {remedy}") from None
    if not isinstance(ckpt, dict):
        raise DataError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict; {remedy}")
    return ckpt


# The trainer's name for the same reading (its own checkpoints, resuming).
load_checkpoint = read_checkpoint


def checkpoint_meta(ckpt: Mapping) -> Dict[str, Any]:
    """The ``meta`` a checkpoint records ({} when it has none, e.g. a bare state dict)."""
    meta = ckpt.get("meta") if isinstance(ckpt, Mapping) else None
    return dict(meta) if isinstance(meta, Mapping) else {}


def checkpoint_kind(ckpt: Mapping) -> Optional[str]:
    """``meta["task"]``: one of :data:`KINDS` for our checkpoints, None when not recorded."""
    kind = checkpoint_meta(ckpt).get("task")
    return kind if isinstance(kind, str) else None


def checkpoint_state(ckpt: Mapping, prefer_ema: bool = False, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """The model weights of ``ckpt``: ``model_ema`` when asked for and present, else ``model``, else
    the dict itself when it is a bare state dict."""
    if prefer_ema and isinstance(ckpt.get("model_ema"), Mapping) and ckpt["model_ema"]:
        return dict(ckpt["model_ema"])
    if isinstance(ckpt.get("model"), Mapping):
        return dict(ckpt["model"])
    if ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        return dict(ckpt)
    raise DataError(f"{source}: no 'model' state dict in the checkpoint; {_REMEDY}")


# --------------------------------------------------------------------------------------------------
# Matching a state to a model, and the report of it
# --------------------------------------------------------------------------------------------------

_NBT = "num_batches_tracked"  # BN bookkeeping, absent from FrozenBN / GN and most converted weights


@dataclass
class LoadReport:
    """What loading weights into a model did; every loader returns one."""

    source: str  # the file, or "<state dict>"
    format: str = "reskit"  # what the source was: reskit, torchvision, timm, safetensors, msra, ...
    loaded: List[str] = field(default_factory=list)  # model keys filled from the weights
    missing: List[str] = field(default_factory=list)  # model keys left as initialised
    unexpected: List[str] = field(default_factory=list)  # weights keys nothing in the model took
    mismatched: List[Tuple[str, tuple, tuple]] = field(default_factory=list)  # (model key, weights shape, model shape)
    input_norm: Optional[dict] = None  # the normalisation the model applies after loading
    input_norm_from_weights: bool = False  # False: the weights state none, the model's is kept
    mapping: List[Tuple[str, str]] = field(default_factory=list)  # prefix rewrites applied (weights, model)

    @property
    def complete(self) -> bool:
        """Every model tensor came from the weights."""
        return not self.missing and not self.mismatched

    def __str__(self) -> str:
        total = len(self.loaded) + len(self.missing) + len(self.mismatched)
        rewrites = "; ".join(f"'{s}' -> '{d}'" for s, d in self.mapping if (s, d) != ("", "")) or "none"
        norm = self.input_norm
        norm_text = "not recorded" if norm is None else \
            f"{norm['color']} 0-{norm['scale']:g}, mean {norm['mean']}, std {norm['std']}"
        if not self.input_norm_from_weights:
            norm_text += " (the model's; the weights state none)"
        rows = [
            ("weights", f"{self.source} (format: {self.format})"),
            ("prefixes", rewrites),
            ("input", norm_text),
            ("loaded", f"{len(self.loaded)} of {total} model tensors"),
            ("missing", _summarize(self.missing)),
            ("unexpected", _summarize(self.unexpected)),
            ("mismatched", _summarize([f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in self.mismatched],
                                      group=False)),
        ]
        return "\n".join(f"{k:<11}{v}" for k, v in rows)


def _summarize(keys: List[str], limit: int = 6, group: bool = True) -> str:
    if not keys:
        return "0"
    items = list(keys)
    if group and len(keys) > limit:  # long lists read better by module: "layer4.* (50), fc.* (2)"
        depth = 1
        while depth < 3:
            groups: Dict[str, int] = {}
            for k in keys:
                head = ".".join(k.split(".")[:depth])
                groups[head] = groups.get(head, 0) + 1
            if len(groups) > 1 or depth == 2:
                break
            depth += 1
        items = [f"{head}.* ({n})" for head, n in groups.items()]
    shown = ", ".join(items[:limit]) + (f", ... {len(items) - limit} more" if len(items) > limit else "")
    return f"{len(keys)}: {shown}"


def match_state(state: Mapping[str, torch.Tensor], model: nn.Module, source: str, allow_mismatch: bool = True,
                remedy: str = "check model.num_classes and the architecture",
                weights_names: Optional[Mapping[str, str]] = None) -> Tuple[Dict[str, torch.Tensor], LoadReport]:
    """The tensors of ``state`` that fit ``model`` (same key, same shape) and the report of the rest.

    A shape mismatch is skipped and reported when ``allow_mismatch``, otherwise a DataError naming
    the key, both shapes and ``remedy``. ``weights_names`` (model key -> key in the file) names a
    renamed key as the file has it in that message.
    """
    own = model.state_dict()
    report = LoadReport(source)
    usable: Dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key not in own:
            if not key.endswith(_NBT):
                report.unexpected.append(key)
        elif tuple(own[key].shape) != tuple(value.shape):
            if not allow_mismatch:
                original = (weights_names or {}).get(key, key)
                where = f"'{original}'" + (f" (model key '{key}')" if original != key else "")
                raise DataError(f"{source}: shape mismatch for {where}: weights have {tuple(value.shape)}, "
                                f"the model has {tuple(own[key].shape)}; {remedy}")
            report.mismatched.append((key, tuple(value.shape), tuple(own[key].shape)))
        else:
            usable[key] = value
    skipped = {k for k, _, _ in report.mismatched}
    report.loaded = [k for k in own if k in usable and not k.endswith(_NBT)]
    report.missing = [k for k in own if k not in usable and k not in skipped and not k.endswith(_NBT)]
    return usable, report


def _under(key: str, prefixes: Sequence[str]) -> bool:
    return any(p == "*" or key == p.rstrip(".") or key.startswith(p.rstrip(".") + ".") for p in prefixes)


def check_fit(report: LoadReport, key: str = "model.weights", fine_tune: Sequence[str] = (),
              partial: Sequence[str] = (), partial_key: str = "model.weights_partial",
              remedy: str = "give weights of this architecture", suggest_partial: bool = True) -> None:
    """Stop with one line (:class:`engine.data.DataError`) unless whole-model weights fit the model.

    Accepted misfits: tensors of another shape under a ``fine_tune`` prefix (the class-dependent
    predictor layers when fine-tuning to another number of classes; the report lists them), and any
    missing / unexpected / other-shape tensor under a name of ``partial`` (``partial_key`` in the
    config, ``"*"`` for any). A load that fills no model tensor is never accepted: training or
    evaluating random weights with exit 0 is the silent failure this check exists for.
    """
    mismatched = [k for k, _, _ in report.mismatched]
    bad_missing = [k for k in report.missing if not _under(k, partial)]
    bad_unexpected = [k for k in report.unexpected if not _under(k, partial)]
    bad_shape = [f"{k} {tuple(a)} vs model {tuple(b)}" for k, a, b in report.mismatched
                 if not _under(k, fine_tune) and not _under(k, partial)]
    total = len(report.loaded) + len(report.missing) + len(mismatched)
    if report.loaded and not (bad_missing or bad_unexpected or bad_shape):
        return
    parts = [f"loaded {len(report.loaded)} of {total} model tensors"]
    if bad_missing:
        parts.append(f"missing {_summarize(bad_missing, limit=4)}")
    if bad_unexpected:
        parts.append(f"unexpected {_summarize(bad_unexpected, limit=4)}")
    if bad_shape:
        parts.append(f"other shape {_summarize(bad_shape, limit=2, group=False)}")
    # the shortest names that cover the misfits: a top-level module when none of it loaded
    loaded_tops = {k.split(".")[0] for k in report.loaded}
    names = sorted({k.split(".")[0] if k.split(".")[0] not in loaded_tops else ".".join(k.split(".")[:2])
                    for k in bad_missing + bad_unexpected + [k.split(" ")[0] for k in bad_shape]})
    hint = "; backbone or classifier weights go to model.backbone.weights" if not report.loaded else \
        f"; to load the rest deliberately set {partial_key}=[{','.join(names[:8])}]" if suggest_partial else ""
    raise DataError(f"{report.source}: {key} do not fit the model ({'; '.join(parts)}); {remedy}{hint}")


class Checkpointer:
    """``output_dir/checkpoints/model_{iteration:07d}.pth``, keeping the newest ``keep``."""

    def __init__(self, output_dir: str, keep: int = 3):
        self.directory = os.path.join(output_dir, "checkpoints")
        self.keep = keep

    def path_for(self, iteration: int) -> str:
        return os.path.join(self.directory, f"model_{iteration:07d}.pth")

    def all(self) -> List[Tuple[int, str]]:
        """``(iteration, path)`` of the checkpoint files present, oldest first."""
        found = []
        for path in glob.glob(os.path.join(self.directory, "model_*.pth")):
            m = _NAME.search(os.path.basename(path))
            if m:
                found.append((int(m.group(1)), path))
        return sorted(found)

    def save(self, iteration: int, state: Dict[str, Any]) -> str:
        path = self.path_for(iteration)
        try:
            save_checkpoint(path, state)
        except DataError as e:  # a full disk: say which checkpoint is still good (older ones are kept)
            kept = [p for _, p in self.all()]
            raise DataError(f"{e}; the last good checkpoint, {kept[-1]}, is kept" if kept else
                            f"{e}; no checkpoint was written yet") from None
        # Older ones go only once the new one is safely on disk.
        for _, old in self.all()[:-self.keep]:
            try:
                os.remove(old)
            except OSError:
                pass
        return path

    def remove_stale_temporaries(self) -> None:
        """Temporary files of writes a crash interrupted."""
        for tmp in glob.glob(os.path.join(self.directory, ".tmp-*")):
            try:
                os.remove(tmp)
            except OSError:
                pass

    def load_latest(self) -> Optional[Tuple[str, Dict[str, Any]]]:
        """``(path, state)`` of the newest checkpoint that loads, or None. A newest file that is
        truncated or corrupt (a crash while it was copied, a full disk) is skipped with a warning."""
        for _, path in reversed(self.all()):
            try:
                return path, load_checkpoint(path)
            except Exception as e:  # truncated zip, bad pickle: any failure means "not usable"
                warnings.warn(f"skipping unreadable checkpoint {path} ({type(e).__name__}: {e}); "
                              "falling back to the previous one", stacklevel=2)
        return None

    def latest(self) -> Optional[str]:
        """Path of the newest checkpoint that loads, or None."""
        found = self.load_latest()
        return None if found is None else found[0]

    def load(self, path: str) -> Dict[str, Any]:
        return load_checkpoint(path)


# --------------------------------------------------------------------------------------------------
# RNG states in weights_only-safe form
# --------------------------------------------------------------------------------------------------


def get_rng_state() -> Dict[str, Any]:
    """Every RNG a training step may draw from: python ``random``, numpy's global RNG, torch CPU and
    the current CUDA device."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        # This process's GPU only: reading every GPU's state would open a context on each of them.
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])  # the current device's
