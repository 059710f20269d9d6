"""ImageFolder reading: layout, image formats, and every kind of bad input named in one line."""
from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image

from classification.config import ClsDatasetConfig, SyntheticShapesConfig
from classification.data import (ImageFolder, SyntheticShapes, build_classification_set, decode_image, read_image,
                                scan_image_folder)
from engine.data import DataError, SkippingCollate, build_train_loader, user_message
from engine.sampler import TrainBatchSampler

from conftest import encode_pil, random_rgb, write_png


def test_layout_classes_sorted_and_labels(image_folder):
    root, images = image_folder
    ds = ImageFolder(root)
    assert ds.classes == ["cat", "dog"]
    assert [os.path.relpath(p, root) for p in ds.paths] == sorted(images)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    image, label = ds[3]
    assert label == 1 and np.array_equal(image, images["dog/000.png"])


def test_classes_of_several_roots_are_merged_by_name(tmp_path, image_folder):
    root, _ = image_folder
    write_png(str(tmp_path / "more" / "emu" / "a.png"), random_rgb(np.random.default_rng(1)))
    write_png(str(tmp_path / "more" / "cat" / "b.png"), random_rgb(np.random.default_rng(2)))
    entries = [ClsDatasetConfig(root=root), ClsDatasetConfig(root=str(tmp_path / "more"))]
    ds = build_classification_set(entries, None, "data.train")
    assert ds.classes == ["cat", "dog", "emu"]
    assert [ds[i][1] for i in range(len(ds))] == [0, 0, 0, 1, 1, 0, 2]
    with pytest.raises(DataError, match=r"^data\.val\[0\]: classes \['emu'\] are not among the 2 training classes"):
        build_classification_set([ClsDatasetConfig(root=str(tmp_path / "more"))], None, "data.val", classes=["cat", "dog"])


# ------------------------------------------------------------------------------- image formats


def test_grayscale_jpeg_becomes_three_equal_channels():
    gray = np.kron(np.random.default_rng(0).integers(0, 256, (4, 5), dtype=np.uint8), np.ones((8, 8), np.uint8))
    data = encode_pil(Image.fromarray(gray), "JPEG", quality=95)
    image = decode_image(data, "g.jpg")
    assert image.shape == (32, 40, 3) and image.dtype == np.uint8
    assert np.array_equal(image[..., 0], image[..., 1]) and np.array_equal(image[..., 0], image[..., 2])
    assert np.array_equal(image, np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB")))


def test_cmyk_jpeg_is_converted_to_rgb():
    rgb = np.kron(np.random.default_rng(0).integers(0, 256, (4, 5, 3), dtype=np.uint8), np.ones((8, 8, 1), np.uint8))
    data = encode_pil(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=95)
    image = decode_image(data, "c.jpg")
    reference = np.asarray(Image.open(__import__("io").BytesIO(data)).convert("RGB")).astype(int)
    assert image.shape == (32, 40, 3)
    assert np.abs(image.astype(int) - reference).max() <= 2  # two decoders' rounding


@pytest.mark.parametrize("channels", [1, 3])
def test_16_bit_png_is_scaled_to_8_bits(tmp_path, channels):
    rng = np.random.default_rng(0)
    data16 = rng.integers(0, 65536, (6, 7) if channels == 1 else (6, 7, 3), dtype=np.uint16)
    data16[0, 0] = 65535
    path = str(tmp_path / "deep.png")
    assert cv2.imwrite(path, data16)  # OpenCV writes BGR order: read back it becomes RGB
    image = read_image(path)
    expected = np.round(data16.astype(np.float64) / 257.0).astype(np.uint8)
    expected = np.repeat(expected[..., None], 3, axis=2) if channels == 1 else expected[..., ::-1]
    assert image.dtype == np.uint8 and np.array_equal(image, expected)
    assert image.reshape(-1)[0] == 255


def test_rgba_and_palette_png_keep_the_colours(tmp_path):
    rng = np.random.default_rng(0)
    rgb = random_rgb(rng)
    rgba = np.dstack([rgb, rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)])
    assert np.array_equal(decode_image(encode_pil(Image.fromarray(rgba), "PNG")), rgb)  # alpha dropped, as PIL's convert("RGB")
    palette = Image.fromarray(rgb).convert("P")
    assert np.array_equal(decode_image(encode_pil(palette, "PNG")), np.asarray(palette.convert("RGB")))


# --------------------------------------------------------------------------------- bad inputs


def _bad_files(root):
    """A corrupt JPEG, a text file named .jpg and an empty .png among good images."""
    jpeg = encode_pil(Image.fromarray(random_rgb(np.random.default_rng(3))), "JPEG")
    bad = {"cat/corrupt.jpg": jpeg[:30] + bytes(200), "dog/notes.jpg": b"this is not an image\n", "dog/empty.png": b""}
    for rel, data in bad.items():
        with open(os.path.join(root, rel), "wb") as f:
            f.write(data)
    return bad


@pytest.mark.parametrize("rel", ["cat/corrupt.jpg", "dog/notes.jpg", "dog/empty.png"])
def test_unreadable_file_is_named(image_folder, rel):
    root, _ = image_folder
    _bad_files(root)
    ds = ImageFolder(root, key="data.train[0].root")
    index = [os.path.relpath(p, root) for p in ds.paths].index(rel)
    with pytest.raises(DataError) as info:
        ds[(index, 7)]
    message = str(info.value)
    assert message.startswith(os.path.join(root, rel) + ":") and "\n" not in message
    assert "data.skip_bad" in message  # says what to do


def test_skip_bad_counts_the_skipped_files(image_folder):
    root, images = image_folder
    _bad_files(root)
    ds = ImageFolder(root, skip_bad=True)
    assert len(ds) == len(images) + 3
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        samples = [ds[(i, i)] for i in range(len(ds))]
    assert sum(s is None for s in samples) == 3
    assert sorted(str(w.message).split(": ")[1] for w in caught) == \
        sorted(f"skipped {os.path.join(root, r)}" for r in _bad_files(root))
    batch, skipped = SkippingCollate(lambda s: len(s))(samples)
    assert (batch, skipped) == (len(images), 3)


def test_error_in_a_loader_worker_reaches_the_user_as_one_line(image_folder):
    root, _ = image_folder
    _bad_files(root)
    ds = ImageFolder(root)
    sampler = TrainBatchSampler(len(ds), global_batch=len(ds), rank=0, world_size=1, shuffle=False)
    loader = build_train_loader(ds, sampler, lambda s: s, num_workers=1)
    with pytest.raises(DataError) as info:
        next(iter(loader))
    message = user_message(info.value)
    assert message.startswith(os.path.join(root, "cat", "corrupt.jpg") + ":") and "Traceback" not in message


def test_missing_root_is_named_at_construction(tmp_path):
    with pytest.raises(DataError, match=r"^data\.val\[0\]\.root: .*nowhere: directory not found"):
        build_classification_set([ClsDatasetConfig(root=str(tmp_path / "nowhere"))], None, "data.val")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="is a file, not a directory"):
        scan_image_folder(str(tmp_path / "file"))


def test_images_without_class_folders(tmp_path):
    write_png(str(tmp_path / "val" / "ILSVRC2012_val_00000001.png"), random_rgb(np.random.default_rng(0)))
    with pytest.raises(DataError, match=r"no class folders \(it holds 1 loose files, e\.g\. ILSVRC2012_val_00000001\.png"):
        scan_image_folder(str(tmp_path / "val"))


def test_empty_class_folder(image_folder):
    root, _ = image_folder
    os.makedirs(os.path.join(root, "bird"))
    (open(os.path.join(root, "bird", "README.txt"), "w")).close()
    with pytest.raises(DataError, match=r"class folder .*bird holds no images"):
        ImageFolder(root)
    with pytest.warns(UserWarning, match="bird holds no images.*keeps its label"):
        ds = ImageFolder(root, skip_bad=True)
    assert ds.classes == ["bird", "cat", "dog"] and ds.labels.tolist() == [1, 1, 1, 2, 2]


def test_files_without_image_extension_are_ignored_and_counted(image_folder):
    root, images = image_folder
    (open(os.path.join(root, "cat", "labels.csv"), "w")).close()
    (open(os.path.join(root, "cat", ".DS_Store"), "w")).close()
    with pytest.warns(UserWarning, match=r"ignored 1 files without an image extension, e\.g\. .*labels\.csv"):
        ds = ImageFolder(root)
    assert len(ds) == len(images)


def test_file_deleted_after_scanning(image_folder):
    root, _ = image_folder
    ds = ImageFolder(root)
    os.remove(ds.paths[0])
    with pytest.raises(DataError, match=r"000\.png: file not found"):
        ds[0]


# ---------------------------------------------------------------------------------- synthetic


def test_synthetic_shapes_are_a_function_of_seed_and_index():
    a = SyntheticShapes(16, 32, 0, seed=5)
    b = SyntheticShapes(16, 32, 0, seed=5, cache=True)
    assert a.classes[:3] == ["circle", "square", "triangle"] and len(a.classes) == 8
    for i in (0, 9, 15):
        assert np.array_equal(a.load(i), b.load(i)) and np.array_equal(b.load(i), b.load(i))
    assert not np.array_equal(a.load(0), SyntheticShapes(16, 32, 0, seed=6).load(0))
    assert a.load(3).shape == (32, 32, 3) and a[3][1] == 3
    assert SyntheticShapes(10, 32, num_classes=3).labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1, 2, 0]


def test_synthetic_config_errors_name_the_key():
    from engine.config import ConfigError

    entry = ClsDatasetConfig(synthetic=SyntheticShapesConfig(num_images=4, num_classes=99))
    with pytest.raises(ConfigError, match=r"^data\.train\[0\]\.synthetic\.num_classes: at most 8 shape kinds"):
        build_classification_set([entry], None, "data.train")
