"""Semantic segmentation: FCN, DeepLabV3 and semantic FPN heads on our backbones, COCO / folder label
maps, confusion-matrix metrics, torchvision weight conversion, the engine task and a predictor.

    from segmentation import SemanticPredictor, build_segmentation_model, SegConfig, SemanticSegmentationTask

Names are imported from their submodules when first used (:mod:`engine.lazy`).
"""
from engine.lazy import lazy_exports

_EXPORTS = {
    "SegConfig": ".config",
    "SemanticSegmentor": ".models",
    "build_segmentation_model": ".models",
    "SemanticSegmentationTask": ".task",
    "SemanticPredictor": ".predictor",
    "CocoSemanticSegmentation": ".data",
    "FolderSegmentation": ".data",
    "ConcatSegmentation": ".data",
    "VOC_CLASSES": ".data",
    "read_label_map": ".data",
    "ConfusionMatrix": ".metrics",
    "segmentation_metrics": ".metrics",
    "load_segmentation_weights": ".weights",
    "convert_torchvision_segmentation": ".convert",
    "colorize": ".visualize",
    "overlay": ".visualize",
    "voc_palette": ".visualize",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
