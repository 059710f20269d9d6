"""Semantic segmentation: FCN, DeepLabV3 and semantic FPN heads on our backbones, COCO / folder label
maps, confusion-matrix metrics, torchvision weight conversion, the engine task and a predictor.

    from segmentation import SemanticPredictor, build_segmentation_model, SegConfig, SemanticSegmentationTask

Names are imported from their submodules when first used (:mod:`engine.lazy`).
"""
from engine.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    ".config": ["SegConfig"],
    ".models": ["SemanticSegmentor", "build_segmentation_model"],
    ".task": ["SemanticSegmentationTask"],
    ".predictor": ["SemanticPredictor"],
    ".data": ["CocoSemanticSegmentation", "FolderSegmentation", "ConcatSegmentation", "VOC_CLASSES", "read_label_map"],
    ".metrics": ["ConfusionMatrix", "segmentation_metrics"],
    ".weights": ["load_segmentation_weights", "convert_torchvision_segmentation"],
    ".visualize": ["colorize", "overlay", "voc_palette"],
})
