"""THE checkpoint module: atomic writes, safe reading, state selection, matching a state to a model,
and the one :class:`LoadReport` every loader returns (see docs/ARCHITECTURE.md, "checkpoint layout").

A checkpoint is a plain dict that ``torch.load(path, weights_only=True)`` reads: tensors, numbers,
strings, lists and dicts only, so loading a file never runs code from it. Weights live under
``"model"`` (``"model_ema"`` beside them when the run kept an EMA), what the weights are under
``"meta"``; ``meta["task"]`` is the checkpoint's kind, one of the ``KIND_*`` constants below.
Foreign formats (torchvision, timm, safetensors, MSRA ``.pkl``) are read by ``backbones.weights``.

Where it lives: the ``KIND_*`` constants here; safe reading and what a checkpoint records in
:mod:`engine.checkpoint_read`; matching a state to a model and :class:`LoadReport` in
:mod:`engine.checkpoint_match`; atomic writes, :class:`Checkpointer` and RNG states in
:mod:`engine.checkpoint_write`. Every name is importable from here.
"""
from __future__ import annotations

from .checkpoint_match import _summarize  # noqa: F401 - backbones.weights lists keys the report's way
from .checkpoint_match import LoadReport, check_fit, match_state
from .checkpoint_read import checkpoint_kind, checkpoint_meta, checkpoint_state, load_checkpoint, read_checkpoint
from .checkpoint_write import CHECKPOINT_WRITE  # noqa: F401 - engine.agent waits on it
from .checkpoint_write import Checkpointer, get_rng_state, save_checkpoint, set_rng_state

__all__ = ["KIND_CLASSIFICATION", "KIND_BACKBONE", "KIND_DETECTION", "KIND_SEMANTIC_SEGMENTATION", "KINDS",
           "LoadReport", "read_checkpoint", "load_checkpoint", "checkpoint_kind", "checkpoint_meta",
           "checkpoint_state", "match_state", "check_fit", "save_checkpoint", "Checkpointer", "get_rng_state", "set_rng_state"]

# What a checkpoint holds, written to meta["task"]. The values are those files already carry.
KIND_CLASSIFICATION = "classification"  # a whole classifier (tools/train_cls.py)
KIND_BACKBONE = "backbone"  # a feature extractor alone (tools/transfer.py)
KIND_DETECTION = "detection"  # Faster / Mask R-CNN (tools/train_det.py, converted torchvision detectors)
KIND_SEMANTIC_SEGMENTATION = "semantic_segmentation"  # tools/train_seg.py, converted torchvision models
KINDS = (KIND_CLASSIFICATION, KIND_BACKBONE, KIND_DETECTION, KIND_SEMANTIC_SEGMENTATION)
