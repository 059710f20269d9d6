"""COCO segmentations (polygons, uncompressed crowd RLE, compressed RLE) to masks, as pycocotools' COCO."""
import contextlib
import io

import numpy as np
import pytest
from pycocotools.coco import COCO

from coco_fixtures import compressed_rle, uncompressed_rle
from detection.masks import has_mask, mask_bbox, masks_to_rles, segmentation_to_mask


def test_every_segmentation_kind_matches_ann_to_mask():
    rng = np.random.default_rng(0)
    blob = (rng.random((30, 40)) > 0.6).astype(np.uint8)
    segmentations = [
        [[3.5, 4, 20, 4.2, 12, 25.7], [30, 2, 38, 2, 38, 9]],  # two polygons, fractional vertices
        uncompressed_rle(blob),  # COCO's crowd format
        compressed_rle(blob),  # str counts, as in results files
    ]
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": s, "area": 1, "bbox": [0, 0, 1, 1],
             "iscrowd": int(isinstance(s, dict))} for i, s in enumerate(segmentations)]
    coco = COCO()
    coco.dataset = {"images": [{"id": 1, "width": 40, "height": 30}], "annotations": anns,
                    "categories": [{"id": 1, "name": "x"}]}
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    for ann in anns:
        expected = coco.annToMask(ann)
        assert expected.sum() > 0
        assert np.array_equal(segmentation_to_mask(ann["segmentation"], 30, 40), expected)
    assert np.array_equal(segmentation_to_mask(segmentations[1], 30, 40), blob)


def test_empty_and_degenerate_segmentations():
    assert not has_mask([]) and not has_mask([[1, 2, 3, 4]]) and not has_mask(None)
    assert has_mask([[1, 2, 3, 4, 5, 6]]) and has_mask({"counts": [1], "size": [1, 1]})
    with pytest.raises(ValueError, match="no polygon"):
        segmentation_to_mask([], 10, 10)


def test_rle_round_trip_and_mask_bbox():
    masks = np.zeros((2, 12, 16), np.uint8)
    masks[0, 2:5, 3:9] = 1
    rles = masks_to_rles(masks)
    assert isinstance(rles[0]["counts"], str) and rles[0]["size"] == [12, 16]
    assert np.array_equal(segmentation_to_mask(rles[0], 12, 16), masks[0])
    assert mask_bbox(masks[0]).tolist() == [3, 2, 9, 5] and mask_bbox(masks[1]) is None
    assert masks_to_rles(np.zeros((0, 12, 16))) == []
