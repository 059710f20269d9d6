"""Each package's public API (its lazy ``__init__``, engine/lazy.py) and what importing it costs."""
import importlib
import subprocess
import sys

import pytest

PACKAGES = ("engine", "detection", "classification", "segmentation")


def _imports_torch(statement: str) -> bool:
    code = f"import sys\n{statement}\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip().splitlines()[-1] == "True"


def test_dataset_checking_starts_without_torch():
    # tools/check_dataset.py: the package __init__ and the COCO reading must not pull torch in
    assert not _imports_torch("import detection, engine, classification, segmentation\n"
                              "import detection.dataset_check, detection.coco, detection.masks, engine.data")


@pytest.mark.xfail(reason="detection/evaluation.py imports engine.dist and detection.coco_results, which "
                          "import torch at module level (files outside this change)", strict=False)
def test_results_file_evaluation_starts_without_torch():
    # tools/eval_coco.py --gt G --results R needs no model
    assert not _imports_torch("import detection.evaluation")


def test_documented_imports():
    from classification import ClassificationPredictor, ClassificationTask, ClsConfig  # noqa: F401
    from detection import DetConfig, DetectionTask, Predictor, build_detector  # noqa: F401
    from engine import ConfigError, DataError, load_config  # noqa: F401
    from segmentation import SegConfig, SemanticPredictor, SemanticSegmentationTask, build_segmentation_model  # noqa: F401

    assert Predictor.__module__ == "detection.predictor" and build_detector.__module__ == "detection.build"


@pytest.mark.parametrize("name", PACKAGES)
def test_every_exported_name_resolves(name):
    package = importlib.import_module(name)
    assert package.__all__ and len(set(package.__all__)) == len(package.__all__)
    for attr in package.__all__:
        assert getattr(package, attr) is not None, f"{name}.{attr}"
        assert attr in dir(package)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        package.not_a_name
    namespace = {}
    exec(f"from {name} import *", namespace)
    assert set(package.__all__) <= set(namespace)
