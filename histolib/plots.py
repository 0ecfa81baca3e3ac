"""Figures: training curves, confusion matrix, ROC, reliability diagram, saliency grids, overlays.

Every function but `overlay` (which returns an image array) returns a
``matplotlib.figure.Figure`` that is not attached to pyplot, so
nothing stays open between calls and a notebook shows it once when it is the cell's value.
Save one with ``figure.savefig(path)``. The drawing of the confusion matrix, ROC and reliability
curves is scikit-learn's (``ConfusionMatrixDisplay``, ``RocCurveDisplay``,
``CalibrationDisplay``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from histolib import evaluate
from histolib.data.images import read_image
from histolib.runs import read_history

#: Colour map and opacity of maps drawn over H&E tissue (`saliency_grid`,
#: `histolib.slide.draw_heatmap`, `histolib.saliency.overlay`). The stain is purple
#: (haematoxylin, hues about 260-300 degrees) and pink (eosin, 300-350), as are the middles of
#: magma, inferno and plasma, the ends of jet and viridis's violet first fifth, so a translucent map
#: in those blends into the tissue. This is viridis from its blue (hue 222) through teal and green
#: to yellow, and the tissue under it is drawn in grey (`grey_tissue`): every hue under a map is the
#: map's, none the stain's.
OVERLAY_CMAP = ListedColormap(colormaps["viridis"](np.linspace(0.25, 1.0, 256)), name="viridis_from_blue")
OVERLAY_ALPHA = 0.6


def grey_tissue(images) -> np.ndarray:
    """Images ``(..., 3)`` (uint8, or float in [0, 1]) as grey backgrounds ``(...)`` in
    [0.35, 1]: luminance (ITU-R 601 weights), lifted so dark nuclei do not read as a map's low
    end. Draw with ``cmap="gray", vmin=0, vmax=1``."""
    images = np.asarray(images)
    scale = 255.0 if images.dtype == np.uint8 else 1.0
    luminance = images[..., :3].astype(np.float32) @ np.float32([0.299, 0.587, 0.114]) / scale
    return 0.35 + 0.65 * np.clip(luminance, 0.0, 1.0)


def _history_rows(history) -> list:
    if isinstance(history, (str, Path)):
        return read_history(history)
    if hasattr(history, "to_dict"):  # a pandas DataFrame
        return history.to_dict("records")
    if isinstance(history, dict):  # a keras History.history: {name: [per epoch]}
        n = len(next(iter(history.values()), []))
        return [{"epoch": i, **{k: v[i] for k, v in history.items()}} for i in range(n)]
    return list(history)


def training_curves(history, *, metrics=None, best_epoch: int | None = None) -> Figure:
    """Per-epoch training and validation curves, one panel per metric.

    Args:
        history: a ``history.csv`` path or its folder (as `histolib.train.fit` writes),
            a list of per-epoch dicts, a pandas DataFrame, or a Keras ``History.history`` dict.
        metrics: names to draw (``"loss"``, ``"accuracy"``, ``"auc"``, ``"learning_rate"``);
            default: every logged metric that has a ``val_`` twin, then the learning rate.
        best_epoch: 1-based epoch to mark with a dashed line (e.g. ``FitResult.best_epoch``).

    Returns:
        A figure with one axes per metric; x is the 1-based epoch. Panels with a validation
        curve have two lines labelled ``train`` and ``valid``.
    """
    rows = _history_rows(history)
    if not rows:
        raise ValueError("history holds no epochs to draw")
    keys = list(rows[0])
    if metrics is None:
        metrics = [k for k in keys if f"val_{k}" in keys]
        metrics += [k for k in ("learning_rate",) if k in keys]
    missing = [m for m in metrics if m not in keys]
    if missing:
        raise ValueError(f"metrics must be logged in the history ({keys}). Received unknown: {missing}")
    epochs = np.array([int(r.get("epoch", i)) for i, r in enumerate(rows)]) + 1
    figure = Figure(figsize=(3.2 * len(metrics), 2.8), layout="constrained")
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    for ax, name in zip(axes, metrics):
        ax.plot(epochs, [r[name] for r in rows], marker="o", label="train" if f"val_{name}" in keys else name)
        if f"val_{name}" in keys:
            ax.plot(epochs, [r[f"val_{name}"] for r in rows], marker="o", label="valid")
            ax.legend(fontsize=8)
        if name == "learning_rate":
            ax.set_yscale("log")
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", linestyle="--", linewidth=1)
        ax.set_xlabel("epoch")
        ax.set_title(name.replace("_", " "))
        ax.xaxis.get_major_locator().set_params(integer=True)
    return figure


def confusion_matrix(cm, *, class_names=None, normalize: bool = False, title: str | None = None) -> Figure:
    """A confusion matrix (rows true, columns predicted) drawn with the counts in the cells.

    Args:
        cm: ``(k, k)`` counts, e.g. ``classification_metrics(...)["confusion_matrix"]``.
        class_names: ``k`` labels for the axes.
        normalize: show each row as fractions of its true class (recall on the diagonal).
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"cm must be a square (k, k) matrix. Received: shape={cm.shape}")
    if normalize:
        cm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    figure = Figure(figsize=(3.6 + 0.4 * len(cm), 3.2 + 0.4 * len(cm)), layout="constrained")
    ax = figure.add_subplot()
    ConfusionMatrixDisplay(cm, display_labels=class_names).plot(
        ax=ax, values_format=".2f" if normalize else "d", colorbar=False, cmap="Blues",
        xticks_rotation=30 if max(len(str(c)) for c in (class_names if class_names is not None else [0])) > 4
        else "horizontal")  # long names would run into each other under the columns
    if title:
        ax.set_title(title)
    return figure


def roc(y_true, probs, *, class_names=None, title: str | None = None) -> Figure:
    """ROC curve(s) with their AUC in the legend: one for two classes, one-vs-rest per class otherwise.

    Args:
        y_true: ``(n,)`` integer labels.
        probs: class probabilities ``(n, k)`` or a sigmoid's ``(n,)`` / ``(n, 1)``.
    """
    y_true = np.asarray(y_true).reshape(-1)
    probs = evaluate.as_class_probs(probs)
    k = probs.shape[1]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    figure = Figure(figsize=(4.2, 4), layout="constrained")
    ax = figure.add_subplot()
    classes = [1] if k == 2 else range(k)
    for c in classes:
        RocCurveDisplay.from_predictions(y_true == c, probs[:, c], ax=ax, name=names[c],
                                         plot_chance_level=c == classes[-1])
    ax.set_title(title or ("ROC" if k == 2 else "ROC, one class against the rest"))
    return figure


def reliability_diagram(y_true, probs, *, n_bins: int = 10, title: str | None = None) -> Figure:
    """Calibration of a binary model: observed frequency of class 1 against predicted probability.

    Two panels: scikit-learn's ``CalibrationDisplay`` (uniform bins) above, and the histogram
    of predicted probabilities below (how many cases each bin holds).
    """
    y_true = np.asarray(y_true).reshape(-1)
    probs = evaluate.as_class_probs(probs)
    if probs.shape[1] != 2:
        raise ValueError(f"a reliability diagram needs a binary model's probabilities. Received: {probs.shape[1]} classes")
    figure = Figure(figsize=(4.2, 5.2), layout="constrained")
    top, bottom = figure.subplots(2, 1, height_ratios=(3, 1), sharex=True)
    CalibrationDisplay.from_predictions(y_true, probs[:, 1], n_bins=n_bins, ax=top, name="model")
    top.set_title(title or "reliability")
    top.set_xlabel("")
    bottom.hist(probs[:, 1], bins=n_bins, range=(0, 1), color="grey")
    bottom.set_xlabel("predicted probability of class 1")
    bottom.set_ylabel("cases")
    return figure


def overlay(image, heatmap, *, alpha: float = 0.45, cmap=None) -> np.ndarray:
    """An image with a heatmap blended over it, as an array ready for ``imshow`` or saving.

    Args:
        image: ``(h, w, 3)`` uint8, or float in [0, 1].
        heatmap: ``(h, w)`` float in [0, 1].
        alpha: the heatmap's weight in the blend.
        cmap: a matplotlib colour map or its name; default `OVERLAY_CMAP` (chosen for H&E:
            no pink or purple).

    Returns:
        ``(h, w, 3)`` float32 in [0, 1].
    """
    image = np.asarray(image)
    heatmap = np.asarray(heatmap, dtype=np.float32)
    if image.ndim != 3 or image.shape[-1] != 3 or heatmap.shape != image.shape[:2]:
        raise ValueError(
            "Expected image (h, w, 3) and heatmap (h, w) of the same h and w. "
            f"Received: image.shape={image.shape}, heatmap.shape={heatmap.shape}"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"Expected alpha in [0, 1]. Received: alpha={alpha}")
    base = image.astype(np.float32) / 255.0 if image.dtype == np.uint8 else image.astype(np.float32)
    colours = colormaps.get_cmap(cmap or OVERLAY_CMAP)(np.clip(heatmap, 0.0, 1.0))[..., :3].astype(np.float32)
    return np.clip((1.0 - alpha) * base + alpha * colours, 0.0, 1.0)


def saliency_grid(images, maps, *, titles=None, alpha: float = OVERLAY_ALPHA,
                  cmap=OVERLAY_CMAP) -> Figure:
    """Images in the top row, each map set overlaid on them in grey in the rows below.

    The rows below show each image in grey (`grey_tissue`) under the map, so the map's colours
    (`OVERLAY_CMAP`, chosen for H&E) never mix with the stain's; the top row keeps the colours.

    Args:
        images: ``(n, h, w, 3)`` float in [0, 1] or uint8.
        maps: ``(n, h, w)`` maps in [0, 1] (e.g. from `histolib.saliency`), or a dict
            ``{method name: (n, h, w)}`` for one row per method.
        titles: ``n`` column titles (e.g. label and probability).
        alpha: opacity of the maps over the images.
        cmap: the maps' colour map, a name or a ``Colormap`` (sequential: the maps are
            non-negative).

    Returns:
        A figure with ``(1 + methods) x n`` axes, axis lines off; rows are named on the left.
    """
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (n, h, w, 3). Received: shape={images.shape}")
    if images.dtype == np.uint8:
        images = images / 255.0
    rows = maps if isinstance(maps, dict) else {"saliency": maps}
    n, h, w = images.shape[:3]
    for name, m in rows.items():
        if np.shape(m) != (n, h, w):
            raise ValueError(f"maps {name!r} must have shape {(n, h, w)} to match the images. Received: {np.shape(m)}")
    if titles is not None and len(titles) != n:
        raise ValueError(f"titles must name {n} images. Received: {len(titles)} titles")
    figure = Figure(figsize=(1.6 * n, 1.7 * (1 + len(rows))), layout="constrained")
    axes = figure.subplots(1 + len(rows), n, squeeze=False)
    for j in range(n):
        axes[0, j].imshow(np.clip(images[j], 0, 1))
        if titles is not None:
            axes[0, j].set_title(str(titles[j]), fontsize=8)
        for i, m in enumerate(rows.values(), start=1):
            axes[i, j].imshow(grey_tissue(images[j]), cmap="gray", vmin=0, vmax=1)
            axes[i, j].imshow(np.asarray(m)[j], cmap=cmap, alpha=alpha, vmin=0, vmax=1)
    for i, name in enumerate(["image", *rows], start=0):
        axes[i, 0].set_ylabel(name, fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
    return figure


def bag_attention(image, boxes, scores, *, title: str | None = None, cmap: str = "magma") -> Figure:
    """A bag's attention drawn over the image its tiles were cut from, beside the image.

    Each tile's weight is shown as ``n * a`` (``n`` tiles in the bag, so 1 is the uniform
    weight of mean pooling); where tiles overlap, the larger weight is drawn.

    Args:
        image: ``(h, w, 3)`` uint8 or float in [0, 1].
        boxes: ``(n, 4)`` ``(row, col, height, width)`` of the tiles (`histolib.data.bags.Bags`).
        scores: ``(n,)`` the tiles' attention weights (`histolib.models.attention_scores`).

    Returns:
        A figure with the image and the weights over it, with a colour bar.
    """
    image, boxes, scores = np.asarray(image), np.asarray(boxes), np.asarray(scores, np.float64)
    if boxes.ndim != 2 or boxes.shape[1] != 4 or len(boxes) != len(scores):
        raise ValueError("boxes must be (n, 4) with one score per box. "
                         f"Received: boxes.shape={boxes.shape}, scores.shape={scores.shape}")
    weight = np.full(image.shape[:2], np.nan)
    for (r, c, h, w), s in zip(boxes, scores * len(scores)):
        weight[r:r + h, c:c + w] = np.fmax(weight[r:r + h, c:c + w], s)
    figure = Figure(figsize=(10, 4.6 * image.shape[0] / image.shape[1] + 0.6), layout="constrained")
    left, right = figure.subplots(1, 2)
    for ax in (left, right):
        ax.imshow(image)
        ax.set_xticks([])
        ax.set_yticks([])
    shown = right.imshow(weight, cmap=cmap, alpha=0.6, vmin=0, vmax=max(np.nanmax(weight), 1.0))
    figure.colorbar(shown, ax=right, fraction=0.046, label="attention x tiles (1 = uniform)")
    left.set_title("image", fontsize=9)
    right.set_title(title or f"attention over {len(scores)} tiles", fontsize=9)
    return figure


def bag_tiles(tiles, scores, *, labels=None, columns: int = 8) -> Figure:
    """The tiles of one bag, highest attention first, each titled with ``n * a``.

    Args:
        tiles: ``(n, h, w, 3)`` uint8 or float in [0, 1].
        scores: ``(n,)`` attention weights.
        labels: optional ``(n,)`` tile labels; tiles labelled 1 get a red frame.
        columns: tiles per row.
    """
    tiles, scores = np.asarray(tiles), np.asarray(scores, np.float64)
    if tiles.ndim != 4 or len(tiles) != len(scores):
        raise ValueError(f"tiles must be (n, h, w, 3) with one score each. Received: {tiles.shape}, {scores.shape}")
    order = np.argsort(-scores, kind="stable")
    rows = -(-len(tiles) // columns)
    figure = Figure(figsize=(1.3 * columns, 1.45 * rows), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, order):
        ax.axis("on")
        ax.imshow(tiles[i])
        ax.set_title(f"{scores[i] * len(scores):.2f}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        tumour = labels is not None and labels[i] == 1
        for spine in ax.spines.values():
            spine.set_visible(tumour)
            spine.set_color("red")
            spine.set_linewidth(3)
    return figure


def image_groups(groups, *, root=None, max_groups: int = 6, max_per_group: int = 6, thumb: float = 1.5) -> Figure:
    """Groups of image files side by side: one row per group, its members left to right.

    Args:
        groups: lists of paths (e.g. ``NearDuplicates.group_paths(root)`` from
            `histolib.data.duplicates`, or the ``"groups"`` of ``histolib duplicates``' JSON).
        root: folder the paths are relative to (``None``: they are usable as given).
        max_groups, max_per_group: rows and columns shown (the row title counts the rest).
        thumb: inches per thumbnail.
    """
    groups = [list(g) for g in groups][:max_groups]
    if not groups:
        raise ValueError("image_groups needs at least one group. Received: groups=[]")
    columns = min(max_per_group, max(map(len, groups)))
    figure = Figure(figsize=(thumb * columns, (thumb * 0.8 + 0.3) * len(groups)), layout="constrained")
    axes = figure.subplots(len(groups), columns, squeeze=False)
    for row, group in zip(axes, groups):
        for ax in row:
            ax.axis("off")
        for ax, name in zip(row, group):
            ax.imshow(read_image(Path(root) / name if root is not None else name))
            ax.set_title(Path(name).name[-22:], fontsize=7)
        more = len(group) - columns
        if more > 0:
            row[-1].set_title(f"{row[-1].get_title()} (+{more} more)", fontsize=7)
    return figure
