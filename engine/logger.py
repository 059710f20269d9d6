"""What a run reports: the INFO log on the console and in ``log.txt``, and, from rank 0, a progress
bar, ``metrics.jsonl`` and TensorBoard events.

:func:`setup_logging` configures Python's ``logging`` once per run: INFO lines go to stdout and to
``output_dir/log.txt`` (rank 0; other ranks write ``log.rank{N}.txt`` and show only warnings on the
console), warnings to stderr and the same file. Library modules just ``logging.getLogger(__name__)``.

``metrics.jsonl`` holds one JSON object per line: every ``log_period`` iterations
``{"iter", "epoch", "lr", "loss", <each loss term>, "time", "data_time", "eta_seconds", ...}`` (means
over the period, already averaged over ranks), and after each evaluation ``{"iter", "eval": results}``.
``tools/plot_metrics.py`` draws it.
"""
from __future__ import annotations

import datetime
import json
import logging
import math
import os
import sys
import warnings
from collections import defaultdict
from typing import Dict, Optional

from tqdm import tqdm

from .jsonio import dumps

logger = logging.getLogger(__name__)

_CONSOLE_FORMAT = "[%(asctime)s] %(message)s"
_FILE_FORMAT = "[%(asctime)s %(name)s %(levelname)s] %(message)s"


class _TqdmStream:
    """A console stream that writes through tqdm, so log lines do not tear a live progress bar.
    ``sys.stdout`` / ``sys.stderr`` is looked up at each write, so a tool run inside another program
    (a test that captures the output, a notebook) logs to the stream in place at that moment."""

    def __init__(self, name: str):
        self.name = name

    @property
    def stream(self):
        return getattr(sys, self.name)

    def write(self, text: str) -> None:
        text = text.rstrip("\n")
        if text:
            tqdm.write(text, file=self.stream)

    def flush(self) -> None:
        self.stream.flush()


class _BelowWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    # One line per warning, in the log and on stderr, instead of Python's two-line "path:line:" form.
    logging.getLogger("py.warnings").warning("%s: %s", category.__name__, message)


def setup_logging(output_dir: Optional[str] = None, rank: int = 0) -> str:
    """Send INFO logs to the console and ``output_dir/log.txt`` (rank 0) or ``log.rank{rank}.txt``.

    Calling it again (a second run in the same process) replaces the handlers it added before.
    Returns the log file's path ("" without ``output_dir``).
    """
    root = logging.getLogger()
    path = ""
    if output_dir:
        path = os.path.join(output_dir, "log.txt" if rank == 0 else f"log.rank{rank}.txt")
    if any(getattr(h, "_reskit", None) == (path, rank) for h in root.handlers):
        return path  # already set up for this run (the tool, then the trainer)
    for handler in list(root.handlers):
        if getattr(handler, "_reskit", False):
            root.removeHandler(handler)
            handler.close()
    root.setLevel(logging.INFO)
    handlers = []
    if rank == 0:
        out = logging.StreamHandler(_TqdmStream("stdout"))
        out.addFilter(_BelowWarning())
        out.setLevel(logging.INFO)
        handlers.append(out)
    err = logging.StreamHandler(_TqdmStream("stderr"))
    err.setLevel(logging.WARNING)
    handlers.append(err)
    for h in handlers:
        h.setFormatter(logging.Formatter(_CONSOLE_FORMAT, "%H:%M:%S"))
    if path:
        try:
            os.makedirs(output_dir, exist_ok=True)
            file = logging.FileHandler(path, encoding="utf-8")
        except OSError as e:  # read-only, not a folder, no permission: the config's choice to change
            from .config import ConfigError
            raise ConfigError(f"output_dir: cannot write {path} ({e.strerror}); choose a writable "
                              "output_dir") from None
        file.setLevel(logging.INFO)
        file.setFormatter(logging.Formatter(_FILE_FORMAT, "%Y-%m-%d %H:%M:%S"))
        handlers.append(file)
    for h in handlers:
        h._reskit = (path, rank)
        root.addHandler(h)
    warnings.showwarning = _show_warning
    return path


def dataset_summary(name: str, stats: Dict[str, int], per_class: Optional[Dict[str, int]] = None,
                    counted: tuple = ("images", "annotations")) -> str:
    """One line a run logs at start about a dataset: what it holds, per class, and everything it
    dropped or skipped by reason with counts, e.g. ``training set: 600 images, 1791 annotations;
    per class: circle 301, square 297, ...; dropped: crowd 3, no_segmentation 12``."""
    held = ", ".join(f"{stats[k]} {k}" for k in counted if k in stats)
    text = f"{name}: {held or 'no counts'}"
    if per_class:
        shown = list(per_class.items())
        text += "; per class: " + ", ".join(f"{c} {n}" for c, n in shown[:20]) + \
            (f", ... {len(shown) - 20} more" if len(shown) > 20 else "")
    dropped = [(k, v) for k, v in stats.items() if k not in counted and isinstance(v, int) and v]
    text += "; dropped or skipped: " + (", ".join(f"{k} {v}" for k, v in dropped) if dropped else "none")
    return text


def _flatten(results: dict, prefix: str = "") -> Dict[str, float]:
    out = {}
    for k, v in results.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out


# The headline numbers of each task's evaluation, in this order where present (COCO bbox and segm,
# semantic segmentation, classification); a section with none of them shows its first three numbers.
PRIMARY_KEYS = ("AP", "AP50", "AP75", "mIoU", "pixel_accuracy", "top1", "top5")


def primary_numbers(results: dict) -> str:
    """``"bbox AP 41.20 AP50 ...; segm AP 37.10 ...; sem_seg mIoU 80.10 ..."`` for the console: every
    task's primary numbers, whatever else the evaluation holds (per-class tables are left out)."""
    parts = []
    top = [(k, v) for k, v in results.items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if top:
        keys = [k for k in PRIMARY_KEYS if k in dict(top)] or [k for k, _ in top[:3]]
        parts.append(", ".join(f"{k} {_fmt(dict(top)[k])}" for k in keys))
    for name, section in results.items():
        if not isinstance(section, dict) or "per_" in name:  # per-category tables: results.json has them
            continue
        numbers = {k: v for k, v in section.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        keys = [k for k in PRIMARY_KEYS if k in numbers] or list(numbers)[:3]
        if keys:
            parts.append(f"{name} " + ", ".join(f"{k} {_fmt(numbers[k])}" for k in keys))
    return "; ".join(parts) or "no numbers"


def _fmt(value: float) -> str:
    return f"{value:.2f}" if math.isfinite(value) else "n/a"


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
        self.jsonl.write(dumps(record) + "\n")
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
        # Every number on the line is the mean over the same window, so the terms add up to the loss.
        terms = "  ".join(f"{k} {record[k]:.4g}" for k in losses)
        eta = datetime.timedelta(seconds=int(record["eta_seconds"]))
        logger.info(f"iter {iteration}/{self.max_iter}  loss {record['loss']:.4g}  ({terms})  "
                    f"lr {lr:.4g}  {record['time']:.3f}s/it  eta {eta}")

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
        logger.info(f"evaluation at iter {iteration}: {primary_numbers(results)}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.writer is not None:
            self.writer.close()
        if self.jsonl is not None:
            self.jsonl.close()
        self.jsonl = self.writer = self.bar = None
