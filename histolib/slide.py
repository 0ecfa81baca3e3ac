"""Slide regions: read, find the tissue, tile, predict in batches, draw the probability heatmap.

The "patch aggregation" triage use of the PCam seed: a region of a whole-slide image is cut into
``tile x tile`` patches (96 for PCam) with a chosen stride, background tiles are skipped, the rest
go through the model in batches, and the probability of the positive class becomes a heatmap over
the region. Regions are read with tifffile (with imagecodecs for the JPEG tiles inside Aperio SVS
files), so no OpenSlide is needed.

Coordinates are ``(row, column)`` in pixels of the level read; a region is ``(h, w, 3)`` uint8.
The real region ``CMU-1-Small-Region.svs`` (OpenSlide test data, CC0) is 2220 pixels wide and
2967 high: ``read_region`` gives ``(2967, 2220, 3)``. `download_cmu_region` fetches it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from histolib.files import download

__all__ = [
    "CMU_REGION",
    "SlideHeatmap",
    "read_region",
    "tissue_mask",
    "tile_grid",
    "tissue_fraction",
    "predict_tiles",
    "heatmap",
    "draw_heatmap",
    "download_cmu_region",
]

#: The public OpenSlide test region (also recorded in ``data/cmu_region.json``).
CMU_REGION = {
    "filename": "CMU-1-Small-Region.svs",
    "url": "https://openslide.cs.cmu.edu/download/openslide-testdata/Aperio/CMU-1-Small-Region.svs",
    "md5": "1ad6e35c9d17e4d85fb7e3143b328efe",
    "bytes": 1938955,
}


def read_region(path, *, level: int = 0, series: int | str = 0) -> np.ndarray:
    """Read an RGB region from an SVS or TIFF file.

    Args:
        path: an Aperio ``.svs`` or a (pyramidal or plain) ``.tif``/``.tiff``.
        level: pyramid level within the series, 0 = full resolution.
        series: index or name of the TIFF series; in an SVS, 0 is the slide (``"Baseline"``),
            and ``"Thumbnail"``, ``"Label"`` and ``"Macro"`` are the small images beside it.

    Returns:
        ``(h, w, 3)`` uint8 (an alpha channel is dropped).

    Raises:
        FileNotFoundError: no such file.
        ValueError: not a TIFF-family file, no such series or level, or not 8-bit RGB; the message
            names the file.
    """
    import tifffile

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Slide region not found: {path}")
    try:
        with tifffile.TiffFile(path) as tif:
            names = [s.name for s in tif.series]
            index = names.index(series) if isinstance(series, str) and series in names else series
            if not isinstance(index, int) or not 0 <= index < len(tif.series):
                raise ValueError(
                    f"{path} has series {list(enumerate(names))}. Received: series={series!r}"
                )
            levels = tif.series[index].levels
            if not 0 <= level < len(levels):
                raise ValueError(
                    f"{path} series {names[index]!r} has levels 0..{len(levels) - 1} with shapes "
                    f"{[lv.shape for lv in levels]}. Received: level={level!r}"
                )
            region = levels[level].asarray()
    except tifffile.TiffFileError as error:
        raise ValueError(f"Expected an SVS or TIFF slide region; {path} is not one ({error})") from error
    if region.ndim != 3 or region.shape[-1] not in (3, 4) or region.dtype != np.uint8:
        raise ValueError(
            f"Expected an 8-bit RGB image (h, w, 3) uint8 in {path}. "
            f"Received: shape={region.shape}, dtype={region.dtype}"
        )
    return np.ascontiguousarray(region[..., :3])


def tissue_mask(region, *, method: str = "otsu", threshold: float | None = None) -> np.ndarray:
    """Tissue pixels of an RGB region, by colour saturation.

    H&E-stained tissue is coloured; glass, and the white around it, is grey. The HSV saturation
    ``(max - min) / max`` of each pixel is thresholded: at Otsu's threshold of the region's own
    saturation histogram (``method="otsu"``: scikit-image's ``threshold_otsu``, 256 bins over the
    values present), or at a fixed ``threshold`` (``method="saturation"``, default 0.07).

    Args:
        region: ``(h, w, 3)`` uint8.

    Returns:
        ``(h, w)`` bool, True on tissue.
    """
    from skimage.filters import threshold_otsu

    region = np.asarray(region)
    if region.ndim != 3 or region.shape[-1] != 3 or region.dtype != np.uint8:
        raise ValueError(
            "Expected a region (h, w, 3) uint8. "
            f"Received: region.shape={region.shape}, dtype={region.dtype}"
        )
    if method not in ("otsu", "saturation"):
        raise ValueError(f"Expected method 'otsu' or 'saturation'. Received: method={method!r}")
    red, green, blue = region[..., 0], region[..., 1], region[..., 2]
    high = np.maximum(np.maximum(red, green), blue)  # 20x faster than region.max(axis=-1)
    spread = high - np.minimum(np.minimum(red, green), blue)
    saturation = spread.astype(np.float32) / np.maximum(high, 1).astype(np.float32)
    if method == "otsu":
        cut = threshold_otsu(saturation) if threshold is None else threshold
    else:
        cut = 0.07 if threshold is None else threshold
    return saturation > cut


def tile_grid(shape, *, tile: int = 96, stride: int = 96) -> tuple[int, int]:
    """Rows and columns of whole ``tile x tile`` tiles at ``stride`` in a region of ``shape``.

    Tile ``(i, j)`` covers rows ``i * stride`` to ``i * stride + tile``; a partial tile at the
    right or bottom edge is left out. The 2967 x 2220 CMU region gives 30 x 23 tiles at stride
    96 and 60 x 45 at stride 48.
    """
    if tile < 1 or stride < 1:
        raise ValueError(f"Expected positive tile and stride. Received: tile={tile}, stride={stride}")
    h, w = shape[:2]
    if h < tile or w < tile:
        raise ValueError(f"Expected a region of at least {tile} x {tile} pixels. Received: shape={tuple(shape)}")
    return (h - tile) // stride + 1, (w - tile) // stride + 1


def tissue_fraction(mask, *, tile: int = 96, stride: int = 96) -> np.ndarray:
    """Fraction of tissue pixels in every tile, ``(rows, cols)`` float32 in [0, 1].

    Running sums down the columns give each band of tile rows, running sums along each band give
    each tile, so the cost does not grow with the tile size.
    """
    mask = np.asarray(mask, dtype=bool)
    rows, cols = tile_grid(mask.shape, tile=tile, stride=stride)
    down = np.zeros((mask.shape[0] + 1, mask.shape[1]), np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=down[1:])
    top = np.arange(rows) * stride
    band = down[top + tile] - down[top]  # (rows, w): tissue pixels per column in each band
    along = np.zeros((rows, mask.shape[1] + 1), np.int32)
    np.cumsum(band, axis=1, out=along[:, 1:])
    left = np.arange(cols) * stride
    return ((along[:, left + tile] - along[:, left]) / float(tile * tile)).astype(np.float32)


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
    from histolib.models.outputs import positive_probability

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
    """

    probability: np.ndarray
    tissue: np.ndarray
    tile: int
    stride: int
    shape: tuple

    @property
    def n_tiles(self) -> int:
        """All whole tiles in the grid."""
        return int(self.probability.size)

    @property
    def n_scored(self) -> int:
        """Tiles with enough tissue to be scored."""
        return int(np.isfinite(self.probability).sum())


def heatmap(model, region, *, stride: int = 96, tile: int | None = None, min_tissue: float = 0.25,
            batch_size: int = 128, mask_method: str = "otsu", mask=None) -> SlideHeatmap:
    """Score every tissue tile of a region with ``model``.

    Args:
        model: see `predict_tiles`.
        region: ``(h, w, 3)`` uint8 (see `read_region`).
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
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from histolib.plots import OVERLAY_ALPHA, OVERLAY_CMAP, grey_tissue

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


def download_cmu_region(out_dir, *, timeout: float = 10.0) -> Path:
    """Download ``CMU-1-Small-Region.svs`` (OpenSlide test data, CC0, 1.9 MB), MD5-checked.

    A file already there with the right MD5 is kept and not downloaded again. Offline, this fails
    within seconds with a ``ConnectionError`` saying where to get the file by hand.

    Returns:
        the path of the checked file in ``out_dir``.

    Raises:
        ConnectionError: the server cannot be reached, or the download fails.
        ValueError: the downloaded file's MD5 is not the expected one (nothing is left behind).
    """
    url, md5 = CMU_REGION["url"], CMU_REGION["md5"]
    return download(url, Path(out_dir) / CMU_REGION["filename"], md5=md5, timeout=timeout,
                    by_hand=f"Download {url} by hand into {out_dir} (MD5 {md5}).")
