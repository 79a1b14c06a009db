"""Tests for mvtec_tutorial.quiz and the answer keys the notebooks' "Check yourself" cells read.

Every ``quiz.check("NN", k, ...)`` in a notebook must find its entry in
``mvtec_tutorial/quiz_answers/NN.json``, every entry must be asked by some notebook, and every
key must accept its own answer. The notebooks and keys are found on disk, so a notebook that
lands later is checked without editing this file.
"""
import json
import re
from importlib import resources
from pathlib import Path

import pytest

from mvtec_tutorial import quiz

NOTEBOOKS = sorted((Path(__file__).parents[1] / "notebooks").glob("*.ipynb"))
KEYS = sorted(path.stem for path in (resources.files("mvtec_tutorial") / "quiz_answers").iterdir()
              if path.name.endswith(".json"))
#: quiz.check("07", 2, ANSWER_2): the notebook's number and the question's, as written in a code cell.
CHECK_CALL = re.compile(r"""quiz\.check\(\s*["'](\d+)["']\s*,\s*["']?(\d+)["']?\s*,""")


def questions_asked(notebook: Path) -> list[tuple[str, str]]:
    """(notebook number, question number) of every quiz.check call in a notebook's code cells."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    source = "\n".join("".join(cell["source"]) for cell in cells if cell["cell_type"] == "code")
    return CHECK_CALL.findall(source)


ASKED = {notebook.name: questions_asked(notebook) for notebook in NOTEBOOKS}


@pytest.mark.parametrize("notebook", [path.name for path in NOTEBOOKS if ASKED[path.name]])
def test_every_question_a_notebook_asks_has_a_key_entry(notebook):
    number = notebook.split("_")[0]
    assert {asked for asked, _ in ASKED[notebook]} == {number}, f"{notebook} checks another notebook's key"
    assert number in KEYS, f"{notebook} asks questions but mvtec_tutorial/quiz_answers/{number}.json is missing"
    key = quiz.answer_key(number)
    missing = sorted({question for _, question in ASKED[notebook]} - set(key), key=int)
    assert not missing, f"{notebook} asks questions {missing} that {number}.json does not answer"


@pytest.mark.parametrize("number", KEYS)
def test_every_key_entry_is_asked_and_accepts_its_own_answer(number):
    key = quiz.answer_key(number)
    asked = {question for questions in ASKED.values() for notebook, question in questions if notebook == number}
    assert set(key) <= asked, f"{number}.json answers questions {sorted(set(key) - asked)} no notebook asks"
    for question, entry in key.items():
        assert entry.get("why"), f"{number}.json question {question} has no 'why'"
        assert quiz.is_correct(number, question, entry["answer"])


def test_is_correct_ignores_case_and_spaces_and_honours_the_tolerance(tmp_path, monkeypatch):
    folder = tmp_path / "mvtec_tutorial" / "quiz_answers"
    folder.mkdir(parents=True)
    (folder / "99.json").write_text(json.dumps({"1": {"answer": "B", "why": "."},
                                                "2": {"answer": 0.5, "tolerance": 0.05, "why": "."}}))
    monkeypatch.setattr(quiz.resources, "files", lambda package: tmp_path / package)
    assert quiz.is_correct("99", 1, " b ") and not quiz.is_correct("99", 1, "c")
    assert quiz.is_correct("99", 2, "0.54") and not quiz.is_correct("99", 2, 0.56)
    assert not quiz.is_correct("99", 2, "half")
    with pytest.raises(ValueError, match="notebook 99 has no question 3; it has 1, 2"):
        quiz.is_correct("99", 3, "a")
    with pytest.raises(ValueError, match="no answer key for notebook '98'"):
        quiz.answer_key("98")


def test_check_prints_the_reason_only_when_right_or_asked(capsys, monkeypatch):
    monkeypatch.setattr(quiz, "answer_key", lambda notebook: {"1": {"answer": "a", "why": "Because."}})
    assert quiz.check("99", 1, "A") is True
    assert quiz.check("99", 1, "b") is False
    assert quiz.check("99", 1, "?") is False
    assert capsys.readouterr().out.splitlines() == [
        "question 1: right. Because.", "question 1: not yet; think again, or pass '?' to see the answer",
        "question 1: the answer is 'a'. Because."]
