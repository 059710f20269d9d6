"""Object detection and instance segmentation: COCO data, Faster / Mask R-CNN (C4, FPN) on our
backbones, COCO evaluation, the engine task and a predictor.

    from detection import Predictor, build_detector, DetConfig, DetectionTask

Names are imported from their submodules when first used (:mod:`engine.lazy`), so that
``import detection.evaluation`` or ``detection.dataset_check`` does not load torch and the models.
"""
from engine.lazy import lazy_exports

_EXPORTS = {
    "DetConfig": ".config",
    "build_detector": ".build",
    "DetectionTask": ".task",
    "Predictor": ".predictor",
    "load_detector_weights": ".weights",
    "load_coco_json": ".coco",
    "CocoDetection": ".coco_dataset",
    "ConcatCocoDetection": ".coco_dataset",
    "COCOEvaluator": ".evaluation",
    "evaluate_results": ".evaluation",
    "evaluate_results_file": ".evaluation",
    "format_table": ".evaluation",
    "write_results_file": ".coco_results",
    "check_dataset": ".dataset_check",
    "draw_detections": ".visualize",
    "make_shapes_dataset": ".synthetic",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
