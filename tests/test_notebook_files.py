"""The notebooks as files: sources without outputs, and executed copies that match them."""
import json
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPOSITORY / "notebooks").glob("*.ipynb"))
EXECUTED = REPOSITORY / "executed"
#: Executed copies must stay readable on a web page (issue 12); figure resolution is chosen for it.
MAX_EXECUTED_MEGABYTES = 5


def code_cells(path):
    return ["".join(cell["source"]) for cell in json.loads(path.read_text())["cells"] if cell["cell_type"] == "code"]


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_notebooks_are_committed_without_outputs(notebook):
    cells = json.loads(notebook.read_text())["cells"]
    stored = [i for i, cell in enumerate(cells) if cell["cell_type"] == "code"
              and (cell["outputs"] or cell.get("execution_count") is not None)]
    assert not stored, (f"{notebook.name} holds outputs in cells {stored}; clear them with "
                        f"`jupyter nbconvert --clear-output --inplace notebooks/{notebook.name}`")


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda path: path.stem)
def test_every_notebook_has_an_executed_copy_with_the_same_code(notebook):
    copy = EXECUTED / notebook.name
    command = f"MVTEC_ROOT=path/to/mvtec_ad make executed NOTEBOOK={notebook.stem}"
    assert copy.is_file(), f"executed/{notebook.name} is missing; run `{command}`"
    assert code_cells(copy) == code_cells(notebook), (
        f"executed/{notebook.name} no longer matches notebooks/{notebook.name}; run `{command}`")
    megabytes = copy.stat().st_size / 2 ** 20
    assert megabytes < MAX_EXECUTED_MEGABYTES, f"executed/{notebook.name} is {megabytes:.1f} MB; shrink its figures"


def test_executed_copies_carry_the_dataset_licence():
    note = (EXECUTED / "LICENSE.md").read_text()
    assert "CC BY-NC-SA 4.0" in note and "MVTec" in note
    assert not [path.name for path in EXECUTED.glob("*.ipynb") if not (REPOSITORY / "notebooks" / path.name).exists()]
