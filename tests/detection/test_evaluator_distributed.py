"""COCOEvaluator under two gloo processes: each rank sees part of the images, rank 0 gets the full
result, the same numbers as one process, and no rank but 0 ever holds another rank's records."""
import json
import math
import os

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from pycocotools import mask as mask_utils

import engine.dist
from coco_fixtures import perturbed_results, random_gt, write_json
from detection.evaluation import COCOEvaluator, evaluate_results
from engine.dist import gather_to_main

LABELS = {3: 1, 7: 2, 11: 3, 20: 4}


def outputs_of(results, image_id, height, width):
    mine = [r for r in results if r["image_id"] == image_id]
    boxes = [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]] for r in mine]
    masks = [mask_utils.decode(r["segmentation"]) for r in mine]
    return {"boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
            "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
            "labels": torch.tensor([LABELS[r["category_id"]] for r in mine], dtype=torch.int64),
            "masks": torch.from_numpy(np.stack(masks)).reshape(-1, height, width) if masks
            else torch.zeros(0, height, width, dtype=torch.uint8)}


def shard(images, rank):
    # uneven on purpose: rank 0 gets the first 8 images, rank 1 the last 4 (3 without any gt)
    return images[:8] if rank == 0 else images[8:]


def worker(rank, world_size, init_file, gt_path, results, out_dir):
    engine.dist.GATHER_CHUNK_ITEMS = 3  # many rounds, of uneven lengths on the two ranks
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        # the generic gather: rank order, nothing on rank 1
        gathered = gather_to_main([(rank, i) for i in range(7 if rank == 0 else 11)])
        evaluator = COCOEvaluator(gt_path, iou_types=("bbox", "segm"), backend="pycocotools")
        gt = json.load(open(gt_path))
        for img in shard(gt["images"], rank):
            evaluator.update({img["id"]: outputs_of(results, img["id"], img["height"], img["width"])})
        own = len(evaluator.results())
        metrics = evaluator.evaluate()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump({"metrics": metrics, "own": own, "held": evaluator.results(),
                       "image_ids": evaluator.image_ids(), "gathered": gathered}, f)
    finally:
        dist.destroy_process_group()


def same(got, want):
    return (math.isnan(want) and (got is None or math.isnan(got))) or abs(got - want) < 1e-10


def test_two_ranks_equal_one_process(tmp_path):
    gt = random_gt(seed=5)
    gt_path = write_json(gt, str(tmp_path / "gt.json"))
    results = perturbed_results(gt, seed=6)
    # fork: the children reuse the imported modules (spawn would re-import torch in each, seconds)
    mp.start_processes(worker, args=(2, str(tmp_path / "init"), gt_path, results, str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    rank0 = json.load(open(tmp_path / "rank0.json"))
    rank1 = json.load(open(tmp_path / "rank1.json"))
    assert rank1["metrics"] == {}  # only rank 0 evaluates
    assert rank1["held"] == [] and rank1["image_ids"] == [] and rank1["gathered"] == []
    assert rank1["own"] > 3 and rank0["own"] > 3  # several rounds of 3 records each
    assert rank0["gathered"] == [[0, i] for i in range(7)] + [[1, i] for i in range(11)]
    assert len(rank0["held"]) == rank0["own"] + rank1["own"]
    assert rank0["image_ids"] == sorted(img["id"] for img in gt["images"])

    # the same numbers as one process over the records in the same (rank) order
    order = [img["id"] for img in shard(gt["images"], 0) + shard(gt["images"], 1)]
    in_order = [r for i in order for r in results if r["image_id"] == i]
    for iou_type in ("bbox", "segm"):
        expected, per_category = evaluate_results(gt, in_order, iou_type, "pycocotools")
        for key, value in expected.items():
            assert same(rank0["metrics"][iou_type][key], value), (iou_type, key)
        for name, value in per_category.items():
            assert same(rank0["metrics"][f"{iou_type}_per_category"][name], value), (iou_type, name)
    assert rank0["metrics"]["segm"]["AP"] > 10  # the masks were matched, not an empty evaluation
