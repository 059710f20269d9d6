"""Static HTML reports: one folder (``index.html`` + ``images/``) a user opens from ``file://``.

Every task's report (detection, semantic segmentation, classification, a dataset check) is built
with :class:`Report`, so they all look the same::

    report = Report("runs/x/report", "Mask R-CNN on chess pieces")
    report.section("COCO numbers", "<p>the 12 numbers of COCOeval</p>")
    report.table(["class", "AP"], [["king", 41.2], ["queen", 38.0]])
    report.image(fig, "precision-recall at IoU 0.5")   # a matplotlib figure, an RGB array or a file
    path = report.write()                               # runs/x/report/index.html

Offline by construction: the style sheet and the one small script (sortable tables) are inline,
images are files beside the page, nothing is fetched (no CDN, no web fonts). Bounded: photographs
are shrunk to thumbnails and written as JPEG, figures as SVG (text as text: small, fast, sharp), and once the
images reach ``max_mb`` (20 MB by default) further images are left out, each with a note saying so
and how to raise the limit. Matplotlib (Agg) draws the plots; nothing here needs torch.
"""
from __future__ import annotations

import contextlib
import gc
import html as _html
import math
import os
import re
import shutil
import sys
from typing import Any, Iterable, List, Optional, Sequence, Tuple

import numpy as np

__all__ = ["Report", "escape", "figure", "frozen_heap", "DEFAULT_MAX_MB"]

DEFAULT_MAX_MB = 20.0
THUMBNAIL_SIDE = 480  # longest side of a photograph in a gallery (pixels)
IMAGE_SIDE = 960  # longest side of a single photograph

_CSS = """
:root{--fg:#1d2330;--muted:#5b6475;--line:#d9dee7;--bg:#f6f7f9;--card:#fff;--accent:#2f6fdf}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#1d2330;color:#fff;padding:14px 24px}
header h1{margin:0;font-size:20px;font-weight:600}
header p{margin:4px 0 0;color:#c6ccd8;font-size:13px}
nav{position:sticky;top:0;z-index:2;background:#fff;border-bottom:1px solid var(--line);padding:6px 24px;
  white-space:nowrap;overflow-x:auto}
nav a{color:var(--accent);text-decoration:none;margin-right:16px;font-size:13px}
main{max-width:1280px;margin:0 auto;padding:8px 24px 40px}
section{background:var(--card);border:1px solid var(--line);border-radius:6px;margin:16px 0;padding:4px 18px 14px}
section h2{font-size:17px;margin:12px 0 8px}
h3{font-size:14px;margin:14px 0 6px}
p.note{color:var(--muted);font-size:13px;margin:4px 0 8px}
p.warn{color:#8a4b00;background:#fff4e0;border-left:3px solid #e0a030;padding:4px 8px;font-size:13px}
pre{background:#f3f4f7;border:1px solid var(--line);padding:8px;overflow:auto;font-size:12px;max-height:420px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}
th,td{border-bottom:1px solid var(--line);padding:3px 10px;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}
th{background:#eef1f6}
table.sortable th{cursor:pointer;user-select:none}
table.sortable th:after{content:" \\2195";color:#9aa3b2;font-size:11px}
table.sortable th.asc:after{content:" \\2191";color:var(--fg)}
table.sortable th.desc:after{content:" \\2193";color:var(--fg)}
tr:nth-child(even) td{background:#fafbfc}
td.bad{color:#b42318;font-weight:600}
figure{margin:8px 0 14px;display:inline-block;vertical-align:top;max-width:100%}
figure img{max-width:100%;height:auto;border:1px solid var(--line);background:#fff}
figcaption{color:var(--muted);font-size:12px;margin-top:2px;max-width:100%;overflow-wrap:anywhere}
div.gallery{display:flex;flex-wrap:wrap;gap:10px}
div.gallery figure{margin:0;width:calc(33.3% - 7px);min-width:240px}
div.gallery figure img{width:100%}
div.scroll{overflow-x:auto;max-width:100%}
details summary{cursor:pointer;color:var(--accent);margin:6px 0}
span.swatch{display:inline-block;width:12px;height:12px;border-radius:2px;margin:0 4px 0 12px;vertical-align:-1px;
  box-shadow:inset 0 0 0 1px rgba(0,0,0,.3)}
"""

# Sorting by a column's header: numbers numerically (cells carry data-v), NaN / missing last.
_SCRIPT = """
document.querySelectorAll("table.sortable").forEach(function(t){
  t.querySelectorAll("th").forEach(function(th,i){
    th.addEventListener("click",function(){
      var asc=!th.classList.contains("asc");
      t.querySelectorAll("th").forEach(function(h){h.classList.remove("asc","desc")});
      th.classList.add(asc?"asc":"desc");
      var body=t.tBodies[0],rows=Array.prototype.slice.call(body.rows);
      function key(r){var c=r.cells[i];var v=c.getAttribute("data-v");return v===null?c.textContent:parseFloat(v)}
      rows.sort(function(a,b){
        var x=key(a),y=key(b),nx=typeof x==="number",ny=typeof y==="number";
        if(nx&&isNaN(x))return 1; if(ny&&isNaN(y))return -1;
        var c=(nx&&ny)?x-y:String(x).localeCompare(String(y));
        return asc?c:-c});
      rows.forEach(function(r){body.appendChild(r)});
    });
  });
});
"""


def escape(text: Any) -> str:
    """HTML-escaped ``str(text)``."""
    return _html.escape(str(text), quote=True)


def figure(width: float = 6.4, height: float = 4.0, **subplots):
    """A matplotlib ``(fig, axes)`` drawn by Agg, outside pyplot (no global figure list to close,
    no GUI backend to pick); ``subplots``: ``nrows``, ``ncols``, ... of ``Figure.subplots``."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.subplots(**subplots)


@contextlib.contextmanager
def frozen_heap():
    """Python's garbage collector leaves the objects that exist now alone while the block runs
    (``gc.freeze``), then takes them back. A report allocates many small objects, which can start a
    full collection that scans the whole process (a trained model, its data): on the demo's Mask
    R-CNN that was 0.13 s of a 0.38 s report, at its end of training (benchmarks/report_speed.py).
    What the block itself leaves as garbage is collected as usual. A heap frozen already (loader
    workers were forked from it: engine.data.freeze_before_fork) stays frozen: unfreezing it would make
    the collector write into the pages the workers still share."""
    already = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not already:
            gc.unfreeze()


def _save_svg(fig, path: str) -> None:
    """``fig`` as SVG with its text as text (``svg.fonttype: none``): no glyph is rasterised, drawn
    as paths or compressed, the slow part of saving a figure as PNG (measured: the detection
    report's figures 30-40% faster to save, benchmarks/report_speed.py), and the lines stay sharp at
    any zoom. The browser draws the text in the same font (DejaVu Sans, else its sans-serif)."""
    import matplotlib

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "reskit"}):
        fig.savefig(path, format="svg", metadata={"Date": None})


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:40] or "x"


def _cell(value: Any, digits: int) -> str:
    """A table cell: numbers right-aligned with their value in data-v for sorting."""
    if isinstance(value, bool) or value is None:
        return f"<td>{escape('' if value is None else value)}</td>"
    if isinstance(value, (int, np.integer)):
        return f'<td data-v="{int(value)}">{int(value)}</td>'
    if isinstance(value, (float, np.floating)):
        v = float(value)
        if not math.isfinite(v):
            return '<td data-v="NaN">n/a</td>'
        return f'<td data-v="{v!r}">{v:.{digits}f}</td>'
    if isinstance(value, tuple) and len(value) == 2:  # (html shown, sort key)
        shown, key = value
        return f'<td data-v="{escape(key)}">{shown}</td>'
    return f"<td>{escape(value)}</td>"


class Report:
    """Sections of HTML, tables and images, written as ``directory/index.html`` + ``directory/images``.

    ``section(title)`` starts a section; ``text``, ``html``, ``pre``, ``table``, ``image`` and
    ``gallery`` add to the current one. ``max_mb`` bounds the images' total size (see the module
    docstring); ``limit_hint`` is how a user raises it (named in the note of an image left out).
    The folder's old ``images/`` are removed by :meth:`write`'s first image, so a rewritten report
    never keeps stale pictures.
    """

    def __init__(self, directory: str, title: str, subtitle: str = "", max_mb: float = DEFAULT_MAX_MB,
                 limit_hint: str = "raise the report's size limit"):
        self.directory = os.path.abspath(directory)
        self.title = title
        self.subtitle = subtitle
        self.max_mb = max_mb
        self.max_bytes = int(max_mb * 2 ** 20)
        self.limit_hint = limit_hint
        self.bytes_written = 0
        self.images_left_out = 0
        self._sections: List[Tuple[str, str, List[str]]] = []  # (anchor, title, blocks)
        self._counter = 0
        self._images_dir = os.path.join(self.directory, "images")
        self._fresh = False

    # ---- structure ---------------------------------------------------------------------------
    def section(self, title: str, html: str = "") -> "Report":
        anchor = _slug(title)
        taken = {a for a, _, _ in self._sections}
        base, n = anchor, 2
        while anchor in taken:
            anchor, n = f"{base}-{n}", n + 1
        self._sections.append((anchor, title, []))
        if html:
            self.html(html)
        return self

    def _blocks(self) -> List[str]:
        if not self._sections:
            self.section(self.title)
        return self._sections[-1][2]

    def html(self, html: str) -> "Report":
        """Raw HTML into the current section (escape user text with :func:`escape`)."""
        self._blocks().append(html)
        return self

    def heading(self, text: str) -> "Report":
        return self.html(f"<h3>{escape(text)}</h3>")

    def text(self, text: str, kind: str = "") -> "Report":
        """A paragraph; ``kind`` "note" (grey) or "warn" (highlighted)."""
        cls = f' class="{kind}"' if kind else ""
        return self.html(f"<p{cls}>{escape(text)}</p>")

    def pre(self, text: str, summary: Optional[str] = None) -> "Report":
        """Preformatted text; with ``summary`` folded under a click-to-open line."""
        block = f"<pre>{escape(text)}</pre>"
        if summary:
            block = f"<details><summary>{escape(summary)}</summary>{block}</details>"
        return self.html(block)

    def table(self, columns: Sequence[str], rows: Iterable[Sequence[Any]], sortable: bool = True,
              caption: str = "", digits: int = 1) -> "Report":
        """A table; numbers are shown with ``digits`` decimals and sort numerically (NaN: "n/a",
        sorted last). A cell may be ``(html, sort_key)`` to show markup."""
        head = "".join(f"<th>{escape(c)}</th>" for c in columns)
        body = "".join("<tr>" + "".join(_cell(v, digits) for v in row) + "</tr>" for row in rows)
        cls = ' class="sortable"' if sortable else ""
        cap = f'<p class="note">{escape(caption)}</p>' if caption else ""
        return self.html(f'{cap}<div class="scroll"><table{cls}><thead><tr>{head}</tr></thead>'
                         f"<tbody>{body}</tbody></table></div>")

    # ---- images ------------------------------------------------------------------------------
    def image(self, source, caption: str = "", max_side: int = IMAGE_SIDE) -> "Report":
        """A chart (engine.svg_chart), a matplotlib figure (closed afterwards), an RGB ``uint8`` array or
        an image file."""
        return self.html(self._figure_html(source, caption, max_side))

    def gallery(self, items: Iterable[Tuple[Any, str]], max_side: int = THUMBNAIL_SIDE) -> "Report":
        """Thumbnails side by side, each a link to itself (opens larger): ``items`` of
        (figure / RGB array / path, caption)."""
        cells = "".join(self._figure_html(src, cap, max_side, link=True) for src, cap in items)
        return self.html(f'<div class="gallery">{cells}</div>')

    def _figure_html(self, source, caption: str, max_side: int, link: bool = False) -> str:
        name = self._save(source, caption, max_side)
        cap = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
        if name is None:
            self.images_left_out += 1
            return (f'<figure><p class="warn">image left out: the report reached its size limit of {self.max_mb:g} MB '
                    f'({escape(self.limit_hint)})</p>{cap}</figure>')
        img = f'<img src="images/{name}" alt="{escape(caption or name)}">'
        if link:
            img = f'<a href="images/{name}">{img}</a>'
        return f"<figure>{img}{cap}</figure>"

    def _save(self, source, caption: str, max_side: int) -> Optional[str]:
        """Write one image into images/; its file name, or None once over the size budget."""
        if not self._fresh:  # first image of this report: drop a previous report's pictures
            shutil.rmtree(self._images_dir, ignore_errors=True)
            os.makedirs(self._images_dir, exist_ok=True)
            self._fresh = True
        self._counter += 1
        stem = f"{self._counter:03d}-{_slug(caption or 'image')}"
        over = self.bytes_written >= self.max_bytes
        if hasattr(source, "to_svg"):  # an engine.svg_chart.Chart
            name = stem + ".svg"
            if not over:
                with open(os.path.join(self._images_dir, name), "w", encoding="utf-8") as f:
                    f.write(source.to_svg())
        elif hasattr(source, "savefig"):  # a matplotlib figure
            name = stem + ".svg"
            if not over:
                _save_svg(source, os.path.join(self._images_dir, name))
            if "matplotlib.pyplot" in sys.modules:  # a pyplot figure stays in pyplot's list until closed
                sys.modules["matplotlib.pyplot"].close(source)
        else:
            import cv2

            if isinstance(source, (str, os.PathLike)):
                from .image_io import read_image
                source = read_image(str(source))
            image = np.ascontiguousarray(source)
            if image.ndim == 2:
                image = np.repeat(image[:, :, None], 3, axis=2)
            scale = max_side / max(image.shape[:2])
            if scale < 1:
                size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            name = stem + ".jpg"
            if not over and not cv2.imwrite(os.path.join(self._images_dir, name),
                                            cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85]):
                raise OSError(f"{self._images_dir}: could not write {name} (is the folder writable?)")
        if over:
            return None
        path = os.path.join(self._images_dir, name)
        size = os.path.getsize(path)
        if self.bytes_written + size > self.max_bytes:
            os.remove(path)
            self.bytes_written = self.max_bytes  # later images are left out too: no holes in a sequence
            return None
        self.bytes_written += size
        return name

    # ---- output ------------------------------------------------------------------------------
    def render(self) -> str:
        nav = "".join(f'<a href="#{a}">{escape(t)}</a>' for a, t, _ in self._sections)
        body = "".join(f'<section id="{a}"><h2>{escape(t)}</h2>{"".join(blocks)}</section>'
                       for a, t, blocks in self._sections)
        sub = f"<p>{escape(self.subtitle)}</p>" if self.subtitle else ""
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                "<meta name=\"viewport\" content=\"width=device-width,initial-scale=1\">"
                f"<title>{escape(self.title)}</title><link rel=\"icon\" href=\"data:,\">"
                f"<style>{_CSS}</style></head><body><header><h1>{escape(self.title)}</h1>{sub}</header>"
                f"<nav>{nav}</nav><main>{body}</main><script>{_SCRIPT}</script></body></html>\n")

    def write(self) -> str:
        """Write ``index.html``; returns its path."""
        os.makedirs(self.directory, exist_ok=True)
        if not self._fresh:  # a report without images: no stale pictures of an earlier one either
            shutil.rmtree(self._images_dir, ignore_errors=True)
        path = os.path.join(self.directory, "index.html")
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(self.render())
        os.replace(tmp, path)
        return path
