"""Confusion matrices for the reports: counting, per-class accuracy, the most confused pairs, and the
matrix drawn into an :class:`engine.report.Report` (classification, semantic segmentation and
detection share it; detection's has a background row and column).

Rows are the ground truth, columns the prediction (torchvision's and sklearn's convention). Counting
is one ``np.bincount`` (what ``sklearn.metrics.confusion_matrix`` does, without the dependency).
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np

from .report import Report, escape

__all__ = ["confusion_matrix", "per_class_accuracy", "most_confused", "add_confusion_matrix"]

HTML_MAX_CLASSES = 30  # up to this many classes the matrix is an HTML table with counts; above, a picture


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """``[num_classes, num_classes]`` int64: ``m[t, p]`` counts samples of true class ``t`` predicted ``p``."""
    t = np.asarray(labels, dtype=np.int64).ravel()
    p = np.asarray(predictions, dtype=np.int64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} labels but {p.size} predictions")
    bad = (t < 0) | (t >= num_classes) | (p < 0) | (p >= num_classes)
    if bad.any():
        raise ValueError(f"labels or predictions outside 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def per_class_accuracy(matrix: np.ndarray) -> List[Optional[float]]:
    """Recall of each class in percent (``m[c, c]`` over row ``c``); None for a class without samples."""
    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(1)
    return [100.0 * m[c, c] / rows[c] if rows[c] > 0 else None for c in range(len(m))]


def most_confused(matrix: np.ndarray, k: int = 10) -> List[tuple]:
    """The ``k`` worst off-diagonal cells as ``(true, predicted, count, percent of the true class)``:
    the largest share of the true class first (so a rare class's confusions are not hidden behind a
    frequent class's counts: pixels of background), ties by count, then by true and predicted class;
    zero cells are left out."""
    m = np.asarray(matrix)
    rows = m.sum(1)
    off = [(100.0 * m[t, p] / rows[t], int(m[t, p]), t, p) for t in range(len(m)) for p in range(len(m))
           if t != p and m[t, p] > 0]
    off.sort(key=lambda x: (-x[0], -x[1], x[2], x[3]))
    return [(t, p, n, share) for share, n, t, p in off[:k]]


def _colour(fraction: float, diagonal: bool) -> str:
    """Background of a cell: white to blue (diagonal, right) or to red (off-diagonal, wrong)."""
    f = min(max(fraction, 0.0), 1.0) ** 0.5  # square root: small confusions stay visible
    end = (47, 111, 223) if diagonal else (214, 39, 40)
    r, g, b = (round(255 + (e - 255) * f) for e in end)
    ink = "#fff" if f > 0.6 else "#1d2330"
    return f"background:rgb({r},{g},{b});color:{ink}"


def _tip(names: Sequence[str], t: int, p: int, count: int, frac: float, unit: str, background: bool) -> str:
    """A cell's hover text. With ``background`` the last class is the background: its row counts
    false positives, its column missed objects."""
    last = len(names) - 1
    if background and t == last:
        return (f"{count} {names[p]} detection{'s' * (count != 1)} on no object "
                f"({100 * frac:.1f}% of the false positives)")
    if background and p == last:
        return f"{names[t]} missed: {count} {unit} ({100 * frac:.1f}% of {names[t]})"
    verb = "detected as" if background else "predicted as"
    return f"{names[t]} {verb} {names[p]}: {count} {unit} ({100 * frac:.1f}% of {names[t]})"


def _html_matrix(matrix: np.ndarray, names: Sequence[str], unit: str, background: bool = False) -> str:
    m = np.asarray(matrix)
    rows = m.sum(1)
    last = len(names) - 1
    head = "".join(f'<th title="{escape(n)}">{"bg" if background and k == last else k}</th>'
                   for k, n in enumerate(names))
    body = []
    for t, name in enumerate(names):
        cells = []
        for p in range(len(names)):
            if background and t == p == last:  # background taken for background: not counted
                cells.append("<td></td>")
                continue
            frac = m[t, p] / rows[t] if rows[t] else 0.0
            tip = _tip(names, t, p, int(m[t, p]), frac, unit, background)
            cells.append(f'<td style="{_colour(frac, t == p)}" title="{escape(tip)}">{int(m[t, p])}</td>')
        label = "bg" if background and t == last else t
        body.append(f"<tr><td><b>{label}</b> {escape(name)}</td>{''.join(cells)}<td>{int(rows[t])}</td></tr>")
    corner = "ground truth \\ detected as" if background else "true \\ predicted"
    return (f'<table class="confusion"><thead><tr><th>{corner}</th>{head}<th>total</th></tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>")


def _figure_matrix(matrix: np.ndarray, names: Sequence[str]):
    from .report import figure

    m = np.asarray(matrix, dtype=np.float64)
    rows = m.sum(1, keepdims=True)
    frac = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    n = len(names)
    side = min(12.0, 4.0 + 0.08 * n)
    fig, ax = figure(side, side)
    im = ax.imshow(np.sqrt(frac), cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if n <= 80:
        ax.set_xticks(range(n))
        ax.set_yticks(range(n))
        ax.set_xticklabels(names, rotation=90, fontsize=6)
        ax.set_yticklabels(names, fontsize=6)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    fig.colorbar(im, ax=ax, fraction=0.046, label="sqrt(fraction of the true class)")
    fig.tight_layout()
    return fig


def add_confusion_matrix(report: Report, matrix: np.ndarray, names: Sequence[str], unit: str = "images",
                         top: int = 10, background: bool = False) -> None:
    """The matrix into the report's current section (an HTML table with counts, shaded by the share
    of the true class, for up to :data:`HTML_MAX_CLASSES` classes; a picture above that), then the
    ``top`` most confused pairs as a sortable table. ``background``: the last row and column are the
    background (detection: the row counts false positives, the column missed objects; its cells are
    errors, shaded red), and the pairs table lists confusions between classes only."""
    m = np.asarray(matrix)
    if len(m) <= HTML_MAX_CLASSES + int(background):
        if background:
            report.text("Rows: the ground truth's class, last the background (bg: detections on no object, "
                        "false positives); columns: the detection's class, last the background (objects "
                        f"missed), by class number; counts of {unit} (of detections in the bg row), blue on the "
                        "diagonal (right), red off it (wrong), shaded by the share of the row. Hover over a cell "
                        "for its names.", "note")
        else:
            report.text(f"Rows: the true class; columns: the prediction (by class number); counts of {unit}, "
                        "blue on the diagonal (right), red off it (wrong), shaded by the share of the row. "
                        "Hover over a cell for its names.", "note")
        report.html(f'<div class="scroll">{_html_matrix(m, names, unit, background)}</div>')
    else:
        report.image(_figure_matrix(m, names), f"confusion matrix of {len(m)} classes (rows: true, columns: "
                                               "predicted; shaded by the share of the true class)")
    if background:
        k = len(m) - 1
        pairs = [x for x in most_confused(m, m.size) if x[0] < k and x[1] < k][:top]
        caption = (f"The {len(pairs)} largest confusions between classes, by their share of the true class "
                   "(false positives and missed objects: the per-class table).")
    else:
        pairs = most_confused(m, top)
        caption = f"The {len(pairs)} largest confusions, by their share of the true class."
    if pairs:
        report.table(["true class", "predicted as", unit, "% of the true class"],
                     [[names[t], names[p], n, pct] for t, p, n, pct in pairs], caption=caption)
    elif background:
        report.text("No confusion between classes.", "note")
    else:
        report.text("No confusion: every one of the " + unit + " is on the diagonal.", "note")
