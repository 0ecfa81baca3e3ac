"""histolib.plots: each function returns a Figure with the expected axes and the data drawn."""

import numpy as np
import pytest
from matplotlib.figure import Figure

from histolib import plots

HISTORY = [
    {"epoch": 0, "loss": 0.9, "val_loss": 0.8, "accuracy": 0.6, "val_accuracy": 0.65, "learning_rate": 1e-3},
    {"epoch": 1, "loss": 0.7, "val_loss": 0.6, "accuracy": 0.7, "val_accuracy": 0.72, "learning_rate": 1e-3},
    {"epoch": 2, "loss": 0.6, "val_loss": 0.65, "accuracy": 0.75, "val_accuracy": 0.70, "learning_rate": 3e-4},
]


def test_training_curves_draw_every_epoch(tmp_path):
    figure = plots.training_curves(HISTORY, best_epoch=2)
    assert isinstance(figure, Figure)
    titles = [ax.get_title() for ax in figure.axes]
    assert titles == ["loss", "accuracy", "learning rate"]
    loss_ax = figure.axes[0]
    train, valid = loss_ax.get_lines()[:2]
    assert train.get_xdata().tolist() == [1, 2, 3]
    assert train.get_ydata().tolist() == [0.9, 0.7, 0.6]
    assert valid.get_ydata().tolist() == [0.8, 0.6, 0.65]
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["train", "valid"]
    assert loss_ax.get_lines()[2].get_xdata()[0] == 2  # the best-epoch marker
    assert figure.axes[2].get_yscale() == "log"

    # The same from a history.csv as CSVLogger writes it.
    path = tmp_path / "history.csv"
    keys = list(HISTORY[0])
    path.write_text(",".join(keys) + "\n" + "\n".join(",".join(str(r[k]) for k in keys) for r in HISTORY) + "\n")
    from_csv = plots.training_curves(tmp_path, metrics=["accuracy"])
    assert len(from_csv.axes) == 1
    assert from_csv.axes[0].get_lines()[1].get_ydata().tolist() == [0.65, 0.72, 0.70]
    with pytest.raises(ValueError, match="auc"):
        plots.training_curves(HISTORY, metrics=["auc"])


def test_confusion_matrix_shows_the_counts():
    figure = plots.confusion_matrix([[3, 1], [2, 4]], class_names=["normal", "tumour"])
    ax = figure.axes[0]
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == ["1", "2", "3", "4"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["normal", "tumour"]
    assert ax.get_xlabel() == "Predicted label" and ax.get_ylabel() == "True label"
    normalized = plots.confusion_matrix([[3, 1], [2, 4]], normalize=True)
    assert sorted(t.get_text() for t in normalized.axes[0].texts) == ["0.25", "0.33", "0.67", "0.75"]
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix([[1, 2, 3]])


def test_roc_curve_runs_from_corner_to_corner_with_its_auc():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.8, 0.9])
    figure = plots.roc(y, s)
    ax = figure.axes[0]
    curve = ax.get_lines()[0]
    assert curve.get_xdata()[0] == 0 and curve.get_ydata()[-1] == 1
    assert any("0.94" in t.get_text() for t in ax.get_legend().get_texts())  # AUC 15/16
    three = plots.roc(np.array([0, 1, 2, 0, 1, 2]), np.eye(3)[[0, 1, 2, 1, 1, 2]], class_names=["a", "b", "c"])
    # One-vs-rest: a 3 of 4 pairs ranked right, b 7 of 8, c all.
    legend = [t.get_text() for t in three.axes[0].get_legend().get_texts()]
    assert legend[:3] == ["a (AUC = 0.75)", "b (AUC = 0.88)", "c (AUC = 1.00)"]


def test_reliability_diagram_bins_the_probabilities():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 1])
    p = np.array([0.05, 0.05, 0.05, 0.95, 0.95, 0.95, 0.95, 0.95])
    figure = plots.reliability_diagram(y, p, n_bins=2)
    top, bottom = figure.axes
    model_line = [line for line in top.get_lines() if line.get_label().startswith("model")][0]
    # Bin [0, 0.5): 1 of 3 positive; bin [0.5, 1]: 4 of 5.
    assert model_line.get_ydata() == pytest.approx([1 / 3, 4 / 5])
    assert [patch.get_height() for patch in bottom.patches] == [3, 5]
    with pytest.raises(ValueError, match="binary"):
        plots.reliability_diagram([0, 1, 2], np.eye(3))


def test_saliency_grid_has_a_row_per_method():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    maps = {"Grad-CAM": rng.random((3, 8, 8)), "saliency": rng.random((3, 8, 8))}
    figure = plots.saliency_grid(images, maps, titles=["a", "b", "c"])
    assert len(figure.axes) == 9
    assert [figure.axes[i].get_ylabel() for i in (0, 3, 6)] == ["image", "Grad-CAM", "saliency"]
    assert figure.axes[0].get_title() == "a"
    overlay = figure.axes[3].get_images()
    assert len(overlay) == 2
    np.testing.assert_allclose(np.asarray(overlay[1].get_array()), maps["Grad-CAM"][0])
    # Under a map the image is grey (its luminance, lifted): only the map has colour.
    grey = np.asarray(overlay[0].get_array())
    assert grey.shape == (8, 8) and 0.35 <= grey.min() and grey.max() <= 1.0
    luminance = images[0] @ np.float32([0.299, 0.587, 0.114]) / 255
    np.testing.assert_allclose(grey, 0.35 + 0.65 * luminance, rtol=1e-5)
    assert overlay[1].get_cmap().name == plots.OVERLAY_CMAP.name
    single = plots.saliency_grid(images / 255.0, maps["saliency"])
    assert len(single.axes) == 6
    with pytest.raises(ValueError, match="shape"):
        plots.saliency_grid(images, rng.random((3, 4, 4)))


def test_overlay_blends_a_colormap():
    image = np.full((5, 6, 3), 255, np.uint8)
    heat = np.linspace(0, 1, 30).reshape(5, 6)
    blended = plots.overlay(image, heat, alpha=0.5)
    assert blended.shape == (5, 6, 3) and blended.dtype == np.float32
    np.testing.assert_allclose(plots.overlay(image, heat, alpha=0.0), 1.0)
    assert not np.allclose(blended[0, 0], blended[-1, -1])  # cold and hot ends differ
    with pytest.raises(ValueError, match="heatmap.shape=\\(5, 5\\)"):
        plots.overlay(image, heat[:, :5])
    from histolib import saliency

    assert saliency.overlay is plots.overlay  # still importable where the chapters first met it


def test_image_groups_one_row_per_group(tmp_path):
    from histolib.data import synthetic

    pictures, labels, _ = synthetic.pcam_patches(5, seed=1)
    synthetic.write_folder(tmp_path, pictures, np.zeros(5, int), ["x"])
    names = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("x/*.png"))
    figure = plots.image_groups([names[:4], names[4:]], root=tmp_path, max_per_group=3)
    images = [ax for ax in figure.axes if ax.images]
    assert len(figure.axes) == 6 and len(images) == 4  # 2 rows x 3 columns, 3 + 1 thumbnails
    assert figure.axes[2].get_title().endswith("(+1 more)")
    with pytest.raises(ValueError, match="at least one group"):
        plots.image_groups([])
