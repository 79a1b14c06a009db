"""The architecture diagrams in assets/ show the shapes the code uses, and the notebooks show them."""
import importlib.util
import json
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest
import torch

from mvtec_tutorial.models import autoencoder_networks

REPOSITORY = Path(__file__).resolve().parent.parent
ASSETS = REPOSITORY / "assets"
_spec = importlib.util.spec_from_file_location("assets_draw", ASSETS / "draw.py")
draw = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(draw)
REDRAW = "the code changed after the figure was drawn; redraw with `make assets` and commit assets/*.svg"
#: Bergmann et al. (VISAPP 2019), Table 1, encoder of the 128 x 128 network with a 100-number code,
#: transcribed as (channels, side) per layer: the independent reference for the CAE figure.
PAPER_TABLE_1 = ((32, 64), (32, 32), (32, 32), (64, 16), (64, 16), (128, 8), (64, 8), (32, 8), (100, 1))


def svg_lines(path: Path) -> set[str]:
    """Every line of text in an SVG written with svg.fonttype 'none' (one <text> element per line)."""
    return {"".join(element.itertext()) for element in ElementTree.parse(path).iter("{http://www.w3.org/2000/svg}text")}


@pytest.fixture(scope="module")
def data():
    return draw.figure_data()


@pytest.fixture(scope="module")
def labels(data):
    return draw.shape_labels(data)


@pytest.mark.parametrize("name", draw.FIGURES)
def test_every_shape_the_code_computes_is_written_on_the_committed_figure(name, labels):
    path = ASSETS / f"{name}.svg"
    assert path.is_file(), f"assets/{name}.svg is missing; draw it with `make assets`"
    missing = [label for label in labels[name] if label not in svg_lines(path)]
    assert not missing, f"assets/{name}.svg does not show {missing}: {REDRAW}"


def test_the_cae_figure_is_the_papers_layer_table(data):
    cae = data["cae"]
    assert cae["input"] == "1\u00d7128\u00d7128"
    assert [row["shape"] for row in cae["encoder"]] == [draw.shape_text((channels, side, side))
                                                        for channels, side in PAPER_TABLE_1]
    # the decoder mirrors it back to the input's shape
    assert [row["shape"] for row in cae["decoder"]] == [row["shape"] for row in cae["encoder"][-2::-1]] + [cae["input"]]


def test_a_changed_network_no_longer_matches_the_figure():
    # The check above bites: the 256-pixel variant has a 32 x 128 x 128 layer the figure does not show.
    network = autoencoder_networks.bergmann_network(1, 256)
    shapes = [row["shape"] for row in draw.layer_table(network.encoder, torch.zeros(1, 1, 256, 256))]
    assert "32\u00d7128\u00d7128" in shapes
    assert "32\u00d7128\u00d7128" not in svg_lines(ASSETS / "cae.svg")


def test_the_pyramid_figures_show_strides_4_8_16_and_flows_that_keep_the_shape(data):
    # STFPM and FastFlow read the Lite0 blocks of strides 4, 8, 16 (the paper's ResNet-18 levels);
    # the student has the teacher's shapes, and each flow maps a level to a z of the same shape.
    for name in ("stfpm", "fastflow"):
        sides = [int(shape.split("\u00d7")[-1]) for shape in data[name]["layers"].values()]
        assert sides == [draw.IMAGE_SIDE // stride for stride in (4, 8, 16)], name
    assert data["stfpm"]["distances"] == [shape.split("\u00d7", 1)[1] for shape in data["stfpm"]["layers"].values()]
    assert data["fastflow"]["z"] == list(data["fastflow"]["layers"].values())


def markdown_cells(path: Path) -> list[str]:
    cells = json.loads(path.read_text())["cells"]
    return ["".join(cell["source"]) for cell in cells if cell["cell_type"] == "markdown"]


@pytest.mark.parametrize("name", draw.FIGURES)
def test_each_figure_is_shown_in_a_notebook_and_its_executed_copy(name):
    link = f"](../assets/{name}.svg)"
    shown = [(notebook.name, cell) for notebook in sorted((REPOSITORY / "notebooks").glob("*.ipynb"))
             for cell in markdown_cells(notebook) if link in cell]
    assert shown, f"no notebook shows assets/{name}.svg; link it as ![...]({link[2:]} in a Markdown cell"
    for notebook, cell in shown:
        assert cell in markdown_cells(REPOSITORY / "executed" / notebook), (
            f"executed/{notebook} lacks the Markdown cell showing assets/{name}.svg; copy it there")


def test_assets_carry_their_licence():
    assert "MIT" in (ASSETS / "LICENSE.md").read_text()
