"""Every number the prose quotes is one the run printed, or one of the paper's or the deck's (issue 20).

A reader trusts ``executed/`` and ``solutions/`` without running anything, so a number in their
prose must be one that the notebook's run shows (an output, or the code that sets it), or a value
the paper or the study deck published. Measured numbers belong in outputs: a notebook renders the
sentence that quotes them from its variables (``display(Markdown(f"..."))``), and that output is
regenerated with the run. This test reads the Markdown cells of ``executed/*.ipynb`` and the prose
of ``solutions/*.md`` (each checked against the executed copy of its notebook) and lists every
quoted number it cannot trace.

A quoted number is a decimal with two or more decimals (``0.784``, ``23.59``) or a percentage with
a decimal (``88.1 %``), in prose: code spans, fenced code, $math$, link targets and arXiv
identifiers are not quotes. It is traced when some number of the pool rounds to it at its
precision (``0.78`` matches a printed ``0.784``; ``88.1 %`` matches ``0.881`` or ``88.1``).
"""
import copy
import csv
import json
import re
from pathlib import Path

import pytest

from mvtec_tutorial import supervised_benchmark

REPOSITORY = Path(__file__).resolve().parent.parent
EXECUTED = sorted((REPOSITORY / "executed").glob("*.ipynb"))
SOLUTIONS = sorted((REPOSITORY / "solutions").glob("*.md"))
PAPER_TABLES = sorted((REPOSITORY / "mvtec_tutorial" / "paper_tables").glob("*.csv"))

QUOTED = re.compile(r"(?<![\w.])(\d+\.\d+)\s*%|(?<![\w.])(\d+\.\d{2,})(?![\d])")
NUMBER = re.compile(r"\d+\.\d+|\d+")
NOT_PROSE = re.compile(r"```.*?```|`[^`\n]*`|\$\$.*?\$\$|\$[^$\n]*\$|\]\([^)]*\)|https?://\S+|arXiv[:\s]*\S+",
                       re.DOTALL)


def quoted_numbers(text):
    """(as written, value, decimals of the value) for every number quoted in Markdown prose."""
    found = []
    for match in QUOTED.finditer(NOT_PROSE.sub(" ", text)):
        percent, plain = match.groups()
        if percent is not None:
            found.append((percent + " %", float(percent) / 100, len(percent.split(".")[1]) + 2))
        else:
            found.append((plain, float(plain), len(plain.split(".")[1])))
    return found


def numbers_in(text):
    return {float(number) for number in NUMBER.findall(text)}


def shown(cell):
    """Everything a code cell shows: its code and its text outputs (not images)."""
    parts = ["".join(cell["source"])]
    for output in cell.get("outputs", []):
        parts.append("".join(output.get("text", "")))
        parts += ["".join(value) for kind, value in output.get("data", {}).items() if kind.startswith("text/")]
    return "\n".join(parts)


def published_values():
    """The paper's Tables 2 and 3 (package data) and the deck's accuracies (:data:`DECK_ACCURACY`)."""
    values = {accuracy for _, _, accuracy in supervised_benchmark.DECK_ACCURACY}
    for table in PAPER_TABLES:
        rows = csv.reader(line for line in table.read_text().splitlines() if not line.startswith("#"))
        values |= {float(cell) for row in list(rows)[1:] for cell in row[2:] if cell}
    return values


def traced(value, decimals, pool):
    tolerance = 0.5 * 10 ** -decimals + 1e-9
    return any(abs(x - value) <= tolerance or abs(x / 100 - value) <= tolerance for x in pool)


def untraced(cells, pool, where):
    """``where [cell] number`` for every number quoted in a Markdown cell that ``pool`` does not hold."""
    return [f"{where} [{index}] {written}" for index, cell in enumerate(cells) if cell["cell_type"] == "markdown"
            for written, value, decimals in quoted_numbers("".join(cell["source"]))
            if not traced(value, decimals, pool)]


def run_pool(cells):
    """The numbers a notebook's run shows, with the published ones."""
    return set().union(published_values(), *(numbers_in(shown(cell)) for cell in cells
                                             if cell["cell_type"] == "code"))


def check_notebook(notebook, name):
    cells = notebook["cells"]
    return set(untraced(cells, run_pool(cells), name))


def test_quoted_numbers_rule():
    assert [q[0] for q in quoted_numbers("AUROC 0.784 and 88.1 % of 19 images, 0.5 px, `0.123`, $\\approx 0.69$, "
                                         "[arXiv 2011.08785](https://arxiv.org/abs/2011.08785), 23.59.")] == [
        "0.784", "88.1 %", "23.59"]
    assert traced(0.881, 3, {88.1}) and traced(0.78, 2, {0.784}) and not traced(0.77, 2, {0.759})


@pytest.mark.parametrize("copy_path", EXECUTED, ids=lambda path: path.stem)
def test_executed_markdown_quotes_only_numbers_the_run_shows(copy_path):
    cells = json.loads(copy_path.read_text())["cells"]
    missing = untraced(cells, run_pool(cells), copy_path.name)
    assert not missing, ("numbers quoted in Markdown that the notebook's run does not show (render them from the "
                         "variables, or name and read their source):\n" + "\n".join(missing))


@pytest.mark.parametrize("solution", SOLUTIONS, ids=lambda path: path.stem)
def test_solutions_quote_only_numbers_their_notebook_shows(solution):
    copy_path = REPOSITORY / "executed" / (solution.stem + ".ipynb")
    cells = json.loads(copy_path.read_text())["cells"]
    prose = {"cell_type": "markdown", "source": [solution.read_text()]}
    missing = untraced([prose], run_pool(cells), f"solutions/{solution.name} (against executed/{copy_path.name})")
    assert not missing, ("numbers quoted in a solution that the executed notebook does not show (quote the "
                         "notebook's output, or make the number a cell's output):\n" + "\n".join(missing))


def test_a_changed_quoted_number_is_caught():
    """A sentence quoting a printed number passes; the same sentence with the number changed fails."""
    notebook = json.loads((REPOSITORY / "executed" / "02_supervised_baselines.ipynb").read_text())
    pool = run_pool(notebook["cells"])
    printed = next(written for cell in notebook["cells"] if cell["cell_type"] == "code"
                   for written, value, decimals in quoted_numbers(shown(cell)) if "%" not in written)
    changed = next(f"{candidate:.3f}" for candidate in (0.111 * k + 0.0007 for k in range(1, 9))
                   if not traced(round(candidate, 3), 3, pool))
    index = next(i for i, cell in enumerate(notebook["cells"]) if cell["cell_type"] == "markdown")
    quoting = copy.deepcopy(notebook)
    quoting["cells"][index]["source"].append(f"\n\nThe run printed {printed}.")
    before = check_notebook(notebook, "02")
    assert check_notebook(quoting, "02") == before
    quoting["cells"][index]["source"][-1] = f"\n\nThe run printed {changed}."
    assert check_notebook(quoting, "02") - before == {f"02 [{index}] {changed}"}
