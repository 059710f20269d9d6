"""Image classification: ImageFolder and synthetic data, the recipes' transforms, the training task,
centre / 10-crop / multi-scale evaluation and a predictor.

    from classification import ClassificationPredictor, ClassificationTask, ClsConfig

Names are imported from their submodules when first used (:mod:`engine.lazy`).
"""
from engine.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    ".config": ["ClsConfig"],
    ".task": ["ClassificationTask"],
    ".predictor": ["ClassificationPredictor"],
    ".data": ["ImageFolder", "SyntheticShapes", "ConcatClassification", "build_classification_set"],
    ".transforms": ["build_train_transform", "build_eval_transform"],
    ".evaluation": ["center_scores", "ten_crop_scores", "multiscale_scores", "topk_correct"],
})
