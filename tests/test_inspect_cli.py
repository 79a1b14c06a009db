"""Tests for the mvtec-inspect command: fit, score, evaluate on a demo folder; exit codes and error messages."""
import csv
import re
import shutil
import tomllib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mvtec_tutorial import inspect_cli, models, own_images, synthetic

FIT = ["--method", "mean_image", "--image-size", "32", "--quiet"]


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    """The demo folder (normal/, new/, masks/) and a detector fitted on it with the command."""
    folder = synthetic.demo_folder(tmp_path_factory.mktemp("parts") / "parts", image_size=48, n_normal=12, n_new_good=4,
                              n_new_per_defect=1)
    detector = folder.parent / "detector.pt"
    assert inspect_cli.main(["fit", str(folder / "normal"), "--out", str(detector), *FIT]) == 0
    return folder, detector


def read_rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_fit_saves_the_detector_with_its_decision_rule(parts):
    folder, detector_file = parts
    detector = models.AnomalyDetector.load(detector_file)
    inspection = own_images.Inspection.of(detector)
    assert type(detector).__name__ == "MeanImage" and detector.metadata_["method"] == "mean_image"
    assert (inspection.rule, inspection.image_size, inspection.n_validation) == ("min-defect-area", 32, 2)
    assert inspection.n_rejected == 0  # the region rule flags no held-out normal image, by construction


def test_score_writes_every_image_and_exits_1_when_some_are_flagged(parts, tmp_path, capsys):
    folder, detector = parts
    code = inspect_cli.main(["score", str(detector), str(folder / "new"), "--out", str(tmp_path), "--quiet"])
    rows = read_rows(tmp_path / "scores.csv")
    assert [row["file"] for row in rows] == sorted(p.name for p in (folder / "new").iterdir())
    n_flagged = sum(row["decision"] == "flagged" for row in rows)
    assert code == (1 if n_flagged else 0)
    assert f"{n_flagged} of {len(rows)} images flagged" in capsys.readouterr().out
    # The CSV's region column is the decision: a region of the minimum area or more.
    inspection = own_images.Inspection.of(models.AnomalyDetector.load(detector))
    assert all((int(row["largest_region_px"]) >= inspection.min_defect_area) == (row["decision"] == "flagged")
               for row in rows)


def test_score_single_good_files_exits_0(parts, tmp_path):
    folder, detector = parts
    good = [str(p) for p in sorted((folder / "new").iterdir()) if not (folder / "masks" / p.name).exists()][:2]
    code = inspect_cli.main(["score", str(detector), *good, "--out", str(tmp_path), "--quiet"])
    rows = read_rows(tmp_path / "scores.csv")
    assert len(rows) == 2 and code == (1 if any(r["decision"] == "flagged" for r in rows) else 0)


def test_evaluate_from_ok_ng_folders_and_from_masks_agree(parts, tmp_path, capsys):
    folder, detector = parts
    labelled = tmp_path / "labelled"
    for path in sorted((folder / "new").iterdir()):
        target = labelled / ("ng" if (folder / "masks" / path.name).exists() else "OK") / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    assert inspect_cli.main(["evaluate", str(detector), str(labelled), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert inspect_cli.main(["evaluate", str(detector), str(folder / "new"), "--masks", str(folder / "masks"),
                             "--out", str(tmp_path / "b"), "--quiet"]) == 0
    by_folder, by_mask = read_rows(tmp_path / "a" / "scores.csv"), read_rows(tmp_path / "b" / "scores.csv")
    assert sorted((Path(r["file"]).name, r["label"], r["decision"]) for r in by_folder) == \
        sorted((r["file"], r["label"], r["decision"]) for r in by_mask)
    labels = np.array([int(r["label"]) for r in by_mask])
    flagged = np.array([r["decision"] == "flagged" for r in by_mask])
    out = capsys.readouterr().out
    assert f"defective accuracy: {flagged[labels == 1].mean():.3f}" in out
    assert f"good accuracy: {1 - flagged[labels == 0].mean():.3f}" in out


@pytest.mark.parametrize("arguments, match", [
    (["fit", "{missing}", "--out", "{tmp}/d.pt", *FIT], "missing does not exist"),
    (["fit", "{normal}", "--out", "{tmp}/d.pt", "--set", "smoothing=2", *FIT], "settings of mean_image: .*smoothing_sigma"),
    (["fit", "{normal}", "--out", "{tmp}/d.pt", "--tile", "5", *FIT], "tile 5 does not divide image_size 32"),
    (["score", "{tmp}/none.pt", "{normal}", "--out", "{tmp}"], "none.pt does not exist"),
    (["fit", "{normal}", "--out", "{tmp}/d.pt", "--image-size", "32", "--method", "gmm_texture"],
     "gmm_texture applies to texture images, not to object images; pass --kind texture"),
    (["evaluate", "{detector}", "{normal}", "--out", "{tmp}", "--quiet"], "is not in a sub-folder of .*normal"),
])
def test_bad_input_exits_2_naming_the_problem(parts, tmp_path, capsys, arguments, match):
    folder, detector = parts
    names = dict(missing=tmp_path / "missing", tmp=tmp_path, normal=folder / "normal" / "line_a", detector=detector)
    assert inspect_cli.main([a.format(**names) for a in arguments]) == 2
    assert re.search(match, capsys.readouterr().err)


def test_a_broken_image_is_named(parts, tmp_path, capsys):
    folder, detector = parts
    (tmp_path / "broken.png").write_bytes(b"not an image")
    assert inspect_cli.main(["score", str(detector), str(tmp_path / "broken.png"), "--out", str(tmp_path / "r")]) == 2
    assert "broken.png" in capsys.readouterr().err


def test_a_detector_without_decision_rule_is_refused(tmp_path, capsys):
    models.MeanImage().fit(np.full((2, 3, 8, 8), 0.5, np.float32), progress=False).save(tmp_path / "plain.pt")
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    assert inspect_cli.main(["score", str(tmp_path / "plain.pt"), str(tmp_path / "a.png"), "--out", str(tmp_path)]) == 2
    assert "mvtec-inspect fit" in capsys.readouterr().err


def test_usage_errors_exit_2_and_the_command_is_installed(capsys):
    with pytest.raises(SystemExit) as exit_info:
        inspect_cli.main(["fit"])
    assert exit_info.value.code == 2 and "--out" in capsys.readouterr().err
    scripts = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["mvtec-inspect"] == "mvtec_tutorial.inspect_cli:main"


def test_an_ignore_mask_of_another_size_is_refused(parts, tmp_path, capsys):
    folder, _ = parts
    Image.new("L", (7, 7)).save(tmp_path / "ignore.png")
    code = inspect_cli.main(["fit", str(folder / "normal"), "--out", str(tmp_path / "d.pt"), "--ignore-mask",
                             str(tmp_path / "ignore.png"), *FIT])
    assert code == 2 and "is 48 x 48 px but the ignore mask is 7 x 7 px" in capsys.readouterr().err
