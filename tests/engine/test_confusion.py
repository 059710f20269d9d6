"""engine.confusion: counts, per-class accuracy and the most confused pairs against hand-made cases."""
import re

import numpy as np
import pytest

from engine.confusion import add_confusion_matrix, confusion_matrix, most_confused, per_class_accuracy
from engine.report import Report


def test_counts_by_hand():
    labels = [0, 0, 1, 1, 1, 2]
    predictions = [0, 1, 1, 1, 2, 0]
    expected = np.array([[1, 1, 0],
                         [0, 2, 1],
                         [1, 0, 0]])
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3), expected)
    assert per_class_accuracy(expected) == [50.0, pytest.approx(200 / 3), 0.0]
    assert per_class_accuracy(np.zeros((2, 2), int)) == [None, None]  # no samples: no accuracy


def test_out_of_range_and_length_mismatch_are_refused():
    with pytest.raises(ValueError, match="outside 0..1"):
        confusion_matrix([0, 2], [0, 1], 2)
    with pytest.raises(ValueError, match="2 labels but 1 predictions"):
        confusion_matrix([0, 1], [0], 2)


def test_most_confused_order():
    m = np.array([[5, 3, 1],
                  [3, 0, 0],
                  [0, 7, 2]])
    # the largest share of the true class first; the diagonal and zeros left out
    assert most_confused(m, 10) == [(1, 0, 3, 100.0), (2, 1, 7, pytest.approx(700 / 9)),
                                    (0, 1, 3, pytest.approx(100 / 3)), (0, 2, 1, pytest.approx(100 / 9))]
    assert [p[:2] for p in most_confused(m, 2)] == [(1, 0), (2, 1)]
    # equal shares: the larger count first, then by true class
    assert [p[:2] for p in most_confused(np.array([[0, 1, 1], [2, 2, 0], [1, 0, 1]]), 10)] == \
        [(1, 0), (0, 1), (0, 2), (2, 0)]


def test_matrix_as_html_or_picture(tmp_path):
    small = Report(str(tmp_path / "a"), "t")
    small.section("m")
    add_confusion_matrix(small, np.array([[4, 1], [0, 5]]), ["cat", "dog"])
    html = open(small.write(), encoding="utf-8").read()
    assert 'class="confusion"' in html and "cat predicted as dog: 1 images (20.0% of cat)" in html
    big = Report(str(tmp_path / "b"), "t")
    big.section("m")
    n = 40
    add_confusion_matrix(big, np.eye(n, dtype=int) * 3 + 1, [f"c{i}" for i in range(n)])
    html = open(big.write(), encoding="utf-8").read()
    assert 'class="confusion"' not in html and html.count("<img") == 1  # too many classes for a table


def test_detection_matrix_with_a_background_row_and_column(tmp_path):
    """Detection's matrix: the last row counts false positives, the last column missed objects; their
    cells are errors (red), the background-background cell is empty, and the pairs table lists
    confusions between classes only."""
    m = np.array([[5, 1, 2],    # cat: 5 found, 1 detected as dog, 2 missed
                  [0, 3, 0],    # dog
                  [4, 6, 0]])   # background: 4 cat and 6 dog detections on no object
    report = Report(str(tmp_path / "r"), "t")
    report.section("m")
    add_confusion_matrix(report, m, ["cat", "dog", "background"], unit="objects", background=True)
    html = open(report.write(), encoding="utf-8").read()
    assert "ground truth \\ detected as" in html
    assert "cat detected as dog: 1 objects (12.5% of cat)" in html
    assert "cat missed: 2 objects (25.0% of cat)" in html
    assert "6 dog detections on no object (60.0% of the false positives)" in html
    rows = re.findall(r"<tr>(.*?)</tr>", html.split('class="confusion"')[1].split("</table>")[0])
    assert rows[-1].startswith("<td><b>bg</b> background</td>") and "<td></td><td>10</td>" in rows[-1]
    from engine.confusion import _colour
    assert f'style="{_colour(0.6, False)}"' in rows[-1]  # a false positive is an error: shaded red
    assert f'style="{_colour(0.25, False)}"' in rows[1]  # so is a missed object (rows[0]: the header)
    pairs = html.split("largest confusions between classes")[1]
    assert "<td>cat</td><td>dog</td>" in pairs and "background" not in pairs.split("</table>")[0]
