"""Residual networks and other feature extractors, FPN, weight loading and conversion."""
from .base import Backbone, ShapeSpec
from .build import available_networks, build_backbone, build_classifier, build_resnet_stage, load_pretrained
from .config import TIMM_PREFIX, BackboneConfig, timm_model_name
from .fast import prepare_for_inference
from .fpn import FPN, FPNOptions
from .norm import MSRA_INPUT_NORM, TORCHVISION_INPUT_NORM, normalize_image, rgb01_mean_std
from .norm import convert_frozen_batchnorm, convert_sync_batchnorm, get_norm
from .resnet import ResNet
from .cifar import CifarResNet
from .timm_backbone import TimmBackbone
from .weights import LoadReport, convert_state_dict, load_weights, to_backbone_state_dict
from .msra import export_msra_pkl

__all__ = [
    "Backbone", "ShapeSpec", "ResNet", "CifarResNet", "TimmBackbone", "FPN", "FPNOptions",
    "BackboneConfig", "TIMM_PREFIX", "timm_model_name",
    "available_networks", "build_backbone", "build_classifier", "build_resnet_stage", "load_pretrained",
    "load_weights", "LoadReport", "convert_state_dict", "to_backbone_state_dict", "export_msra_pkl",
    "prepare_for_inference", "get_norm", "convert_frozen_batchnorm", "convert_sync_batchnorm",
    "TORCHVISION_INPUT_NORM", "MSRA_INPUT_NORM", "normalize_image", "rgb01_mean_std",
]
