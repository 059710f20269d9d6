"""Drawing primitives: deterministic, exact masks, shapes inside their circle."""
import numpy as np
import pytest

from engine import shapes


def test_deterministic_per_seed():
    def draw(seed):
        rng = np.random.default_rng(seed)
        image = shapes.random_background(rng, 48, 64)
        masks = [shapes.draw_shape(image, kind, (32, 24), 30, shapes.random_color(rng), float(rng.uniform(0, 360)))
                 for kind in shapes.SHAPE_KINDS]
        return image, masks

    (a, ma), (b, mb), (c, _) = draw(1), draw(1), draw(2)
    assert a.shape == (48, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and all(np.array_equal(x, y) for x, y in zip(ma, mb))
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("kind", shapes.SHAPE_KINDS)
def test_mask_is_exactly_the_painted_pixels(kind):
    canvas = np.zeros((64, 64, 3), np.uint8)
    mask = shapes.draw_shape(canvas, kind, (30.5, 33.25), 40, (200, 10, 90), angle=17)
    assert mask.dtype == bool and mask.sum() > 100
    painted = np.all(canvas == (200, 10, 90), axis=2)
    assert np.array_equal(mask, painted)
    # every painted pixel lies within the circle of diameter ``size`` (+ one pixel of rasterisation)
    ys, xs = np.nonzero(mask)
    assert np.hypot(xs - 30.5, ys - 33.25).max() <= 20 + 1.0
    polygon = shapes.shape_polygon(kind, (30.5, 33.25), 40, 17)
    assert np.hypot(*(polygon - (30.5, 33.25)).T).max() <= 20 + 1e-9


def test_kinds_differ_and_unknown_kind():
    areas = {k: shapes.draw_shape(np.zeros((64, 64, 3), np.uint8), k, (32, 32), 50, (255, 255, 255)).sum()
             for k in shapes.SHAPE_KINDS}
    assert len(set(areas.values())) == len(areas)
    with pytest.raises(ValueError, match="unknown shape kind 'blob'"):
        shapes.draw_shape(np.zeros((8, 8, 3), np.uint8), "blob", (4, 4), 4, (1, 1, 1))


def test_random_color_avoids():
    rng = np.random.default_rng(0)
    for _ in range(20):
        avoid = shapes.random_color(rng)
        color = shapes.random_color(rng, avoid=avoid)
        assert np.linalg.norm(np.subtract(color, avoid)) >= 90
        assert all(0 <= v <= 255 and isinstance(v, int) for v in color)
