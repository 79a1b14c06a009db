import os

import pandas as pd
import pytest

from mvtec_tutorial import benchmark, data, metrics, models, thresholds
from mvtec_tutorial.models import base


def test_paper_tables_align_with_category_and_method_names():
    paper = benchmark.paper_table()
    assert set(paper["category"]) == set(data.CATEGORIES)
    assert set(paper["method"]) == {"ae_ssim", "ae_l2", "anogan", "feature_dictionary", "gmm_texture",
                                    "variation_model"}
    assert set(paper["metric"]) == {"good_accuracy", "defective_accuracy", "region_overlap", "pixel_auroc"}
    # Spot checks against the paper: bottle AE (SSIM) 0.85 / 0.90 and 0.15 / 0.93; grid texture inspection.
    value = paper.set_index(["category", "method", "metric"])["value"]
    assert value[("bottle", "ae_ssim", "good_accuracy")] == 0.85
    assert value[("bottle", "ae_ssim", "pixel_auroc")] == 0.93
    assert value[("grid", "gmm_texture", "defective_accuracy")] == 0.05
    # The GMM texture model ran on the 5 textures only, the variation model on 6 objects.
    assert (paper[paper["method"] == "gmm_texture"]["category"].map(lambda c: data.category_info(c).kind)
            == "texture").all()
    assert paper[paper["method"] == "variation_model"]["category"].nunique() == 6


def test_the_methods_after_2019_are_declared_and_absent_from_the_paper():
    # Notebook 08 ranks the paper's methods only; the classes that say after_2019 must be exactly the others.
    paper_methods = set(benchmark.paper_table()["method"])
    modern = set(benchmark.after_2019())
    assert {"padim", "patchcore"} <= modern <= set(benchmark.methods())
    assert not modern & paper_methods
    assert set(benchmark.methods()) - modern - paper_methods <= {"mean_image", "f_anogan"}


def test_grid_runs_end_to_end_and_resumes_without_recomputing(synthetic_root, tmp_path, monkeypatch):
    results = benchmark.run(synthetic_root, ["bottle", "carpet"], ["mean_image"], tmp_path, image_size=32,
                            cache=False, progress=False)
    assert set(results["category"]) == {"bottle", "carpet"}
    assert set(benchmark.METRICS) <= set(results["metric"])
    scores = results[~results["metric"].str.endswith("seconds")]
    assert scores["value"].between(0, 1).all()
    assert (results[results["metric"].str.endswith("seconds")]["value"] >= 0).all()
    markdown = (tmp_path / "results.md").read_text()
    assert "### bottle" in markdown and "| mean_image |" in markdown

    calls = []
    monkeypatch.setattr(benchmark._Cell, "measure", lambda cell, **kwargs: calls.append(cell))
    again = benchmark.run(synthetic_root, ["bottle", "carpet"], ["mean_image"], tmp_path, image_size=32,
                          cache=False, progress=False)
    assert calls == []
    pd.testing.assert_frame_equal(again.reset_index(drop=True), pd.read_csv(tmp_path / "results.csv"))


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))  # the class below registers for this test only

    class BrokenDetector(models.MeanImage):
        benchmark_names = {"broken": {}}
        schedules = models.MeanImage.schedules

        def _fit(self, images):
            raise RuntimeError("out of memory")

    results = benchmark.run(synthetic_root, ["bottle"], ["broken", "mean_image"], tmp_path, image_size=32,
                            cache=False, progress=False)
    error = results[results["metric"] == "error"]
    assert list(error["method"]) == ["broken"] and "out of memory" in error["settings"].iloc[0]
    assert (results[results["method"] == "mean_image"]["metric"] == "image_auroc").any()
    assert "bottle / broken failed" in (tmp_path / "results.md").read_text()


def test_methods_only_run_on_the_kinds_they_apply_to(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setattr(base, "_METHODS", dict(base._METHODS))

    class ObjectsOnly(models.MeanImage):
        benchmark_names = {"objects_only": {}}
        schedules = base.same_for_kinds(("object",), quick={}, cpu={}, paper={})

    results = benchmark.run(synthetic_root, ["bottle", "wood"], ["objects_only"], tmp_path, image_size=32,
                            cache=False, progress=False)
    assert set(results["category"]) == {"bottle"}


def test_compare_with_paper_gives_the_difference():
    ours = pd.DataFrame([{"category": "bottle", "method": "ae_ssim", "metric": "pixel_auroc", "value": 0.95}],
                        columns=benchmark.COLUMNS)
    row = benchmark.compare_with_paper(ours).iloc[0]
    assert row["paper"] == 0.93 and row["difference"] == pytest.approx(0.02)


def test_markdown_shows_the_paper_beside_real_data_only(synthetic_root, tmp_path):
    results = benchmark.run(synthetic_root, ["bottle"], ["variation_model"], tmp_path, image_size=32,
                            cache=False, progress=False)
    assert benchmark.is_synthetic(synthetic_root, "bottle")
    synthetic_markdown = (tmp_path / "results.md").read_text()
    assert synthetic_markdown.startswith("Synthetic stand-in data") and "(0." not in synthetic_markdown
    # The same rows, taken as real MVTec AD bottle, get the paper's variation-model pixel AUROC 0.82.
    assert "(0.82)" in benchmark.to_markdown(results)


def test_unknown_method_lists_the_known_ones(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="unknown methods \\['padimm'\\]; known: .*mean_image"):
        benchmark.run(synthetic_root, ["bottle"], ["padimm"], tmp_path)


def test_results_have_float_values_and_name_the_data_without_a_machine_path(synthetic_root, tmp_path):
    first = benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path / "out", image_size=32,
                          cache=False, progress=False)
    assert first["value"].dtype == float
    assert set(first["data"]) == {"synthetic"}
    assert not first.astype(str).apply(lambda column: column.str.contains(str(tmp_path))).any().any()


def test_other_seeds_sizes_and_settings_keep_their_rows(synthetic_root, tmp_path, monkeypatch):
    run = lambda **kwargs: benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, cache=False,
                                         progress=False, **kwargs)
    seed0 = run(image_size=32)
    seed1 = run(image_size=32, seed=1)
    size48 = run(image_size=48)
    monkeypatch.setattr(models.MeanImage, "schedules", base.same_for_kinds(quick={}, cpu={"std_floor": 0.1}, paper={}))
    floor = run(image_size=32)
    keys = [frame["key"].iloc[0] for frame in (seed0, seed1, size48, floor)]
    assert len(set(keys)) == 4  # the seed, the size and a setting each make another cell
    stored = benchmark.read_results(tmp_path / "results.csv")
    assert set(stored["key"]) == set(keys) and len(stored) == 4 * len(benchmark.METRICS)
    assert seed0["value"].tolist() != seed1["value"].tolist()


def test_a_cell_cut_short_is_measured_again(synthetic_root, tmp_path):
    first = benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, cache=False,
                          progress=False)
    first[first["metric"] != "au_pro"].to_csv(tmp_path / "results.csv", index=False)  # killed mid-cell
    again = benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, cache=False,
                          progress=False)
    assert set(benchmark.METRICS) <= set(again["metric"]) and len(again) == len(benchmark.METRICS)


def test_a_damaged_results_file_is_named(synthetic_root, tmp_path):
    (tmp_path / "results.csv").write_text("this is not\x00 a, results file\n1,2\n")
    with pytest.raises(ValueError, match="results.csv .*move it away"):
        benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, progress=False)


def test_writers_take_turns_and_a_killed_writer_does_not_block(synthetic_root, tmp_path):
    (tmp_path / ".results.lock").write_text(str(os.getpid()))  # a live writer that never finishes
    with pytest.raises(RuntimeError, match="another benchmark run .* has held"):
        with benchmark._exclusive(tmp_path, timeout=0.5):
            pass
    (tmp_path / ".results.lock").write_text("999999999")  # a run that was killed mid-write
    benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, cache=False, progress=False)
    benchmark.run(synthetic_root, ["bottle"], ["variation_model"], tmp_path, image_size=32, cache=False,
                  progress=False)
    stored = benchmark.read_results(tmp_path / "results.csv")
    assert set(stored["method"]) == {"mean_image", "variation_model"}
    assert not (tmp_path / ".results.lock").exists()
    markdown = (tmp_path / "results.md").read_text()
    assert "| mean_image |" in markdown and "| variation_model |" in markdown


def test_evaluate_method_is_the_protocol_written_out(synthetic_root):
    split = data.load_split(synthetic_root, "bottle", image_size=32, progress=False)
    evaluation = benchmark.evaluate_method(models.MeanImage(), split, cache=False, progress=False)
    detector = models.MeanImage().fit(split.train, progress=False)
    validation_maps = detector.predict(split.validation)[0]
    area = thresholds.min_defect_area_pixels((32, 32))
    threshold = thresholds.min_defect_area_threshold(validation_maps, area)
    maps, scores = detector.predict(split.test)
    expected = metrics.evaluate(split.masks, maps, split.labels, scores, threshold=threshold, min_defect_area=area)
    assert evaluation.threshold == threshold and evaluation.min_defect_area == area
    assert {name: evaluation.metrics[name] for name in expected} == expected
    rules = benchmark.threshold_rules(evaluation).set_index("rule")
    assert rules.loc["minimum defect area (paper)", "good_accuracy"] == expected["good_accuracy"]
    assert rules.loc["largest validation score", "threshold"] == evaluation.validation_scores.max()


def test_a_threshold_that_misses_every_defect_is_flagged():
    assert benchmark.threshold_warning({"defective_accuracy": 0.07, "image_auroc": 0.82}).startswith(
        "the minimum-defect-area threshold calls 93% of the defective images good")
    assert benchmark.threshold_warning({"defective_accuracy": 0.5, "image_auroc": 0.82}) is None
    assert benchmark.threshold_warning({"defective_accuracy": 0.1, "image_auroc": 0.6}) is None


def test_command_line_checks_its_arguments(synthetic_root, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MVTEC_ROOT", raising=False)
    with pytest.raises(SystemExit):
        benchmark.main(["--categories", "bottle"])
    assert "pass --root or set MVTEC_ROOT" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark.main(["--root", str(synthetic_root), "--methods", "padimm"])
    assert "invalid choice: 'padimm'" in capsys.readouterr().err
    monkeypatch.setenv("MVTEC_ROOT", str(synthetic_root))
    benchmark.main(["--categories", "all", "--methods", "mean_image", "--image-size", "32", "--schedule", "quick",
                    "--device", "cpu", "--no-cache", "--out", str(tmp_path)])
    results = benchmark.read_results(tmp_path / "results.csv")
    assert set(results["category"]) == {"bottle", "carpet", "pill", "wood"} and set(results["device"]) == {"cpu"}


def test_run_prepares_each_cell_once_with_the_protocol_its_key_covers(synthetic_root, tmp_path, monkeypatch):
    built, fingerprinted, measured = [], [], []
    make_detector, data_fingerprint, load_split = benchmark.make_detector, benchmark.data_fingerprint, data.load_split
    monkeypatch.setattr(benchmark, "make_detector", lambda *a, **k: built.append(a) or make_detector(*a, **k))
    monkeypatch.setattr(benchmark, "data_fingerprint", lambda *a: fingerprinted.append(a) or data_fingerprint(*a))
    monkeypatch.setattr(data, "load_split", lambda *a, **k: measured.append(k["validation_fraction"]) or load_split(*a, **k))
    benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path, image_size=32, cache=False, progress=False)
    assert len(built) == len(fingerprinted) == 1
    assert measured == [benchmark.PROTOCOL.validation_fraction]
    other = benchmark.Protocol(validation_fraction=0.3)
    cell = benchmark._Cell.prepare(synthetic_root, "bottle", "mean_image", image_size=32, seed=0, schedule="cpu",
                                   device=None, protocol=other)
    assert cell.identity["key"] != benchmark._Cell.prepare(synthetic_root, "bottle", "mean_image", image_size=32, seed=0,
                                                           schedule="cpu", device=None, protocol=benchmark.PROTOCOL
                                                           ).identity["key"]
    cell.measure(cache=False, progress=False)
    assert measured[-1] == 0.3  # the measurement uses the protocol the key was made from
