"""The package as users install it: a wheel that carries its data, and the console command."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """The repository built as a wheel and installed (not editable) into a folder of its own."""
    folder = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(folder / "dist"), str(REPOSITORY)], check=True)
    wheel = next((folder / "dist").glob("mvtec_tutorial-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index",
                    "--target", str(folder / "site"), str(wheel)], check=True)
    return wheel, folder / "site"


def run_installed(site, *arguments, cwd):
    """Run Python with the installed copy first on the path, away from the repository's sources."""
    environment = {**os.environ, "PYTHONPATH": str(site)}
    return subprocess.run([sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True,
                          check=True)


def test_the_wheel_carries_the_paper_tables_and_answer_keys(installed):
    names = zipfile.ZipFile(installed[0]).namelist()
    assert {"mvtec_tutorial/paper_tables/table2_classification.csv",
            "mvtec_tutorial/paper_tables/table3_segmentation.csv"} <= set(names)
    assert any(name.startswith("mvtec_tutorial/quiz_answers/") and name.endswith(".json") for name in names)
    assert not [name for name in names if name.startswith("assets/")]  # the diagrams belong to the notebooks
    entry_points = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(installed[0]).read(entry_points).decode()
    assert "mvtec-benchmark = mvtec_tutorial.benchmark:main" in entry_points
    assert "mvtec-inspect = mvtec_tutorial.inspect_cli:main" in entry_points


def test_an_installed_copy_reads_the_paper_table_and_runs_the_benchmark(installed, synthetic_root, tmp_path):
    _, site = installed
    source = run_installed(site, "-c", "import mvtec_tutorial, sys; print(mvtec_tutorial.__file__)", cwd=tmp_path)
    assert source.stdout.strip().startswith(str(site))  # not the repository's editable sources
    table = run_installed(site, "-c", "from mvtec_tutorial import benchmark; print(len(benchmark.paper_table()))",
                          cwd=tmp_path)
    assert int(table.stdout) > 100
    command = [str(site / "bin" / "mvtec-benchmark")]
    help_text = subprocess.run([sys.executable, *command, "--help"], env={**os.environ, "PYTHONPATH": str(site)},
                               capture_output=True, text=True, check=True).stdout
    assert "--schedule" in help_text and "--device" in help_text
    run_installed(site, *command, "--root", str(synthetic_root), "--categories", "bottle", "--methods", "mean_image",
                  "--image-size", "32", "--schedule", "quick", "--no-cache", "--out", str(tmp_path / "out"),
                  cwd=tmp_path)
    assert "### bottle" in (tmp_path / "out" / "results.md").read_text()
