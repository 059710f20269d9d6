"""The VOC palette, colourised label maps and overlays."""
import numpy as np

from segmentation.visualize import colorize, overlay, voc_palette


def test_voc_palette_colours():
    palette = voc_palette()
    # the VOC devkit's colours: background, aeroplane, bicycle, person (15), tvmonitor (20)
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [128, 0, 0]
    assert palette[2].tolist() == [0, 128, 0] and palette[15].tolist() == [192, 128, 128]
    assert palette[20].tolist() == [0, 64, 128]
    assert len({tuple(c) for c in palette[:21]}) == 21


def test_colorize_and_overlay():
    labels = np.array([[0, 1], [255, 2]])
    rgb = colorize(labels)
    assert rgb[0, 1].tolist() == [128, 0, 0] and rgb[1, 0].tolist() == [0, 0, 0]  # ignore: black
    image = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(image, labels, alpha=0.5)
    assert out[0, 0].tolist() == [100, 100, 100] and out[1, 0].tolist() == [100, 100, 100]  # bg, ignore kept
    assert out[0, 1].tolist() == [114, 50, 50]  # (100 + 128) / 2, 100 / 2


def test_overlay_with_names_outlines_and_labels_each_region():
    labels = np.zeros((64, 64), np.int64)
    labels[20:44, 10:30] = 1
    labels[30:50, 40:60] = 2
    image = np.full((64, 64, 3), 100, np.uint8)
    plain = overlay(image, labels)
    named = overlay(image, labels, names=["background", "circle", "square"])
    changed = np.any(named != plain, axis=2)
    assert changed[20, 10:30].all() and changed[43, 10:30].all()  # the outline of region 1
    assert changed[:20].any()  # its name above it, on the background
    assert not changed[60:, :35].any()  # far from both regions nothing is drawn
    assert np.array_equal(named[25:40, 15:25], plain[25:40, 15:25])  # inside the region: the blend alone
