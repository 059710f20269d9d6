"""Any timm model as a backbone (``timm:<model>``), through timm's own ``features_only`` wrapper.

timm states what a model can return in ``feature_info`` (channels, reduction, producing module); we
only rename the outputs by their stride so every backbone speaks the same names: stride 2 is
``stem``, 4 ``res2``, 8 ``res3``, 16 ``res4``, 32 ``res5`` (64 ``res6``). Names come from the
undilated network, so a dilated ``res5`` keeps its name with stride 16 or 8 in ``strides``.
"""
from __future__ import annotations

import math
from typing import List, Optional, Sequence

import torch
from torch import Tensor, nn

from .base import Backbone
from .norm import TORCHVISION_INPUT_NORM

__all__ = ["TimmBackbone", "timm_classifier", "timm_input_norm", "stride_name"]

# dilation (res4, res5) -> timm's output_stride
_OUTPUT_STRIDE = {(1, 1): 32, (1, 2): 16, (2, 4): 8}
_LEVELS = ["stem", "res2", "res3", "res4", "res5"]  # freeze_at 1..5 freezes up to these


def stride_name(stride: int) -> str:
    if stride <= 2:
        return "stem"
    return f"res{int(round(math.log2(stride)))}"


def timm_input_norm(model: nn.Module) -> dict:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if "mean" in cfg and "std" in cfg:
        return {"color": "RGB", "scale": 1.0, "mean": [float(v) for v in cfg["mean"]],
                "std": [float(v) for v in cfg["std"]]}
    return dict(TORCHVISION_INPUT_NORM)


def timm_classifier(model_name: str, num_classes: int = 1000, **kwargs) -> nn.Module:
    """timm's own classifier (never downloads weights); ``input_norm`` recorded from its config."""
    import timm  # here, not at module level: every process that builds a ResNet would pay its import

    model = timm.create_model(model_name, pretrained=False, num_classes=num_classes, **kwargs)
    model.input_norm = timm_input_norm(model)
    return model


class TimmBackbone(Backbone):
    def __init__(
        self,
        model_name: str,
        out_features: Optional[Sequence[str]] = None,
        norm: str = "BN",
        freeze_at: int = 0,
        dilation: Sequence[int] = (1, 1),
        **timm_kwargs,
    ) -> None:
        super().__init__()
        import timm  # on use: importing timm costs ~0.3 s a process that builds no timm model
        from timm.layers import convert_sync_batchnorm, freeze_batch_norm_2d

        if not timm.is_model(model_name):  # accepts pretrained tags too: resnet50.a1_in1k
            import difflib

            close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
            raise ValueError(f"timm has no model '{model_name}'" + (f"; closest: {', '.join(close)}" if close else ""))
        if tuple(dilation) not in _OUTPUT_STRIDE:
            raise ValueError(f"timm backbones take dilation {sorted(_OUTPUT_STRIDE)} (timm's output_stride "
                             f"32, 16, 8), got {list(dilation)}")
        # A probe on the meta device (no memory, no init cost) tells which levels exist and their names.
        with torch.device("meta"):
            probe = timm.create_model(model_name, pretrained=False, features_only=True, **timm_kwargs)
        names: dict = {}  # name -> feature index; the deepest feature of each stride wins
        for index, reduction in enumerate(probe.feature_info.reduction()):
            names[stride_name(reduction)] = index
        available = [n for n in sorted(names, key=lambda n: names[n])]
        if out_features is None:
            out_features = [n for n in available if n != "stem"] or available
        unknown = [f for f in out_features if f not in names]
        if unknown:
            raise ValueError(f"timm:{model_name} has no output {unknown}; it offers {available}")
        self.out_features = sorted(set(out_features), key=lambda n: names[n])
        indices = tuple(names[n] for n in self.out_features)

        self.model_name = model_name
        self.model = timm.create_model(model_name, pretrained=False, features_only=True, out_indices=indices,
                                       output_stride=_OUTPUT_STRIDE[tuple(dilation)], **timm_kwargs)
        info = self.model.feature_info
        self.out_channels = dict(zip(self.out_features, info.channels()))
        self.strides = dict(zip(self.out_features, info.reduction()))
        self._feature_modules = dict(zip(self.out_features, info.module_name()))
        self.input_norm = timm_input_norm(self.model)

        if norm == "FrozenBN":
            self.model = freeze_batch_norm_2d(self.model)
        elif norm == "SyncBN":
            self.model = convert_sync_batchnorm(self.model)
        elif norm != "BN":
            raise ValueError(f"timm backbones keep their own normalisation: norm BN, FrozenBN or SyncBN, got '{norm}'")
        self.freeze_at = 0
        self.freeze(freeze_at)

    def _units(self) -> List[tuple]:
        """The model's modules in forward order, split finely enough that each feature's producer is one."""
        producers = set()
        for name in self._feature_modules.values():
            producers.update({name, name.replace(".", "_")})  # FeatureListNet flattens "stages.0" to "stages_0"

        def expand(prefix: str, module: nn.Module):
            for child_name, child in module.named_children():
                full = f"{prefix}{child_name}"
                if full not in producers and any(p.startswith(full + ".") for p in producers):
                    yield from expand(full + ".", child)
                else:
                    yield full, child

        return list(expand("", self.model))

    def freeze(self, at: int = 0) -> "TimmBackbone":
        """As ResNet.freeze: level 1 is everything before the ``res2`` producer, level k>=2 up to ``res{k}``'s.

        Frozen modules get requires_grad False and FrozenBN (timm's conversion, which keeps BatchNormAct's
        activation). Levels the model does not return cannot be located: that is an error.
        """
        if at <= 0:
            return self
        if at > 5:
            raise ValueError(f"freeze_at must be in 0..5, got {at}")
        from timm.layers import freeze_batch_norm_2d

        units = self._units()
        unit_names = [n for n, _ in units]

        def index_of(level: str) -> int:
            module = self._feature_modules[level]
            for candidate in (module, module.replace(".", "_")):
                if candidate in unit_names:
                    return unit_names.index(candidate)
            raise ValueError(f"timm:{self.model_name}: cannot find module {module} producing {level}")

        if at == 1:
            if "res2" not in self._feature_modules:
                raise ValueError(f"freeze_at=1 needs the res2 output to locate the stem; add it to out_features")
            stop = index_of("res2")  # exclusive
        else:
            level = _LEVELS[at - 1]
            if level not in self._feature_modules:
                raise ValueError(f"freeze_at={at} needs '{level}' in out_features of timm:{self.model_name}")
            stop = index_of(level) + 1
        for name, module in units[:stop]:
            for p in module.parameters():
                p.requires_grad_(False)
            frozen = freeze_batch_norm_2d(module)
            if frozen is not module:
                parent_name, _, child_name = name.rpartition(".")
                parent = self.model.get_submodule(parent_name) if parent_name else self.model
                setattr(parent, child_name, frozen)
        self.freeze_at = max(self.freeze_at, at)
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        outputs = self.model(x)
        if isinstance(outputs, dict):
            outputs = list(outputs.values())
        return dict(zip(self.out_features, outputs))
