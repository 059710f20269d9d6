"""What every task shares: configs, data loading, the training loop, checkpoints, distributed helpers.

    from engine import load_config, ConfigError, DataError, Trainer

Names are imported from their submodules when first used (:mod:`engine.lazy`): tools that only read
files (``tools/check_dataset.py``, ``tools/eval_coco.py --results``) start without torch.
"""
from .lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(__name__, {
    ".config": ["load_config", "ConfigError"],
    ".data": ["DataError", "ConcatDataset"],
    ".task": ["Task"],
    ".trainer": ["Trainer"],
})
