"""Fixtures for the docstring examples that ``make test`` runs (``pytest --doctest-modules``)."""
import pytest
from _pytest.doctest import DoctestItem


@pytest.fixture(autouse=True)
def _doctest_tmp_path(request, doctest_namespace):
    """Give docstring examples that write files ``tmp_path``, an empty folder of their own."""
    if isinstance(request.node, DoctestItem):
        doctest_namespace["tmp_path"] = request.getfixturevalue("tmp_path")
