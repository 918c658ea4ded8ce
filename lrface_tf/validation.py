"""Checks of numbers at the edge (constructors and flags), with errors that say what to do.

A bad hyper-parameter stops where it is given, in one line that names it,
instead of failing deep inside TensorFlow or training silently on nonsense.
"""

from __future__ import annotations

import math


def _number(name, value):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def check_positive(name, value):
    """`value` as a float > 0, or a ValueError naming `name`."""
    v = _number(name, value)
    if v <= 0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return v


def check_non_negative(name, value):
    """`value` as a float >= 0, or a ValueError naming `name`."""
    v = _number(name, value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return v


def check_int(name, value, minimum=None, allow_none=False):
    """`value` as an int (>= `minimum`), or a ValueError naming `name`; None passes if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not _is_num(value) or not float(value).is_integer():
        raise ValueError(f"{name} must be an integer, got {value!r}")
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    return v


def check_fraction(name, value):
    """`value` as a float in [0, 1], or a ValueError naming `name`."""
    v = _number(name, value)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be in [0, 1], got {value!r}")
    return v


def _is_num(value):
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
