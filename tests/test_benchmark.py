import shutil

import pandas as pd
import pytest

from mvtec_tutorial import benchmark, data


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


def test_grid_runs_end_to_end_and_resumes_without_recomputing(synthetic_root, tmp_path, monkeypatch):
    results = benchmark.run(synthetic_root, ["bottle", "carpet"], ["mean_image"], tmp_path, image_size=32)
    assert set(results["category"]) == {"bottle", "carpet"}
    assert set(benchmark.METRICS) <= set(results["metric"])
    scores = results[~results["metric"].str.endswith("seconds")]
    assert scores["value"].between(0, 1).all()
    assert (results[results["metric"].str.endswith("seconds")]["value"] >= 0).all()
    markdown = (tmp_path / "results.md").read_text()
    assert "### bottle" in markdown and "| mean_image |" in markdown

    calls = []
    monkeypatch.setattr(benchmark, "run_cell", lambda *args, **kwargs: calls.append(args))
    again = benchmark.run(synthetic_root, ["bottle", "carpet"], ["mean_image"], tmp_path, image_size=32)
    assert calls == []
    pd.testing.assert_frame_equal(again.reset_index(drop=True), pd.read_csv(tmp_path / "results.csv"))


def test_a_failing_cell_is_recorded_and_the_grid_goes_on(synthetic_root, tmp_path, monkeypatch):
    def broken(kind, seed, quick):
        raise RuntimeError("out of memory")

    monkeypatch.setitem(benchmark.METHODS, "broken", (broken, ("texture", "object")))
    results = benchmark.run(synthetic_root, ["bottle"], ["broken", "mean_image"], tmp_path, image_size=32)
    error = results[results["metric"] == "error"]
    assert list(error["method"]) == ["broken"] and "out of memory" in error["settings"].iloc[0]
    assert (results[results["method"] == "mean_image"]["metric"] == "image_auroc").any()
    assert "bottle / broken failed" in (tmp_path / "results.md").read_text()


def test_methods_only_run_on_the_kinds_they_apply_to(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.setitem(benchmark.METHODS, "objects_only", (benchmark.METHODS["mean_image"][0], ("object",)))
    results = benchmark.run(synthetic_root, ["bottle", "wood"], ["objects_only"], tmp_path, image_size=32)
    assert set(results["category"]) == {"bottle"}


def test_compare_with_paper_gives_the_difference():
    ours = pd.DataFrame([{"category": "bottle", "method": "ae_ssim", "metric": "pixel_auroc", "value": 0.95,
                          "seconds": 1.0, "settings": ""}], columns=benchmark.COLUMNS)
    row = benchmark.compare_with_paper(ours).iloc[0]
    assert row["paper"] == 0.93 and row["difference"] == pytest.approx(0.02)


def test_markdown_shows_the_paper_beside_real_data_only(synthetic_root, tmp_path):
    results = benchmark.run(synthetic_root, ["bottle"], ["variation_model"], tmp_path, image_size=32)
    assert benchmark.is_synthetic(synthetic_root, "bottle")
    synthetic_markdown = (tmp_path / "results.md").read_text()
    assert synthetic_markdown.startswith("Synthetic stand-in data") and "(0." not in synthetic_markdown
    # The same rows, taken as real MVTec AD bottle, get the paper's variation-model pixel AUROC 0.82.
    assert "(0.82)" in benchmark.to_markdown(results)


def test_unknown_method_lists_the_known_ones(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="unknown methods \\['padimm'\\]; known: mean_image"):
        benchmark.run(synthetic_root, ["bottle"], ["padimm"], tmp_path)


def test_results_have_float_columns_and_another_root_is_not_taken_as_done(synthetic_root, tmp_path):
    first = benchmark.run(synthetic_root, ["bottle"], ["mean_image"], tmp_path / "out", image_size=32)
    assert first["value"].dtype == float and first["seconds"].dtype == float
    other_root = tmp_path / "copy"
    shutil.copytree(synthetic_root / "bottle", other_root / "bottle")
    again = benchmark.run(other_root, ["bottle"], ["mean_image"], tmp_path / "out", image_size=32)
    assert again["settings"].str.contains(str(other_root.resolve())).all()
