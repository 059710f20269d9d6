"""Matching a state to a model: the tensors that fit, and the one :class:`LoadReport` every loader returns
(loaded, missing, unexpected, other shape); :func:`check_fit` stops a load that does not fit. Part of
:mod:`engine.checkpoint`, which re-exports every name here.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .data import DataError

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
