"""Image classification: ImageFolder and synthetic data, the recipes' transforms, the training task,
centre / 10-crop / multi-scale evaluation and a predictor.

    from classification import ClassificationPredictor, ClassificationTask, ClsConfig

Names are imported from their submodules when first used (:mod:`engine.lazy`).
"""
from engine.lazy import lazy_exports

_EXPORTS = {
    "ClsConfig": ".config",
    "ClassificationTask": ".task",
    "ClassificationPredictor": ".predictor",
    "ImageFolder": ".data",
    "SyntheticShapes": ".data",
    "ConcatClassification": ".data",
    "build_classification_set": ".data",
    "build_train_transform": ".transforms",
    "build_eval_transform": ".transforms",
    "center_scores": ".evaluation",
    "ten_crop_scores": ".evaluation",
    "multiscale_scores": ".evaluation",
    "topk_correct": ".evaluation",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
