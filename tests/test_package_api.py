"""Each package's public API (its lazy ``__init__``, engine/lazy.py) and what importing it costs."""
import importlib
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
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


def test_results_file_evaluation_starts_without_torch():
    # tools/eval_coco.py --gt G --results R needs no model
    assert not _imports_torch("import detection.evaluation")


def test_faster_coco_eval_loads_without_opencv_and_opencv_still_loads_after():
    # detection.evaluation hides cv2 while faster-coco-eval imports (its boundary IoU is never used):
    # the import must not load OpenCV, must not break a later `import cv2`, and must leave an OpenCV
    # that was loaded first alone
    code = ("import sys\nfrom detection.evaluation import _backend\n_backend('faster_coco_eval')\n"
            "print('cv2' in sys.modules)\nimport cv2\ncv2.resize\nprint('cv2' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]
    code = ("import sys, cv2\nfrom detection.evaluation import _backend\n_backend('faster_coco_eval')\n"
            "print(sys.modules['cv2'] is cv2)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True"]


def _tool_imports_torch(tool: str, args: list) -> bool:
    """Run tools/TOOL.py as a whole process and say whether torch was imported by its end."""
    code = ("import atexit, runpy, sys\n"
            "atexit.register(lambda: print('TORCH-LOADED', 'torch' in sys.modules))\n"
            f"sys.argv = {[tool] + args!r}\n"
            f"runpy.run_path({tool!r}, run_name='__main__')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout.strip().splitlines()[-1] == "TORCH-LOADED True"


def test_file_tools_start_without_torch(tmp_path):
    """eval_coco.py --gt --results, check_dataset.py and plot_metrics.py, whole processes: no torch
    (importing it is seconds of start-up, more than the work of each)."""
    import json

    import numpy as np
    from PIL import Image

    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((32, 40, 3), np.uint8)).save(images / "a.png")
    gt = {"images": [{"id": 1, "file_name": "a.png", "height": 32, "width": 40}],
          "categories": [{"id": 1, "name": "thing"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 12], "area": 120,
                           "iscrowd": 0}]}
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "res.json").write_text(json.dumps([{"image_id": 1, "category_id": 1, "bbox": [4, 4, 10, 12],
                                                    "score": 0.9}]))
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text("\n".join(json.dumps({"iter": i, "loss": 1.0 / i, "lr": 0.1})
                                                 for i in range(1, 4)) + "\n")
    assert not _tool_imports_torch("tools/eval_coco.py", ["--gt", str(tmp_path / "gt.json"),
                                                          "--results", str(tmp_path / "res.json")])
    assert json.loads((tmp_path / "results.json").read_text())["bbox"]["AP"] == 100.0
    assert not _tool_imports_torch("tools/check_dataset.py", ["--json", str(tmp_path / "gt.json"),
                                                              "--images", str(images), "--threads", "1"])
    assert not _tool_imports_torch("tools/plot_metrics.py", [str(run)])
    assert (run / "metrics.png").is_file()
    assert _tool_imports_torch("tools/transfer.py", ["--help"])  # the check sees a tool that does


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
