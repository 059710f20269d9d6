"""Object detection and instance segmentation: COCO data, Faster / Mask R-CNN (C4, FPN) on our
backbones, COCO evaluation, the engine task and a predictor.

    from detection import Predictor, build_detector, DetConfig, DetectionTask

Names are imported from their submodules when first used (:mod:`engine.lazy`), so that
``import detection.evaluation`` or ``detection.dataset_check`` does not load torch and the models.
"""
from engine.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    ".config": ["DetConfig"],
    ".build": ["build_detector"],
    ".task": ["DetectionTask"],
    ".predictor": ["Predictor"],
    ".weights": ["load_detector_weights"],
    ".coco": ["load_coco", "CocoIndex"],
    ".coco_dataset": ["CocoDetection", "ConcatCocoDetection"],
    ".evaluation": ["COCOEvaluator", "evaluate_results", "evaluate_results_file", "format_table"],
    ".coco_results": ["write_results_file"],
    ".dataset_check": ["check_dataset"],
    ".visualize": ["draw_detections"],
    ".synthetic": ["make_shapes_dataset"],
})
