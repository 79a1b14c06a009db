"""Notebook 03 reports the benchmark's numbers: it measures through the protocol functions only.

Issue 11: a notebook that retypes fit / threshold / predict / evaluate drifts from the benchmark
(notebook 03 once called an image defective when any pixel passed the threshold, the benchmark
asks for a blob of the minimum defect area). Here the notebook's own parameters cell is run in
fast mode, its AE-SSIM cell is measured the way its code does, and every metric must equal the
benchmark's cell for the same settings.
"""
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mvtec_tutorial import benchmark, data, metrics, quiz

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "03_autoencoders.ipynb"
#: Calls that would mean a step of the protocol is written out by hand in the notebook.
HAND_WRITTEN_STEPS = (".fit(", "metrics.evaluate(", "thresholds.", "min_defect_area_threshold(")


def code_cells():
    cells = json.loads(NOTEBOOK.read_text())["cells"]
    return [cell for cell in cells if cell["cell_type"] == "code"]


@pytest.fixture(scope="module")
def parameters():
    """The notebook's parameters cell, run as in fast mode (``make test``)."""
    cell = next(cell for cell in code_cells() if "parameters" in cell["metadata"].get("tags", []))
    namespace = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MVTEC_TUTORIAL_FAST", "1")
        exec("".join(cell["source"]), namespace)
    return namespace


def test_notebook_03_measures_through_the_protocol_only():
    source = "\n".join("".join(cell["source"]) for cell in code_cells())
    assert [step for step in HAND_WRITTEN_STEPS if step in source] == []
    assert "data.load_split(ROOT, CATEGORY, image_size=IMAGE_SIZE, seed=SEED)" in source
    assert ('benchmark.evaluate_method(benchmark.make_detector("ae_ssim", CATEGORY, seed=SEED, schedule=SCHEDULE), '
            "split)") in source


def test_notebook_03s_numbers_equal_the_benchmark_cell(synthetic_root, parameters):
    category, seed, size, schedule = (parameters[name] for name in ("CATEGORY", "SEED", "IMAGE_SIZE", "SCHEDULE"))
    split = data.load_split(synthetic_root, category, image_size=size, seed=seed, progress=False)
    evaluation = benchmark.evaluate_method(benchmark.make_detector("ae_ssim", category, seed=seed, schedule=schedule),
                                           split, cache=False, progress=False)
    cell = benchmark.run_cell(synthetic_root, category, "ae_ssim", image_size=size, seed=seed, schedule=schedule,
                              cache=False, progress=False).set_index("metric")["value"]
    measured = [name for name in benchmark.METRICS if not name.endswith("seconds")]
    assert {name: evaluation.metrics[name] for name in measured} == {name: cell[name] for name in measured}
    # Section 3a's "paper's rule" row classifies with the evaluation's threshold and minimum area:
    # the same accuracies as the benchmark's.
    predictions = metrics.classify(evaluation.maps, evaluation.threshold, min_defect_area=evaluation.min_defect_area)
    good, defective = metrics.classification_accuracy(split.labels, predictions)
    assert (good, defective) == (cell["good_accuracy"], cell["defective_accuracy"])
    assert evaluation.min_defect_area > 1  # not the "any pixel above the threshold" rule
    assert np.isfinite(evaluation.threshold)


def test_every_question_of_notebook_03_has_an_answer_key():
    asked = {int(number) for cell in code_cells()
             for number in re.findall(r'quiz\.check\("03", (\d+),', "".join(cell["source"]))}
    assert asked == {int(number) for number in quiz.answer_key("03")} and len(asked) >= 4
    assert quiz.is_correct("03", 1, 0.75) and not quiz.is_correct("03", 1, 0.25)
