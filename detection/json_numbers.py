"""Numbers in a decoded COCO json, tested as fast as the records come: integers, finite reals, a box's
four values (what :mod:`detection.annotations` and :mod:`detection.coco_results` validate). No torch here.
"""
from __future__ import annotations

import math
import numbers


# The JSON decoder gives int and float: those are tested by type first, because the abstract-class
# check (numbers.Real) costs ~1 µs a value, which is half of validating a 2000-record results file
# (benchmarks/eval_startup.py). Other number types (numpy scalars) take the general test.
def _is_int(v) -> bool:
    return type(v) is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def _is_number(v) -> bool:
    t = type(v)
    if t is float:
        return math.isfinite(v)
    if t is int:
        return True
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)


_PLAIN_NUMBERS = {int, float}


def _all_numbers(values: list) -> bool:
    """``all(_is_number(v) for v in values)``, at C speed for the json decoder's int and float (a
    polygon has dozens of coordinates: a call per value was most of the time to clean COCO)."""
    types = set(map(type, values))
    if types <= _PLAIN_NUMBERS:
        try:
            return float not in types or all(map(math.isfinite, values))
        except OverflowError:  # an int too large for a float
            return False
    return all(_is_number(v) for v in values)


def _box_numbers(bbox: list) -> bool:
    """``_all_numbers`` for the four values of a box, written out: it runs once per annotation."""
    x, y, w, h = bbox
    try:
        if type(x) in _PLAIN_NUMBERS and type(y) in _PLAIN_NUMBERS and type(w) in _PLAIN_NUMBERS \
                and type(h) in _PLAIN_NUMBERS and math.isfinite(x + y + w + h):
            return True
    except OverflowError:
        pass
    return all(_is_number(v) for v in bbox)  # unusual types, or a sum past the float range
