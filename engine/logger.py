"""What a run reports, from rank 0: a progress bar, ``metrics.jsonl`` and TensorBoard events.

``metrics.jsonl`` holds one JSON object per line: every ``log_period`` iterations
``{"iter", "epoch", "lr", "loss", <each loss term>, "time", "data_time", "eta_seconds", ...}`` (means
over the period, already averaged over ranks), and after each evaluation ``{"iter", "eval": results}``.
``tools/plot_metrics.py`` draws it.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import sys
from collections import defaultdict
from typing import Dict, Optional

from tqdm import tqdm


def _flatten(results: dict, prefix: str = "") -> Dict[str, float]:
    out = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


def _truncate_after(path: str, iteration: int) -> None:
    """Drop records past ``iteration``: a resumed run writes them again."""
    if not os.path.isfile(path):
        return
    kept = []
    with open(path, "r", encoding="utf-8") as f:
        for line in f:
            try:
                if json.loads(line).get("iter", 0) <= iteration:
                    kept.append(line if line.endswith("\n") else line + "\n")
            except json.JSONDecodeError:  # a line cut by a kill
                continue
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.writelines(kept)
    os.replace(tmp, path)


class MetricsLogger:
    """Collects per-iteration numbers on every rank, writes them on rank 0 only."""

    def __init__(self, output_dir: str, max_iter: int, start_iter: int, log_period: int,
                 tensorboard: bool = True, progress_bar: bool = True, enabled: bool = True):
        self.enabled = enabled
        self.max_iter = max_iter
        self.log_period = max(1, log_period)
        self.window: Dict[str, list] = defaultdict(list)
        self.jsonl = self.writer = self.bar = None
        if not enabled:
            return
        os.makedirs(output_dir, exist_ok=True)
        path = os.path.join(output_dir, "metrics.jsonl")
        _truncate_after(path, start_iter)
        self.jsonl = open(path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter
            self.writer = SummaryWriter(output_dir, purge_step=start_iter if start_iter > 0 else None)
        show_bar = progress_bar and sys.stderr.isatty()
        self.bar = tqdm(total=max_iter, initial=start_iter, disable=not show_bar, dynamic_ncols=True,
                        desc="train", unit="it")

    def _write(self, record: dict) -> None:
        self.jsonl.write(json.dumps(record) + "\n")
        self.jsonl.flush()

    def update(self, iteration: int, epoch: float, lr: float, losses: Dict[str, float],
               time: float, data_time: float, extra: Optional[Dict[str, float]] = None) -> None:
        """Numbers of optimizer step ``iteration`` (1-based: steps done); writes every log_period."""
        if not self.enabled:
            return
        total = sum(losses.values())
        for k, v in losses.items():
            self.window[k].append(v)
        self.window["loss"].append(total)
        self.window["time"].append(time)
        self.window["data_time"].append(data_time)
        if self.bar is not None and not self.bar.disable:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{total:.4g}", lr=f"{lr:.3g}", refresh=False)
        if iteration % self.log_period and iteration != self.max_iter:
            return
        record = {"iter": iteration, "epoch": round(epoch, 4), "lr": lr}
        record.update({k: sum(v) / len(v) for k, v in self.window.items()})
        record["eta_seconds"] = round(record["time"] * (self.max_iter - iteration), 1)
        record.update(extra or {})
        self.window.clear()
        self._write(record)
        if self.writer is not None:
            for k, v in record.items():
                if k not in ("iter", "eta_seconds"):
                    self.writer.add_scalar(f"train/{k}", v, iteration)
        if self.bar is None or self.bar.disable:
            terms = "  ".join(f"{k} {v:.4g}" for k, v in losses.items())
            eta = datetime.timedelta(seconds=int(record["eta_seconds"]))
            print(f"iter {iteration}/{self.max_iter}  loss {record['loss']:.4g}  ({terms})  "
                  f"lr {lr:.4g}  {record['time']:.3f}s/it  eta {eta}", flush=True)

    def log_eval(self, iteration: int, results: dict) -> None:
        if not self.enabled:
            return
        self._write({"iter": iteration, "eval": results})
        flat = _flatten(results)
        if self.writer is not None:
            for k, v in flat.items():
                if math.isfinite(v):
                    self.writer.add_scalar(f"eval/{k}", v, iteration)
            self.writer.flush()
        shown = ", ".join(f"{k} {v:.2f}" for k, v in list(flat.items())[:12])
        msg = f"evaluation at iter {iteration}: {shown}"
        if self.bar is not None and not self.bar.disable:
            self.bar.write(msg)
        else:
            print(msg, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
        self.jsonl = self.writer = self.bar = None
