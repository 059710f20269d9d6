"""What every task shares: configs, data loading, the training loop, checkpoints, distributed helpers.

    from engine import load_config, ConfigError, DataError, Trainer

Names are imported from their submodules when first used (:mod:`engine.lazy`): tools that only read
files (``tools/check_dataset.py``, ``tools/eval_coco.py --results``) start without torch.
"""
from .lazy import lazy_exports

_EXPORTS = {
    "load_config": ".config",
    "ConfigError": ".config",
    "DataError": ".data",
    "ConcatDataset": ".data",
    "Task": ".task",
    "Trainer": ".trainer",
}

__all__ = list(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
