"""Faster / Mask R-CNN training and COCO evaluation as an engine Task (see engine/task.py)."""
from __future__ import annotations

import dataclasses
import logging
import os
from typing import Dict, List, Optional

import torch
from torch import nn

from backbones.config import replaces_backbone
from engine.checkpoint import KIND_DETECTION, read_checkpoint
from engine.config import ConfigError
from engine.data import DataError, build_inference_loader
from engine.dist import is_main_process
from engine.resume import resumed_line, resuming_from

from .batching import collate_detection
from .coco import load_coco
from .build import build_detector
from .coco_dataset import CocoDetection, ConcatCocoDetection
from .config import DetConfig
from .coco_results import write_results_file
from .evaluation import COCOEvaluator, format_table, prepare_ground_truth
from .transforms import build_train_transform
from .weights import REMEDY, label_space, load_detector_weights

logger = logging.getLogger(__name__)


def _tensor_targets(targets: List[dict]) -> List[Dict[str, torch.Tensor]]:
    """Keep what torchvision's heads read (boxes, labels, masks); drop bookkeeping entries."""
    keep = ("boxes", "labels", "masks")
    return [{k: t[k] for k in keep if k in t} for t in targets]


class DetectionTask:
    primary_metric = "bbox.AP"
    find_unused_parameters = False

    def __init__(self, cfg: DetConfig, training: bool = True, checkpoint: Optional[dict] = None):
        """``training=False`` (evaluation, prediction): the label space is the one recorded in
        ``model.weights`` when the checkpoint has one; in training it is the training data's.
        ``checkpoint``: ``model.weights`` already read, so that it is not read again."""
        self.cfg = cfg
        self.training = training
        self._train_set: Optional[ConcatCocoDetection] = None
        self._val_set: Optional[CocoDetection] = None
        self._ground_truth = None  # the validation set's ground truth, prepared once for every evaluation
        # Evaluation reads model.weights once, here: the label space now, the weights in build_model.
        self._weights_checkpoint = None
        if not training and cfg.model.weights:
            self._weights_checkpoint = checkpoint if checkpoint is not None else \
                read_checkpoint(cfg.model.weights, REMEDY)
        self.weights_labels = None if training else label_space(cfg.model.weights, self._weights_checkpoint)
        if self.weights_labels is not None:
            k = len(self.weights_labels["category_ids"])
            if cfg.model.num_classes not in ("auto", k):
                raise ConfigError(f"model.num_classes={cfg.model.num_classes}, but {cfg.model.weights} predicts {k} "
                                  "classes (its meta.category_ids); set model.num_classes=auto (or the config "
                                  "the run saved, output_dir/config.yaml)")
            cfg.model.num_classes = k
        self._model_input_norm: Optional[dict] = None
        self._notes: List[tuple] = []  # (heading, text) for the report's run section (report_notes)
        self._last_eval: Optional[dict] = None  # the records of the last evaluation, rank 0 (write_report)

    # ---- data ------------------------------------------------------------------------------
    def train_dataset(self) -> ConcatCocoDetection:
        if self._train_set is None:
            c = self.cfg
            if not c.data.train:
                raise ValueError("data.train: no training dataset given (a list of {json, images})")
            transform = build_train_transform(
                c.input.min_size_train, c.input.max_size_train, c.input.flip_prob,
                color_jitter=0.4 if c.input.photometric else 0.0)
            self._train_set = train = ConcatCocoDetection.from_files(
                [(d.json, d.images) for d in c.data.train], transform=transform,
                keep_empty=c.data.keep_empty, with_masks=c.model.mask, skip_bad=c.data.skip_bad,
                drop_unused_categories=not c.data.keep_unused_categories,
                max_dropped_fraction=c.data.max_dropped_fraction)
            k = train.num_categories
            unused = ", ".join(f"id {i} '{n}'" for i, n in sorted(train.unused_categories.items()))
            if c.model.num_classes == "auto":
                c.model.num_classes = k
            elif c.model.num_classes != k:
                raise ConfigError(f"model.num_classes={c.model.num_classes}, but the training annotations use {k} "
                                  f"categories" + (f" (unused, left out: {unused})" if unused else "")
                                  + f"; set model.num_classes={k} or auto")
            if is_main_process():
                for ds in train.datasets:
                    (logger.warning if ds.cleaning.dropped(annotations_only=False) else logger.info)(
                        "training set %s", ds.cleaning.summary())
                    self._note("training set", ds.cleaning)
                if unused:
                    self._notes.append(("label space", f"{unused} left out: no training annotation uses it"))
                    logger.warning("label space: %s left out, no training annotation uses it "
                                   "(data.keep_unused_categories=true keeps every category)", unused)
                logger.info("label space: %d classes (model.num_classes=%d), instances per class: %s", k, k,
                            train.instances_per_class())
                self._notes.append(("label space", f"{k} classes; training instances per class: "
                                                   f"{train.instances_per_class()}"))
                logger.info("training set: %s", train.stats)
            if c.data.val:
                self._check_val_sets()
        return self._train_set

    def _check_val_sets(self) -> None:
        """Before training: every validation json is usable, its image files exist, and its annotations
        use only categories of the training label space (else evaluation scores them as misses, AP 0)."""
        c = self.cfg
        train_ids = set(self._train_set.id_to_contiguous)
        for i, d in enumerate(c.data.val):
            where = f"data.val[{i}] {d.json}"
            index = load_coco(d.json, c.data.max_dropped_fraction, log=is_main_process())
            missing = [name for name in map(index.file_name, range(index.num_images))
                       if not os.path.isfile(os.path.join(d.images, name))]
            if missing:
                raise DataError(f"{where}: {len(missing)} of {index.num_images} image files not found in "
                                f"{d.images} (e.g. {missing[0]}); fix data.val[{i}].images or the file_name entries")
            unknown = sorted(index.used_category_ids() - train_ids)
            if unknown:
                names = index.category_names()
                listed = ", ".join(f"{u} '{names.get(u, '?')}'" for u in unknown[:10])
                raise DataError(f"{where}: annotations use category ids {listed} that the training label space "
                                f"({sorted(train_ids)[:20]}) does not have, so evaluation would count them as misses; "
                                "give both jsons the same category ids")
            self._check_category_names(index, where)
            if is_main_process():
                (logger.warning if index.cleaning.dropped(annotations_only=False) else logger.info)(
                    "validation set %s", index.cleaning.summary())
                self._note("validation set", index.cleaning)
            if i == 0 and self._val_set is None:
                self._val_set = CocoDetection(d.json, d.images, transform=None, keep_empty=True, skip_bad=False,
                                              category_map=self._train_set.id_to_contiguous, index=index)

    def _check_category_names(self, index, where: str) -> None:
        """A category id named differently in the validation json than in training's stops the run
        (one line, both names, both files), unless data.categories_by_id says the ids rule."""
        train = self._train_set
        train_names = dict(zip((train.contiguous_to_id[i] for i in range(1, len(train.class_names) + 1)),
                               train.class_names))
        differ = [(i, train_names[i], n) for i, n in sorted(index.category_names().items())
                  if i in train_names and n != train_names[i]]
        if not differ:
            return
        i, train_name, val_name = differ[0]
        more = f" (and {len(differ) - 1} more)" if len(differ) > 1 else ""
        train_json = self.cfg.data.train[0].json
        if not self.cfg.data.categories_by_id:
            raise DataError(f"{where}: category id {i} is '{val_name}' there but '{train_name}' in {train_json}"
                            f"{more}; give both files the same names, or set data.categories_by_id=true if the "
                            "ids are what matches")
        if is_main_process():
            logger.warning("%s: category id %d is '%s' there but '%s' in %s%s; matched by id "
                           "(data.categories_by_id=true)", where, i, val_name, train_name, train_json, more)

    def _resolve_num_classes(self) -> None:
        """model.num_classes=auto: the training data's categories (training), else the checkpoint's
        label space (set in __init__), else the validation json's categories."""
        if self.cfg.model.num_classes != "auto":
            return
        if self.training and self.cfg.data.train:
            self.train_dataset()
        else:
            self.cfg.model.num_classes = self.val_dataset().num_categories

    @property
    def has_validation(self) -> bool:  # none: the trainer trains without evaluating, and says so
        return bool(self.cfg.data.val)

    @property
    def num_train_samples(self) -> int:
        return len(self.train_dataset())

    def group_ids(self):
        return self.train_dataset().group_ids()

    def collate(self, samples: list):
        return collate_detection(samples)

    def val_dataset(self) -> CocoDetection:
        if self._val_set is None:
            if not self.cfg.data.val:
                raise ValueError("data.val: no validation dataset given (a list of {json, images})")
            d = self.cfg.data.val[0]
            # No transform: the model resizes at test time (as torchvision) and returns boxes in the
            # original pixels. Every image is kept: COCO evaluation counts images without objects.
            self._val_set = CocoDetection(d.json, d.images, transform=None, keep_empty=True,
                                          skip_bad=False, max_dropped_fraction=self.cfg.data.max_dropped_fraction)
            self._note("validation set", self._val_set.cleaning)
            if self.weights_labels is not None:  # evaluation of a checkpoint: its label space must cover the json
                unknown = sorted(self._val_set.index.used_category_ids() - set(self.weights_labels["category_ids"]))
                if unknown:
                    raise DataError(f"data.val[0] {d.json}: annotations use category ids {unknown[:10]} that "
                                    f"{self.cfg.model.weights} does not predict (its ids: "
                                    f"{self.weights_labels['category_ids'][:20]}), so they would count as misses; "
                                    "evaluate on a json with the training's category ids")
        return self._val_set

    def contiguous_to_id(self) -> Dict[int, int]:
        if self.weights_labels is not None:
            return {i + 1: c for i, c in enumerate(self.weights_labels["category_ids"])}
        if self.cfg.data.train:
            return dict(self.train_dataset().contiguous_to_id)
        return dict(self.val_dataset().contiguous_to_id)

    def class_names(self) -> List[str]:
        if self.weights_labels is not None:
            return list(self.weights_labels["class_names"])
        ds = self.train_dataset() if self.cfg.data.train else self.val_dataset()
        return list(ds.class_names)

    # ---- model -----------------------------------------------------------------------------
    def build_model(self) -> nn.Module:
        self._resolve_num_classes()
        mcfg = self.cfg.model
        resumed = self.training and resuming_from()
        if not self.training or resumed or replaces_backbone(mcfg.weights, mcfg.weights_partial):
            # whole-detector weights (or the checkpoint resumed) fill the backbone: its starting weights
            # are not read (nor required)
            mcfg = dataclasses.replace(mcfg, backbone=dataclasses.replace(mcfg.backbone, weights=None))
        model = build_detector(mcfg, self.cfg.input)
        if resumed:
            self._notes.append(("weights", resumed_line(self.cfg.model, resumed)))
            if is_main_process():
                logger.info(self._notes[-1][1])
        elif self.cfg.model.weights:
            # training: the class-dependent predictor may start new (fine-tuning); evaluation: all must fit
            report = load_detector_weights(model, self.cfg.model.weights, checkpoint=self._weights_checkpoint,
                                           allow_mismatch=self.training, partial=self.cfg.model.weights_partial)
            self._weights_checkpoint = None  # loaded: its tensors need not stay in memory
            if is_main_process():
                logger.info("detector weights:\n%s", report)
            self._notes.append(("weights", f"{self.cfg.model.weights}\n{report}"))
        elif self.training and not mcfg.backbone.weights:
            line = ("no starting weights (model.weights and model.backbone.weights are null): the whole detector "
                    "starts from random initialisation; set model.backbone.weights (a file or a name such as "
                    "torchvision:ResNet50_Weights.IMAGENET1K_V2) or model.weights (a detector checkpoint)")
            if is_main_process():
                logger.warning(line)
            self._notes.append(("weights", line))
        self._model_input_norm = dict(model.input_norm)
        return model

    def param_lr_mults(self, model: nn.Module) -> Dict[str, float]:
        mult = self.cfg.model.backbone.lr_mult
        return {} if mult == 1.0 else {"backbone": mult}

    def training_step(self, model: nn.Module, batch) -> Dict[str, torch.Tensor]:
        images, targets = batch
        return model(list(images), _tensor_targets(targets))

    def checkpoint_meta(self) -> dict:
        c2i = self.contiguous_to_id()
        bb = self.cfg.model.backbone
        return {"task": KIND_DETECTION, "arch": self.cfg.model.arch, "mask": self.cfg.model.mask,
                "num_classes": len(c2i), "category_ids": [c2i[i] for i in range(1, len(c2i) + 1)],
                "class_names": self.class_names(), "backbone": bb.name,
                "input_norm": self._input_norm()}

    def _input_norm(self) -> dict:
        if self._model_input_norm is None:  # the normalisation the built model applies
            self._resolve_num_classes()
            self._model_input_norm = dict(build_detector(self.cfg.model, self.cfg.input).input_norm)
        return dict(self._model_input_norm)

    # ---- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict:
        dataset = self.val_dataset()
        iou_types = ("bbox", "segm") if self.cfg.model.mask else ("bbox",)
        if self._ground_truth is None:
            # the records the validation set already read and cleaned, not the json again at every evaluation
            self._ground_truth = prepare_ground_truth(dataset.index)
        evaluator = COCOEvaluator(self._ground_truth, iou_types, backend=self.cfg.test.backend,
                                  contiguous_to_id=self.contiguous_to_id())
        from engine.dist import get_world_size
        per_rank = max(1, self.cfg.test.ims_per_batch // get_world_size())
        loader = build_inference_loader(dataset, per_rank, collate_detection,
                                        num_workers=self.cfg.data.num_workers)
        device = next(model.parameters()).device
        for images, targets in loader:
            # One forward pass per image size: images of other sizes in one batch are padded to the
            # largest, and the padding changes the detections near the border and which proposals
            # survive (anchors in the padding take pre-NMS slots), so a batched result would depend
            # on its neighbours; per size, every image gets exactly what it gets alone (the Predictor,
            # ONNX Runtime, docs/deploy.md).
            by_size: Dict[tuple, List[int]] = {}
            for i, img in enumerate(images):
                by_size.setdefault(tuple(img.shape), []).append(i)
            for group in by_size.values():
                outputs = model([images[i].to(device) for i in group])
                evaluator.update({targets[i]["image_id"]: {k: v.cpu() for k, v in o.items()}
                                  for i, o in zip(group, outputs)})
        results = evaluator.evaluate()
        if is_main_process():
            self._last_eval = {"records": evaluator.results(), "image_ids": evaluator.image_ids(),
                               "summaries": evaluator.summaries}
            # The records themselves, as detectron2 keeps them: eval_coco.py --results reads them back.
            write_results_file(evaluator.results(), os.path.join(
                self.cfg.output_dir, "inference", "coco_instances_results.json"))
            logger.info("COCO evaluation on %s:\n%s", dataset.json_path, format_table(results))
        return results

    # ---- report ----------------------------------------------------------------------------
    def _note(self, heading: str, cleaning) -> None:
        text = cleaning.summary()
        for reason, examples in cleaning.examples.items():
            text += f"\n  {reason}: " + "; ".join(examples)
        self._notes.append((heading, text))

    def report_notes(self) -> List[tuple]:
        """(heading, text) for the report's run section: what each dataset dropped (with examples), the
        label space, the weight-load report."""
        return list(self._notes)

    def write_report(self, report, results: dict) -> None:
        """The detection sections (detection.report) of the last evaluation, into ``report``."""
        from .report import add_detection_sections

        kind = "Mask R-CNN" if self.cfg.model.mask else "Faster R-CNN"
        report.title = f"{kind} ({self.cfg.model.arch}, {self.cfg.model.backbone.name}): " \
                       f"{os.path.basename(os.path.abspath(self.cfg.output_dir))}"
        if self._last_eval is None:
            report.section("Evaluation").text("no evaluation ran in this process: nothing to report", "warn")
            return
        dataset = self.val_dataset()
        report.subtitle = f"evaluated on {dataset.json_path} ({len(self._last_eval['image_ids'])} images)"
        add_detection_sections(report, self._ground_truth, self._last_eval["records"],
                               ("bbox", "segm") if self.cfg.model.mask else ("bbox",),
                               images_dir=self.cfg.data.val[0].images, backend=self.cfg.test.backend,
                               category_ids=self.contiguous_to_id().values(),
                               image_ids=self._last_eval["image_ids"],
                               score_thresh=getattr(self, "report_score_thresh", 0.5),
                               summaries=self._last_eval["summaries"])
