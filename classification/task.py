"""Image classification as an engine task: pretraining on ImageFolder / ImageNet and fine-tuning.

``ClassificationTask(cfg)`` follows :class:`engine.task.Task`; ``tools/train_cls.py`` hands it to
the :class:`engine.trainer.Trainer`. Datasets are scanned when the task is built, so a missing root
or an empty class folder stops the run before any training.

Fine-tuning is configuration: ``model.backbone.weights`` (ImageNet weights of any format, or a
checkpoint made by ``tools/transfer.py`` or by this task) loads everything that fits; a head whose
shape does not fit ``model.num_classes`` (or no head at all) starts new; ``model.backbone.freeze_at``
freezes the stem and early stages; ``model.backbone.lr_mult`` lowers the backbone's learning rate
and ``model.head_lr_mult`` sets the head's.

Mixup / cutmix go through ``timm.data.Mixup``, which draws its mixing factors from the global
``np.random`` of the training process. That stays reproducible: the trainer seeds the global RNGs
and saves / restores them in every checkpoint, so a resumed run draws the same factors.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import warnings
from typing import Dict, List, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from engine.checkpoint import KIND_CLASSIFICATION, checkpoint_kind, checkpoint_meta, checkpoint_state, read_checkpoint
from engine.config import ConfigError
from engine.data import DataError, build_inference_loader
from engine.dist import get_world_size, is_main_process, reduce_sum_tensor
from engine.logger import dataset_summary
from engine.resume import resumed_line, resuming_from
from engine.sampler import gather_in_order

from backbones.build import build_classifier, load_pretrained
from .data import build_classification_set
from .report import ClassificationRecords, add_classification_report
from .evaluation import center_scores, multiscale_scores, ten_crop_scores, topk_correct
from .transforms import build_eval_transform, build_train_transform
from backbones.norm import TORCHVISION_INPUT_NORM, check_input_norm, normalize_image
from backbones.weights import WeightsFile, load_weights

logger = logging.getLogger(__name__)

REPORT_MISTAKES = 16  # most confident mistakes drawn in the report

__all__ = ["ClassificationTask", "DropoutLinear", "classifier_head_name", "collate_train", "collate_eval"]


class DropoutLinear(nn.Linear):
    """``nn.Linear`` with dropout on its input: adds ``model.drop_rate`` without changing the
    parameter names (``fc.weight``, ``fc.bias``), so checkpoints stay torchvision's."""

    def __init__(self, in_features: int, out_features: int, drop_rate: float = 0.0, bias: bool = True):
        super().__init__(in_features, out_features, bias=bias)
        self.drop_rate = drop_rate

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.dropout(x, self.drop_rate, self.training))

    def extra_repr(self) -> str:
        return super().extra_repr() + f", drop_rate={self.drop_rate}"


def classifier_head_name(model: nn.Module) -> str:
    """The module name of the final linear classifier: ``fc`` for ours, timm's own name otherwise."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "fc", None)
    for name, module in model.named_modules():
        if module is head and name:
            return name
    raise ValueError(f"cannot find the classifier head of {type(model).__name__}")


def collate_train(samples: list) -> dict:
    return {"images": torch.stack([s[0] for s in samples]), "labels": torch.tensor([s[1] for s in samples])}


def collate_eval(samples: list) -> dict:
    """Unreadable images skipped by the dataset (None) are dropped and counted."""
    kept = [s for s in samples if s is not None]
    images = [s[0] for s in kept]
    if images and isinstance(images[0], Tensor):
        images = torch.stack(images)
    return {"images": images, "labels": torch.tensor([s[1] for s in kept], dtype=torch.long),
            "skipped": len(samples) - len(kept)}


class ClassificationTask:
    primary_metric = "top1"

    def __init__(self, cfg, training: bool = True):
        self.cfg = cfg
        self.training = training
        data = cfg.data
        self.train_set = None
        if data.train and (training or not data.val):
            self.train_set = build_classification_set(data.train, build_train_transform(data), "data.train",
                                                      data.skip_bad)
        classes = self.train_set.classes if self.train_set is not None else None
        self.val_set = None
        if data.val:
            self.val_set = build_classification_set(data.val, build_eval_transform(data, cfg.test), "data.val",
                                                    data.skip_bad, classes)
        if self.train_set is None and self.val_set is None:
            raise ConfigError("data.val: nothing to evaluate; give data.val (and data.train to train)")
        self.classes: List[str] = list((self.train_set or self.val_set).classes)
        if len(self.classes) != cfg.model.num_classes:
            raise ConfigError(f"model.num_classes: {cfg.model.num_classes}, but the data has {len(self.classes)} "
                              f"classes ({', '.join(self.classes[:5])}{', ...' if len(self.classes) > 5 else ''}); "
                              f"set model.num_classes={len(self.classes)}")
        self.num_train_samples = len(self.train_set) if self.train_set is not None else 0
        self._notes: List[tuple] = []  # (heading, text) for the report's run section
        self._report_data: Optional[dict] = None  # what the last evaluation kept for write_report
        self.has_validation = self.val_set is not None  # none: the trainer trains without evaluating
        if is_main_process():
            for name, ds in (("training set", self.train_set), ("validation set", self.val_set)):
                if ds is not None:
                    counts = np.bincount(ds.labels, minlength=len(self.classes))
                    summary = dataset_summary(f"{name} ({len(ds.datasets)} source{'s' * (len(ds.datasets) > 1)})",
                                              {"images": len(ds)}, dict(zip(self.classes, counts.tolist())))
                    logger.info(summary)
                    self._notes.append((name, summary))
        self.input_norm = dict(TORCHVISION_INPUT_NORM)
        self.load_report = None
        self.mixup = None
        if data.mixup > 0 or data.cutmix > 0:
            from timm.data import Mixup

            self.mixup = Mixup(mixup_alpha=data.mixup, cutmix_alpha=data.cutmix,
                               label_smoothing=data.label_smoothing, num_classes=cfg.model.num_classes)

    # ------------------------------------------------------------------------------------- model

    def build_model(self) -> nn.Module:
        mcfg = self.cfg.model
        bcfg = mcfg.backbone
        if not self.training:  # evaluation: the network the checkpoint records (docs/configs.md)
            bcfg = self._recorded_network(bcfg)
        try:
            # the weights load below, where a head of another shape may start new (fine-tuning)
            model = build_classifier(dataclasses.replace(bcfg, weights=None), mcfg.num_classes)
        except ValueError as e:
            raise ConfigError(f"model.backbone: {e}") from None
        self.head_name = classifier_head_name(model)
        resumed = self.training and resuming_from()
        if resumed:  # the checkpoint resumed replaces every weight: the starting ones are not read
            self._notes.append(("weights", resumed_line(mcfg, resumed)))
            if is_main_process():
                logger.info(self._notes[-1][1])
        elif bcfg.weights and self.training:  # evaluation reads every weight from the checkpoint
            self._load_pretrained(model, bcfg.weights, bcfg.weights_format)
        self.input_norm = check_input_norm(getattr(model, "input_norm", TORCHVISION_INPUT_NORM))
        if mcfg.drop_rate > 0:
            self._add_dropout(model, mcfg.drop_rate)
        return model

    def _load_pretrained(self, model: nn.Module, path: str, fmt: str) -> None:
        """Load what fits; a head of another shape (or none in the file) starts new. Anything else
        that does not fit is an error: training on half-random weights would be a silent failure."""
        head = self.head_name + "."
        try:
            report = load_pretrained(model, path, format=fmt, strict_shapes=False)
        except ValueError as e:
            raise ConfigError(f"model.backbone.weights: {e}") from None
        bad = [f"{k} {a} vs {b}" for k, a, b in report.mismatched if not k.startswith(head)]
        missing = [k for k in report.missing if not k.startswith(head)]
        if bad or missing:
            raise ConfigError(f"model.backbone.weights: {path} does not fit {self.cfg.model.backbone.name}: "
                              f"{len(missing)} missing tensors (e.g. {missing[:3]}), {len(bad)} of another shape "
                              f"(e.g. {bad[:3]}); check model.backbone.name and its options (stride_in_1x1, "
                              "shortcut, ...)")
        new_head = any(k.startswith(head) for k in report.missing) or any(k.startswith(head) for k, _, _ in report.mismatched)
        if is_main_process():
            logger.info(f"backbone weights from {path}:\n{report}")
            if new_head:
                logger.info(f"new classifier head '{self.head_name}' for {self.cfg.model.num_classes} classes")
        self.load_report = report

    def _add_dropout(self, model: nn.Module, rate: float) -> None:
        parent_name, _, child = self.head_name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        old = getattr(parent, child)
        if not isinstance(old, nn.Linear):
            raise ConfigError(f"model.drop_rate: the head '{self.head_name}' is a {type(old).__name__}, not a linear layer")
        new = DropoutLinear(old.in_features, old.out_features, rate, bias=old.bias is not None)
        new.load_state_dict(old.state_dict())
        new.weight.requires_grad_(old.weight.requires_grad)
        setattr(parent, child, new)

    def param_lr_mults(self, model: nn.Module) -> Dict[str, float]:
        m = self.cfg.model
        return {"": m.backbone.lr_mult, self.head_name: m.head_lr_mult}

    def _eval_weights(self) -> str:
        return self.cfg.model.weights or os.path.join(self.cfg.output_dir, "model_final.pth")

    def _recorded_network(self, bcfg):
        """``bcfg`` with the network a classification checkpoint to evaluate records (name, width,
        shortcut, ...), each difference from the config logged: the checkpoint rebuilds its network."""
        path = self._eval_weights()
        if not os.path.isfile(path) or path.endswith((".pkl", ".safetensors")):
            return bcfg  # load_weights says what is missing
        ckpt = read_checkpoint(path)
        recorded = checkpoint_meta(ckpt).get("backbone")
        if checkpoint_kind(ckpt) != KIND_CLASSIFICATION or not isinstance(recorded, dict) or not recorded.get("name"):
            return bcfg
        self._eval_checkpoint = (path, ckpt)  # read once
        fields = {f.name for f in dataclasses.fields(bcfg)} - {"weights", "weights_format", "lr_mult"}
        options = {k: v for k, v in (recorded.get("options") or {}).items() if k in fields}
        rebuilt = dataclasses.replace(bcfg, name=recorded["name"], **options)
        changed = [f"{k}={getattr(rebuilt, k)!r} (config: {getattr(bcfg, k)!r})" for k in ["name", *options]
                   if getattr(rebuilt, k) != getattr(bcfg, k)]
        if changed and is_main_process():
            logger.info(f"{path}: the network it records is built: model.backbone " + ", ".join(changed))
        return rebuilt

    def load_weights(self, model: nn.Module, path: Optional[str]) -> None:
        """``--eval-only``: a classifier checkpoint of this task (EMA weights when ``solver.ema``)
        or any weights file whose tensors all fit (torchvision, timm, ...)."""
        path = path or self._eval_weights()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"weights file not found: {path}: set model.weights to a model_final.pth / "
                                    "model_best.pth of a classification run")
        source = path
        if not path.endswith((".pkl", ".safetensors")):
            read_before = getattr(self, "_eval_checkpoint", None)
            ckpt = read_before[1] if read_before and read_before[0] == path else read_checkpoint(path)
            self._eval_checkpoint = None
            if isinstance(ckpt.get("model"), dict):  # ours: the EMA weights when the run evaluated those
                ckpt = {"model": checkpoint_state(ckpt, self.cfg.solver.ema, path), "meta": checkpoint_meta(ckpt)}
            source = WeightsFile(ckpt, path, None, path)  # read once, loaded from memory
        report = load_weights(model, source, strict_shapes=True)
        if report.missing or report.unexpected:
            raise DataError(f"{path}: does not fit the model: missing {report.missing[:3]}, "
                            f"unexpected {report.unexpected[:3]}; give a checkpoint of this classifier "
                            "(model.backbone and model.num_classes as the run that wrote it)")
        self.input_norm = check_input_norm(getattr(model, "input_norm", self.input_norm))

    # -------------------------------------------------------------------------------------- data

    def train_dataset(self):
        if self.train_set is None:
            raise ConfigError("data.train: no training data; give data.train or use --eval-only")
        return self.train_set

    def collate(self, samples: list) -> dict:
        return collate_train(samples)

    def group_ids(self):
        return None

    def normalize(self, images: Tensor) -> Tensor:
        """RGB [0, 1] batches -> network input for the weights' normalisation (the one place it happens)."""
        return normalize_image(images, self.input_norm)

    # ---------------------------------------------------------------------------------- training

    def training_step(self, model: nn.Module, batch: dict) -> Dict[str, Tensor]:
        images, labels = self.normalize(batch["images"]), batch["labels"]
        if self.mixup is not None:
            images, targets = self._mix(images, labels)
            logits = model(images)
            loss = torch.sum(-targets * F.log_softmax(logits.float(), dim=-1), dim=-1).mean()  # timm's SoftTargetCrossEntropy
        else:
            logits = model(images)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.cfg.data.label_smoothing)
        return {"loss_cls": loss}

    def _mix(self, images: Tensor, labels: Tensor):
        # timm's Mixup pairs the batch with its reverse and needs an even batch; a batch made odd by a
        # skipped image mixes all but its last sample, which keeps its (smoothed) one-hot target.
        n = images.shape[0]
        if n % 2 == 0:
            return self.mixup(images, labels)
        from timm.data.mixup import mixup_target

        mixed, targets = self.mixup(images[:-1].clone(), labels[:-1])
        last = mixup_target(labels[-1:], self.cfg.model.num_classes, 1.0, self.cfg.data.label_smoothing)
        return torch.cat([mixed, images[-1:]]), torch.cat([targets, last.to(targets)])

    # -------------------------------------------------------------------------------- evaluation

    @torch.no_grad()  # as the detection and segmentation tasks: called outside the trainer too
    def evaluate(self, model: nn.Module) -> dict:
        if self.val_set is None:
            return {}
        test = self.cfg.test
        device = next(model.parameters()).device
        per_rank = max(1, test.ims_per_batch // get_world_size())
        loader = build_inference_loader(self.val_set, per_rank, collate_eval, self.cfg.data.num_workers)
        # top-1 hits, top-5 hits, images, skipped: four counts per rank, summed over the ranks (no
        # rank holds another's per-image results)
        counts = torch.zeros(4, dtype=torch.float64)
        # the report's records: every image's class, top-1 and its probability; copies of the
        # most confident mistakes
        records = ClassificationRecords(REPORT_MISTAKES if getattr(test, "report", False) else 0)
        for batch in loader:
            counts[3] += batch["skipped"]
            labels = batch["labels"]
            if not len(labels):
                continue
            images = batch["images"]
            if test.multiscale:
                scores = multiscale_scores(model, [[x.to(device) for x in s] for s in images], self.normalize)
            elif test.ten_crop:
                scores = ten_crop_scores(model, images.to(device), self.normalize)
            else:
                scores = center_scores(model, images.to(device), self.normalize)
            hits = topk_correct(scores.float().cpu(), labels, (1, 5))
            counts[0] += int(hits[1].sum())
            counts[1] += int(hits[5].sum())
            counts[2] += len(labels)
            # centre crop: logits; 10-crop and multi-scale: mean softmax scores already
            probabilities = scores.float().cpu()
            records.add(probabilities.softmax(1) if not (test.multiscale or test.ten_crop) else probabilities,
                        labels, images)
        top1, top5, num_images, skipped = (int(v) for v in reduce_sum_tensor(counts).tolist())
        parts = gather_in_order([records.state()])  # rank 0 only receives the others' (bounded) records
        if not is_main_process():
            return {}
        if not num_images:
            warnings.warn("evaluation: no readable validation image")
            return {"num_images": 0, "skipped": skipped}
        results = {"top1": 100.0 * top1 / num_images}
        if self.cfg.model.num_classes > 5:  # with 5 classes or fewer, top-5 is 100% by construction
            results["top5"] = 100.0 * top5 / num_images
        results.update({"num_images": num_images,
                        "view": "multiscale" if test.multiscale else "ten_crop" if test.ten_crop else "center"})
        if skipped:
            results["skipped"] = skipped
        self._report_data = ClassificationRecords.merge(parts, records.k)
        return results

    def write_report(self, report, results: dict) -> None:
        """The classification sections of output_dir/report (classification.report), from the last evaluation."""
        if self._report_data is None or "top1" not in results:
            return
        report.subtitle = report.subtitle or f"classification ({self.cfg.model.backbone.name}, " \
                                             f"{self.cfg.model.num_classes} classes)"
        add_classification_report(report, results, self._report_data, list(self.classes))

    def report_notes(self) -> List[tuple]:
        notes = list(self._notes)
        if self.load_report is not None:
            notes.append((f"backbone weights ({self.cfg.model.backbone.weights})", str(self.load_report)))
        return notes

    def checkpoint_meta(self) -> dict:
        bcfg = self.cfg.model.backbone
        options = bcfg.network_options()
        options.pop("out_features")
        return {"task": KIND_CLASSIFICATION, "input_norm": dict(self.input_norm), "class_names": list(self.classes),
                "num_classes": self.cfg.model.num_classes,
                "backbone": {"name": bcfg.name, "options": options},
                "eval": {"resize_size": self.cfg.data.resize_size, "crop_size": self.cfg.data.crop_size}}
