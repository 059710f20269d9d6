"""COCO evaluation: equal to pycocotools run directly, both backends equal, results round trip, tool."""
import contextlib
import copy
import io
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

TOOLS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools")
sys.path.insert(0, TOOLS)
import eval_coco  # noqa: E402  (tools/ is not a package; its main() runs in-process here)

from coco_fixtures import perturbed_results, random_gt, write_json
from detection.coco_results import instances_to_coco_results
from detection.evaluation import (METRIC_KEYS, COCOEvaluator, evaluate_results, evaluate_results_file,
                                  format_table)


def reference_pycocotools(gt_path, results, iou_type):
    """The plain pycocotools recipe, independent of our code: stats and per-category AP (percent)."""
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt_path)
        records = copy.deepcopy(results)
        if iou_type == "segm":
            for r in records:
                r.pop("bbox")
        coco_dt = coco_gt.loadRes(records)
        ev = COCOeval(coco_gt, coco_dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    per_cat = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = ev.eval["precision"][:, :, k, 0, -1]
        p = p[p > -1]
        per_cat[coco_gt.cats[cat_id]["name"]] = float(p.mean()) * 100 if p.size else float("nan")
    return [s * 100 if s >= 0 else float("nan") for s in ev.stats], per_cat


def assert_close(a, b, tol):
    assert (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tol, (a, b)


@pytest.fixture(scope="module")
def gt_and_results(tmp_path_factory):
    gt = random_gt(seed=0)
    path = write_json(gt, str(tmp_path_factory.mktemp("eval") / "gt.json"))
    return gt, path, perturbed_results(gt, seed=1)


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
@pytest.mark.parametrize("backend", ["pycocotools", "faster_coco_eval"])
def test_equals_pycocotools_every_number(gt_and_results, iou_type, backend):
    gt, path, results = gt_and_results
    ref_stats, ref_per_cat = reference_pycocotools(path, results, iou_type)
    metrics, per_cat = evaluate_results(path, results, iou_type, backend)
    assert list(metrics) == list(METRIC_KEYS)
    for key, ref in zip(METRIC_KEYS, ref_stats):
        assert_close(metrics[key], ref, 1e-10)
    assert list(per_cat) == list(ref_per_cat) == ["circle", "square", "triangle", "unused"]
    for name in ref_per_cat:
        assert_close(per_cat[name], ref_per_cat[name], 1e-10)
    # the fixture is not degenerate: real, distinct numbers; no gt for 'unused' nor for large objects
    assert 5 < metrics["AP"] < 95 and math.isnan(per_cat["unused"]) and math.isnan(metrics["APl"])


def test_segm_differs_from_bbox_and_crowd_matters(gt_and_results):
    gt, path, results = gt_and_results
    bbox, _ = evaluate_results(path, results, "bbox", "pycocotools")
    segm, _ = evaluate_results(path, results, "segm", "pycocotools")
    assert bbox["AP"] != segm["AP"]
    no_crowd = copy.deepcopy(gt)
    no_crowd["annotations"] = [a for a in no_crowd["annotations"] if not a["iscrowd"]]
    without, _ = evaluate_results(no_crowd, results, "bbox", "pycocotools")
    assert without["AP"] != bbox["AP"]  # detections on crowd regions are ignored, not false positives


@pytest.mark.parametrize("seed", [2, 3])
def test_backends_agree_to_1e10(seed):
    gt = random_gt(seed=seed, num_images=20)
    results = perturbed_results(gt, seed=seed + 10)
    for iou_type in ("bbox", "segm"):
        a = evaluate_results(gt, results, iou_type, "pycocotools")
        b = evaluate_results(gt, results, iou_type, "faster_coco_eval")
        for da, db in zip(a, b):
            assert list(da) == list(db)
            for k in da:
                assert_close(da[k], db[k], 1e-10)


def test_empty_predictions_give_zero_not_a_crash(gt_and_results):
    _, path, _ = gt_and_results
    for backend in ("pycocotools", "faster_coco_eval"):
        metrics, per_cat = evaluate_results(path, [], "bbox", backend)
        assert metrics["AP"] == 0.0 and metrics["AR100"] == 0.0 and per_cat["circle"] == 0.0
        assert math.isnan(per_cat["unused"])


def test_results_round_trip_through_loadres(gt_and_results):
    gt, path, _ = gt_and_results
    contiguous_to_id = {1: 3, 2: 7, 3: 11, 4: 20}
    masks = torch.zeros(2, 150, 200)
    masks[0, 10:20, 30:50] = 0.9
    masks[1, 0:5, 0:5] = 0.4  # below the 0.5 threshold: empty mask
    records = instances_to_coco_results(5, torch.tensor([[30.0, 10.0, 50.0, 20.0], [0.0, 0.0, 5.0, 5.0]]),
                                        torch.tensor([0.9, 0.3]), torch.tensor([2, 4]), contiguous_to_id,
                                        masks=masks[:, None])
    assert [r["category_id"] for r in records] == [7, 20]
    assert records[0]["bbox"] == [30.0, 10.0, 20.0, 10.0]
    json.dumps(records)  # serialisable: RLE counts are str
    with contextlib.redirect_stdout(io.StringIO()):
        coco_dt = COCO(path).loadRes(copy.deepcopy(records))
    ann = coco_dt.anns[1]
    assert ann["category_id"] == 7 and ann["image_id"] == 5 and ann["area"] == 200.0
    assert coco_dt.annToMask(ann).sum() == 200 and coco_dt.annToMask(coco_dt.anns[2]).sum() == 0
    with pytest.raises(ValueError, match="label 9"):
        instances_to_coco_results(5, torch.zeros(1, 4), torch.ones(1), torch.tensor([9]), contiguous_to_id)


def test_evaluator_matches_direct_evaluation(gt_and_results):
    gt, path, results = gt_and_results
    id_to_label = {3: 1, 7: 2, 11: 3, 20: 4}
    evaluator = COCOEvaluator(path, iou_types=("bbox", "segm"), backend="faster_coco_eval")
    for img in gt["images"]:
        mine = [r for r in results if r["image_id"] == img["id"]]
        from pycocotools import mask as mask_utils
        boxes = [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]]
                 for r in mine]
        masks = [mask_utils.decode(dict(r["segmentation"], counts=r["segmentation"]["counts"].encode()))
                 for r in mine]
        evaluator.update({img["id"]: {
            "boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
            "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
            "labels": torch.tensor([id_to_label[r["category_id"]] for r in mine], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks) if masks else np.zeros((0, 150, 200), np.uint8)),
        }})
    out = evaluator.evaluate()
    for iou_type in ("bbox", "segm"):
        ref, ref_per_cat = reference_pycocotools(path, results, iou_type)
        for key, value in zip(METRIC_KEYS, ref):
            assert_close(out[iou_type][key], value, 1e-9)
        assert out[f"{iou_type}_per_category"].keys() == ref_per_cat.keys()
    table = format_table(out)
    assert "AP50" in table and "triangle" in table and "segm AP per category" in table


def test_eval_coco_tool(gt_and_results, tmp_path):
    gt, path, results = gt_and_results
    res_path = write_json([{k: v for k, v in r.items() if k != "segmentation"} for r in results],
                          str(tmp_path / "r.json"))
    expected = evaluate_results_file(path, res_path, "bbox", "pycocotools", output=str(tmp_path / "x.json"))
    run = subprocess.run([sys.executable, os.path.join(TOOLS, "eval_coco.py"), "--gt", path, "--results", res_path],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "AR100" in run.stdout and "circle" in run.stdout
    written = json.load(open(tmp_path / "results.json"))
    assert set(written) == {"bbox", "bbox_per_category"}
    assert abs(written["bbox"]["AP"] - expected["bbox"]["AP"]) < 1e-10 and written["bbox"]["APl"] is None

    # a results file called results.json is the input: the metrics go to metrics.json beside it
    own = tmp_path / "own"
    own.mkdir()
    named = write_json(json.load(open(res_path)), str(own / "results.json"))
    run = subprocess.run([sys.executable, os.path.join(TOOLS, "eval_coco.py"), "--gt", path, "--results", named],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert f"metrics written to {own / 'metrics.json'}" in run.stdout
    assert json.load(open(named)) == json.load(open(res_path))  # the input is untouched
    assert abs(json.load(open(own / "metrics.json"))["bbox"]["AP"] - expected["bbox"]["AP"]) < 1e-10


@pytest.mark.parametrize("bad, message", [
    ({"not": "a list"}, "must be a JSON list"),
    ([{"image_id": 0, "category_id": 4, "bbox": [0, 0, 1, 1], "score": 0.5}], "record 0: category_id 4"),
    ([{"image_id": 0, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5},
      {"image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1], "score": 0.5}], "record 1: image_id 99"),
    ([{"image_id": 0, "category_id": 3, "score": 0.5}], "missing 'bbox'"),
    (None, "results file not found"),
])
def test_eval_coco_tool_bad_input(gt_and_results, tmp_path, capsys, bad, message):
    _, path, _ = gt_and_results
    res_path = str(tmp_path / "bad.json")
    if bad is not None:
        write_json(bad, res_path)
    with pytest.raises(SystemExit) as exit_info:
        eval_coco.main(["--gt", path, "--results", res_path])
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "bad.json" in lines[0], lines


def test_gt_without_segmentation_left_out_of_mask_ap_only(gt_and_results):
    gt, _, results = gt_and_results
    broken = copy.deepcopy(gt)
    first, second = [a for a in broken["annotations"] if not a["iscrowd"]][:2]
    first["segmentation"], second["segmentation"] = [], [[1, 2, 3, 4]]
    without = copy.deepcopy(gt)
    without["annotations"] = [a for a in without["annotations"] if a["id"] not in (first["id"], second["id"])]
    for backend in ("pycocotools", "faster_coco_eval"):
        segm, _ = evaluate_results(broken, results, "segm", backend)
        reference, _ = evaluate_results(without, results, "segm", backend)
        for key in METRIC_KEYS:
            assert_close(segm[key], reference[key], 1e-12)
        bbox, _ = evaluate_results(broken, results, "bbox", backend)
        bbox_reference, _ = evaluate_results(gt, results, "bbox", backend)
        for key in METRIC_KEYS:  # box AP still counts them
            assert_close(bbox[key], bbox_reference[key], 0.0)


def test_bf16_model_outputs_become_results():
    """Autocast inference returns bf16 boxes and scores (NumPy has no bfloat16): they convert, not crash."""
    import torch

    from detection.coco_results import instances_to_coco_results

    records = instances_to_coco_results(3, torch.tensor([[1.0, 2.0, 30.0, 40.0]], dtype=torch.bfloat16),
                                        torch.tensor([0.5], dtype=torch.bfloat16), torch.tensor([1]), {1: 7},
                                        masks=torch.ones(1, 1, 5, 5, dtype=torch.bfloat16))
    assert records[0]["bbox"] == [1.0, 2.0, 29.0, 38.0] and records[0]["score"] == 0.5
    assert records[0]["category_id"] == 7 and records[0]["segmentation"]["size"] == [5, 5]


def test_results_file_tables_leave_out_categories_nothing_uses(gt_and_results, tmp_path):
    """A placeholder category of the json (Roboflow's supercategory) with no annotation and no
    detection is no class: the per-category table of a results file does not list it as NaN."""
    gt, path, results = gt_and_results
    with_placeholder = dict(gt, categories=[{"id": 0, "name": "fruits"}] + list(gt["categories"]))
    gt_path = write_json(with_placeholder, str(tmp_path / "gt.json"))
    res_path = write_json([{k: v for k, v in r.items() if k != "segmentation"} for r in results],
                          str(tmp_path / "r.json"))
    plain = evaluate_results_file(path, res_path, "bbox", output=str(tmp_path / "a.json"))
    out = evaluate_results_file(gt_path, res_path, "bbox", output=str(tmp_path / "b.json"))
    assert "fruits" not in out["bbox_per_category"]
    assert json.dumps(out, sort_keys=True) == json.dumps(plain, sort_keys=True)  # NaN == NaN here
    # "unused" has detections but no ground truth: said so in the table, not as nan
    assert "unused   no gt" in format_table(out) and "fruits" not in format_table(out)
