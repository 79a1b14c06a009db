"""One check for a number a user passes: metrics, thresholds and the methods' fit all use it.

Kept apart from :mod:`mvtec_tutorial.metrics` because fitting a detector must not import the
metrics (see :data:`mvtec_tutorial.settings.NOT_RUN_BY_FIT`), while both refuse bad numbers alike.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def check_scalar(value: Any, name: str, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False, high_open: bool = False, integer: bool = False,
                 hint: str = "") -> Any:
    """Return ``value`` after checking it is one real number (or integer) in a range.

    Parameters
    ----------
    value : object
        The number to check; Python and numpy numbers pass, strings, bools, arrays and NaN do not.
    name : str
        Argument name used in the error message.
    low, high : float, optional
        Bounds of the valid range; None means unbounded.
    low_open, high_open : bool, default=False
        Exclude the bound itself, e.g. ``low=0, low_open=True`` for "> 0".
    integer : bool, default=False
        Require an integer (Python or numpy).
    hint : str, default=""
        Appended to the message, e.g. the usual value.

    Returns
    -------
    The unchanged ``value``.

    Raises
    ------
    TypeError
        If ``value`` is not a number of the required kind.
    ValueError
        If it is NaN or outside the range; the message names ``name`` and the range.

    Examples
    --------
    >>> check_scalar(0.3, "fpr_limit", low=0, high=1, low_open=True)
    0.3
    >>> check_scalar("0.3", "fpr_limit", low=0, high=1, low_open=True)
    Traceback (most recent call last):
    TypeError: fpr_limit must be a real number in (0, 1], got '0.3' (str)
    """
    expected = "an integer" if integer else "a real number"
    if low is not None and high is not None:
        expected += f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        expected += f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        expected += f" {'<' if high_open else '<='} {high}"
    hint = f"; {hint}" if hint else ""
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {expected}, got {value!r} ({type(value).__name__}){hint}")
    if math.isnan(value):
        raise ValueError(f"{name} is NaN; it must be {expected}{hint}")
    if ((low is not None and (value < low or (low_open and value == low)))
            or (high is not None and (value > high or (high_open and value == high)))):
        raise ValueError(f"{name} must be {expected}, got {value!r}{hint}")
    return value
