import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix, roc_auc_score

from mvtec_tutorial import data
from mvtec_tutorial import supervised_benchmark as sb
from mvtec_tutorial.data import labelled_split

SMALL = 32  # px; ResNet-18 at 32 px is far cheaper than the ConvNet at its minimum of 200 px
TINY = dict(architecture="resnet18", work_size=SMALL, epochs=1, batch_size=16)
DEFECT_TYPES = {"broken_large", "broken_small", "contamination"}


@pytest.fixture(scope="module")
def labelled(synthetic_root):
    return sb.load_labelled_set(synthetic_root, "bottle", image_size=SMALL, progress=False)


@pytest.fixture
def tiny_model(monkeypatch):
    """A registered model cheap enough for a test: ResNet-18 at 32 px, one epoch."""
    monkeypatch.setitem(sb.MODELS, "tiny", dict(TINY))
    return "tiny"


# ----------------------------------------------------------------------------- labelled split
def split_paths(synthetic_root, **options):
    train, evaluation = labelled_split(synthetic_root, "bottle", image_size=None, **options)
    paths = [[subset.dataset[i]["path"] for i in subset.indices] for subset in (train, evaluation)]
    types = [[subset.dataset[i]["defect_type"] for i in subset.indices] for subset in (train, evaluation)]
    return train, evaluation, paths, types


def test_labelled_split_has_no_leakage_and_covers_every_image(synthetic_root):
    train, evaluation, (train_paths, evaluation_paths), (train_types, evaluation_types) = split_paths(synthetic_root)
    every_image = sorted(str(p) for split in data.SPLITS for p, _, _ in data.MVTecAD(
        synthetic_root, "bottle", split, image_size=None).samples)
    assert set(train.indices).isdisjoint(evaluation.indices)
    assert set(train_paths).isdisjoint(evaluation_paths)
    assert sorted(train_paths + evaluation_paths) == every_image
    assert set(train_types) == set(evaluation_types) == {"good"} | DEFECT_TYPES


def test_labelled_split_is_seeded(synthetic_root):
    first = [s.indices for s in labelled_split(synthetic_root, "bottle", seed=0)]
    assert first == [s.indices for s in labelled_split(synthetic_root, "bottle", seed=0)]
    assert first != [s.indices for s in labelled_split(synthetic_root, "bottle", seed=1)]


def test_held_out_defect_type_is_absent_from_training_and_the_rest_unchanged(synthetic_root):
    _, _, (_, evaluation_paths), (train_types, evaluation_types) = split_paths(
        synthetic_root, held_out_defect_type="contamination")
    n_contamination = len(data.MVTecAD(synthetic_root, "bottle", "test", defect_types=["contamination"]))
    assert "contamination" not in train_types
    assert evaluation_types.count("contamination") == n_contamination
    assert {"broken_large", "broken_small", "good"} <= set(train_types)
    _, _, (_, all_seen_evaluation), (_, all_seen_types) = split_paths(synthetic_root)
    # Holding a type out moves only that type's training images to evaluation.
    assert ({p for p, t in zip(evaluation_paths, evaluation_types) if t != "contamination"}
            == {p for p, t in zip(all_seen_evaluation, all_seen_types) if t != "contamination"})


def test_labelled_split_errors(synthetic_root):
    with pytest.raises(ValueError, match="'scratch' is not a defect type of bottle; use one of broken_large"):
        labelled_split(synthetic_root, "bottle", held_out_defect_type="scratch")
    with pytest.raises(ValueError, match="evaluation_fraction must be in"):
        labelled_split(synthetic_root, "bottle", evaluation_fraction=1.0)
    with pytest.raises(ValueError, match="too few to split"):
        labelled_split(synthetic_root, "bottle", evaluation_fraction=0.9)


# ----------------------------------------------------------------------------- labelled set
def test_labelled_set_holds_the_split_images_in_order(synthetic_root, labelled):
    train, evaluation = labelled_split(synthetic_root, "bottle", image_size=SMALL)
    np.testing.assert_array_equal(labelled.train, train.indices)
    np.testing.assert_array_equal(labelled.evaluation, evaluation.indices)
    for index in (0, int(labelled.evaluation[-1])):  # a training good image and a test image
        item = train.dataset[index]
        assert labelled.paths[index] == item["path"] and labelled.defect_types[index] == item["defect_type"]
        assert labelled.labels[index] == item["label"]
        np.testing.assert_array_equal(labelled.images[index], item["image"])
        np.testing.assert_array_equal(labelled.masks[index], item["mask"])
    assert labelled.images.shape[1:] == (3, SMALL, SMALL)


def test_hold_out_reuses_the_images_and_matches_labelled_split(synthetic_root, labelled):
    held_out = sb.hold_out(labelled, "broken_small")
    train, evaluation = labelled_split(synthetic_root, "bottle", held_out_defect_type="broken_small")
    np.testing.assert_array_equal(held_out.train, train.indices)
    np.testing.assert_array_equal(held_out.evaluation, evaluation.indices)
    assert held_out.images is labelled.images and held_out.held_out_defect_type == "broken_small"
    assert "broken_small" not in set(held_out.defect_types[held_out.train])
    assert "broken_small held out" in repr(held_out)
    with pytest.raises(ValueError, match="'crack' is not a defect type of bottle"):
        sb.hold_out(labelled, "crack")


def test_hold_out_refuses_a_changed_folder(tmp_path):
    from mvtec_tutorial import synthetic

    root = synthetic.make_dataset(tmp_path, categories=["bottle"], image_size=SMALL, n_train=6, n_test_good=3,
                                  n_test_per_defect=2, progress=False)
    labelled = sb.load_labelled_set(root, "bottle", image_size=SMALL, progress=False)
    (root / "bottle" / "train" / "good" / "000.png").rename(root / "bottle" / "train" / "good" / "999.png")
    with pytest.raises(ValueError, match="changed since the labelled set was loaded; load it again"):
        sb.hold_out(labelled, "contamination")


# ----------------------------------------------------------------------------- report
def test_classification_report_matches_hand_counts_and_sklearn():
    labels = np.array([0, 0, 0, 1, 1, 1, 0])
    p_defective = np.array([0.1, 0.7, 0.2, 0.9, 0.4, 0.8, 0.3])
    types = ["good", "good", "good", "crack", "crack", "hole", "good"]
    report = sb.classification_report(labels, np.stack([1 - p_defective, p_defective], axis=1), types)
    predictions = (p_defective > 0.5).astype(int)
    matrix = confusion_matrix(labels, predictions)
    np.testing.assert_array_equal(report["confusion_matrix"], matrix)
    np.testing.assert_array_equal(report["confusion_matrix"], [[3, 1], [1, 2]])  # counted by hand
    assert report["accuracy"] == pytest.approx(np.trace(matrix) / 7)
    assert report["always_good_accuracy"] == pytest.approx(4 / 7)
    assert report["good_recall"] == pytest.approx(3 / 4) and report["defective_recall"] == pytest.approx(2 / 3)
    assert report["recall_by_type"] == {"crack": 0.5, "good": 0.75, "hole": 1.0}
    assert report["image_auroc"] == pytest.approx(roc_auc_score(labels, p_defective))
    assert np.isnan(sb.classification_report([0, 0], [0.1, 0.9], ["good", "good"])["image_auroc"])
    with pytest.raises(ValueError, match="one of each per image"):
        sb.classification_report(labels, p_defective, types[:5])


def test_describe_settings_names_what_differs_from_the_deck():
    assert sb.describe_settings(sb.make_classifier("convnet_deck")) == "224 px, 20 epochs, SGD 0.001, no class weights"
    assert sb.describe_settings(sb.make_classifier("vgg16_scratch", schedule="quick")) == (
        "64 px, 1 epoch, SGD 0.01 momentum 0.9, class weights")
    assert sb.describe_settings(sb.make_classifier("lite0_imagenet_frozen", augmented=True)).endswith(
        "ImageNet, frozen + new head, augmented")
    with pytest.raises(ValueError, match="unknown model 'vgg'; known: convnet_deck"):
        sb.make_classifier("vgg")
    with pytest.raises(ValueError, match="unknown schedule 'paper'; use one of quick, cpu"):
        sb.make_classifier("convnet", schedule="paper")


# ----------------------------------------------------------------------------- evaluation
def test_evaluate_classifier_reports_the_evaluation_images(labelled, tiny_model):
    evaluation = sb.evaluate_model(tiny_model, labelled, progress=False)
    probabilities = evaluation.classifier.predict_proba(labelled.images[labelled.evaluation])[:, 1]
    np.testing.assert_array_equal(evaluation.probabilities, probabilities)
    np.testing.assert_array_equal(evaluation.evaluation, labelled.evaluation)
    truth = labelled.labels[labelled.evaluation]
    assert evaluation.metrics["accuracy"] == pytest.approx(np.mean((probabilities > 0.5) == truth))
    assert evaluation.metrics["image_auroc"] == pytest.approx(roc_auc_score(truth, probabilities))
    assert evaluation.metrics["fit_seconds"] > 0 and evaluation.name == "tiny"
    row = evaluation.row()
    assert row["held_out"] == "-" and row["n_evaluation"] == len(labelled.evaluation)
    assert row["settings"] == "32 px, 1 epoch, Adam 0.001, class weights"
    assert set(key for key in row if key.startswith("recall[")) == {f"recall[{t}]" for t in {"good"} | DEFECT_TYPES}


def test_held_out_evaluations_train_without_each_type(labelled, tiny_model):
    runs = sb.held_out_evaluations(tiny_model, labelled, progress=False)
    assert list(runs) == sorted(DEFECT_TYPES)
    for defect_type, evaluation in runs.items():
        trained_on = set(labelled.defect_types[np.setdiff1d(np.arange(len(labelled.labels)), evaluation.evaluation)])
        assert evaluation.held_out_defect_type == defect_type and defect_type not in trained_on
    seen = sb.evaluate_model(tiny_model, labelled, progress=False)
    table = sb.held_out_table(seen, runs)
    assert list(table.index) == sorted(DEFECT_TYPES)
    assert table.loc["contamination", "recall when unseen"] == runs["contamination"].recall_by_type["contamination"]
    assert table.loc["contamination", "recall when seen"] == seen.recall_by_type["contamination"]


def test_compare_with_deck_puts_the_deck_beside_ours(labelled, monkeypatch):
    monkeypatch.setitem(sb.MODELS, "resnet18_scratch", dict(TINY))
    ours = sb.evaluate_model("resnet18_scratch", labelled, progress=False)
    augmented = sb.evaluate_model("resnet18_scratch", labelled, augmented=True, progress=False)
    table = sb.compare_with_deck([ours, augmented])
    assert list(table["deck model"]) == list(sb.DECK_COUNTERPARTS)  # one row each: the augmented run is left out
    row = table.set_index("deck model").loc["ResNet-18 from scratch"]
    assert row["deck accuracy"] == "0.648 (epoch 1), 0.856 (epoch 10), 0.863 (epoch 20), 0.908 (epoch 50)"
    assert row["accuracy"] == ours.metrics["accuracy"] and row["our model"] == "resnet18_scratch"
    assert row["always 'good'"] == pytest.approx(np.mean(labelled.labels[labelled.evaluation] == 0))
    assert (table.set_index("deck model").loc["VGG16", "our model"]) == "not run"


# ----------------------------------------------------------------------------- command line
def test_command_line_prints_one_row_per_run_and_the_deck(synthetic_root, capsys, tiny_model):
    sb.main(["--root", str(synthetic_root), "--category", "bottle", "--models", tiny_model, "--augmented-models",
             "--held-out-models", tiny_model, "--image-size", str(SMALL), "--device", "cpu"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("| model | settings | held_out | accuracy | always_good_accuracy | image_auroc |")
    assert [line.split(" | ")[2] for line in lines[2:6]] == ["-", "broken_large", "broken_small", "contamination"]
    assert any(line.startswith("| deck model | deck accuracy | our model |") for line in lines)
    with pytest.raises(SystemExit):
        sb.main(["--root", str(synthetic_root), "--models", "vgg19"])


def test_to_markdown_formats_numbers_seconds_and_missing_values():
    text = sb.to_markdown([{"model": "a", "accuracy": 0.98765, "fit_seconds": 12.345},
                           {"model": "b", "accuracy": float("nan")}])
    assert text.splitlines() == ["| model | accuracy | fit_seconds |", "|---|---|---|", "| a | 0.988 | 12.3 |",
                                 "| b | - | - |"]


def test_leaky_copies_put_copies_of_one_photograph_on_both_sides(labelled):
    leaky = sb.leaky_copies(labelled, n_poses=2)
    n = len(labelled.labels)
    assert len(leaky.labels) == 2 * n and (leaky.labels[n:] == labelled.labels).all()
    torch.testing.assert_close(leaky.images[n + 3], labelled.images[3].flip(-1))
    np.testing.assert_array_equal(leaky.masks[n + 3], labelled.masks[3][:, ::-1])
    assert sorted(np.concatenate([leaky.train, leaky.evaluation])) == list(range(2 * n))
    photograph = lambda indices: set(indices % n)
    assert photograph(leaky.train) & photograph(leaky.evaluation)  # the leak
    assert len(leaky.evaluation) == round(labelled.evaluation_fraction * 2 * n)
    with pytest.raises(ValueError, match="n_poses must be between 1 and 4"):
        sb.leaky_copies(labelled, n_poses=5)
