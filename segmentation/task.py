"""Semantic segmentation as an engine Task (see engine/task.py): training, sharded evaluation, meta.

Fine-tuning is configuration: ``model.backbone.weights`` loads a classification checkpoint or any
backbone file into the backbone (``backbones.load_weights``, its report logged);
``model.weights`` loads a whole segmentation checkpoint over that, skipping (and reporting) tensors
whose shapes differ, such as a classifier for another number of classes.

Evaluation runs on every rank over its shard of the validation set, accumulates a confusion matrix,
sums it over ranks and reports ``{"sem_seg": {"mIoU", "pixel_accuracy", "mean_accuracy",
"per_class_IoU", "per_class_accuracy"}}`` in percent. With ``data.eval_resize`` the image and its
label map are resized to short side ``data.base_size`` first (torchvision's reference does the
same), so the metrics are measured at that size.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from backbones.config import replaces_backbone
from engine.checkpoint import KIND_SEMANTIC_SEGMENTATION
from engine.data import build_inference_loader
from engine.logger import dataset_summary
from engine.dist import get_world_size, is_main_process
from engine.resume import resumed_line, resuming_from
from engine.sampler import gather_in_order

from .config import SegConfig, SegDatasetConfig
from .data import CocoSemanticSegmentation, ConcatSegmentation, FolderSegmentation
from .metrics import ConfusionMatrix, format_table
from .models import build_segmentation_model
from .report import WorstImages, add_semantic_report
from .transforms import build_eval_transform, build_train_transform, collate_eval, collate_train
from .weights import load_segmentation_weights

logger = logging.getLogger(__name__)

__all__ = ["SemanticSegmentationTask", "lovasz_softmax_loss", "segmentation_loss"]

REPORT_WORST_IMAGES = 8  # images of lowest mIoU drawn in the report


def segmentation_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, top_k: float = 1.0) -> Tensor:
    """Cross-entropy averaged over the pixels that are not ``ignore_index``, or over the hardest
    ``top_k`` fraction of them.

    ``F.cross_entropy(..., ignore_index=...)`` with mean reduction divides by the number of valid
    pixels, which is 0 for a crop that holds only ignored pixels and gives NaN (the trainer would stop
    on it); summing and dividing by at least 1 gives the same value otherwise, and 0 there.

    ``top_k < 1`` is hard pixel mining (detectron2's Panoptic-DeepLab ``DeepLabCE``, LOSS_TOP_K):
    only the largest per-pixel losses count, so the few pixels of small objects and of boundaries are
    not outvoted by a background that is already right. Unlike ``DeepLabCE``, ignored pixels are not
    counted in the fraction.
    """
    if top_k >= 1.0:
        total = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="sum")
        return total / (target != ignore_index).sum().clamp(min=1)
    per_pixel = F.cross_entropy(logits.float(), target, ignore_index=ignore_index, reduction="none")
    per_pixel = per_pixel[target != ignore_index]
    if per_pixel.numel() == 0:
        return per_pixel.sum()  # only ignored pixels: 0, and still part of the graph
    k = max(1, int(top_k * per_pixel.numel()))  # at least the hardest pixel
    return per_pixel.topk(k, sorted=False).values.mean()


def lovasz_softmax_loss(logits: Tensor, target: Tensor, ignore_index: int = 255, subsample: int = 1) -> Tensor:
    """The Lovasz-softmax loss (Berman et al., CVPR 2018): the Lovasz extension of 1 - IoU per class,
    averaged over the classes present in ``target``, over the batch's pixels taken together.

    It is the authors' ``lovasz_softmax_flat`` (``classes='present'``), with the classes' errors
    sorted in one call instead of a loop; written here because neither torchvision nor timm has it.
    On hard (one-hot) predictions it equals the mean over the present classes of 1 - IoU.

    ``subsample > 1`` keeps every ``subsample``-th pixel that is not ignored (from a random offset):
    the sort over all of a batch's pixels is most of the term's cost.
    """
    num_classes = logits.shape[1]
    probs = logits.float().softmax(1).movedim(1, 0).reshape(num_classes, -1)  # [C, P]
    labels = target.reshape(-1)
    valid = labels != ignore_index
    probs, labels = probs[:, valid], labels[valid]
    if subsample > 1 and labels.numel() > subsample:
        offset = int(torch.randint(subsample, ()))
        probs, labels = probs[:, offset::subsample], labels[offset::subsample]
    fg = (labels[None] == torch.arange(num_classes, device=labels.device)[:, None]).to(probs.dtype)
    present = fg.sum(1) > 0
    if not bool(present.any()):  # only ignored pixels: 0, and still part of the graph
        return probs.sum() * 0.0
    errors, order = (fg - probs).abs().sort(1, descending=True)
    fg_sorted = fg.gather(1, order)
    gts = fg_sorted.sum(1, keepdim=True)
    jaccard = 1.0 - (gts - fg_sorted.cumsum(1)) / (gts + (1.0 - fg_sorted).cumsum(1))
    weights = torch.cat([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], 1)  # the authors' lovasz_grad
    return (errors * weights).sum(1)[present].mean()


class SemanticSegmentationTask:
    primary_metric = "sem_seg.mIoU"
    find_unused_parameters = False

    def __init__(self, cfg: SegConfig, training: bool = True):
        self.cfg = cfg
        self.training = training
        self._train_set: Optional[ConcatSegmentation] = None
        self._val_set: Optional[ConcatSegmentation] = None
        self._category_map: Optional[Dict[int, int]] = None  # COCO ids -> labels, shared by every set
        self._input_norm: Optional[dict] = None
        self._report_data: Optional[dict] = None  # what the last evaluation kept for write_report
        self._notes: List[tuple] = []  # (heading, text) for the report's run section

    # ---- data ------------------------------------------------------------------------------
    def _dataset(self, spec: SegDatasetConfig, transform, train: bool):
        c = self.cfg
        if spec.coco is not None:
            ds = CocoSemanticSegmentation(
                spec.coco.json, spec.coco.images, spec.coco.categories, transform=transform,
                min_area=c.data.min_train_area if train and c.data.min_train_area >= 0 else None,
                ignore_index=c.model.ignore_index, skip_bad=c.data.skip_bad and train,
                category_map=self._category_map)
            self._category_map = self._category_map or ds.category_map
        else:
            ds = FolderSegmentation(spec.folder.images, spec.folder.labels, c.model.num_classes,
                                    c.data.class_names or None, transform=transform,
                                    ignore_index=c.model.ignore_index, skip_bad=c.data.skip_bad and train)
        if ds.num_classes != c.model.num_classes:
            where = spec.coco.json if spec.coco is not None else spec.folder.images
            from engine.config import ConfigError  # a config that cannot run: exit 2, one line
            raise ConfigError(f"model.num_classes={c.model.num_classes}, but {where} has {ds.num_classes} "
                              f"classes (background included); set model.num_classes={ds.num_classes}")
        return ds

    def train_dataset(self) -> ConcatSegmentation:
        if self._train_set is None:
            d = self.cfg.data
            if not d.train:
                raise ValueError("data.train: no training dataset given (a list of {coco: ...} or {folder: ...})")
            transform = build_train_transform(d.base_size, d.crop_size, d.scale_range, d.flip_prob,
                                              self.cfg.model.ignore_index)
            self._train_set = ConcatSegmentation([self._dataset(s, transform, train=True) for s in d.train])
            if is_main_process():
                summary = dataset_summary("training set", self._train_set.stats, self._instances_per_class())
                logger.info(summary)
                self._notes.append(("training set", summary))
        return self._train_set

    def val_dataset(self) -> ConcatSegmentation:
        if self._val_set is None:
            d = self.cfg.data
            if not d.val:
                raise ValueError("data.val: no validation dataset given (a list of {coco: ...} or {folder: ...})")
            if self.training and d.train:
                self.train_dataset()  # the validation labels follow the training label space
            transform = build_eval_transform(d.base_size if d.eval_resize else None)
            self._val_set = ConcatSegmentation([self._dataset(s, transform, train=False) for s in d.val])
        return self._val_set

    def _instances_per_class(self) -> Optional[Dict[str, int]]:
        """Annotated instances per class of the COCO training sets (label-map folders have none)."""
        counts: Dict[int, int] = {}
        for ds in self._train_set.datasets:
            for label, n in (ds.instances_per_label() if hasattr(ds, "instances_per_label") else {}).items():
                counts[label] = counts.get(label, 0) + n
        names = self._train_set.class_names
        return {names[k]: counts[k] for k in sorted(counts)} or None

    @property
    def has_validation(self) -> bool:  # none: the trainer trains without evaluating, and says so
        return bool(self.cfg.data.val)

    @property
    def num_train_samples(self) -> int:
        return len(self.train_dataset())

    def group_ids(self):
        return None

    def collate(self, samples: list):
        return collate_train(samples, self.cfg.model.ignore_index)

    def class_names(self) -> List[str]:
        d = self.cfg.data
        ds = self.train_dataset() if d.train and self.training else self.val_dataset() if d.val else None
        if ds is not None:
            return list(ds.class_names)
        return list(d.class_names) or [f"class {i}" for i in range(self.cfg.model.num_classes)]

    # ---- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        mcfg = self.cfg.model
        resumed = self.training and resuming_from()
        if not self.training or resumed or replaces_backbone(mcfg.weights, mcfg.weights_partial):
            # whole-model weights (or the checkpoint resumed) fill the backbone: its starting weights are
            # not read (nor required)
            mcfg = dataclasses.replace(mcfg, backbone=dataclasses.replace(mcfg.backbone, weights=None))
        model = build_segmentation_model(mcfg)
        if resumed:
            self._notes.append(("model weights", resumed_line(self.cfg.model, resumed)))
            if is_main_process():
                logger.info(self._notes[-1][1])
        elif self.cfg.model.weights and self.training:
            report = load_segmentation_weights(model, self.cfg.model.weights, strict=False,
                                               partial=self.cfg.model.weights_partial)
            if is_main_process():
                logger.info("model weights:\n%s", report)
                self._notes.append((f"model weights ({self.cfg.model.weights})", str(report)))
        self._input_norm = dict(model.input_norm)
        return model

    def load_weights(self, model: nn.Module, path: str) -> None:
        """``--eval-only``: the whole checkpoint, strictly (only the training-only aux head may go)."""
        load_segmentation_weights(model, path, strict=True, prefer_ema=self.cfg.solver.ema)
        self._input_norm = dict(model.input_norm)

    def param_lr_mults(self, model: nn.Module) -> Dict[str, float]:
        mults = {}
        if self.cfg.model.backbone.lr_mult != 1.0:
            mults["backbone"] = self.cfg.model.backbone.lr_mult
        if self.cfg.model.aux_lr_mult != 1.0:
            mults["aux_classifier"] = self.cfg.model.aux_lr_mult
        return mults

    def training_step(self, model: nn.Module, batch) -> Dict[str, Tensor]:
        images, labels = batch
        outputs = model(images)
        ignore = self.cfg.model.ignore_index
        top_k = self.cfg.model.loss_top_k
        losses = {"loss_seg": segmentation_loss(outputs["out"], labels, ignore, top_k)}
        if self.cfg.model.loss_lovasz > 0:
            losses["loss_lovasz"] = self.cfg.model.loss_lovasz * lovasz_softmax_loss(
                outputs["out"], labels, ignore, self.cfg.model.lovasz_subsample)
        if "aux" in outputs:
            losses["loss_aux"] = self.cfg.model.aux_weight * segmentation_loss(outputs["aux"], labels, ignore, top_k)
        return losses

    def checkpoint_meta(self) -> dict:
        m = self.cfg.model
        return {"task": KIND_SEMANTIC_SEGMENTATION, "head": m.head, "backbone": m.backbone.name,
                "num_classes": m.num_classes, "class_names": self.class_names(),
                "ignore_index": m.ignore_index, "aux_loss": m.aux_loss,
                "input_norm": dict(self._input_norm or build_segmentation_model(m).input_norm),
                "base_size": self.cfg.data.base_size, "eval_resize": self.cfg.data.eval_resize}

    # ---- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict:
        dataset = self.val_dataset()
        device = next(model.parameters()).device
        per_rank = max(1, self.cfg.test.ims_per_batch // get_world_size())
        loader = build_inference_loader(dataset, per_rank, collate_eval, num_workers=self.cfg.data.num_workers)
        matrix = ConfusionMatrix(self.cfg.model.num_classes, self.cfg.model.ignore_index, device=device)
        # the report's worst images: each image's own counts rank it, small copies of the worst are kept
        worst = WorstImages(REPORT_WORST_IMAGES if getattr(self.cfg.test, "report", False) else 0)
        for images, labels in loader:
            for group in _same_size_runs(images):
                batch = torch.stack([images[i] for i in group]).to(device)
                predictions = model(batch)["out"].argmax(1)
                for k, i in enumerate(group):
                    counts = matrix.update(labels[i].to(device), predictions[k])
                    worst.add(counts.cpu(), images[i], labels[i], predictions[k])
        matrix.reduce()  # every rank takes part, also one whose shard was empty
        states = gather_in_order([worst.state()])
        if not is_main_process():
            return {}
        results = matrix.compute(dataset.class_names)
        logger.info("semantic segmentation on %d images:\n%s", len(dataset), format_table(results))
        self._report_data = {"matrix": matrix.matrix.cpu(), "names": list(dataset.class_names),
                             "worst": WorstImages.merge(states, worst.k)}
        return {"sem_seg": results}

    # ---- report ------------------------------------------------------------------------------
    def write_report(self, report, results: dict) -> None:
        """The semantic sections of output_dir/report (segmentation.report), from the last evaluation."""
        data = self._report_data
        if data is None or "sem_seg" not in results:
            return
        report.subtitle = report.subtitle or f"semantic segmentation ({self.cfg.model.head} head, " \
                                             f"{self.cfg.model.backbone.name})"
        add_semantic_report(report, results["sem_seg"], data["matrix"], data["names"], data["worst"],
                            self.cfg.model.ignore_index)

    def report_notes(self) -> List[tuple]:
        return list(self._notes)


def _same_size_runs(images: List[Tensor]) -> List[List[int]]:
    """Indices of consecutive images of one size: each run goes through the model as one batch."""
    runs: List[List[int]] = []
    for i, image in enumerate(images):
        if runs and images[runs[-1][0]].shape == image.shape:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs
