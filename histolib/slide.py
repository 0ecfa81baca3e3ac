"""Slide heatmaps: predict a region's tissue tiles in batches, draw the probability heatmap.

The "patch aggregation" triage use of the PCam seed: a region of a whole-slide image is cut into
``tile x tile`` patches (96 for PCam) with a chosen stride, background tiles are skipped, the rest
go through the model in batches, and the probability of the positive class becomes a heatmap over
the region. Reading a region, its tissue mask and the tile grid are data
(:mod:`histolib.data.regions`); this module scores and draws.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from histolib.data.regions import tissue_fraction, tissue_mask
from histolib.models.outputs import positive_probability
from histolib.plots import OVERLAY_ALPHA, OVERLAY_CMAP, grey_tissue

__all__ = ["SlideHeatmap", "draw_heatmap", "heatmap", "predict_tiles"]


def _model_tile(model, tile: int | None) -> int:
    """The tile side: the model's square input size, or ``tile`` (96 if neither says)."""
    height, width = tuple(model.input_shape)[1:3]
    if height is None or width is None:
        return 96 if tile is None else int(tile)
    if height != width:
        raise ValueError(f"Expected a model with square input. Received: input_shape={model.input_shape}")
    if tile is not None and tile != height:
        raise ValueError(
            f"Expected tile to match the model's input size {height}. Received: tile={tile}"
        )
    return int(height)


def predict_tiles(model, region, coords, *, tile: int = 96, batch_size: int = 128) -> np.ndarray:
    """Positive-class probability of the tiles at ``coords``, predicted in batches.

    Args:
        model: a Keras model taking ``(batch, tile, tile, 3)`` float32 in [0, 1] and returning
            sigmoid ``(batch, 1)`` or softmax ``(batch, k)`` probabilities; the positive class is
            the sigmoid itself, or the last column of a 2-class softmax.
        region: ``(h, w, 3)`` uint8.
        coords: ``(n, 2)`` int top-left ``(row, column)`` of each tile.
        batch_size: tiles per forward pass; every pass has this size (the last one padded), so
            the model's predict function is traced once.

    Returns:
        ``(n,)`` float32.
    """
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    windows = np.lib.stride_tricks.sliding_window_view(region, (tile, tile), axis=(0, 1))
    out = np.empty(len(coords), np.float32)
    batch = np.zeros((min(batch_size, max(len(coords), 1)), tile, tile, 3), np.float32)
    for start in range(0, len(coords), len(batch)):
        chunk = coords[start:start + len(batch)]
        # windows[r, c] is (3, tile, tile): channels first in sliding_window_view's layout
        np.multiply(windows[chunk[:, 0], chunk[:, 1]].transpose(0, 2, 3, 1), 1 / 255.0,
                    out=batch[:len(chunk)])
        probs = np.asarray(model.predict_on_batch(batch))
        out[start:start + len(chunk)] = positive_probability(probs)[:len(chunk)]
    return out


@dataclass
class SlideHeatmap:
    """A region's tile probabilities.

    Attributes:
        probability: ``(rows, cols)`` float32, the positive-class probability of each tile; NaN
            for background tiles, which were not scored.
        tissue: ``(rows, cols)`` float32, each tile's tissue fraction.
        tile, stride: tile side and step in pixels.
        shape: ``(h, w)`` of the region.
        n_tiles, n_scored: all whole tiles in the grid, and those scored (enough tissue).
    """

    probability: np.ndarray
    tissue: np.ndarray
    tile: int
    stride: int
    shape: tuple
    n_tiles: int = field(init=False)
    n_scored: int = field(init=False)

    def __post_init__(self):
        self.n_tiles = int(self.probability.size)
        self.n_scored = int(np.isfinite(self.probability).sum())


def heatmap(model, region, *, stride: int = 96, tile: int | None = None, min_tissue: float = 0.25,
            batch_size: int = 128, mask_method: str = "otsu", mask=None) -> SlideHeatmap:
    """Score every tissue tile of a region with ``model``.

    Args:
        model: see `predict_tiles`.
        region: ``(h, w, 3)`` uint8 (see `histolib.data.regions.read_region`).
        stride: step between tiles in pixels (``stride < tile`` overlaps them).
        tile: tile side; ``None`` takes the model's input size.
        min_tissue: the least tissue fraction a tile needs to be scored.
        batch_size: tiles per forward pass.
        mask_method: how `tissue_mask` finds tissue, when no ``mask`` is given.
        mask: ``(h, w)`` bool tissue mask to use instead.

    Returns:
        a `SlideHeatmap`.
    """
    region = np.asarray(region)
    tile = _model_tile(model, tile)
    if not 0.0 <= min_tissue <= 1.0:
        raise ValueError(f"Expected min_tissue in [0, 1]. Received: min_tissue={min_tissue}")
    mask = tissue_mask(region, method=mask_method) if mask is None else np.asarray(mask, bool)
    if mask.shape != region.shape[:2]:
        raise ValueError(f"Expected a mask of shape {region.shape[:2]}. Received: mask.shape={mask.shape}")
    tissue = tissue_fraction(mask, tile=tile, stride=stride)
    probability = np.full(tissue.shape, np.nan, np.float32)
    keep = np.argwhere((tissue >= min_tissue) & (tissue > 0))  # (n, 2) grid indices
    if len(keep):
        probability[keep[:, 0], keep[:, 1]] = predict_tiles(
            model, region, keep * stride, tile=tile, batch_size=batch_size
        )
    return SlideHeatmap(probability, tissue, tile, int(stride), tuple(region.shape[:2]))


def draw_heatmap(region, result: SlideHeatmap, path=None, *, alpha: float | None = None,
                 cmap=None, downsample: int = 4, title: str | None = None,
                 show_region: bool = True):
    """Draw the probability heatmap over the region; save it as a PNG when ``path`` is given.

    With ``show_region``, the region as stained on the left and the heatmap on the right;
    otherwise the heatmap alone. The heatmap panel shows the tissue in grey
    (`histolib.plots.grey_tissue`) and each scored tile as a ``stride x stride`` square centred
    on the tile's centre, in ``cmap`` at opacity ``alpha`` (default
    `histolib.plots.OVERLAY_CMAP` and `histolib.plots.OVERLAY_ALPHA`, chosen for H&E); background
    tiles stay clear. The colour bar is opaque: its colours are the map's own. The region is shown
    every ``downsample`` pixels to keep the figure light.

    Returns:
        the matplotlib ``Figure`` (not attached to pyplot, so nothing is left open).
    """

    alpha = OVERLAY_ALPHA if alpha is None else alpha
    cmap = OVERLAY_CMAP if cmap is None else cmap

    region = np.asarray(region)
    if region.shape[:2] != tuple(result.shape):
        raise ValueError(
            f"Expected the region the heatmap was made from, shape {result.shape}. "
            f"Received: region.shape={region.shape}"
        )
    h, w = result.shape
    shown = region[::downsample, ::downsample]
    panels = 2 if show_region else 1
    figure = Figure(figsize=(5 * panels + 0.8, 5 * h / w + 0.5), dpi=150, layout="constrained")
    axes = figure.subplots(1, panels, squeeze=False)[0]
    if show_region:
        axes[0].imshow(shown, extent=(0, w, h, 0))
        axes[0].set_title("region (H&E)", fontsize=9)
    axes[-1].imshow(grey_tissue(shown), cmap="gray", vmin=0.0, vmax=1.0, extent=(0, w, h, 0))
    rows, cols = result.probability.shape
    offset = (result.tile - result.stride) / 2
    axes[-1].imshow(
        np.ma.masked_invalid(result.probability), cmap=cmap, vmin=0.0, vmax=1.0, alpha=alpha,
        extent=(offset, offset + cols * result.stride, offset + rows * result.stride, offset),
        interpolation="nearest",
    )
    axes[-1].set_title(f"{result.n_scored} of {result.n_tiles} tiles scored "
                       f"({result.tile} px, stride {result.stride})", fontsize=9)
    for ax in axes:
        ax.set_xlim(0, w)
        ax.set_ylim(h, 0)
        ax.set_axis_off()
    if title:
        figure.suptitle(title, fontsize=10)
    figure.colorbar(ScalarMappable(Normalize(0.0, 1.0), cmap), ax=axes[-1], fraction=0.05,
                    label="probability of the positive class")
    if path is not None:
        figure.savefig(path)
    return figure


