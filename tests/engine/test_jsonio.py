"""Every JSON file a run writes is strict JSON: no NaN or Infinity (engine/jsonio.py)."""
import json
import math

import numpy as np
import pytest
import torch

from engine.jsonio import dumps, strict, write_json
from engine.logger import MetricsLogger


def _reject_constants(name):
    raise ValueError(f"not JSON: {name}")


def test_non_finite_numbers_become_null_and_scalars_numbers(tmp_path):
    value = {"AP": float("nan"), "loss": [1.5, float("inf"), -float("inf")], "n": np.int64(3),
             "t": torch.tensor(2.5), "ok": np.float32(0.25)}
    assert strict(value) == {"AP": None, "loss": [1.5, None, None], "n": 3, "t": 2.5, "ok": 0.25}
    path = tmp_path / "results.json"
    write_json(str(path), value)
    assert json.loads(path.read_text(), parse_constant=_reject_constants)["AP"] is None
    with pytest.raises(ValueError):
        json.loads('{"AP": NaN}', parse_constant=_reject_constants)  # what the check above refuses


def test_metrics_jsonl_is_strict(tmp_path):
    log = MetricsLogger(str(tmp_path), max_iter=2, start_iter=0, log_period=1, tensorboard=False,
                        progress_bar=False)
    log.update(1, 0.0, 0.1, {"loss_box": float("nan")}, time=0.1, data_time=0.0)
    log.log_eval(1, {"bbox": {"AP": math.nan}})
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_reject_constants) for line in lines]
    assert records[0]["loss_box"] is None and records[1]["eval"]["bbox"]["AP"] is None
    assert dumps({"x": float("nan")}) == '{"x": null}'
