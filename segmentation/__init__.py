"""Semantic segmentation: FCN, DeepLabV3 and semantic FPN heads on our backbones, COCO / folder label
maps, confusion-matrix metrics, torchvision weight conversion, and the engine task."""
from .config import SegConfig
from .convert import convert_torchvision_segmentation
from .data import CocoSemanticSegmentation, FolderSegmentation, VOC_CLASSES, read_label_map
from .metrics import ConfusionMatrix, segmentation_metrics
from .models import SemanticSegmentor, build_segmentation_model
from .predictor import SemanticPredictor
from .task import SemanticSegmentationTask
from .visualize import colorize, overlay, voc_palette
from .weights import load_segmentation_weights

__all__ = [
    "SegConfig", "SemanticSegmentor", "build_segmentation_model", "SemanticSegmentationTask",
    "CocoSemanticSegmentation", "FolderSegmentation", "VOC_CLASSES", "read_label_map",
    "ConfusionMatrix", "segmentation_metrics", "convert_torchvision_segmentation",
    "load_segmentation_weights", "SemanticPredictor", "colorize", "overlay", "voc_palette",
]
