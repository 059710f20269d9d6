"""COCOEvaluator under two gloo processes: each rank sees half the images, rank 0 gets the full result."""
import json
import math
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from coco_fixtures import perturbed_results, random_gt, write_json
from detection.evaluation import COCOEvaluator, evaluate_results


def outputs_of(results, image_id):
    mine = [r for r in results if r["image_id"] == image_id]
    boxes = [[r["bbox"][0], r["bbox"][1], r["bbox"][0] + r["bbox"][2], r["bbox"][1] + r["bbox"][3]] for r in mine]
    return {"boxes": torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4),
            "scores": torch.tensor([r["score"] for r in mine], dtype=torch.float64),
            "labels": torch.tensor([{3: 1, 7: 2, 11: 3, 20: 4}[r["category_id"]] for r in mine])}


def worker(rank, world_size, init_file, gt_path, results, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size)
    try:
        evaluator = COCOEvaluator(gt_path, backend="pycocotools")
        gt = json.load(open(gt_path))
        for img in gt["images"][rank::world_size]:
            evaluator.update({img["id"]: outputs_of(results, img["id"])})
        metrics = evaluator.evaluate()
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(metrics, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_equal_one_process(tmp_path):
    gt = random_gt(seed=5)
    gt_path = write_json(gt, str(tmp_path / "gt.json"))
    results = [{k: v for k, v in r.items() if k != "segmentation"} for r in perturbed_results(gt, seed=6)]
    # fork: the children reuse the imported modules (spawn would re-import torch in each, seconds)
    mp.start_processes(worker, args=(2, str(tmp_path / "init"), gt_path, results, str(tmp_path)), nprocs=2,
                       join=True, start_method="fork")
    rank0 = json.load(open(tmp_path / "rank0.json"))
    assert json.load(open(tmp_path / "rank1.json")) == {}  # only rank 0 evaluates
    expected, _ = evaluate_results(gt, results, "bbox", "pycocotools")
    for key, value in expected.items():
        got = rank0["bbox"][key]
        assert (math.isnan(value) and (got is None or math.isnan(got))) or abs(got - value) < 1e-10, key
