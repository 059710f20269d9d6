"""detection.error_analysis: COCO's analyze() error breakdown against a reference written from the
COCO API's Matlab ``CocoEval.analyze`` with pycocotools, a hand-worked case, and the matching behind
the confusion matrix."""
import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from coco_fixtures import box_mask, compressed_rle, perturbed_results, random_gt
from detection.error_analysis import analyze, confusion_matrix, image_errors, match_detections
from detection.evaluation import prepare_ground_truth

SUPER = {3: "round", 7: "round", 11: "pointy", 20: "pointy"}


class _IgnoringCOCOeval(COCOeval):
    """pycocotools' COCOeval, keeping the 'ignore' flag as the Matlab API's evaluateImg does
    (gtIg = iscrowd | ignore | outside the area range); pycocotools' _prepare overwrites it."""

    def _prepare(self):
        super()._prepare()
        for gts in self._gts.values():
            for g in gts:
                g["ignore"] = int(bool(g["ignore"]) or bool(g.get("flag_ignore", 0)))


def _coco(dataset):
    coco = COCO()
    coco.dataset = copy.deepcopy(dataset)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _precision(gt, dt, iou_type, iou_thrs, use_cats, cat_ids=None):
    ev = _IgnoringCOCOeval(gt, dt, iou_type)
    ev.params.maxDets = [100]
    ev.params.iouThrs = np.array(iou_thrs)
    ev.params.useCats = use_cats
    if cat_ids is not None:
        ev.params.catIds = cat_ids
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"]


def reference_analyze(gt_json, records, iou_type):
    """CocoEval.analyze of the COCO API's MatlabAPI/CocoEval.m, line by line, with pycocotools."""
    gt = _coco(gt_json)
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(copy.deepcopy(records))
    cat_ids = gt.getCatIds()
    ps = np.zeros((7, 101, len(cat_ids), 4))
    ps[:3] = _precision(gt, dt, iou_type, [.75, .5, .1], 1, cat_ids)[..., 0]
    for k, cat_id in enumerate(cat_ids):
        D = copy.deepcopy(dt.dataset)
        D["annotations"] = [a for a in D["annotations"] if a["category_id"] == cat_id]
        dtk = _coco(D)
        # ignore superclass confusion: keep the supercategory's objects, the others' flagged ignore
        same = gt.getCatIds(supNms=[gt.loadCats(cat_id)[0]["supercategory"]])
        G = copy.deepcopy(gt_json)
        G["annotations"] = [a for a in G["annotations"] if a["category_id"] in same]
        for a in G["annotations"]:
            if a["category_id"] != cat_id:
                a["flag_ignore"] = 1
        ps[3, :, k, :] = _precision(_coco(G), dtk, iou_type, [.1], 0)[0, :, 0, :, 0]
        # ignore any class confusion
        G = copy.deepcopy(gt_json)
        for a in G["annotations"]:
            if a["category_id"] != cat_id:
                a["flag_ignore"] = 1
        ps[4, :, k, :] = _precision(_coco(G), dtk, iou_type, [.1], 0)[0, :, 0, :, 0]
    ps[ps == -1] = 0
    ps[5] = ps[4] > 0
    ps[6] = 1
    return ps


def _case(seed=0, iou_type="bbox", supercategories=SUPER):
    gt = random_gt(seed)
    for c in gt["categories"]:
        c["supercategory"] = supercategories[c["id"]]
    records = perturbed_results(gt, seed + 1)
    rng = np.random.default_rng(seed + 2)
    for ann in gt["annotations"][:12]:  # confusions: a similar and a dissimilar class on real objects
        if ann["iscrowd"]:
            continue
        other = {3: 7, 7: 3, 11: 3}[ann["category_id"]]
        image = next(im for im in gt["images"] if im["id"] == ann["image_id"])
        for shift in (0, 2):  # the second: a duplicate
            bbox = [v + shift for v in ann["bbox"]]
            records.append({"image_id": ann["image_id"], "category_id": other, "bbox": bbox,
                            "score": float(rng.uniform(0.3, 1.0)),
                            "segmentation": compressed_rle(box_mask(bbox, image["height"], image["width"]))})
    for r in records:
        r.pop("segmentation" if iou_type == "bbox" else "bbox")
    return prepare_ground_truth(gt, log=False), records


@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
@pytest.mark.parametrize("seed,iou_type", [(0, "bbox"), (5, "bbox"), (0, "segm")])
def test_analyze_equals_the_matlab_reference(backend, seed, iou_type):
    gt, records = _case(seed, iou_type)
    ps, recall, cat_ids = analyze(gt, records, iou_type, backend)
    expected = reference_analyze(dict(gt), records, iou_type)
    assert cat_ids == sorted(c["id"] for c in gt["categories"])
    assert ps.shape == expected.shape == (7, 101, 4, 4)
    np.testing.assert_allclose(ps, expected, rtol=0, atol=1e-12)
    means = ps[:, :, :, 0].mean(axis=1)  # APs of each kind per category: cumulative, so non-decreasing
    assert np.all(np.diff(means, axis=0) >= -1e-12)
    # the case has similar-class and other-class confusions: Sim and Oth each forgive some of them
    assert means[3].sum() > means[2].sum() + 1e-3 and means[4].sum() > means[3].sum() + 1e-3


@pytest.mark.parametrize("supercategories", [{c: "all" for c in SUPER}, {c: str(c) for c in SUPER},
                                             {3: "a", 7: "b", 11: "b", 20: "b"}])
def test_analyze_shortcuts_equal_the_reference(supercategories):
    """One supercategory for every class (Sim's run is Oth's), one per class (Sim's is Loc's), mixed."""
    gt, records = _case(2, "bbox", supercategories)
    ps, _, _ = analyze(gt, records, "bbox")
    np.testing.assert_allclose(ps, reference_analyze(dict(gt), records, "bbox"), rtol=0, atol=1e-12)


def test_analyze_in_the_order_of_category_ids():
    """category_ids in any order (a model's label space): the curves follow it, COCOeval's axis is sorted."""
    gt, records = _case(3, "bbox", {3: "a", 7: "b", 11: "b", 20: "b"})
    ps, _, _ = analyze(gt, records, "bbox")
    reordered, _, cat_ids = analyze(gt, records, "bbox", category_ids=[20, 3, 11, 7])
    assert cat_ids == [20, 3, 11, 7]
    np.testing.assert_array_equal(reordered, ps[:, :, [3, 0, 2, 1]])


def test_analyze_hand_worked():
    """Category A (supercategory s) has objects in images 1 and 2, B (also s) one in image 3.
    A's detections, by score: on A's object in image 1 (IoU 0.81, a hit at 0.75), on B's object
    (IoU 1: a false positive of A unless similar classes are forgiven), on A's object in image 2 at
    IoU 0.25 (a hit only at IoU 0.1)."""
    gt = {"images": [{"id": i, "width": 100, "height": 100, "file_name": f"{i}.png"} for i in (1, 2, 3)],
          "categories": [{"id": 1, "name": "A", "supercategory": "s"}, {"id": 2, "name": "B", "supercategory": "s"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
              {"id": 2, "image_id": 2, "category_id": 1, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0},
              {"id": 3, "image_id": 3, "category_id": 2, "bbox": [10, 10, 40, 40], "area": 1600, "iscrowd": 0}]}
    records = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 36, 36], "score": 0.9},   # IoU 0.81
               {"image_id": 3, "category_id": 1, "bbox": [10, 10, 40, 40], "score": 0.8},   # on B
               {"image_id": 2, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.7}]   # IoU 0.25
    ps, recall, _ = analyze(prepare_ground_truth(gt, log=False), records)
    a = ps[:, :, 0, 0]  # category A, all areas
    half = recall <= 0.5 + 1e-9
    assert np.all(a[0][half] == 1) and np.all(a[0][~half] == 0)  # C75: recall 1/2 at precision 1
    assert np.all(a[1] == a[0])  # C50: the same detections match
    assert np.all(a[2][half] == 1) and np.allclose(a[2][~half], 2 / 3)  # Loc: hit, FP, hit
    assert np.all(a[3] == 1) and np.all(a[4] == 1)  # Sim, Oth: the detection on B is forgiven
    assert np.all(ps[:, :, 1, 0][:5] == 0)  # B: no detection of its own


def test_matching_and_confusion_matrix():
    gt = {"images": [{"id": 1, "width": 100, "height": 100, "file_name": "1.png"}],
          "categories": [{"id": 5, "name": "A"}, {"id": 9, "name": "B"}],
          "annotations": [
              {"id": 1, "image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 2, "image_id": 1, "category_id": 9, "bbox": [50, 50, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 3, "image_id": 1, "category_id": 9, "bbox": [0, 50, 20, 20], "area": 400, "iscrowd": 0},
              {"id": 4, "image_id": 1, "category_id": 5, "bbox": [80, 0, 20, 20], "area": 400, "iscrowd": 1}]}
    records = [{"image_id": 1, "category_id": 5, "bbox": [0, 0, 20, 20], "score": 0.9},     # tp A
               {"image_id": 1, "category_id": 5, "bbox": [1, 1, 20, 20], "score": 0.8},     # duplicate: fp
               {"image_id": 1, "category_id": 5, "bbox": [50, 50, 20, 20], "score": 0.7},   # A on B: confused
               {"image_id": 1, "category_id": 9, "bbox": [30, 0, 10, 10], "score": 0.6},    # background
               {"image_id": 1, "category_id": 9, "bbox": [80, 0, 20, 20], "score": 0.6},    # on a crowd: left out
               {"image_id": 1, "category_id": 9, "bbox": [0, 50, 20, 20], "score": 0.2}]    # below the threshold
    matches = match_detections(gt, records, score_thresh=0.5)
    cm = confusion_matrix(matches, [5, 9])
    # rows: ground truth A, B, background; columns: detected A, B, background (missed)
    np.testing.assert_array_equal(cm, [[1, 0, 0], [1, 0, 1], [1, 1, 0]])
    assert image_errors(matches[1]) == 4  # the duplicate, the confusion, the background box, B missed
    assert [o for _, o, _ in matches[1]["dt"]] == ["tp", "fp", "confused", "fp"]
