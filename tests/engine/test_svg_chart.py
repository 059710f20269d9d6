"""engine.svg_chart: the reports' line and stacked-area charts, written as SVG text."""
import re
import xml.etree.ElementTree as ET

import pytest

from engine.report import Report
from engine.svg_chart import Chart, nice_ticks


@pytest.mark.parametrize("lo,hi,expected", [
    (0, 1, [0, 0.2, 0.4, 0.6, 0.8, 1.0]),
    (0, 300, [0, 100, 200, 300]),
    (0.25, 3.1, [0, 1, 2, 3, 4]),
    (0.3, 2.1, [0, 0.5, 1.0, 1.5, 2.0, 2.5]),
    (0, 0.02, [0, 0.005, 0.01, 0.015, 0.02]),
    (300, 300, [260, 280, 300, 320, 340]),  # one value: a range around it
])
def test_nice_ticks_are_round_and_cover_the_range(lo, hi, expected):
    assert nice_ticks(lo, hi) == pytest.approx(expected)


def _points(svg, tag):
    found = re.findall(rf'<{tag} points="([^"]+)"', svg)
    return [[tuple(float(v) for v in p.split(",")) for p in m.split()] for m in found]


def test_chart_maps_data_into_its_panels():
    chart = Chart((400, 300))
    left = chart.panel("a", "recall", "precision", (0, 1), (0, 1), [0, 0.5, 1], [0, 0.5, 1])
    left.line([0, 1], [1, 0], "#123456", label="cat")
    left.line([0, None, 1], [0, 0.5, float("nan")], "#654321", dash=True)  # no point without a value
    chart.panel("b", "iteration").areas([0, 1], [[0.2, 0.2], [0.5, 1.0]], ["#ffffff", "#ff0000"])
    svg = chart.to_svg()
    root = ET.fromstring(svg)  # well-formed
    assert root.get("width") == "800" and root.get("height") == "300"
    line, second = _points(svg, "polyline")
    # panel a: plot area x 48..382, y 24..264 (MARGIN): (0, 1) is its top-left, (1, 0) its bottom-right
    assert line == [(48.0, 24.0), (382.0, 264.0)] and second == [(48.0, 264.0)]
    assert 'stroke-dasharray="5 3"' in svg and ">cat</text>" in svg  # the dashed line; the legend
    bands = _points(svg, "polygon")  # panel b: from x 400; the bands 0..0.2 and 0.2..[0.5, 1]
    assert len(bands) == 2 and bands[1][0][0] == 448.0 and bands[1][1][1] == 24.0
    for text in (">a</text>", ">b</text>", ">recall</text>", ">precision</text>", ">0.5</text>"):
        assert text in svg


def test_report_writes_a_chart_as_an_svg_file(tmp_path):
    chart = Chart()
    chart.panel("title <&>").line([0, 1], [0, 1], "#000")
    report = Report(str(tmp_path / "r"), "t")
    report.image(chart, "a chart")
    html = open(report.write(), encoding="utf-8").read()
    name = re.findall(r'<img src="images/([^"]+)"', html)[0]
    assert name.endswith(".svg")
    svg = open(tmp_path / "r" / "images" / name, encoding="utf-8").read()
    assert "title &lt;&amp;&gt;" in svg and ET.fromstring(svg) is not None
