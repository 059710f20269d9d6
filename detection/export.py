"""Faster / Mask R-CNN to ONNX, checked on ONNX Runtime, and a predictor that runs the file
(docs/deploy.md).

The graph takes what :class:`~detection.predictor.Predictor` takes, one RGB ``uint8`` image H x W x 3
(H and W dynamic; batch size 1, as torchvision's detectors export), and does inside what the eager
model does: the test-time resize, the weights' normalisation, the network, NMS, box rescaling to the
input's pixels, the label -> dataset category id map, and for Mask R-CNN mask pasting and the 0.5
threshold. Outputs: ``boxes`` N x 4 (xyxy, input pixels), ``scores`` N, ``category_ids`` N (int64,
the dataset's own ids), ``masks`` N x H x W (bool). Exported with torch's TorchScript-based
exporter (``dynamo=False``, opset 17): torchvision's detectors do not export with the dynamo one
(pytorch/vision #9306, #9462, #9321). ONNX Runtime's CPU provider has RoiAlign and
NonMaxSuppression, so nothing of torchvision is needed at run time.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from engine.export import ExportError, export_onnx, onnx_metadata, ort_session, run_session

__all__ = ["DetectorGraph", "export_reference", "export_detector_onnx", "verify_detector", "OnnxPredictor", "match_fraction",
           "box_iou_matrix"]


class DetectorGraph(nn.Module):
    """The exported computation: uint8 H x W x 3 -> boxes, scores, category ids (, masks)."""

    def __init__(self, model: nn.Module, label_to_id: np.ndarray):
        super().__init__()
        self.model = model
        self.register_buffer("label_to_id", torch.as_tensor(label_to_id, dtype=torch.int64))
        self.has_masks = getattr(model.roi_heads, "mask_predictor", None) is not None

    def forward(self, image: Tensor):
        x = image.permute(2, 0, 1).float()
        out = self.model([x])[0]
        result = [out["boxes"], out["scores"], self.label_to_id[out["labels"]]]
        if self.has_masks:
            result.append(out["masks"][:, 0] >= 0.5)
        return tuple(result)


def _sample_images(sizes: Sequence[tuple], seed: int = 0) -> List[np.ndarray]:
    """Smooth random colour images (blobs, not noise): varied enough to give many detections."""
    import cv2

    rng = np.random.default_rng(seed)
    images = []
    for h, w in sizes:
        small = rng.integers(0, 256, size=(max(2, h // 24), max(2, w // 24), 3)).astype(np.uint8)
        images.append(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC))
    return images


def export_reference(predictor):
    """The eager model an export is traced from and checked against: ``predictor``'s detector with
    frozen batch norms folded into the convolutions (the fast path's arithmetic, without its
    oneDNN-only fused blocks, which are not ONNX operators), fp32. Build the Predictor with
    ``fast=False, precision="off"``; returns it."""
    from backbones import prepare_for_inference

    predictor.model.backbone = prepare_for_inference(predictor.model.backbone, channels_last=False,
                                                     fuse_activations=False)
    return predictor


def export_detector_onnx(predictor, path: str, example_size=(320, 256)) -> str:
    """Write ``predictor``'s detector (a :class:`~detection.predictor.Predictor`) to ``path``."""
    model = predictor.model
    if model.training:
        raise ExportError("the detector is in training mode; export an eval-mode model")
    if getattr(model.backbone, "fused_blocks", 0):
        raise ExportError("the detector's backbone has oneDNN-fused blocks (not ONNX operators); build the "
                          "Predictor with fast=False or prepare_for_inference(fuse_activations=False)")
    graph = DetectorGraph(model, predictor._label_to_id).eval().cpu()
    h, w = example_size
    example = torch.from_numpy(_sample_images([(h, w)])[0])
    outputs = ["boxes", "scores", "category_ids"] + (["masks"] if graph.has_masks else [])
    axes = {"image": {0: "height", 1: "width"}, "boxes": {0: "n"}, "scores": {0: "n"}, "category_ids": {0: "n"}}
    if graph.has_masks:
        axes["masks"] = {0: "n", 1: "height", 2: "width"}
    transform = model.transform
    ids = sorted(predictor.category_names)
    metadata = {"reskit.task": "detection", "reskit.arch": getattr(model, "arch", ""),
                "reskit.mask": graph.has_masks, "reskit.score_thresh": model.roi_heads.score_thresh,
                "reskit.input": "RGB uint8 H x W x 3, one image (batch size 1)",
                "reskit.input_norm": transform.input_norm,
                "reskit.resize": {"min_size": list(transform.min_size), "max_size": transform.max_size},
                "reskit.category_ids": ids, "reskit.class_names": [predictor.category_names[i] for i in ids]}
    try:
        export_onnx(graph, [example], path, ["image"], outputs, axes, metadata)
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001 - the exporter's failure, in one line
        raise ExportError(f"ONNX export of the {getattr(model, 'arch', '')} detector failed: "
                          f"{type(e).__name__}: {str(e).splitlines()[0][:200]}") from None
    return path


# --------------------------------------------------------------------------------------------------
# Checking the export against the eager model
# --------------------------------------------------------------------------------------------------


MIN_MASK_BOX = 4.0  # px: smaller boxes' masks are not compared by IoU (see match_fraction)


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    from torchvision.ops import box_iou

    return box_iou(torch.as_tensor(a, dtype=torch.float64).reshape(-1, 4),
                   torch.as_tensor(b, dtype=torch.float64).reshape(-1, 4)).numpy()


def _mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def _masks_agree(expected: np.ndarray, got: np.ndarray, min_iou: float) -> bool:
    """IoU >= ``min_iou``, or every differing pixel on ``expected``'s boundary (within one pixel of
    its edge): where the 28 x 28 mask, bilinearly resized, meets the 0.5 threshold, float rounding
    of the resize (ONNX Resize vs torch's interpolate) may put a pixel on either side."""
    if _mask_iou(expected, got) >= min_iou:
        return True
    import cv2

    m = expected.astype(np.uint8)
    kernel = np.ones((3, 3), np.uint8)
    band = cv2.dilate(m, kernel).astype(bool) & ~cv2.erode(m, kernel).astype(bool)
    return not (np.logical_xor(expected, got) & ~band).any()


def match_fraction(expected: Dict[str, np.ndarray], got: Dict[str, np.ndarray], iou: float = 0.99,
                   score_tol: float = 1e-3, mask_iou: float = 0.98, box_tol: float = 1e-2,
                   stats: Optional[dict] = None) -> float:
    """The fraction of ``expected``'s detections with a partner in ``got``: box IoU >= ``iou``, same
    category, score within ``score_tol`` and, with masks, mask IoU >= ``mask_iou`` (corners within
    ``box_tol`` px count as IoU 1); one to one, best
    score first. 1.0 when both are empty."""
    n = len(expected["scores"])
    if n == 0:
        return 1.0 if len(got["scores"]) == 0 else 0.0
    ious = box_iou_matrix(expected["boxes"], got["boxes"])
    # IoU is ill-conditioned for boxes under a pixel wide (an untrained head makes them): corners within
    # box_tol px are the same box too
    eb, gb = np.asarray(expected["boxes"]).reshape(-1, 1, 4), np.asarray(got["boxes"]).reshape(1, -1, 4)
    ious = np.where(np.abs(eb - gb).max(axis=2) <= box_tol, 1.0, ious)
    free = np.ones(len(got["scores"]), dtype=bool)
    matched = 0
    for i in np.argsort(-np.asarray(expected["scores"]), kind="stable"):
        ok = free & (ious[i] >= iou) & (got["category_ids"] == expected["category_ids"][i]) & \
            (np.abs(got["scores"] - expected["scores"][i]) <= score_tol)
        box = np.asarray(expected["boxes"][i])
        # masks of boxes under MIN_MASK_BOX px a side: one pixel of rounding in the paste is a large
        # part of their IoU; they are matched on the box alone (and counted in stats["masks_skipped"])
        check_mask = "masks" in expected and min(box[2] - box[0], box[3] - box[1]) >= MIN_MASK_BOX
        for j in np.flatnonzero(ok)[np.argsort(-ious[i][ok], kind="stable")]:
            if check_mask and not _masks_agree(expected["masks"][i], got["masks"][j], mask_iou):
                continue
            free[j] = False
            matched += 1
            break
        if stats is not None and "masks" in expected:
            key = "masks_compared" if check_mask else "masks_skipped"
            stats[key] = stats.get(key, 0) + 1
    return matched / n


def verify_detector(predictor, path: str, sizes=((320, 256), (240, 304)), min_match: float = 0.99) -> List[dict]:
    """Run the ONNX file and the eager ``predictor`` on sample images of ``sizes``; raise ExportError
    unless >= ``min_match`` of the eager detections are matched on each. Returns one row per image."""
    onnx_predictor = OnnxPredictor(path)
    rows = []
    for (h, w), image in zip(sizes, _sample_images(sizes, seed=1)):
        expected, got = predictor(image), onnx_predictor(image)
        stats: dict = {}
        fraction = match_fraction(expected, got, stats=stats)
        rows.append({"size": [h, w], "eager": len(expected["scores"]), "onnx": len(got["scores"]),
                     "matched": fraction, **stats})
        if fraction < min_match:
            raise ExportError(f"{path}: on a {h}x{w} image ONNX Runtime matches {fraction:.1%} of the eager "
                              f"model's {len(expected['scores'])} detections (need {min_match:.0%}: IoU >= 0.99, "
                              "same category, score within 1e-3, mask IoU >= 0.98)")
    return rows


class OnnxPredictor:
    """:class:`~detection.predictor.Predictor`'s interface over an exported ``.onnx`` detector, run by
    ONNX Runtime: ``predictor(rgb_uint8_image)`` -> ``boxes``, ``scores``, ``category_ids`` (, ``masks``);
    ``category_names`` from the file's metadata."""

    def __init__(self, path: str, threads: Optional[int] = None, providers=None):
        self.path = path
        self.session = ort_session(path, threads, providers)
        meta = onnx_metadata(path)
        if meta.get("reskit.task") != "detection":
            raise ExportError(f"{path}: not a detector exported by tools/export.py (reskit.task is "
                              f"{meta.get('reskit.task')!r})")
        self.metadata = meta
        self.category_names = dict(zip(meta["reskit.category_ids"], meta["reskit.class_names"]))
        self.score_thresh = meta.get("reskit.score_thresh")  # the RoI heads' threshold, applied in the graph
        self.device = torch.device("cpu")

    def describe(self) -> str:
        import onnxruntime

        return (f"ONNX Runtime {onnxruntime.__version__} ({', '.join(self.session.get_providers())}): "
                f"{self.path} ({self.metadata.get('reskit.arch')} detector, {len(self.category_names)} categories)")

    def __call__(self, image: np.ndarray) -> Dict[str, np.ndarray]:
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"expected an RGB uint8 array H x W x 3, got {getattr(image, 'dtype', type(image))} "
                             f"{getattr(image, 'shape', '')}")
        out = run_session(self.session, {"image": np.ascontiguousarray(image)})
        result = {"boxes": out["boxes"].astype(np.float32), "scores": out["scores"].astype(np.float32),
                  "category_ids": out["category_ids"].astype(np.int64)}
        if "masks" in out:
            result["masks"] = out["masks"].astype(bool)
        return result

    def predict_batch(self, images: Sequence[np.ndarray]) -> List[Dict[str, np.ndarray]]:
        return [self(image) for image in images]  # batch size 1: the exported graph's

    def label_space(self) -> dict:
        """What a detection checkpoint's meta records, from the file's metadata (for DetectionTask)."""
        m = self.metadata
        return {"task": "detection", "category_ids": list(m["reskit.category_ids"]),
                "class_names": list(m["reskit.class_names"]), "input_norm": m["reskit.input_norm"],
                "arch": m.get("reskit.arch"), "mask": bool(m.get("reskit.mask"))}

    def as_model(self) -> nn.Module:
        """The eager detector's evaluation interface over this file (:meth:`DetectionTask.evaluate`
        runs either): a list of float 0-255 CHW images -> per image ``boxes``, ``scores``,
        ``labels`` (contiguous 1..K, as the checkpoint's ``category_ids`` order them), ``masks``."""
        return _OnnxAsModel(self)


class _OnnxAsModel(nn.Module):
    def __init__(self, predictor: OnnxPredictor):
        super().__init__()
        self.predictor = predictor
        ids = predictor.metadata["reskit.category_ids"]
        self._to_label = {int(c): i + 1 for i, c in enumerate(ids)}
        self.register_parameter("_device_probe", nn.Parameter(torch.zeros(1), requires_grad=False))

    def forward(self, images: List[Tensor]) -> List[Dict[str, Tensor]]:
        outputs = []
        for image in images:
            rgb = image.detach().round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
            pred = self.predictor(rgb)
            out = {"boxes": torch.from_numpy(pred["boxes"]), "scores": torch.from_numpy(pred["scores"]),
                   "labels": torch.tensor([self._to_label[int(c)] for c in pred["category_ids"]], dtype=torch.int64)}
            if "masks" in pred:
                out["masks"] = torch.from_numpy(pred["masks"])[:, None].float()
            outputs.append(out)
        return outputs
