"""`make demo` end to end in its quick form: every stage's command runs and the report is complete."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_quick_runs_every_stage_and_writes_the_report(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "tools/demo.py", "--quick", "--out", str(out)], cwd=ROOT,
                            capture_output=True, text=True, timeout=900, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"report: {out / 'report.md'}" in result.stdout
    last = result.stdout.splitlines()[-4:]  # the demo ends with its stages' HTML reports
    for stage in ("cls", "semantic"):
        assert f"report: {out / stage / 'report' / 'index.html'}" in last
    results = json.loads((out / "results.json").read_text())
    for section, key in [("classification", "top1"), ("bbox", "AP"), ("segm", "AP"), ("sem_seg", "mIoU")]:
        assert isinstance(results[section][key], (int, float)), (section, results[section])
    assert set(results["seconds"]) >= {"make data", "pretrain classifier", "transfer", "train Mask R-CNN",
                                       "train semantic FPN", "predict", "total"}
    report = (out / "report.md").read_text()
    pictures = sorted(p for p in os.listdir(out / "predictions") if p.endswith(".png"))
    assert len(pictures) == 6 and all(f"predictions/{p}" in report for p in pictures)
    assert "## bbox AP" in report and "## segm AP" in report and "semantic mIoU" in report
    # the semantic stage started from the Mask R-CNN checkpoint
    config = (out / "semantic" / "config.yaml").read_text()
    assert str(out / "mask_rcnn" / "model_final.pth") in config


def test_classifier_processes_follow_the_precision_under_auto():
    """--processes auto: the classifier as two processes in fp32 only (in bf16 half-batches trained it
    to a lower top-1); a number the user gives applies to every stage."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import demo
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    assert demo.classifier_processes("auto", 2, "fp32") == 2
    assert demo.classifier_processes("auto", 2, "bf16") == 1
    assert demo.classifier_processes("auto", 1, "fp32") == 1
    assert demo.classifier_processes("2", 2, "bf16") == 2


def test_a_result_below_its_floor_is_recorded_and_fails_a_full_run(capsys):
    """The figures table marks a missed floor, and a full run (not --quick) records it so that the
    demo exits 1 after writing its report."""
    sys.path.insert(0, os.path.join(ROOT, "tools"))
    try:
        import demo
    finally:
        sys.path.remove(os.path.join(ROOT, "tools"))
    floors = demo.FLOORS
    results = {"classification": {"top1": floors["classification top-1"] + 1}, "bbox": {"AP": floors["box AP"] + 1},
               "segm": {"AP": floors["mask AP"] - 0.1}, "sem_seg": {"mIoU": floors["semantic mIoU"]}}
    timings = {"pretrain classifier": 1.0, "train Mask R-CNN": 1.0, "train semantic FPN": 1.0, "total": 3.0}
    demo.MISSED.clear()
    demo.print_figures(results, timings, {}, quick=True)
    assert demo.MISSED == [] and "a floor MISSED" in capsys.readouterr().out
    demo.print_figures(results, timings, {}, quick=False)
    assert demo.MISSED == [f"mask AP {floors['mask AP'] - 0.1:.1f} < {floors['mask AP']:.0f}"]
    demo.MISSED.clear()
