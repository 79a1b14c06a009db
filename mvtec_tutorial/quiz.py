"""Recall questions a learner can check: the answer key of every notebook's "Check yourself" cells.

Each notebook ends with short questions whose answers are a letter, a number or a word. The
learner writes the answer into a cell and runs :func:`check`, which says whether it is right and
why. The answer key is package data (``mvtec_tutorial/quiz_answers/NN.json``, one file per
notebook); the worked solutions of the longer exercises are in the repository's ``solutions/``.

A key entry looks like ``{"1": {"answer": "b", "why": "..."}}``; a numeric answer may carry a
tolerance, ``{"answer": 0.5, "tolerance": 0.05, "why": "..."}``.
"""
from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any


def answer_key(notebook: str) -> dict[str, dict[str, Any]]:
    """The answer key of one notebook, e.g. ``answer_key("03")``.

    Raises
    ------
    ValueError
        If the notebook has no answer key.
    """
    path = resources.files("mvtec_tutorial") / "quiz_answers" / f"{notebook}.json"
    if not path.is_file():
        raise ValueError(f"no answer key for notebook {notebook!r}; notebooks are named by their number, e.g. '03'")
    with path.open(encoding="utf-8") as file:
        return json.load(file)


def is_correct(notebook: str, question: int | str, answer: Any) -> bool:
    """Whether ``answer`` is the key's answer (letters and words ignore case and spaces).

    Raises
    ------
    ValueError
        If the notebook or the question has no key entry.
    """
    key = answer_key(notebook)
    entry = key.get(str(question))
    if entry is None:
        raise ValueError(f"notebook {notebook} has no question {question}; it has {', '.join(sorted(key))}")
    expected = entry["answer"]
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        try:
            value = float(answer)
        except (TypeError, ValueError):
            return False
        return math.isclose(value, expected, rel_tol=0.0, abs_tol=entry.get("tolerance", 1e-9))
    return str(answer).strip().lower().replace(" ", "") == str(expected).strip().lower().replace(" ", "")


def check(notebook: str, question: int | str, answer: Any) -> bool:
    """Print whether ``answer`` is right, with the reason once it is (or when the learner gives up).

    Parameters
    ----------
    notebook : str
        The notebook's number, e.g. ``"03"``.
    question : int or str
        The question's number in the notebook's "Check yourself" section.
    answer : Any
        The learner's answer; ``None`` means not answered yet, ``"?"`` shows the answer.

    Returns
    -------
    bool
        True when the answer is right.

    Examples
    --------
    >>> check("01", 1, None)
    question 1: not answered yet
    False
    """
    if answer is None:
        print(f"question {question}: not answered yet")
        return False
    entry = answer_key(notebook)[str(question)]
    if answer == "?":
        print(f"question {question}: the answer is {entry['answer']!r}. {entry['why']}")
        return False
    right = is_correct(notebook, question, answer)
    print(f"question {question}: " + (f"right. {entry['why']}" if right else
                                      "not yet; think again, or pass '?' to see the answer"))
    return right
