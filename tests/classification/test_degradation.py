"""tools/degradation.py (the paper's Figure 6 in one command) and the CIFAR-10 archive reader.

The CIFAR-10 archives are written here, small, in both of the published layouts (python pickles and
binary records; folders and .tar.gz): no network, no copy of the real set needed.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import tarfile

import numpy as np
import pytest

from classification.cifar import CIFAR10_CLASSES, CIFAR10_ENV, find_cifar10, read_cifar10
from engine.data import DataError

from conftest import PYTHON, ROOT

FOUR = ("cifar_plain20", "cifar_plain56", "cifar_resnet20", "cifar_resnet56")
BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def _cifar_like(rng: np.random.Generator, n: int):
    """n RGB images [n, 32, 32, 3] and labels, and the archive's rows (planar R, G, B) of them."""
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, n).astype(np.int64)
    rows = images.transpose(0, 3, 1, 2).reshape(n, 3072)
    return images, labels, rows


def write_cifar(root, layout: str, per_batch: int = 4, archive: bool = False, seed: int = 0):
    """A CIFAR-10 archive of ``per_batch`` images per batch file under ``root``; returns
    (path to hand the reader, train images, train labels, test images, test labels)."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(str(root), "cifar-10-batches-py" if layout == "python" else "cifar-10-batches-bin")
    os.makedirs(folder)
    images, labels = {}, {}
    for name in BATCHES:
        images[name], labels[name], rows = _cifar_like(rng, per_batch)
        if layout == "python":  # what the published pickles hold (bytes keys, as Python 3 re-pickles them)
            with open(os.path.join(folder, name), "wb") as f:
                pickle.dump({b"batch_label": name.encode(), b"labels": labels[name].tolist(), b"data": rows,
                             b"filenames": [b"x.png"] * per_batch}, f, protocol=2)
        else:
            records = np.concatenate([labels[name].astype(np.uint8)[:, None], rows], axis=1)
            records.tofile(os.path.join(folder, name + ".bin"))
    if layout == "python":
        with open(os.path.join(folder, "batches.meta"), "wb") as f:
            pickle.dump({"label_names": list(CIFAR10_CLASSES), "num_vis": 3072}, f, protocol=2)
    else:
        with open(os.path.join(folder, "batches.meta.txt"), "w") as f:
            f.write("\n".join(CIFAR10_CLASSES) + "\n\n")
    path = folder
    if archive:
        path = os.path.join(str(root), f"cifar-10-{'python' if layout == 'python' else 'binary'}.tar.gz")
        with tarfile.open(path, "w:gz") as tar:
            tar.add(folder, arcname=os.path.basename(folder))
        for f in os.listdir(folder):
            os.remove(os.path.join(folder, f))
        os.rmdir(folder)
    train_x = np.concatenate([images[n] for n in BATCHES[:5]])
    train_y = np.concatenate([labels[n] for n in BATCHES[:5]])
    return path, train_x, train_y, images["test_batch"], labels["test_batch"]


@pytest.mark.parametrize("layout", ["python", "binary"])
@pytest.mark.parametrize("archive", [False, True], ids=["folder", "tar.gz"])
def test_read_cifar10_layouts(tmp_path, layout, archive):
    path, train_x, train_y, test_x, test_y = write_cifar(tmp_path, layout, archive=archive)
    cifar = read_cifar10(path)
    assert cifar.train_images.shape == (20, 32, 32, 3) and cifar.train_images.dtype == np.uint8
    np.testing.assert_array_equal(cifar.train_images, train_x)
    np.testing.assert_array_equal(cifar.train_labels, train_y)
    np.testing.assert_array_equal(cifar.test_images, test_x)
    np.testing.assert_array_equal(cifar.test_labels, test_y)
    assert cifar.classes == list(CIFAR10_CLASSES)
    assert layout in cifar.source
    # the folder above the batches (or holding the tarball) is found too, as torchvision leaves it
    np.testing.assert_array_equal(read_cifar10(str(tmp_path)).test_images, test_x)


def test_both_layouts_read_the_same_images(tmp_path):
    a = read_cifar10(write_cifar(tmp_path / "a", "python", seed=3)[0])
    b = read_cifar10(write_cifar(tmp_path / "b", "binary", seed=3)[0])
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))


def test_pixel_order_is_planar_rgb(tmp_path):
    """Row = 1024 red, 1024 green, 1024 blue, each row-major: one known pixel lands where it should."""
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    record = np.zeros(3073, np.uint8)
    record[0] = 7
    y, x = 2, 5
    record[1 + 0 * 1024 + y * 32 + x], record[1 + 1 * 1024 + y * 32 + x], record[1 + 2 * 1024 + y * 32 + x] = 10, 20, 30
    for name in BATCHES:
        record.tofile(str(folder / f"{name}.bin"))
    cifar = read_cifar10(str(folder))
    assert cifar.test_labels.tolist() == [7]
    assert cifar.test_images[0, y, x].tolist() == [10, 20, 30]
    assert int(cifar.test_images.sum()) == 60


def test_bad_archives_are_named(tmp_path):
    with pytest.raises(DataError, match="not found"):
        read_cifar10(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="cifar-10-batches-py"):
        read_cifar10(str(tmp_path / "empty"))
    path = write_cifar(tmp_path / "cut", "binary")[0]
    with open(os.path.join(path, "data_batch_3.bin"), "ab") as f:
        f.write(b"\0")
    with pytest.raises(DataError, match="data_batch_3.bin.*whole number"):
        read_cifar10(path)
    path = write_cifar(tmp_path / "missing", "python")[0]
    os.remove(os.path.join(path, "data_batch_5"))
    with pytest.raises(DataError, match="data_batch_5 is missing"):
        read_cifar10(path)


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = write_cifar(tmp_path, "python")[0]

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))
    with open(os.path.join(path, "data_batch_1"), "wb") as f:
        pickle.dump({"data": Evil(), "labels": []}, f)
    with pytest.raises(DataError, match="refusing"):
        read_cifar10(path)
    assert not (tmp_path / "pwned").exists()


def test_find_cifar10_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_cifar10(None, environ={}) is None
    assert find_cifar10(None, environ={CIFAR10_ENV: "/from/env"}) == "/from/env"
    assert find_cifar10("/given", environ={CIFAR10_ENV: "/from/env"}) == "/given"
    write_cifar(tmp_path / "datasets" / "cifar10" / "raw", "binary")
    assert find_cifar10(None, environ={}) == "datasets/cifar10/raw"


def _run_tool(tmp_path, *args, env_extra=None):
    env = {k: v for k, v in os.environ.items() if k != CIFAR10_ENV}
    env.update({"OMP_NUM_THREADS": "1", **(env_extra or {})})
    out = tmp_path / "out"
    # cwd: an empty folder, so that no datasets/cifar10 of the checkout is picked up
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "degradation.py"), "--quick", "--out", str(out), *args],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout, out


def _check_outputs(out, n_iter: int):
    assert (out / "degradation.png").stat().st_size > 10_000
    with open(out / "degradation.png", "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    results = json.loads((out / "degradation.json").read_text())
    assert tuple(results["networks"]) == FOUR
    for name, r in results["networks"].items():
        assert r["train"]["iter"][-1] == r["test"]["iter"][-1] == n_iter
        assert len(r["train"]["error"]) == len(r["train"]["iter"]) >= 2
        assert all(0.0 <= e <= 100.0 for e in r["train"]["error"] + r["test"]["error"])
        assert r["final_train_error"] == r["train"]["error"][-1]
        assert r["plain"] == ("plain" in name)
    # option A: the plain and residual nets of one depth have the same parameters (Table 6)
    nets = results["networks"]
    assert nets["cifar_plain56"]["parameters"] == nets["cifar_resnet56"]["parameters"]
    assert nets["cifar_plain20"]["parameters"] < nets["cifar_plain56"]["parameters"]
    assert set(results["verdict"]) == {"plain56_above_plain20", "resnet56_below_plain56", "resnet56_below_resnet20"}
    assert results["recipe"]["lr_steps"] == [n_iter // 2, n_iter * 3 // 4]
    assert results["command"].startswith("python tools/degradation.py --quick")
    return results


@pytest.mark.slow
def test_quick_run_writes_figure_and_numbers(tmp_path):
    stdout, out = _run_tool(tmp_path)
    results = _check_outputs(out, n_iter=6)
    assert results["dataset"]["name"] == "synthetic shapes"
    assert "plain-20" in stdout and "ResNet-56" in stdout and "training" in stdout


@pytest.mark.slow
def test_quick_run_on_a_cifar_archive_from_the_environment(tmp_path):
    path = write_cifar(tmp_path / "data", "binary", per_batch=16, archive=True)[0]
    stdout, out = _run_tool(tmp_path, env_extra={CIFAR10_ENV: path})
    results = _check_outputs(out, n_iter=6)
    assert results["dataset"]["name"] == "CIFAR-10"
    assert results["dataset"]["train_images"] == 80 and results["dataset"]["image_size"] == 32


def test_a_wrong_cifar_path_stops_with_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != CIFAR10_ENV}
    proc = subprocess.run([PYTHON, os.path.join(ROOT, "tools", "degradation.py"), "--quick", "--cifar",
                           str(tmp_path / "nowhere"), "--out", str(tmp_path / "out")],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().startswith("error: CIFAR-10 path") and "nowhere" in proc.stderr
    assert not (tmp_path / "out").exists()
