"""detection.report_draw: the gallery's pictures draw masks where the results have them (ground truth
outlined, detections filled in their outcome's colour), boxes otherwise."""
import numpy as np

from coco_fixtures import compressed_rle
from detection.report_draw import OUTCOME_COLORS, draw_errors


def _entry():
    """One image of 100 x 80: a triangle object found by a detection whose mask is a disc (a true
    positive), and a false positive whose mask is a small square; both boxes wider than their masks."""
    yy, xx = np.mgrid[:80, :100]
    disc = ((xx - 30) ** 2 + (yy - 40) ** 2 <= 15 ** 2).astype(np.uint8)
    square = np.zeros((80, 100), np.uint8)
    square[10:20, 70:80] = 1
    gt = {"id": 1, "category_id": 1, "bbox": [10, 20, 40, 40],
          "segmentation": [[10, 60, 50, 60, 30, 20]], "area": 800, "iscrowd": 0}
    tp = {"category_id": 1, "score": 0.9, "bbox": [10, 20, 40, 40], "segmentation": compressed_rle(disc)}
    fp = {"category_id": 2, "score": 0.7, "bbox": [60, 5, 30, 25], "segmentation": compressed_rle(square)}
    return {"gt": [(gt, "tp")], "dt": [(tp, "tp", 1), (fp, "fp", None)]}


def _near(pixel, color, tol=40):
    return np.abs(pixel.astype(int) - np.array(color)).max() <= tol


def test_masks_filled_and_outlined_boxes_otherwise():
    image = np.full((80, 100, 3), 255, np.uint8)
    names = {1: "a", 2: "b"}
    masked = draw_errors(image, _entry(), names, max_side=100, masks=True)
    boxed = draw_errors(image, _entry(), names, max_side=100, masks=False)
    tp, fp = OUTCOME_COLORS["true positive"], OUTCOME_COLORS["false positive"]
    blend = lambda color: 0.65 * 255 + 0.35 * np.array(color)  # noqa: E731  the fill over white
    # inside each detection's mask: its colour blended in; the box alone leaves it white
    assert _near(masked[40, 30], blend(tp)) and _near(boxed[40, 30], (255, 255, 255), 0)
    assert _near(masked[15, 75], blend(fp)) and _near(boxed[15, 75], (255, 255, 255), 0)
    # the box's corner lies outside the disc: drawn with boxes only
    assert _near(boxed[20, 10], tp) and _near(masked[21, 11], (255, 255, 255), 0)
    # the ground truth's triangle outlined along its slanted edge (here outside the disc), not its box
    assert any(_near(p, OUTCOME_COLORS["ground truth"], 30) for p in masked[21:26, 26:31].reshape(-1, 3))
    assert not any(_near(p, OUTCOME_COLORS["ground truth"], 30) for p in boxed[21:26, 26:31].reshape(-1, 3))


def test_masks_scaled_with_the_thumbnail():
    image = np.full((80, 100, 3), 255, np.uint8)
    big = draw_errors(image, _entry(), {1: "a", 2: "b"}, max_side=400, masks=True)
    assert big.shape == (320, 400, 3)
    assert _near(big[160, 120], 0.65 * 255 + 0.35 * np.array(OUTCOME_COLORS["true positive"]))
