"""Bad-input corpus, part 2: weights. Files that are no checkpoint, checkpoints of another task or
architecture, backbone weights that leave most of the network random; and the misfits that are
accepted (fine-tuning to another class count, names allowed by model.weights_partial). Each refused
case: exit code 1 and one line naming the file and what to do, before any training."""
import os
import pickle

import numpy as np
import pytest
import torch

from bad_inputs_support import DET_CONFIG, SEG_CONFIG, det_overrides, expect_error, run

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("echo this file ran code",))


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Shapes data (64 px), a Mask R-CNN checkpoint of the tiny detector (not trained: only its
    layout matters), a classifier and a backbone checkpoint, and files that are no checkpoint."""
    from backbones.build import build_backbone, build_classifier
    from detection.build import build_detector
    from detection.config import DetConfig
    from detection.synthetic import make_shapes_dataset
    from engine.checkpoint import KIND_BACKBONE, KIND_CLASSIFICATION, KIND_DETECTION, save_checkpoint
    from engine.config import load_config

    root = tmp_path_factory.mktemp("weights")
    splits = make_shapes_dataset(str(root / "data"), num_train=4, num_val=2, size=64, seed=0)
    data = {"train": splits["train"], "val": splits["val"]}
    cfg = load_config(DetConfig, DET_CONFIG, det_overrides(data, root / "unused"))
    torch.manual_seed(0)
    det = build_detector(cfg.model, cfg.input)
    import json
    with open(data["train"][0]) as f:
        categories = sorted(json.load(f)["categories"], key=lambda c: c["id"])
    meta = {"task": KIND_DETECTION, "arch": "FPN", "mask": True, "num_classes": len(categories),
            "category_ids": [c["id"] for c in categories], "class_names": [c["name"] for c in categories],
            "backbone": "resnet18", "input_norm": dict(det.input_norm)}
    paths = {"data": data, "det": str(root / "mask_rcnn.pth"), "cls": str(root / "classifier.pth"),
             "backbone": str(root / "backbone.pth")}
    save_checkpoint(paths["det"], {"model": det.state_dict(), "meta": meta})
    width = cfg.model.backbone.width  # the demo config's network
    save_checkpoint(paths["cls"], {"model": build_classifier("resnet18", num_classes=6, width=width).state_dict(),
                                   "meta": {"task": KIND_CLASSIFICATION}})
    save_checkpoint(paths["backbone"], {"model": build_backbone("resnet18", width=width).state_dict(),
                                        "meta": {"task": KIND_BACKBONE}})
    (root / "weights.json").write_text('{"model": {"conv1.weight": [1, 2]}}')
    (root / "weights.txt").write_text("conv1.weight 0.1 0.2\n")
    (root / "empty.pth").write_bytes(b"")
    with open(paths["det"], "rb") as f:
        (root / "truncated.pth").write_bytes(f.read()[:5000])
    torch.save({"model": {"conv1.weight": torch.zeros(1)}, "x": _RunsCode()}, root / "hostile.pth")
    np.save(root / "weights.npy", np.zeros(3))
    # Detectron-style .pkl files that would run code, or feed the allowed numpy constructors bad arguments
    with open(root / "system.pkl", "wb") as f:
        pickle.dump({"blobs": {"conv1_w": np.zeros((2, 3, 7, 7), np.float32), "x": _RunsCode()}}, f, protocol=2)
    (root / "bad_numpy.pkl").write_bytes(b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nq\x00(K\x01K\x02tq\x01Rq\x02.")
    paths["system.pkl"], paths["bad_numpy.pkl"] = str(root / "system.pkl"), str(root / "bad_numpy.pkl")
    for name in ("weights.json", "weights.txt", "empty.pth", "truncated.pth", "hostile.pth", "weights.npy"):
        paths[name] = str(root / name)
    paths["root"] = root
    return paths


def _eval(capsys, files, weights, *extra):
    out = files["root"] / "eval"
    return run(capsys, "eval_coco", "--config", DET_CONFIG, "--weights", weights,
               *det_overrides(files["data"], out), *extra)


# ------------------------------------------------------------------- files that are no checkpoint

@pytest.mark.parametrize("name, words", [
    ("weights.json", "a JSON file"),
    ("weights.txt", "a text file"),
    ("empty.pth", "an empty file"),
    ("truncated.pth", "damaged or truncated"),
    ("hostile.pth", "would run code"),
    ("weights.npy", "NumPy"),
])
def test_eval_coco_weights_that_are_no_checkpoint(capsys, files, name, words):
    expect_error(_eval(capsys, files, files[name]), 1, files[name], words,
                 case=f"eval_coco --weights {name.replace('weights.', 'a .')}")


def test_eval_coco_weights_not_found(capsys, files):
    missing = str(files["root"] / "nope.pth")
    expect_error(_eval(capsys, files, missing), 1, missing, "not found", case="eval_coco --weights missing file")


def test_transfer_of_a_json_file(capsys, files):
    expect_error(run(capsys, "transfer", files["weights.json"], "--out", str(files["root"] / "out.pth")), 1,
                 files["weights.json"], "JSON", case="transfer.py of a JSON file")


# ------------------------------------------------------------------- hostile Detectron .pkl files

@pytest.mark.parametrize("name, words", [("system.pkl", ["would run code", "posix.system"]),
                                         ("bad_numpy.pkl", ["not a weights pickle", "TypeError"])])
def test_transfer_msra_of_a_hostile_pkl(capsys, files, name, words):
    expect_error(run(capsys, "transfer", files[name], "--format", "msra", "--out", str(files["root"] / "msra.pth")), 1,
                 files[name], *words, case=f"transfer.py --format msra of {name}")
    assert not os.path.exists(files["root"] / "msra.pth")


def test_hostile_pkl_as_detector_backbone_weights(capsys, files):
    expect_error(_train_det(capsys, files, "hostile_backbone", f"model.backbone.weights={files['system.pkl']}"), 1,
                 files["system.pkl"], "would run code",
                 case="train_det model.backbone.weights = a .pkl that would run code")


def test_hostile_pkl_as_classifier_backbone_weights(capsys, files):
    from bad_inputs_support import CLS_CONFIG

    expect_error(run(capsys, "train_cls", "--config", CLS_CONFIG, f"output_dir={files['root'] / 'cls_hostile'}",
                     "data.train.0.synthetic.num_images=8", "data.val.0.synthetic.num_images=8", "solver.max_iter=1",
                     f"model.backbone.weights={files['system.pkl']}"), 2,  # train_cls: a config error
                 "model.backbone.weights", files["system.pkl"], "would run code",
                 case="train_cls model.backbone.weights = a .pkl that would run code")


# ------------------------------------------------------------- checkpoints of another task / arch

def _train_det(capsys, files, name, *extra):
    return run(capsys, "train_det", "--config", DET_CONFIG,
               *det_overrides(files["data"], files["root"] / name), *extra)


def test_classifier_as_detector_weights(capsys, files):
    expect_error(_train_det(capsys, files, "cls_as_det", f"model.weights={files['cls']}"), 1, files["cls"],
                 "classification checkpoint", "model.backbone.weights",
                 case="train_det model.weights = a classifier checkpoint")


def test_backbone_as_detector_weights(capsys, files):
    expect_error(_train_det(capsys, files, "bb_as_det", f"model.weights={files['backbone']}"), 1,
                 files["backbone"], "backbone checkpoint", case="train_det model.weights = a backbone checkpoint")


def test_mask_rcnn_weights_into_faster_rcnn(capsys, files):
    expect_error(_train_det(capsys, files, "mask_into_faster", "model.mask=false", f"model.weights={files['det']}"), 1,
                 files["det"], "unexpected 8", "model.weights_partial=[roi_heads.mask_head,roi_heads.mask_predictor]",
                 case="train_det Mask R-CNN weights into a Faster R-CNN")


def test_backbone_weights_of_another_depth(capsys, files):
    expect_error(_train_det(capsys, files, "r18_into_r34", "model.backbone.name=resnet34",
                            f"model.backbone.weights={files['backbone']}"), 1,
                 files["backbone"], "model.backbone.weights fill", "90%",
                 case="train_det ResNet-18 backbone weights into a ResNet-34")


def test_eval_coco_wrong_architecture(capsys, files):
    line = expect_error(_eval(capsys, files, files["det"], "model.arch=C4"), 1, files["det"], "do not fit",
                        "model.arch", case="eval_coco FPN checkpoint with a C4 config")
    assert "weights_partial" not in line  # evaluation needs every tensor


def test_predict_wrong_architecture(capsys, files):
    images = files["data"]["val"][1]
    expect_error(run(capsys, "predict", "--config", DET_CONFIG, "--weights", files["det"], "--input", images,
                     "--output", str(files["root"] / "pred"), "model.arch=C4"), 1, files["det"], "do not fit",
                 case="predict FPN checkpoint with a C4 config")


def test_predict_detector_with_a_semantic_config(capsys, files):
    expect_error(run(capsys, "predict", "--config", SEG_CONFIG, "--weights", files["det"], "--input",
                     files["data"]["val"][1], "--output", str(files["root"] / "pred_seg_cfg")), 2,
                 files["det"], "is a detection checkpoint", "not a detection config", "model.head",
                 case="predict a detector checkpoint with a semantic config")


def test_export_detector_with_a_semantic_config(capsys, files):
    expect_error(run(capsys, "export", "--config", SEG_CONFIG, "--weights", files["det"], "--format", "onnx",
                     "--out", str(files["root"] / "det_seg_cfg.onnx")), 2,
                 files["det"], "is a detection checkpoint", "not a detection config",
                 case="export.py a detector checkpoint with a semantic config")


@pytest.mark.skipif(torch.cuda.is_available(), reason="the machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_predict_on_a_gpu_the_machine_lacks(capsys, files, device):
    out = files["root"] / "pred_cuda"
    expect_error(run(capsys, "predict", "--config", DET_CONFIG, "--weights", files["det"], "--input",
                     files["data"]["val"][1], "--output", str(out), "--device", device), 2,
                 f"device '{device}'", "no CUDA GPU", "--device cpu", case=f"predict --device {device} without a GPU")
    assert not out.exists()  # stopped before any work


def test_predict_device_that_is_no_device(capsys, files):
    expect_error(run(capsys, "predict", "--config", DET_CONFIG, "--weights", files["det"], "--input",
                     files["data"]["val"][1], "--output", str(files["root"] / "pred_gpu0"), "--device", "gpu0"), 2,
                 "device 'gpu0'", "cpu, cuda", case="predict --device gpu0 (not a device name)")


def test_predict_classifier_checkpoint(capsys, files):
    expect_error(run(capsys, "predict", "--config", DET_CONFIG, "--weights", files["cls"], "--input",
                     files["data"]["val"][1], "--output", str(files["root"] / "pred2")), 1, files["cls"],
                 "classification", case="predict with a classifier checkpoint")


def _seg_overrides(files, name):
    train, val = files["data"]["train"], files["data"]["val"]
    return [f"output_dir={files['root'] / name}", f"data.train.0.coco.json={train[0]}",
            f"data.train.0.coco.images={train[1]}", f"data.val.0.coco.json={val[0]}",
            f"data.val.0.coco.images={val[1]}", "model.fpn_channels=32", "model.backbone.norm=GN", "data.base_size=64", "data.crop_size=64",
            "solver.max_iter=1", "solver.amp=off", "logging.progress_bar=false", "logging.tensorboard=false"]


def test_semantic_model_from_a_detector_without_weights_partial(capsys, files):
    expect_error(run(capsys, "train_seg", "--config", SEG_CONFIG, *_seg_overrides(files, "seg_from_det"),
                     f"model.weights={files['det']}", "model.weights_partial=[]"), 1, files["det"],
                 "model.weights_partial=[classifier,roi_heads,rpn]",
                 case="train_seg model.weights = a detector, no model.weights_partial")


def test_semantic_model_from_a_classifier(capsys, files):
    expect_error(run(capsys, "train_seg", "--config", SEG_CONFIG, *_seg_overrides(files, "seg_from_cls"),
                     f"model.weights={files['cls']}"), 1, files["cls"], "loaded 0 of",
                 "model.backbone.weights", case="train_seg model.weights = a classifier checkpoint")


# ----------------------------------------------------------------------- misfits that are accepted

def _detector(files, **model):
    from detection.build import build_detector
    from detection.config import DetConfig
    from engine.config import load_config

    cfg = load_config(DetConfig, DET_CONFIG, det_overrides(files["data"], files["root"] / "unused",
                                                           **{f"model.{k}": v for k, v in model.items()}))
    return build_detector(cfg.model, cfg.input)


def test_fine_tuning_to_another_class_count_loads_all_but_the_predictor(files):
    from detection.weights import load_detector_weights

    report = load_detector_weights(_detector(files, num_classes=2), files["det"])
    assert {k.rsplit(".", 1)[0] for k, _, _ in report.mismatched} == {
        "roi_heads.box_predictor.cls_score", "roi_heads.box_predictor.bbox_pred",
        "roi_heads.mask_predictor.mask_fcn_logits"}
    assert not report.missing and not report.unexpected and len(report.mismatched) == 6 and report.loaded


def test_weights_partial_allows_a_load_by_name(files):
    from detection.weights import load_detector_weights

    report = load_detector_weights(_detector(files, mask="false"), files["det"],
                                   partial=["roi_heads.mask_head", "roi_heads.mask_predictor"])
    assert len(report.unexpected) == 8 and report.complete
    with pytest.raises(Exception, match="model.weights do not fit"):  # evaluation: no fine-tuning misfit
        load_detector_weights(_detector(files, num_classes=2), files["det"], allow_mismatch=False)


@pytest.mark.parametrize("tool_name, weights, words", [
    ("train_cls", "det", ["does not fit the model", "model.backbone"]),
    ("train_seg", "det", ["weights do not fit the model", "model.head"]),
    ("train_det", "cls", ["a classification checkpoint"]),
])
def test_eval_only_with_another_tasks_checkpoint(capsys, files, tool_name, weights, words):
    from bad_inputs_support import CLS_CONFIG

    config = {"train_cls": CLS_CONFIG, "train_seg": SEG_CONFIG, "train_det": DET_CONFIG}[tool_name]
    val = files["data"]["val"]
    extra = {"train_cls": ["data.val.0.synthetic.num_images=8"],
             "train_seg": [f"data.val.0.coco.json={val[0]}", f"data.val.0.coco.images={val[1]}"],
             "train_det": [f"data.val.0.json={val[0]}", f"data.val.0.images={val[1]}"]}[tool_name]
    expect_error(run(capsys, tool_name, "--config", config, "--eval-only", f"output_dir={files['root'] / tool_name}",
                     f"model.weights={files[weights]}", *extra), 1, files[weights], *words,
                 case=f"{tool_name} --eval-only with a {'detector' if weights == 'det' else 'classifier'} checkpoint")


# ---------------------------------------------------------- a resume needs no starting-weights file

@pytest.mark.parametrize("tool_name, weights_key, source", [
    ("train_det", "model.backbone.weights", "backbone"),
    ("train_det", "model.weights", "det"),
    ("train_seg", "model.backbone.weights", "backbone"),
])
def test_resume_after_the_starting_weights_file_is_gone(capsys, files, tmp_path, tool_name, weights_key, source):
    """A checkpoint replaces every weight: --resume must not ask for the file the run started from
    (it had moved, and the resume stopped with "file not found" although nothing would read it)."""
    import shutil

    start = tmp_path / "start.pth"
    shutil.copy(files[source], start)
    if tool_name == "train_det":
        argv = ["--config", DET_CONFIG, *det_overrides(files["data"], tmp_path / "run")]
    else:
        argv = ["--config", SEG_CONFIG, *_seg_overrides(files, "unused"), f"output_dir={tmp_path / 'run'}"]
    argv += [f"{weights_key}={start}", "solver.checkpoint_period=1", "data.val=[]"]  # no evaluation: faster
    first = run(capsys, tool_name, *argv, "solver.max_iter=1")
    assert first.code == 0, first.err[-2000:]
    start.unlink()
    fresh = run(capsys, tool_name, *argv, "output_dir=" + str(tmp_path / "other"), "solver.max_iter=1")
    # without a checkpoint the file is needed: a config error (2) for the backbone's, a missing file (1) for
    # whole-model weights, which are read at build time
    expect_error(fresh, 2 if "backbone" in weights_key else 1, "not found", str(start),
                 case=f"{tool_name} {weights_key} gone, no checkpoint")
    resumed = run(capsys, tool_name, *argv, "--resume", "solver.max_iter=2")
    assert resumed.code == 0, resumed.err[-2000:]
    assert f"starting weights not read ({start}" in resumed.out
    assert "resuming from" in resumed.out and "iteration 1" in resumed.out
    # every checkpoint unreadable: the model was built without its starting weights, so no silent fresh start
    for path in (tmp_path / "run" / "checkpoints").glob("model_*.pth"):
        path.write_bytes(b"not a checkpoint")
    expect_error(run(capsys, tool_name, *argv, "--resume", "solver.max_iter=3"), 1, "--resume: no checkpoint in",
                 "could be loaded", case=f"{tool_name} --resume, every checkpoint unreadable, starting weights gone")
